"""register_webhook.py run as a user runs it (a subprocess), against the X emulator, which
performs real CRC checks against a bot served on loopback."""
import json
import subprocess
import time

import pytest
from flask import Flask, jsonify, request

from helpers import BOT_ID, CREDS, ServerThread, drain, runtime_of
from processes import ROOT, VENV_BIN, bot_env, free_port
from catbot.runtime import import_journals
from catbot.web import create_app

SECRETS = (CREDS.consumer_secret, CREDS.access_token_secret)
AAA = ("--api", "aaa")  # the Account Activity API, for apps that only have it
APIS = pytest.mark.parametrize("api", [(), AAA], ids=["xaa", "aaa"])


@pytest.fixture
def cli(settings):
    def run(*args, **env):
        result = subprocess.run([str(VENV_BIN / "python"), "register_webhook.py", *args], cwd=ROOT,
                                env=bot_env(settings, **env), capture_output=True, text=True, timeout=60)
        for secret in SECRETS:
            assert secret not in result.stdout + result.stderr
        return result
    return run


def xaa_subscriptions(emulator) -> list[dict]:
    return [s.as_json() for s in emulator.activity_subscriptions.values()]


def test_setup_twice_registers_once_and_subscribes_once_through_xaa(cli, bot_url, emulator):
    first = cli("setup", bot_url)
    assert first.returncode == 0, first.stderr
    assert "registered webhook" in first.stdout and "subscribed the bot account" in first.stdout
    assert "X Activity API" in first.stdout
    [hook] = emulator.webhooks.values()
    [sub] = xaa_subscriptions(emulator)
    assert {k: sub.get(k) for k in ("event_type", "filter", "tag", "webhook_id")} == {
        "event_type": "dm.received", "filter": {"user_id": BOT_ID}, "tag": "catfacts-bot", "webhook_id": hook.id}
    assert emulator.subscriptions == {}  # nothing through the Account Activity API
    second = cli("setup", bot_url)
    assert second.returncode == 0, second.stderr
    assert "nothing to change" in second.stdout
    assert [w.url for w in emulator.webhooks.values()] == [bot_url]
    assert xaa_subscriptions(emulator) == [sub]
    assert emulator.webhook_url() == bot_url


def test_setup_with_api_aaa_subscribes_through_the_account_activity_api(cli, bot_url, emulator):
    first = cli(*AAA, "setup", bot_url)
    assert first.returncode == 0, first.stderr
    assert "subscribed the bot account" in first.stdout
    [hook] = emulator.webhooks.values()
    assert emulator.subscriptions == {hook.id: {BOT_ID}} and emulator.activity_subscriptions == {}
    second = cli("setup", "--api", "aaa", bot_url)  # after the command too, like --json
    assert second.returncode == 0 and "nothing to change" in second.stdout


def test_a_dm_then_arrives_in_the_xaa_envelope_and_is_answered(cli, bot_url, emulator, app):
    assert cli("setup", bot_url).returncode == 0
    _, answer = emulator.deliver_dm("3000000002", "hello")
    assert answer.status_code == 200
    [(_, delivery)] = emulator.delivered
    assert delivery["data"]["event_type"] == "dm.received" and delivery["data"]["tag"] == "catfacts-bot"
    import_journals(runtime_of(app).backend)  # the served bot and ``app`` share the store
    drain(app)
    assert len(emulator.sent_to("3000000002")) == 1


@pytest.mark.parametrize("old_webhook", ["kept", "deleted"])
def test_setup_moves_the_bots_subscription_from_an_old_webhook(cli, bot_url, emulator, old_webhook):
    emulator.webhook_limit = 2
    old = emulator.register(bot_url + "?old=1", api="xaa")
    [before] = xaa_subscriptions(emulator)
    if old_webhook == "deleted":
        emulator.webhooks.pop(old.id)
    result = cli("setup", bot_url)
    assert result.returncode == 0, result.stderr
    new = next(w for w in emulator.webhooks.values() if w.url == bot_url)
    assert "moved" in result.stdout and old.id in result.stdout and new.id in result.stdout
    [after] = xaa_subscriptions(emulator)
    assert after["subscription_id"] == before["subscription_id"] and after["webhook_id"] == new.id


