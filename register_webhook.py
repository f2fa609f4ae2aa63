"""Register the bot's webhook with X and subscribe the bot account; then day-two operations.

    python register_webhook.py setup https://<app>.herokuapp.com/webhook/twitter
    python register_webhook.py status | check | replay --since 2h | delete [ID] | ...
    python register_webhook.py --api aaa setup URL     # the Account Activity API instead

The bot's DMs are subscribed through the X Activity API (a dm.received subscription for the bot
account, tagged catfacts-bot) unless --api aaa asks for the Account Activity API; an app that
has an Account Activity subscription is moved over without a gap. Settings come from the
environment or .env, like the app's (api_config.py). Safe to run twice. Exit codes: 0 done, 1 X
refused or could not be reached (one line with the next step to take), 2 usage or settings.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any, Callable

from api_config import SettingsError, load_settings
from catbot.account_activity import AccountActivity, XRefused, XUnreachable
from catbot.activity_api import DMS, TAG, ActivityAPI, is_bot_dms

MAX_REPLAY = 24 * 3600


class Usage(Exception):
    """A usage or settings problem: exit 2."""


class Report:
    """Collects what happened; prints lines as it goes, or one JSON object at the end."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.result: dict[str, Any] = {}
        self.changed = False

    def say(self, line: str) -> None:
        self.lines.append(line)
        if not self.as_json:
            print(line, flush=True)

    def warn(self, line: str) -> None:
        self.warnings.append(line)
        if not self.as_json:
            print(f"warning: {line}", file=sys.stderr, flush=True)


def _duration(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text or "")
    if not match:
        raise Usage(f"--since takes a duration like 90m, 2h or 1d, not {text!r}")
    seconds = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if not 0 < seconds <= MAX_REPLAY:
        raise Usage("--since must be more than 0 and at most 24h (X replays the last 24 hours only)")
    return seconds


def _pick_webhook(api: AccountActivity, webhook_id: str | None) -> dict[str, Any]:
    hooks = api.webhooks()
    if webhook_id:
        for hook in hooks:
            if hook["id"] == webhook_id:
                return hook
        raise XRefused(None, "WebhookIdInvalid", f"no webhook with id {webhook_id}")
    if not hooks:
        raise XRefused(None, "no webhook", "this app has no webhook yet; run `setup URL` first")
    if len(hooks) > 1:
        raise Usage("this app has several webhooks; name one with --webhook-id (see `status`)")
    return hooks[0]


# -- commands for both APIs -----------------------------------------------------------------------
def cmd_preflight(api: AccountActivity, report: Report, url: str, strict: bool) -> None:
    found = api.preflight(url)
    report.result["preflight"] = {"problems": found.problems, "crc_ok": found.crc_ok,
                                  "seconds": None if found.seconds is None else round(found.seconds, 3)}
    if found.crc_ok:
        report.say(f"pre-flight: {url} answered the CRC challenge correctly ({found.seconds * 1000:.0f} ms)")
    for problem in found.problems:
        report.warn(f"pre-flight: {problem}")
    if strict and found.problems:
        raise XRefused(None, "preflight", "pre-flight checks failed (--strict): " + "; ".join(found.problems))


def cmd_register(api: AccountActivity, report: Report, url: str, replace: bool) -> dict[str, Any]:
    for hook in api.webhooks():
        if hook["url"] == url:
            if hook.get("valid"):
                report.say(f"webhook {hook['id']} is already registered for {url} and valid")
            else:
                report.say(f"webhook {hook['id']} for {url} is marked invalid; asking X to re-check it")
                hook["valid"] = _recheck(api, hook)
                report.changed = True
                report.say(f"webhook {hook['id']} passed X's CRC check")
            report.result["webhook"] = hook
            return hook
    try:
        hook = api.create_webhook(url)
    except XRefused as refused:
        if refused.reason != "WebhookLimitExceeded":
            raise
        others = [h for h in api.webhooks() if h["url"] != url]
        names = ", ".join(f"{h['id']} ({h['url']})" for h in others) or "unknown"
        if not replace:
            raise XRefused(refused.status, "WebhookLimitExceeded",
                           f"the app's webhook limit is taken by {names}") from None
        for other in others:
            api.delete_webhook(other["id"])
            report.say(f"deleted webhook {other['id']} ({other['url']}) to make room (--replace)")
        hook = api.create_webhook(url)
    report.changed = True
    report.say(f"registered webhook {hook['id']} for {url}; X's CRC check passed")
    report.result["webhook"] = hook
    return hook


