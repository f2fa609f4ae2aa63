"""Register the bot's webhook with X and subscribe the bot account; then day-two operations.

    python register_webhook.py setup https://<app>.herokuapp.com/webhook/twitter
    python register_webhook.py status | check | replay --since 2h | delete [ID] | ...
    python register_webhook.py --api aaa setup URL     # the Account Activity API instead
    python register_webhook.py xchat-keys --out xchat.key   # once, for X Chat (encrypted DMs)

The bot's DMs are subscribed through the X Activity API (a dm.received subscription for the bot
account, tagged catfacts-bot) unless --api aaa asks for the Account Activity API; an app that
has an Account Activity subscription is moved over without a gap. With X Chat on (both
XCHAT_PRIVATE_KEYS and XCHAT_KEY_VERSION, which `xchat-keys` makes), the bot's chat.received is
subscribed through the X Activity API too. Settings come from the environment or .env, like the
app's (api_config.py). Safe to run twice. Exit codes: 0 done, 1 X refused or could not be reached
(one line with the next step to take), 2 usage or settings.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

from api_config import SettingsError, load_settings
from catbot.account_activity import AccountActivity, XRefused, XUnreachable
from catbot.activity_api import CHATS, DMS, TAG, ActivityAPI, is_bot_chats, is_bot_dms
from catbot.channels import PlatformRefused, channel_classes
from catbot.settings import Settings

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
    """The bot's dm.received subscription to the webhook, and with X Chat on its chat.received one
    too; then any Account Activity subscription removed."""
    hook, bot, activity = _pick_webhook(api, webhook_id), _bot(api), ActivityAPI(api)
    subs = activity.subscriptions()
    report.result.update(subscribed=True, api="xaa",
                         subscription=_subscribe_xaa(report, activity, subs, hook, bot, DMS, is_bot_dms, "DMs"))
    if api.settings.xchat_enabled:
        report.result["chat_subscription"] = _subscribe_xaa(report, activity, subs, hook, bot, CHATS, is_bot_chats,
                                                            "X Chat messages")
    _retire_aaa(api, report, bot)


def _subscribe_xaa(report: Report, activity: ActivityAPI, subs: list[dict[str, Any]], hook: dict[str, Any], bot: str,
                   event_type: str, is_mine: Callable[[dict[str, Any], str], bool], what: str) -> dict[str, Any] | None:
    """The bot's ``event_type`` subscription to the webhook: reused when it exists, moved when it
    names another webhook, created otherwise."""
    mine = sorted((s for s in subs if is_mine(s, bot)),
                  key=lambda s: (s.get("webhook_id") != hook["id"], s.get("tag") != TAG))
    sub = mine[0] if mine else None
    if sub and sub.get("webhook_id") == hook["id"]:
        report.say(f"the bot account is already subscribed to {event_type} through the X Activity API "
                   f"(subscription {sub['subscription_id']}, webhook {hook['id']})")
    elif sub:
        old = sub.get("webhook_id") or "none"
        sub = activity.move(sub["subscription_id"], hook["id"]) or {**sub, "webhook_id": hook["id"]}
        report.changed = True
        report.say(f"moved the bot account's X Activity API subscription {sub.get('subscription_id')} ({event_type}) "
                   f"from webhook {old} to webhook {hook['id']}: {what} will now arrive there")
    else:
        try:
            sub = activity.create(hook["id"], bot, event_type)
            report.changed = True
            report.say(f"subscribed the bot account {bot} to {event_type} through the X Activity API (subscription "
                       f"{sub.get('subscription_id', '?')}, tag {TAG}) on webhook {hook['id']}: {what} will now arrive")
        except XRefused as refused:  # X listed none a moment ago: it is there now
            if refused.reason != "DuplicateSubscriptionFailed" and refused.status != 409:
                raise
            report.say(f"the bot account is already subscribed to {event_type} through the X Activity API")
    for extra in mine[1:]:
        report.warn(f"X Activity API subscription {_describe(extra)} sends the bot's {what} too; "
                    f"if it is not needed: {_unsubscribe_command(extra)}")
    return sub


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
        if api.settings.xchat_enabled:
            chat_subs = [s["subscription_id"] for s in named if is_bot_chats(s, bot)]
            report.result["webhooks"][-1]["bot_chat_subscribed"] = bool(chat_subs)
            report.say(f"  bot account {bot or '?'} " + (f"subscribed to {CHATS} (X Activity API subscription "
                                                         f"{', '.join(chat_subs)})" if chat_subs else
                                                         "NOT subscribed to its X Chat messages (run `subscribe`)"))
    known = {hook["id"] for hook in hooks}
    report.say(f"X Activity API subscriptions: {len(subs)}")
    for sub in subs:
        gone = sub.get("webhook_id") and sub["webhook_id"] not in known
        report.say(f"  {_describe(sub)}" + (" (no such webhook: `setup` moves it)" if gone else ""))
    cmd_status_xchat(api, report)


# -- Account Activity API (--api aaa) -------------------------------------------------------------
def cmd_subscribe(api: AccountActivity, report: Report, webhook_id: str | None) -> None:
    hook = _pick_webhook(api, webhook_id)
    if api.settings.xchat_enabled:
        report.warn(f"X Chat is on, but X delivers {CHATS} through the X Activity API only: "
                    "run this command without --api aaa to receive X Chat messages")
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
    if api.settings.xchat_enabled:
        report.say(f"X Chat: on; X delivers {CHATS} through the X Activity API only: `status` without --api aaa "
                   "shows its subscription and the bot's registered key")


# -- X Chat (encrypted DMs): the bot's key pair ---------------------------------------------------
# The private keys are a secret (XCHAT_PRIVATE_KEYS): they go to --out FILE (mode 600) or, without
# it, to a terminal once; never to stderr, a log, --json output or an error message. They are saved
# before X is asked, so a refused or lost registration is retried with the same key pair. The SDK
# cannot rebuild the registration from the private keys (the signature over the signing key needs
# the identity key, which it never uses alone), so the public half is saved too, in FILE.pub.json.
REGISTRATION_FIELDS = ("public_key", "signing_public_key", "identity_public_key_signature",
                       "signing_public_key_signature", "public_key_fingerprint", "registration_method")


def _same_key(spki_b64: Any, raw_b64: str) -> bool:
    """True when X's spelling of a public key (DER/SPKI, as registered) is the SDK's raw key:
    the raw bytes end the DER ones (X's X Chat troubleshooting page)."""
    try:
        spki, raw = base64.b64decode(spki_b64 or "", validate=True), base64.b64decode(raw_b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        return False
    return bool(raw) and spki.endswith(raw)


def _holds(chat: Any, key: dict[str, Any]) -> bool:
    """True when ``key`` (a registration, or X's record of one) is the public half of ``chat``'s
    private keys: identity and signing key both (``matches_registered_key`` checks the first only)."""
    mine = chat.get_public_keys()
    return _same_key(key.get("public_key"), mine.identity) and _same_key(key.get("signing_public_key"), mine.signing)


def _new_key_pair() -> tuple[str, dict[str, Any]]:
    """A fresh key pair: the private keys (base64) and X's AddUserPublicKeyRequest for its public half."""
    from chat_xdk import Chat  # the Chat XDK is loaded only for X Chat

    chat = Chat()
    registration = chat.generate_keypairs()
    exported = chat.export_keys()
    if not exported:
        raise Usage("the Chat XDK generated a key pair but exported no private keys; try again")
    key = {name: getattr(registration.public_key, name) for name in REGISTRATION_FIELDS}
    body = {"public_key": {name: value for name, value in key.items() if value is not None},
            "version": registration.version or "1",  # the SDK sets it; X's getting-started falls back to "1"
            "generate_version": registration.generate_version}
    return base64.b64encode(bytes(exported)).decode("ascii"), body


def _public_file(out: str) -> str:
    return out + ".pub.json"


def _save_key_pair(out: str, bot: str, blob: str, body: dict[str, Any]) -> None:
    """The private keys to ``out``, created with mode 600 and never over an existing file, and the
    registration beside it; both on disk before X is asked."""
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise Usage(f"cannot create {out}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as secret:
            secret.write(blob + "\n")
            secret.flush()
            os.fsync(secret.fileno())
        with open(_public_file(out), "w") as public:
            json.dump({"bot_user_id": bot, "registration": body}, public, indent=2)
            public.write("\n")
    except OSError as exc:
        os.unlink(out)  # never registered: nothing is lost, and a retry starts clean
        raise Usage(f"cannot write {out} and {_public_file(out)}: {exc.strerror}") from None


def _saved_key_pair(out: str, bot: str, report: Report) -> tuple[str, dict[str, Any]]:
    """The key pair an earlier run saved in ``out``; a Usage error for any other file (never
    overwritten, never quoted)."""
    from catbot.xchat import load_identity

    other = f"xchat-keys never overwrites a file: name a new one with --out, or remove {out} if it is not needed"
    if not os.path.exists(_public_file(out)):
        raise Usage(f"{out} exists but {_public_file(out)}, the public half xchat-keys saves beside it, does not; "
                    + other)
    try:
        blob = Path(out).read_text().strip()
        saved = json.loads(Path(_public_file(out)).read_text())
        body = saved["registration"]
        chat = load_identity(blob, str(body["version"]), bot)
    except OSError as exc:
        raise Usage(f"cannot read {exc.filename}: {exc.strerror}") from None
    except (ValueError, TypeError, KeyError):  # never quote what the file holds: it may be a secret
        raise Usage(f"{out} is not a key pair saved by xchat-keys; {other}") from None
    if saved.get("bot_user_id") != bot:
        raise Usage(f"{out} holds an X Chat key pair made for account {saved.get('bot_user_id')}, not the bot "
                    f"account {bot}; {other}")
    if not isinstance(body.get("public_key"), dict) or not _holds(chat, body["public_key"]):
        raise Usage(f"{out} and {_public_file(out)} do not hold the two halves of one key pair; {other}")
    mode = os.stat(out).st_mode & 0o777
    if mode & 0o077:
        report.warn(f"{out} holds private keys and other users may read it (mode {mode:o}): chmod 600 {out}")
    return blob, body


def _newest(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest of X's key records: versions are millisecond timestamps, compared as numbers."""
    def version(record: dict[str, Any]) -> int:
        text = str(record.get("public_key_version") or "")
        return int(text) if text.isdigit() else -1
    return max(records, key=version, default=None)


def _kept(out: str | None) -> str:
    """Where the key pair of a registration that failed is, and how to retry it."""
    if out:
        return f"The key pair is saved in {out}: run this command again with --out {out} to register the same key."
    return ("X did not register the key pair whose private keys are printed above: do not use them. Next time use "
            "--out FILE, so that a retry registers the same key.")


def _key_refusal(refused: XRefused, out: str | None) -> XRefused:
    """A refused key registration, with what to do and where the key pair is."""
    kept = _kept(out)
    if refused.status == 429:
        when = (time.strftime("at %Y-%m-%d %H:%M UTC", time.gmtime(refused.reset_at)) if refused.reset_at
                else "within 24 hours")
        advice = (f"X registers only a few X Chat keys per account in 24 hours and the bot's limit is reached; "
                  f"X allows another {when}. {kept}")
    elif refused.status == 403:
        advice = ("X refused to register the key as the bot account: the app needs the 'Read, Write and Direct "
                  "Messages' permission, and an access token generated after it was set. " + kept)
    else:
        advice = f"{refused.advice} {kept}".strip()
    return XRefused(refused.status, refused.reason, refused.detail, refused.said, advice)


def cmd_xchat_keys(api: AccountActivity, report: Report, out: str | None) -> None:
    """Make the bot's X Chat key pair (or take the one an earlier run saved in ``out``), and
    register its public half with X as the bot account, unless X holds it already."""
    from catbot.xchat import load_identity

    bot = _bot(api)
    if out is None and report.as_json:
        raise Usage("--json output never carries the bot's X Chat private keys: name a file for them with --out FILE")
    if out is None and not sys.stdout.isatty():
        raise Usage("xchat-keys prints the bot's X Chat private keys (a secret) only to a terminal: name a file "
                    "for them with --out FILE (created with mode 600)")
    reused = bool(out) and os.path.lexists(out)
    if reused:
        blob, body = _saved_key_pair(out, bot, report)
        report.say(f"reusing the X Chat key pair an earlier run saved in {out} (public half in {_public_file(out)})")
    else:
        blob, body = _new_key_pair()
        if out:
            _save_key_pair(out, bot, blob, body)
            report.say(f"generated the bot's X Chat key pair: private keys saved in {out} (mode 600, a secret), "
                       f"public half in {_public_file(out)}")
        else:
            report.say("generated the bot's X Chat key pair; its private keys, a secret shown only this once:")
            print(f"XCHAT_PRIVATE_KEYS={blob}", flush=True)  # not report.say: kept out of report.lines
    if api.settings.xchat_enabled and api.settings.xchat_private_keys != blob:
        report.warn(f"X Chat is on with other keys (XCHAT_KEY_VERSION={api.settings.xchat_key_version}): once X holds "
                    "this key, people write to it, and the bot reads them only after the settings below are set")
    chat = load_identity(blob, str(body["version"]), bot)
    fingerprint = body["public_key"].get("public_key_fingerprint") or chat.get_public_key_fingerprint()
    try:
        newest = _newest(api.public_keys(bot)) if reused else None
        if newest and _holds(chat, newest):
            version = str(newest.get("public_key_version"))
            report.say(f"X already holds this key as the bot account's X Chat public key (version {version}); "
                       "nothing to register")
        else:
            answer = api.add_public_key(bot, body)
            version = str(answer.get("public_key_version") or body["version"])
            report.changed = True
            report.say(f"registered the bot account {bot}'s X Chat public key with X: version {version}, "
                       f"fingerprint {fingerprint}")
    except XUnreachable:  # the answer, not the request, may be what was lost
        report.warn(_kept(out) if out else "the key pair printed above may not be registered: `status` with its "
                    "settings set tells; or run this command again, with --out FILE")
        raise
    except XRefused as refused:
        raise _key_refusal(refused, out) from None
    report.result.update(xchat={"bot_user_id": bot, "key_version": version, "fingerprint": fingerprint,
                                "public_key": body["public_key"], "out": out,
                                "public_file": _public_file(out) if out else None, "reused": reused})
    _say_settings(report, version, out)


def _say_settings(report: Report, version: str, out: str | None) -> None:
    keys = f"the contents of {out}" if out else "the value printed above"
    report.say("set these two settings, then restart the bot:")
    report.say(f"  XCHAT_KEY_VERSION={version}")
    report.say(f"  XCHAT_PRIVATE_KEYS=<{keys}>")
    if out:
        report.say(f"  on Heroku: heroku config:set XCHAT_KEY_VERSION={version} "
                   f"XCHAT_PRIVATE_KEYS=\"$(cat {shlex.quote(out)})\"")
        report.say(f"{out} is a secret like a password: keep it out of git and backups that others read, or delete "
                   "it once the setting is set")
    report.say("then `python register_webhook.py setup URL` subscribes the bot's X Chat messages (chat.received)")


def cmd_status_xchat(api: AccountActivity, report: Report) -> None:
    """Whether X Chat is on, and whether X holds the public half of XCHAT_PRIVATE_KEYS."""
    settings = api.settings
    if not settings.xchat_enabled:
        report.result["xchat"] = {"enabled": False}
        report.say("X Chat: off (XCHAT_PRIVATE_KEYS and XCHAT_KEY_VERSION are not set; `xchat-keys` makes them)")
        return
    from catbot.xchat import load_identity

    bot = _bot(api)
    chat = load_identity(settings.xchat_private_keys, settings.xchat_key_version, bot)
    state: dict[str, Any] = {"enabled": True, "key_version": settings.xchat_key_version,
                             "fingerprint": chat.get_public_key_fingerprint()}
    report.result["xchat"] = state
    report.say(f"X Chat: on (XCHAT_KEY_VERSION={settings.xchat_key_version}, key fingerprint {state['fingerprint']})")
    try:
        records = api.public_keys(bot)
    except XUnreachable:
        raise
    except XRefused as refused:
        state["key_matches"] = None
        report.warn(f"could not read the bot's X Chat public keys from X ({refused.reason}: {refused.detail})")
        return
    newest, mine = _newest(records), next((r for r in records if _holds(chat, r)), None)
    state.update(registered_version=newest and newest.get("public_key_version"),
                 key_matches=mine is not None and mine is newest,
                 version_matches=mine is not None and str(mine.get("public_key_version")) == settings.xchat_key_version)
    if newest is None:
        report.say("  X holds no X Chat public key for the bot account: NOT registered (run `xchat-keys --out FILE`)")
    elif mine is None:
        report.say(f"  X holds the bot's X Chat public key version {newest.get('public_key_version')}, which does NOT "
                   "match XCHAT_PRIVATE_KEYS: the bot cannot read X Chat messages (set the keys registered with it, "
                   "or register these: `xchat-keys --out FILE` with the file that holds them)")
    elif mine is not newest:
        report.say(f"  X holds the key of XCHAT_PRIVATE_KEYS as version {mine.get('public_key_version')}, but gives "
                   f"senders the newer version {newest.get('public_key_version')}, which does NOT match: the bot "
                   "cannot read what is encrypted to it")
    else:
        version = str(mine.get("public_key_version"))
        report.say(f"  X holds the bot's X Chat public key version {version}: it matches XCHAT_PRIVATE_KEYS")
        if not state["version_matches"]:
            report.say(f"  but XCHAT_KEY_VERSION is {settings.xchat_key_version}, not {version}: set "
                       f"XCHAT_KEY_VERSION={version}")


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
    add("status", "webhooks, their validity and subscriptions; X Chat and the bot's registered key")
    sub = add("xchat-keys", "make the bot's X Chat key pair, save its private keys, register its public key with X")
    sub.add_argument("--out", metavar="FILE", help="save the private keys (a secret) in this new file, mode 600; "
                     "a retry with the same FILE registers the same key")
    for name, cls in channel_classes().items():  # each platform's own set-up (catbot/channels/<name>.py)
        if not cls.setup_commands:
            continue
        platform = add(name, f"{name}'s own set-up: {', '.join(cls.setup_commands)}")
        verbs = platform.add_subparsers(dest="channel_command", required=True, metavar="COMMAND")
        for verb, help_ in cls.setup_commands.items():
            sub = verbs.add_parser(verb, help=help_, description=help_)
            sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
            cls.add_setup_arguments(verb, sub)
    return parser


def run_channel(settings: Settings, report: Report, args: argparse.Namespace) -> None:
    """``register_webhook.py <channel> <command>``: the platform's set-up, by its channel."""
    cls = channel_classes()[args.command]
    if args.command not in settings.channels:
        raise Usage(f"{args.command} is off: set {', '.join(cls.required)} (in the environment or .env) first")
    cls(settings.channels[args.command]).run_setup(args.channel_command, args, report)


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
    elif args.command == "xchat-keys":
        cmd_xchat_keys(api, report, args.out)
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
        settings = load_settings()
        if args.command in channel_classes():
            run_channel(settings, report, args)
        else:
            _dispatch(api_factory(settings), report, args)
    except (Usage, SettingsError) as exc:
        code, error = 2, {"reason": "usage", "detail": str(exc)}
        if not args.json:
            print(f"error: {exc}", file=sys.stderr)
    except XUnreachable as unreachable:  # local: the network or X_API_BASE_URL, not X's verdict
        code, error = 1, {"reason": unreachable.reason, "status": None, "detail": unreachable.detail,
                          "advice": unreachable.advice}
        if not args.json:
            print(f"error: {unreachable}; {unreachable.advice}", file=sys.stderr)
    except (XRefused, PlatformRefused) as refused:  # X's verdict, or another platform's (a channel's set-up)
        code, error = 1, {"reason": refused.reason, "status": refused.status, "detail": refused.detail,
                          "advice": refused.advice}
        if not args.json:
            who = "X" if isinstance(refused, XRefused) else args.command
            print(f"{who} refused: {refused.reason}: {refused.detail}", file=sys.stderr)
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