def test_setup_on_an_app_with_an_aaa_subscription_moves_it_to_xaa_without_a_gap(cli, bot_url, emulator):
    emulator.register(bot_url)  # the bot as it was set up before: through the Account Activity API
    [hook] = emulator.webhooks.values()
    result = cli("setup", bot_url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("subscribed the bot account") < out.index("removed the bot account's Account Activity")
    assert emulator.subscriptions == {hook.id: set()}
    [sub] = xaa_subscriptions(emulator)
    assert sub["webhook_id"] == hook.id and sub["event_type"] == "dm.received"
    assert "nothing to change" in cli("setup", bot_url).stdout


def test_status_shows_webhook_and_xaa_subscription(cli, bot_url, emulator):
    cli("setup", bot_url)
    result = cli("status")
    assert result.returncode == 0
    [hook] = emulator.webhooks.values()
    [sub] = xaa_subscriptions(emulator)
    assert hook.id in result.stdout and bot_url in result.stdout and "valid: yes" in result.stdout
    assert "bot account 2000000001 subscribed" in result.stdout
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith(sub["subscription_id"]))
    assert all(part in line for part in ("dm.received", "user_id=2000000001", "catfacts-bot", hook.id)), line
    assert "Account Activity" not in result.stdout


def test_status_with_api_aaa_shows_account_activity_lines(cli, bot_url, emulator):
    cli(*AAA, "setup", bot_url)
    result = cli(*AAA, "status")
    assert result.returncode == 0
    assert "bot account 2000000001 subscribed" in result.stdout and "subscriptions in use: 1 of 3" in result.stdout


@APIS
def test_status_json(cli, bot_url, api):
    cli(*api, "setup", bot_url)
    data = json.loads(cli("--json", *api, "status").stdout)
    assert data["ok"] is True
    assert data["result"]["webhooks"][0]["bot_subscribed"] is True
    if not api:
        [sub] = data["result"]["activity_subscriptions"]
        assert sub["event_type"] == "dm.received" and sub["filter"] == {"user_id": BOT_ID}


def test_check_runs_xs_crc_again(cli, bot_url, emulator):
    cli("setup", bot_url)
    checks = emulator.crc_checks
    result = cli("check")
    assert result.returncode == 0 and "passed X's CRC check" in result.stdout
    assert emulator.crc_checks == checks + 1


def test_wrong_consumer_secret_on_the_bot_fails_setup_naming_the_mismatch(cli, settings, emulator):
    server = ServerThread(create_app(settings.replace(consumer_secret="a-different-secret")))
    try:
        result = cli("setup", server.url + "/webhook/twitter")
    finally:
        server.stop()
    assert result.returncode == 1
    assert "CrcValidationFailed" in result.stderr
    assert "different CONSUMER_SECRET" in result.stderr
    assert "within 10 s" in result.stderr and "3 s" not in result.stderr  # X's current webhook docs
    assert emulator.webhooks == {}


def test_unreachable_url_is_reported_and_x_refuses(cli, emulator):
    result = cli("setup", "http://127.0.0.1:9/webhook/twitter")
    assert result.returncode == 1
    assert "unreachable" in result.stderr and "CrcValidationFailed" in result.stderr


def test_strict_preflight_stops_before_asking_x(cli, bot_url, emulator):
    result = cli("setup", "--strict", bot_url)
    assert result.returncode == 1
    assert "not https" in result.stderr and "has a port" in result.stderr
    assert emulator.crc_checks == 0 and emulator.webhooks == {}