def _recheck(api: AccountActivity, hook: dict[str, Any]) -> bool:
    """X's CRC check of the webhook, run now; a check that ran and failed is a refusal too."""
    if not api.recheck(hook["id"]):
        raise XRefused(200, "CrcValidationFailed", f"X checked webhook {hook['id']} ({hook['url']}) and marked it "
                                                   "invalid: it receives no events until a check passes")
    return True


def cmd_check(api: AccountActivity, report: Report, webhook_id: str | None) -> None:
    hook = _pick_webhook(api, webhook_id)
    report.result["valid"] = _recheck(api, hook)
    report.say(f"webhook {hook['id']} ({hook['url']}) passed X's CRC check")


def cmd_replay(api: AccountActivity, report: Report, since: str, webhook_id: str | None) -> None:
    seconds = _duration(since)
    hook = _pick_webhook(api, webhook_id)
    end = time.time()  # to_date is this minute (yyyymmddhhmm), never the future
    job = api.replay(hook["id"], end - seconds, end)
    report.result["replay"] = job
    report.say(f"asked X to re-deliver the last {since} to webhook {hook['id']} (job {job.get('job_id', '?')}); "
               "the bot ignores events it has already seen")


def cmd_setup(api: AccountActivity, report: Report, url: str, replace: bool, strict: bool, which: str) -> None:
    cmd_preflight(api, report, url, strict)
    hook = cmd_register(api, report, url, replace)
    SUBSCRIBE[which](api, report, hook["id"])
    report.say("setup complete: " + ("done" if report.changed else "nothing to change, everything was in place"))


def _delete_webhook(api: AccountActivity, report: Report, hook: dict[str, Any]) -> None:
    api.delete_webhook(hook["id"])
    report.changed = True
    report.result["deleted"] = hook["id"]
    report.say(f"deleted webhook {hook['id']} ({hook['url']})")


def cmd_delete(api: AccountActivity, report: Report, webhook_id: str | None) -> None:
    """Delete the webhook; X ends its Account Activity subscriptions with it."""
    _delete_webhook(api, report, _pick_webhook(api, webhook_id))


# -- X Activity API (the default) -----------------------------------------------------------------
def _bot(api: AccountActivity) -> str:
    if not api.settings.bot_user_id:
        raise Usage("cannot tell the bot account's user id from ACCESS_TOKEN; set BOT_USER_ID")
    return api.settings.bot_user_id


def _describe(sub: dict[str, Any]) -> str:
    """One X Activity API subscription on one line: id, event type, filter, tag, webhook."""
    filt = ", ".join(f"{k}={v}" for k, v in (sub.get("filter") or {}).items()) or "none"
    return (f"{sub.get('subscription_id')}: {sub.get('event_type')}, filter {filt}, tag {sub.get('tag') or '-'}, "
            f"webhook {sub.get('webhook_id') or 'none (stream only)'}")


def _unsubscribe_command(sub: dict[str, Any]) -> str:
    return f"python register_webhook.py unsubscribe --subscription-id {sub.get('subscription_id')}"


def cmd_subscribe_xaa(api: AccountActivity, report: Report, webhook_id: str | None) -> None:
    """The bot's dm.received subscription to the webhook: reused when it exists, moved when it
    names another webhook, created otherwise; then any Account Activity subscription removed."""
    hook, bot, activity = _pick_webhook(api, webhook_id), _bot(api), ActivityAPI(api)
    mine = sorted((s for s in activity.subscriptions() if is_bot_dms(s, bot)),
                  key=lambda s: (s.get("webhook_id") != hook["id"], s.get("tag") != TAG))
    sub = mine[0] if mine else None
    if sub and sub.get("webhook_id") == hook["id"]:
        report.say(f"the bot account is already subscribed to {DMS} through the X Activity API "
                   f"(subscription {sub['subscription_id']}, webhook {hook['id']})")
    elif sub:
        old = sub.get("webhook_id") or "none"
        sub = activity.move(sub["subscription_id"], hook["id"]) or {**sub, "webhook_id": hook["id"]}
        report.changed = True
        report.say(f"moved the bot account's X Activity API subscription {sub.get('subscription_id')} from webhook "
                   f"{old} to webhook {hook['id']}: DMs will now arrive there")
    else:
        try:
            sub = activity.create(hook["id"], bot)
            report.changed = True
            report.say(f"subscribed the bot account {bot} to {DMS} through the X Activity API (subscription "
                       f"{sub.get('subscription_id', '?')}, tag {TAG}) on webhook {hook['id']}: DMs will now arrive")
        except XRefused as refused:  # X listed none a moment ago: it is there now
            if refused.reason != "DuplicateSubscriptionFailed" and refused.status != 409:
                raise
            report.say(f"the bot account is already subscribed to {DMS} through the X Activity API")
    for extra in mine[1:]:
        report.warn(f"X Activity API subscription {_describe(extra)} sends the bot's DMs too; "
                    f"if it is not needed: {_unsubscribe_command(extra)}")
    report.result.update(subscribed=True, api="xaa", subscription=sub)
    _retire_aaa(api, report, bot)


def _retire_aaa(api: AccountActivity, report: Report, bot: str) -> None:
    """Remove the bot's Account Activity subscriptions, now that the X Activity API delivers its
    DMs (created first, so no DM falls in a gap; meanwhile the bot answers a DM that arrives both
    ways once). An app X refuses the Account Activity API to has none to remove."""
    for hook in api.webhooks():
        try:
            if not api.is_subscribed(hook["id"]):
                continue
            api.unsubscribe(hook["id"], bot)
        except XUnreachable:
            raise
        except XRefused as refused:
            if refused.reason == "SubscriptionNotFound" or refused.status in (401, 403):
                continue  # nothing there, or no Account Activity access: nothing to move
            report.warn(f"the bot account is still subscribed to webhook {hook['id']} through the Account Activity "
                        f"API too (X refused its removal: {refused.reason}): DMs arrive both ways (answered once) "
                        f"until you run: python register_webhook.py --api aaa unsubscribe --webhook-id {hook['id']}")
            continue
        report.changed = True
        report.result.setdefault("aaa_removed", []).append(hook["id"])
        report.say(f"removed the bot account's Account Activity API subscription to webhook {hook['id']}: "
                   "DMs now arrive through the X Activity API only")


def cmd_unsubscribe_xaa(api: AccountActivity, report: Report, webhook_id: str | None,
                        subscription_id: str | None) -> None:
    """Remove the bot's dm.received subscriptions (to one webhook with --webhook-id), or the one
    named by --subscription-id, whatever it is."""
    bot, activity = _bot(api), ActivityAPI(api)
    subs = activity.subscriptions()
    if subscription_id:
        targets = [s for s in subs if s.get("subscription_id") == subscription_id]
        if not targets:
            raise XRefused(None, "SubscriptionNotFound", f"no X Activity API subscription has id {subscription_id}",
                           advice="`status` lists the app's X Activity API subscriptions.")
    else:
        targets = [s for s in subs if is_bot_dms(s, bot) and webhook_id in (None, s.get("webhook_id"))]
    if not targets:
        report.say(f"the bot account {bot} was not subscribed to {DMS} through the X Activity API"
                   + (f" on webhook {webhook_id}" if webhook_id else ""))
    for sub in targets:
        activity.delete(sub["subscription_id"])
        report.changed = True
        report.say(f"removed X Activity API subscription {_describe(sub)}")
    report.result.update(subscribed=False, removed=[s["subscription_id"] for s in targets])


def cmd_delete_xaa(api: AccountActivity, report: Report, webhook_id: str | None) -> None:
    """Delete the webhook and the X Activity API subscriptions that name it (X would keep
    pointing them at a webhook that no longer exists)."""
    hook, activity = _pick_webhook(api, webhook_id), ActivityAPI(api)
    pointing = [s for s in activity.subscriptions() if s.get("webhook_id") == hook["id"]]
    _delete_webhook(api, report, hook)
    for done, sub in enumerate(pointing):
        try:
            activity.delete(sub["subscription_id"])
        except XUnreachable:
            raise
        except XRefused as refused:
            left = pointing[done:]
            raise XRefused(refused.status, refused.reason, f"{refused.detail} (removing subscription "
                           f"{sub['subscription_id']} of the deleted webhook)", refused.said,
                           advice="remove what is left with: " + "; ".join(map(_unsubscribe_command, left))) from None
        report.say(f"removed X Activity API subscription {_describe(sub)}")
    report.result["removed"] = [s["subscription_id"] for s in pointing]