def test_limit_taken_by_another_url_says_which_and_replace_fixes_it(cli, bot_url, emulator):
    old = emulator.register(bot_url + "?old=1")
    refused = cli("register", bot_url)
    assert refused.returncode == 1
    assert "WebhookLimitExceeded" in refused.stderr and old.id in refused.stderr and "--replace" in refused.stderr
    replaced = cli("register", bot_url, "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert [w.url for w in emulator.webhooks.values()] == [bot_url]


def test_invalid_webhook_is_rechecked_on_register(cli, bot_url, emulator):
    cli("setup", bot_url)
    [hook] = emulator.webhooks.values()
    hook.valid = False
    result = cli("register", bot_url)
    assert result.returncode == 0 and "re-check" in result.stdout
    assert hook.valid is True


@APIS
def test_subscribe_when_already_subscribed_is_success(cli, bot_url, api):
    cli(*api, "setup", bot_url)
    result = cli(*api, "subscribe")
    assert result.returncode == 0 and "already subscribed" in result.stdout


def test_subscribe_without_a_webhook_says_what_to_do(cli):
    result = cli("subscribe")
    assert result.returncode == 1 and "setup URL" in result.stderr


@APIS
def test_unsubscribe_twice(cli, bot_url, emulator, api):
    cli(*api, "setup", bot_url)
    assert cli(*api, "unsubscribe").returncode == 0
    assert emulator.webhook_url() is None and emulator.activity_subscriptions == {}
    again = cli(*api, "unsubscribe")
    assert again.returncode == 0 and "was not subscribed" in again.stdout


@APIS
def test_delete(cli, bot_url, emulator, api):
    cli(*api, "setup", bot_url)
    [hook] = emulator.webhooks.values()
    assert cli(*api, "delete", hook.id).returncode == 0
    assert emulator.webhooks == {}
    assert cli(*api, "delete").returncode == 1


def test_delete_removes_the_xaa_subscriptions_that_name_the_webhook(cli, bot_url, emulator):
    cli("setup", bot_url)
    [hook] = emulator.webhooks.values()
    emulator.subscribe_activity("dm.sent", hook.id)
    elsewhere = emulator.subscribe_activity("follow.follow", None)  # the stream only: not this webhook's
    result = cli("delete")
    assert result.returncode == 0, result.stderr
    assert list(emulator.activity_subscriptions) == [elsewhere.subscription_id]
    assert result.stdout.count("removed X Activity API subscription") == 2


def test_unsubscribe_one_subscription_by_id(cli, bot_url, emulator):
    cli("setup", bot_url)
    [hook] = emulator.webhooks.values()
    extra = emulator.subscribe_activity("dm.received", hook.id, tag="by hand")
    result = cli("unsubscribe", "--subscription-id", extra.subscription_id)
    assert result.returncode == 0, result.stderr
    assert [s["tag"] for s in xaa_subscriptions(emulator)] == ["catfacts-bot"]


@pytest.mark.parametrize("access,needles", [
    ("forbidden", ["X Activity API", "developer portal", "--api aaa"]),
    ("oauth2", ["OAuth 2.0 user context", "dm.read", "--api aaa"]),
])
def test_xaa_refused_for_access_says_what_to_do(cli, bot_url, emulator, access, needles):
    emulator.activity_access = access
    result = cli("setup", bot_url)
    assert result.returncode == 1
    assert "X refused" in result.stderr and "Traceback" not in result.stderr
    advice = next(line for line in result.stderr.splitlines() if line.startswith("next step:"))
    assert all(needle in advice for needle in needles), advice
    data = json.loads(cli("--json", "setup", bot_url).stdout)
    assert data["error"]["status"] == 403 and "--api aaa" in data["error"]["advice"]
    fallback = cli(*AAA, "setup", bot_url)
    assert fallback.returncode == 0, fallback.stderr


def test_delete_unknown_id(cli, bot_url):
    cli("setup", bot_url)
    result = cli("delete", "123")
    assert result.returncode == 1 and "WebhookIdInvalid" in result.stderr


def test_replayed_events_are_recognised_as_seen(cli, bot_url, emulator, app):
    cli("setup", bot_url)
    emulator.deliver_dm("3000000002", "hi")
    runtime = runtime_of(app)  # the same SQLite file and journal as the served bot's
    store = runtime.store
    import_journals(runtime.backend)
    assert store.health()["pending_messages"] == 1
    with emulator._changed:
        delivered_before = len(emulator.delivered)
    result = cli("replay", "--since", "2h")
    assert result.returncode == 0, result.stderr
    assert "re-deliver" in result.stdout
    deadline = time.monotonic() + 5
    while len(emulator.delivered) < delivered_before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the replayed DM and the replay_job_status arrive in the background
    time.sleep(0.2)
    assert len(emulator.delivered) == delivered_before + 2
    import_journals(runtime.backend)
    assert store.health()["pending_messages"] == 1  # the replayed DM did not queue a second reply


@pytest.mark.parametrize("since", ["25h", "0m", "soon"])
def test_replay_window_is_validated(cli, bot_url, since):
    cli("setup", bot_url)
    result = cli("replay", "--since", since)
    assert result.returncode == 2 and "--since" in result.stderr


def test_bad_consumer_credentials_get_a_permission_hint(cli, bot_url):
    result = cli("status", CONSUMER_KEY="not-the-key", BEARER_TOKEN="")
    assert result.returncode == 1
    assert "next step" in result.stderr


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: X is unreachable, a purely local condition."""
    return free_port()


@pytest.mark.parametrize("bearer", ["", "a-bearer-token"], ids=["fetched-bearer", "BEARER_TOKEN"])
@pytest.mark.parametrize("command", [["status"], ["subscribe"], ["check"]])
def test_unreachable_x_is_one_line_exit_1_with_or_without_bearer_token(cli, closed_port, bearer, command):
    """Without BEARER_TOKEN the bearer fetch is the first call to X: it must fail the same way."""
    base = f"http://127.0.0.1:{closed_port}"
    result = cli(*command, X_API_BASE_URL=base, BEARER_TOKEN=bearer)
    assert (result.returncode, result.stdout, result.stderr.splitlines()) == (
        1, "", [f"error: could not reach X at {base}: ConnectionError; check X_API_BASE_URL and your network"])


def test_unreachable_x_during_setup_is_not_reported_as_x_refusing(cli, bot_url, closed_port):
    result = cli("setup", bot_url, X_API_BASE_URL=f"http://127.0.0.1:{closed_port}", BEARER_TOKEN="")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "X refused" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"error: could not reach X at http://127.0.0.1:{closed_port}")


def test_unusable_x_api_base_url_is_a_local_error(cli):
    """A port out of range passes the settings check but cannot be connected to."""
    result = cli("status", X_API_BASE_URL="http://127.0.0.1:99999", BEARER_TOKEN="")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "X refused" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: could not reach X at http://127.0.0.1:99999: ") and "X_API_BASE_URL" in line


def test_something_else_answering_at_x_api_base_url_is_a_local_error(cli):
    """A captive portal or a wrong X_API_BASE_URL: 200 with a web page, on every path."""
    portal = Flask("portal")
    portal.add_url_rule("/<path:_>", "page", lambda _: "<html>sign in to the network</html>", methods=["GET", "POST"])
    server = ServerThread(portal)
    try:
        result = cli("status", X_API_BASE_URL=server.url, BEARER_TOKEN="")
    finally:
        server.stop()
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "X refused" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: could not reach X at {server.url}: HTTP 200 ") and "X_API_BASE_URL" in line


def test_unreachable_x_in_json_mode(cli, closed_port):
    result = cli("--json", "status", X_API_BASE_URL=f"http://127.0.0.1:{closed_port}", BEARER_TOKEN="")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert data["error"]["reason"] == "unreachable" and "X_API_BASE_URL" in data["error"]["advice"]


def test_bad_access_token_secret_fails_subscribe_with_hint(cli, bot_url, emulator):
    cli("register", bot_url)
    result = cli("subscribe", ACCESS_TOKEN_SECRET="wrong")
    assert result.returncode == 1 and "ACCESS_TOKEN" in result.stderr


def test_missing_settings_exit_2(settings, tmp_path):
    result = subprocess.run([str(VENV_BIN / "python"), "register_webhook.py", "status"], cwd=ROOT,
                            env={"PATH": str(VENV_BIN), "CATBOT_ENV_DIR": str(tmp_path)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "CONSUMER_KEY" in result.stderr


@pytest.mark.parametrize("command", ["setup", "register", "subscribe", "unsubscribe", "status", "check",
                                     "delete", "replay"])
def test_every_command_has_help(cli, command):
    result = cli(command, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


def test_no_command_is_a_usage_error(cli):
    assert cli().returncode == 2


# -- loose ends found against X's current docs ------------------------------------------------------
@pytest.fixture
def own_bot(settings):
    """A bot this test can stop, so that X's next CRC check of it fails."""
    server = ServerThread(create_app(settings))
    yield server
    try:
        server.stop()
    except OSError:
        pass


def test_check_reports_a_crc_that_x_marks_invalid_as_failed(cli, own_bot, emulator):
    """X answers PUT /2/webhooks/:id with 200 and {"valid": false} when its check fails."""
    assert cli("setup", own_bot.url + "/webhook/twitter").returncode == 0
    own_bot.stop()
    result = cli("check")
    assert result.returncode == 1, result.stdout
    assert "passed" not in result.stdout
    assert "CrcValidationFailed" in result.stderr and "next step" in result.stderr


def test_register_reports_a_failed_recheck_of_an_invalid_webhook(cli, own_bot, emulator):
    url = own_bot.url + "/webhook/twitter"
    assert cli("setup", url).returncode == 0
    [hook] = emulator.webhooks.values()
    hook.valid = False
    own_bot.stop()
    result = cli("register", url)
    assert result.returncode == 1
    assert "passed" not in result.stdout and "CrcValidationFailed" in result.stderr
    assert hook.valid is False


def test_replay_of_the_whole_24_hours_is_within_xs_window(cli, bot_url, emulator):
    """from_date is rounded toward now: rounding down asked for up to 24 h 59 s, which X refuses."""
    cli("setup", bot_url)
    result = cli("replay", "--since", "24h")
    assert result.returncode == 0, result.stderr


def test_preflight_warns_about_a_crc_answer_slower_than_half_xs_deadline(settings, monkeypatch):
    """X gives up after 10 s; the pre-flight warns from half of that (scaled down here)."""
    from catbot import account_activity

    slow = Flask("slow")
    slow.add_url_rule("/webhook/twitter", "crc", lambda: (time.sleep(0.3), {"response_token": "x"})[1])
    server = ServerThread(slow)
    monkeypatch.setattr(account_activity, "X_DEADLINE", 0.4)
    try:
        found = account_activity.AccountActivity(settings).preflight(server.url + "/webhook/twitter")
    finally:
        server.stop()
    assert any("X gives up after 0.4 s" in problem for problem in found.problems), found.problems


@pytest.fixture
def fake_x():
    """An X that answers each (method, path) with a canned (status, JSON body); 404 otherwise.
    For refusals the emulator does not produce: reasons in other fields, conflicts, races."""
    routes: dict[tuple[str, str], tuple[int, dict]] = {}
    app = Flask("fake_x")

    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "DELETE"])
    def answer(path):
        status, body = routes.get((request.method, "/" + path),
                                  (404, {"title": "Not Found Error", "detail": path, "type": "about:blank"}))
        return jsonify(body), status

    server = ServerThread(app)
    routes["url"] = server.url  # type: ignore[assignment]
    yield routes
    server.stop()