def cmd_status_xaa(api: AccountActivity, report: Report) -> None:
    hooks, bot = api.webhooks(), api.settings.bot_user_id
    subs = ActivityAPI(api).subscriptions()
    report.result.update(webhooks=[], activity_subscriptions=subs)
    if not hooks:
        report.say("no webhook registered; run `setup URL`")
    for hook in hooks:
        named = [s for s in subs if s.get("webhook_id") == hook["id"]]
        bot_subs = [s["subscription_id"] for s in named if is_bot_dms(s, bot)]
        report.result["webhooks"].append({**hook, "bot_subscribed": bool(bot_subs),
                                          "activity_subscriptions": [s.get("subscription_id") for s in named]})
        report.say(f"webhook {hook['id']}: {hook['url']}")
        report.say(f"  valid: {'yes' if hook.get('valid') else 'NO (run `check`)'}; created {hook.get('created_at')}")
        report.say(f"  bot account {bot or '?'} " + (f"subscribed to {DMS} (X Activity API subscription "
                                                     f"{', '.join(bot_subs)})" if bot_subs else
                                                     "NOT subscribed to its DMs (run `subscribe`)"))
    known = {hook["id"] for hook in hooks}
    report.say(f"X Activity API subscriptions: {len(subs)}")
    for sub in subs:
        gone = sub.get("webhook_id") and sub["webhook_id"] not in known
        report.say(f"  {_describe(sub)}" + (" (no such webhook: `setup` moves it)" if gone else ""))


# -- Account Activity API (--api aaa) -------------------------------------------------------------
def cmd_subscribe(api: AccountActivity, report: Report, webhook_id: str | None) -> None:
    hook = _pick_webhook(api, webhook_id)
    if api.is_subscribed(hook["id"]):
        report.say(f"the bot account is already subscribed to webhook {hook['id']}")
    else:
        try:
            api.subscribe(hook["id"])
            report.changed = True
            report.say(f"subscribed the bot account to webhook {hook['id']}: DMs will now arrive")
        except XRefused as refused:
            if refused.reason != "DuplicateSubscriptionFailed":
                raise
            report.say(f"the bot account is already subscribed to webhook {hook['id']}")
    report.result["subscribed"] = True


def cmd_unsubscribe(api: AccountActivity, report: Report, webhook_id: str | None) -> None:
    hook = _pick_webhook(api, webhook_id)
    user_id = _bot(api)
    try:
        api.unsubscribe(hook["id"], user_id)
        report.changed = True
        report.say(f"unsubscribed account {user_id} from webhook {hook['id']}")
    except XRefused as refused:
        if refused.reason != "SubscriptionNotFound":
            raise
        report.say(f"account {user_id} was not subscribed to webhook {hook['id']}")
    report.result["subscribed"] = False


def cmd_status(api: AccountActivity, report: Report) -> None:
    hooks = api.webhooks()
    bot = api.settings.bot_user_id
    report.result["webhooks"] = []
    if not hooks:
        report.say("no webhook registered; run `setup URL`")
    for hook in hooks:
        users = api.subscriptions(hook["id"])
        subscribed = api.is_subscribed(hook["id"])
        report.result["webhooks"].append({**hook, "subscriptions": users, "bot_subscribed": subscribed})
        report.say(f"webhook {hook['id']}: {hook['url']}")
        report.say(f"  valid: {'yes' if hook.get('valid') else 'NO (run `check`)'}; created {hook.get('created_at')}")
        report.say(f"  subscriptions: {', '.join(users) or 'none'}; bot account {bot or '?'} "
                   f"{'subscribed' if subscribed else 'NOT subscribed (run `subscribe`)'}")
    count = api.subscription_count()
    report.result["subscription_count"] = count
    report.say(f"subscriptions in use: {count.get('subscriptions_count_all', '?')} of "
               f"{count.get('provisioned_count', '?')}")