def fake_x_cli(cli, fake_x, *args):
    return cli(*args, X_API_BASE_URL=fake_x["url"], BEARER_TOKEN="fake-bearer")


AAA_SUBSCRIPTION = "/2/account_activity/webhooks/1700000000000000001/subscriptions/all"


def one_webhook(fake_x, url: str) -> None:
    hook = {"id": "1700000000000000001", "url": url, "valid": True, "created_at": "2026-08-01T00:00:00.000Z"}
    fake_x[("GET", "/2/webhooks")] = (200, {"data": [hook], "meta": {"result_count": 1}})


@pytest.mark.parametrize("body", [
    {"title": "DuplicateSubscriptionFailed", "detail": "This user is already subscribed.",
     "type": "https://api.x.com/2/problems/invalid-request"},
    {"errors": [{"title": "DuplicateSubscriptionFailed", "detail": "This user is already subscribed."}],
     "title": "Invalid Request", "type": "https://api.x.com/2/problems/invalid-request"},
    {"errors": [{"message": "Bad request", "detail": "DuplicateSubscriptionFailed: already subscribed"}],
     "title": "Invalid Request", "detail": "Bad request"},
], ids=["title", "errors-title", "errors-detail"])
@APIS
def test_a_duplicate_reported_in_title_or_detail_is_recognised_on_a_re_run(cli, bot_url, fake_x, body, api):
    """X said "not subscribed" a moment ago, then "duplicate": the subscription is there."""
    one_webhook(fake_x, bot_url)
    fake_x[("GET", AAA_SUBSCRIPTION)] = (200, {"data": {"subscribed": False}})
    fake_x[("POST", AAA_SUBSCRIPTION)] = (400, body)
    fake_x[("GET", "/2/activity/subscriptions")] = (200, {"data": [], "meta": {"total_subscriptions": 0}})
    fake_x[("POST", "/2/activity/subscriptions")] = (400, body)
    result = fake_x_cli(cli, fake_x, *api, "setup", bot_url)
    assert result.returncode == 0, result.stderr
    assert "already subscribed" in result.stdout


def test_a_failed_removal_of_the_aaa_subscription_names_the_command_that_does_it(cli, bot_url, fake_x):
    one_webhook(fake_x, bot_url)
    fake_x[("GET", "/2/activity/subscriptions")] = (200, {"data": []})
    fake_x[("POST", "/2/activity/subscriptions")] = (200, {"data": {"subscription": {
        "subscription_id": "1800000000000000009", "event_type": "dm.received", "filter": {"user_id": BOT_ID},
        "tag": "catfacts-bot", "webhook_id": "1700000000000000001"}}})
    fake_x[("GET", AAA_SUBSCRIPTION)] = (200, {"data": {"subscribed": True}})
    fake_x[("DELETE", f"/2/account_activity/webhooks/1700000000000000001/subscriptions/{BOT_ID}/all")] = (
        503, {"title": "Service Unavailable", "detail": "Service Unavailable", "type": "about:blank"})
    result = fake_x_cli(cli, fake_x, "setup", bot_url)
    assert result.returncode == 0, result.stderr
    assert "subscribed the bot account" in result.stdout
    assert "python register_webhook.py --api aaa unsubscribe --webhook-id 1700000000000000001" in result.stderr


def test_a_failed_removal_of_a_deleted_webhooks_subscription_names_the_command(cli, fake_x):
    one_webhook(fake_x, "https://bot.example.com/webhook/twitter")
    fake_x[("GET", "/2/activity/subscriptions")] = (200, {"data": [{
        "subscription_id": "1800000000000000009", "event_type": "dm.received", "filter": {"user_id": BOT_ID},
        "webhook_id": "1700000000000000001"}]})
    fake_x[("DELETE", "/2/webhooks/1700000000000000001")] = (200, {"data": {"deleted": True}})
    fake_x[("DELETE", "/2/activity/subscriptions/1800000000000000009")] = (
        503, {"title": "Service Unavailable", "detail": "Service Unavailable", "type": "about:blank"})
    result = fake_x_cli(cli, fake_x, "delete")
    assert result.returncode == 1
    assert "deleted webhook 1700000000000000001" in result.stdout
    assert "python register_webhook.py unsubscribe --subscription-id 1800000000000000009" in result.stderr