# -- command line ---------------------------------------------------------------------------------
SUBSCRIBE = {"xaa": cmd_subscribe_xaa, "aaa": cmd_subscribe}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python register_webhook.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    api_help = "how X delivers the bot's DMs: xaa, the X Activity API (default), or aaa, the Account Activity API"
    parser.add_argument("--api", choices=("xaa", "aaa"), default="xaa", help=api_help)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_, description=help_)
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
        sub.add_argument("--api", choices=("xaa", "aaa"), default=argparse.SUPPRESS, help=api_help)
        return sub

    for name, help_ in (("setup", "register (or reuse) the webhook, then subscribe the bot account's DMs"),
                        ("register", "register the webhook for URL, or reuse the one that has it")):
        sub = add(name, help_)
        sub.add_argument("url", metavar="URL", help="https://<app>.herokuapp.com/webhook/twitter")
        sub.add_argument("--replace", action="store_true", help="delete another webhook that holds the limit")
        sub.add_argument("--strict", action="store_true", help="treat pre-flight problems as errors")
    for name, help_ in (("subscribe", "subscribe the bot account's DMs (already subscribed is fine)"),
                        ("unsubscribe", "remove the bot account's subscription"),
                        ("check", "ask X to re-run its CRC check now"),
                        ("delete", "delete the webhook (the only one, or ID) and the subscriptions naming it"),
                        ("replay", "ask X to re-deliver events the bot missed (at most 24h back)")):
        sub = add(name, help_)
        if name == "delete":
            sub.add_argument("id", nargs="?", metavar="ID", help="webhook id (see status)")
        else:
            sub.add_argument("--webhook-id", dest="id", help="which webhook, when the app has several")
        if name == "unsubscribe":
            sub.add_argument("--subscription-id", help="remove this X Activity API subscription (see status)")
        if name == "replay":
            sub.add_argument("--since", required=True, help="how far back: e.g. 30m, 2h, 24h")
    add("status", "webhooks, their validity and subscriptions")
    return parser


def _dispatch(api: AccountActivity, report: Report, args: argparse.Namespace) -> None:
    xaa = args.api == "xaa"
    if getattr(args, "subscription_id", None) and not xaa:
        raise Usage("--subscription-id names an X Activity API subscription; leave out --api aaa")
    if args.command == "setup":
        cmd_setup(api, report, args.url, args.replace, args.strict, args.api)
    elif args.command == "register":
        cmd_preflight(api, report, args.url, args.strict)
        cmd_register(api, report, args.url, args.replace)
    elif args.command == "status":
        (cmd_status_xaa if xaa else cmd_status)(api, report)
    elif args.command == "replay":
        cmd_replay(api, report, args.since, args.id)
    elif args.command == "unsubscribe" and xaa:
        cmd_unsubscribe_xaa(api, report, args.id, args.subscription_id)
    else:
        {"subscribe": SUBSCRIBE[args.api], "unsubscribe": cmd_unsubscribe, "check": cmd_check,
         "delete": cmd_delete_xaa if xaa else cmd_delete}[args.command](api, report, args.id)


def run(argv: list[str] | None = None, api_factory: Callable[..., AccountActivity] = AccountActivity) -> int:
    args = build_parser().parse_args(argv)
    report = Report(args.json)
    code = 0
    try:
        _dispatch(api_factory(load_settings()), report, args)
    except (Usage, SettingsError) as exc:
        code, error = 2, {"reason": "usage", "detail": str(exc)}
        if not args.json:
            print(f"error: {exc}", file=sys.stderr)
    except XUnreachable as unreachable:  # local: the network or X_API_BASE_URL, not X's verdict
        code, error = 1, {"reason": unreachable.reason, "status": None, "detail": unreachable.detail,
                          "advice": unreachable.advice}
        if not args.json:
            print(f"error: {unreachable}; {unreachable.advice}", file=sys.stderr)
    except XRefused as refused:
        code, error = 1, {"reason": refused.reason, "status": refused.status, "detail": refused.detail,
                          "advice": refused.advice}
        if not args.json:
            print(f"X refused: {refused.reason}: {refused.detail}", file=sys.stderr)
            if refused.advice:
                print(f"next step: {refused.advice}", file=sys.stderr)
            for warning in report.warnings:
                if "CONSUMER_SECRET" in warning:
                    print(f"likely cause: {warning.split(': ', 1)[-1]}", file=sys.stderr)
    else:
        error = None
    if args.json:
        print(json.dumps({"ok": code == 0, "command": args.command, "api": args.api, "changed": report.changed,
                          "result": report.result, "warnings": report.warnings, "error": error,
                          "messages": report.lines}, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(run())