@pytest.mark.parametrize("reason,advice", [
    ("ReplayConflictError", "already running"),
    ("QueryParamInvalid", "last 24 hours"),
])
def test_replay_refusals_come_with_advice(cli, fake_x, reason, advice):
    one_webhook(fake_x, "https://bot.example.com/webhook/twitter")
    fake_x[("POST", "/2/webhooks/replay")] = (400, {"errors": [{"message": f"{reason}: refused"}],
                                                    "title": "Invalid Request", "detail": "refused"})
    result = fake_x_cli(cli, fake_x, "replay", "--since", "2h")
    assert result.returncode == 1
    assert f"X refused: {reason}" in result.stderr and advice in result.stderr


def test_a_channels_own_set_up_runs_as_register_webhook_py_channel_command(cli, emulator):
    """``register_webhook.py telegram set-webhook URL`` dispatches to the channel's set-up
    (catbot/channels/telegram.py), with the same output conventions and exit codes."""
    from x_emulator.platforms.telegram import DEMO_SETTINGS

    telegram = emulator.platform("telegram")
    telegram.setup(settings=DEMO_SETTINGS)
    env = {**DEMO_SETTINGS, "TELEGRAM_API_BASE_URL": emulator.url}
    done = cli("telegram", "set-webhook", "https://my-catfacts-bot.herokuapp.com/webhook/telegram", **env)
    assert done.returncode == 0, done.stderr
    assert telegram.webhook_url == "https://my-catfacts-bot.herokuapp.com/webhook/telegram"
    info = cli("telegram", "info", "--json", **env)
    assert info.returncode == 0 and json.loads(info.stdout)["ok"] is True
    assert DEMO_SETTINGS["TELEGRAM_BOT_TOKEN"] not in done.stdout + done.stderr + info.stdout
    off = cli("telegram", "info")  # without its settings the channel is off: a usage error naming them
    assert off.returncode == 2 and "TELEGRAM_BOT_TOKEN" in off.stderr
