"""LINE (issue 14) through the HTTP layer: the emulator plays LINE (its events signed with the
channel secret, its reply and push API, its set-up API); the bot runs in this process on a
loopback port, and its reply job is run here (``drain``).

Payloads in tests/payloads/line/ are LINE's published samples: the events of
line-bot-sdk-python's tests/v3/text/webhook.json and the verify request of
developers.line.biz/en/docs/messaging-api/verify-webhook-url/, with ids substituted (a
``destination`` of LINE's documented form, one ``webhookEventId`` per event) and, where a test
says so, the timestamp and reply token of a live event.
"""
import json
import logging
import time
from types import SimpleNamespace

import pytest
from decouple import Config, RepositoryEnv
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from api_config import SettingsError, load_settings
from catbot.channels import PlatformRefused
from catbot.channels.line import REPLY_TOKEN_SECONDS, LineChannel, LineSender, is_own_message, messaging_api
from catbot.replies import FACT_OPENERS, HELP_TEXT, START_TEXT, STOP_TEXT
from catbot.runtime import build_runtime
from catbot.web import create_app
from helpers import PAYLOADS, ServerThread, captured, drain, runtime_of
from x_emulator.platforms.line import ReplyToken, sign

SECRET = "0123456789abcdef0123456789abcdef"
TOKEN = "test-line-channel-access-token-0001"
USER = "3000000901"  # the emulator's name for a simulated user (it gives them a LINE id)
CONSOLE = {"LINE_CHANNEL_SECRET": SECRET, "LINE_CHANNEL_ACCESS_TOKEN": TOKEN}  # what the emulator shares with the bot


def line_values(emulator, **more: str) -> dict[str, str]:
    return {**CONSOLE, "LINE_API_BASE_URL": emulator.url, "LINE_PUSH_FALLBACK": "false", **more}


@pytest.fixture
def make_bot(emulator, settings, serve):
    """The bot with LINE on (the emulator set up to deliver to it), served on loopback; its
    clock can run ahead of the emulator's (``bot.later``) to age reply tokens and pass waits."""
    def make(**values: str):
        bot = serve(settings.replace(channels={"line": line_values(emulator, **values)}))
        bot.line = emulator.platform("line")
        bot.line.configure(bot.url + "/webhook/line", CONSOLE)
        bot.url += "/webhook/line"
        return bot
    return make


@pytest.fixture
def bot(make_bot):
    return make_bot()


def replies(emulator, user: str = USER) -> list[str]:
    return [m.text for m in emulator.sent_to(user) if m.channel == "line"]


def say(bot, text: str, user: str = USER, **options) -> str:
    event_id, answer = bot.line.deliver(user, text, **options)
    assert answer.status_code == 200
    return event_id


def recorded(bot) -> int:
    """Messages the bot recorded so far (in the journal or the store)."""
    runtime = runtime_of(bot.app)
    runtime.upkeep.sweep()  # imports the journal
    return runtime.store.day_counts(time.strftime("%Y-%m-%d", time.gmtime()))[0]


def post(bot, body: bytes, headers: dict[str, str] | None = None, secret: str = SECRET):
    """POST ``body`` to the bot's LINE webhook through the Flask test client, signed as LINE does
    unless ``headers`` are given."""
    headers = {"X-Line-Signature": sign(secret, body)} if headers is None else headers
    return bot.client.post("/webhook/line", data=body, headers={"Content-Type": "application/json", **headers})


def sample(name: str, bot=None) -> bytes:
    """A published sample as a body. With ``bot``, made live: each event's timestamp now, and
    its reply token known to the emulator (for the sample's user)."""
    delivery = json.loads((PAYLOADS / "line" / name).read_text())
    if bot is not None:
        for event in delivery["events"]:
            event["timestamp"] = int(time.time() * 1000)
            user = event["source"].get("userId")
            if user and "replyToken" in event:
                bot.line.line_id(user)
                bot.line.tokens[event["replyToken"]] = ReplyToken(user, time.time())
    return json.dumps(delivery).encode()


SAMPLE_USER = "U206d25c2ea6bd87c17655609a1c37cb8"


# -- messages and commands ------------------------------------------------------------------------
def test_the_published_text_message_sample_gets_a_cat_fact_as_a_reply(bot, emulator):
    assert post(bot, sample("text_message.json", bot)).status_code == 200
    drain(bot.app)
    [reply] = replies(emulator, SAMPLE_USER)
    assert reply.split("\n", 1)[0] in FACT_OPENERS
    assert bot.line.replies == 1 and bot.line.pushes == 0


def test_help_stop_and_start_work_over_line(bot, emulator):
    for text in ("help", "stop", "hi", "start"):
        say(bot, text)
        drain(bot.app)
    assert replies(emulator) == [HELP_TEXT, STOP_TEXT, START_TEXT]  # "hi" while stopped: silence


@pytest.mark.parametrize("name", ["sticker_message.json", "image_message.json"])
def test_a_sticker_or_an_image_asks_for_a_fact(bot, emulator, name):
    assert post(bot, sample(name, bot)).status_code == 200
    drain(bot.app)
    [reply] = replies(emulator, SAMPLE_USER)
    assert reply.split("\n", 1)[0] in FACT_OPENERS


def test_a_sticker_of_a_kind_newer_than_the_sdk_is_still_answered(bot, emulator):
    """Why the bot reads events itself: the SDK's models refuse a whole event for a value they
    do not know (here a sticker resource type), and that user would never get an answer."""
    delivery = json.loads(sample("sticker_message.json", bot))
    delivery["events"][0]["message"]["stickerResourceType"] = "PER_STICKER_TEXT_2030"
    del delivery["events"][0]["message"]["quoteToken"]
    assert post(bot, json.dumps(delivery).encode()).status_code == 200
    drain(bot.app)
    assert len(replies(emulator, SAMPLE_USER)) == 1


def test_several_messages_get_one_reply_with_the_newest_token(bot, emulator):
    say(bot, "hi")
    say(bot, "are you there?")
    drain(bot.app)
    assert len(replies(emulator)) == 1 and bot.line.replies == 1


def test_a_new_friend_gets_a_fact_and_an_unfollow_is_a_silent_stop(bot, emulator):
    assert bot.line.deliver_other("follow", USER)[1].status_code == 200
    drain(bot.app)
    assert len(replies(emulator)) == 1
    assert bot.line.deliver_other("unfollow", USER)[1].status_code == 200
    drain(bot.app)
    say(bot, "hello?")  # LINE would not deliver this from a blocker; were it to, silence: opted out
    drain(bot.app)
    assert len(replies(emulator)) == 1 and bot.line.pushes == 0 and bot.line.rejected == 0
    bot.line.deliver_other("follow", USER)  # unblocked: welcomed back, as "start"
    drain(bot.app)
    assert replies(emulator)[1:] == [START_TEXT]


def test_a_question_then_an_unfollow_in_one_batch_sends_nothing(bot, emulator):
    say(bot, "a fact please")
    bot.line.deliver_other("unfollow", USER)
    drain(bot.app)
    assert replies(emulator) == [] and bot.line.replies == 0
    assert runtime_of(bot.app).backlog()["pending_messages"] == 0


# -- de-duplication ---------------------------------------------------------------------------------
@pytest.mark.parametrize("as_redelivery", [False, True], ids=["same-bytes", "line-redelivery"])
def test_a_redelivered_event_gets_no_second_reply(bot, emulator, as_redelivery):
    event_id = say(bot, "hi")
    drain(bot.app)
    assert bot.line.redeliver(event_id, as_redelivery=as_redelivery).status_code == 200
    drain(bot.app)
    assert len(replies(emulator)) == 1 and recorded(bot) == 1


def test_the_published_redelivery_sample_is_recognised_as_the_same_event(bot, emulator):
    post(bot, sample("text_message.json", bot))
    drain(bot.app)
    assert post(bot, sample("redelivered_message.json", bot)).status_code == 200
    drain(bot.app)
    assert len(replies(emulator, SAMPLE_USER)) == 1 and recorded(bot) == 1


# -- what is acknowledged and never answered ---------------------------------------------------------
@pytest.mark.parametrize("name", ["other_events.json", "group_and_room_messages.json", "verify.json"])
def test_system_events_group_chats_and_the_verify_request_are_acknowledged_and_not_answered(bot, emulator, name):
    with captured("catbot.web") as logs:
        assert post(bot, sample(name, bot)).status_code == 200
    drain(bot.app)
    assert emulator.sent == [] and recorded(bot) == 0
    if name == "other_events.json":
        [line] = [r.getMessage() for r in logs.records if "delivery.accepted" in r.getMessage()]
        types = "postback,join,leave,memberJoined,memberLeft,unsend,videoPlayComplete,beacon,accountLink,undefined"
        assert types in line


def test_the_emulators_system_events_are_not_answered(bot, emulator):
    for event_type in ("postback", "join", "memberJoined", "unsend", "beacon", "accountLink", "videoPlayComplete"):
        assert bot.line.deliver_other(event_type, USER)[1].status_code == 200
    drain(bot.app)
    assert emulator.sent == [] and recorded(bot) == 0


def test_standby_events_are_not_answered(bot, emulator):
    """``mode: standby``: another channel (a chat module) has the conversation."""
    say(bot, "hi", mode="standby")
    drain(bot.app)
    assert emulator.sent == [] and recorded(bot) == 0


def test_an_event_from_the_bot_itself_is_never_answered(bot, emulator):
    assert is_own_message("U" + "a" * 32, "U" + "a" * 32) and not is_own_message("U" + "a" * 32, "U" + "b" * 32)
    delivery = json.loads(sample("text_message.json", bot))
    delivery["events"][0]["source"]["userId"] = delivery["destination"]
    assert post(bot, json.dumps(delivery).encode()).status_code == 200
    drain(bot.app)
    assert emulator.sent == [] and recorded(bot) == 0


# -- verification: one test per way of failing ---------------------------------------------------------
@pytest.fixture
def rejections():
    with captured("catbot.web", logging.WARNING) as handler:
        yield handler


def assert_refused(bot, emulator, rejections, answer, status: int, reason: str) -> None:
    assert answer.status_code == status and answer.get_json() == {"error": reason}
    [line] = rejections.lines
    assert "event=delivery.rejected" in line and "channel=line" in line and reason in line
    drain(bot.app)
    assert recorded(bot) == 0 and emulator.sent == []


def test_a_delivery_without_a_signature_is_refused_401(bot, emulator, rejections):
    answer = post(bot, sample("text_message.json", bot), headers={})
    assert_refused(bot, emulator, rejections, answer, 401, "missing signature")


def test_a_signature_that_is_not_a_sha256_in_base64_is_refused_401(bot, emulator, rejections):
    answer = post(bot, sample("text_message.json", bot), headers={"X-Line-Signature": "sha256=abc"})
    assert_refused(bot, emulator, rejections, answer, 401, "malformed signature")


def test_a_delivery_signed_with_another_secret_is_refused_403(bot, emulator, rejections):
    answer = post(bot, sample("text_message.json", bot), secret="f" * 32)
    assert_refused(bot, emulator, rejections, answer, 403, "invalid signature")


def test_a_body_changed_after_signing_is_refused_403(bot, emulator, rejections):
    body = sample("text_message.json", bot)
    answer = post(bot, body.replace(b"Hello, world", b"help"), headers={"X-Line-Signature": sign(SECRET, body)})
    assert_refused(bot, emulator, rejections, answer, 403, "invalid signature")


def test_a_body_that_is_not_utf8_is_refused_403(bot, emulator, rejections):
    body = b'{"destination": "U' + b"\xff" * 32 + b'", "events": []}'
    assert_refused(bot, emulator, rejections, post(bot, body), 403, "invalid signature")


def test_the_emulators_unsigned_delivery_is_refused_through_the_server(bot, emulator):
    """The same door over a real socket: the emulator posts without ``X-Line-Signature``."""
    answer = bot.line.post(sample("text_message.json", bot), bot.url, signature="")
    assert answer.status_code == 401 and recorded(bot) == 0


# -- malformed deliveries: a clear 4xx, or skipped, never a 5xx ----------------------------------------
def test_a_signed_body_that_is_no_line_delivery_gets_400(bot, emulator):
    for body in (b"not json", b"[]", b'{"destination": "U0"}', b'{"events": {}}', b'{"events": [{"type": "message"}]}',
                 b'{"destination": 5, "events": [1]}', b'{"events": [' * 5000):
        answer = post(bot, body)
        assert answer.status_code == 400 and "error" in answer.get_json(), body[:40]
    assert recorded(bot) == 0


BREAKAGES = [
    {"webhookEventId": None}, {"webhookEventId": "has spaces"}, {"timestamp": "yesterday"}, {"replyToken": 5},
    {"source": {"type": "user"}}, {"source": {"type": "user", "userId": "not-a-line-id"}}, {"message": "hi"},
    {"message": {"type": "text", "text": 5}}, {"type": None}, {"timestamp": True}, {"message": {"text": "hi"}},
]


def test_broken_events_are_skipped_and_counted_and_the_good_one_beside_them_answered(bot, emulator):
    good = json.loads(sample("text_message.json", bot))["events"][0]
    delivery = json.loads(sample("sticker_message.json", bot))
    delivery["events"] = [{**delivery["events"][0], **breakage} for breakage in BREAKAGES] + [good, "an event?"]
    with captured("catbot.web") as logs:
        assert post(bot, json.dumps(delivery).encode()).status_code == 200
    drain(bot.app)
    assert len(replies(emulator, SAMPLE_USER)) == 1
    assert any(f"malformed={len(BREAKAGES) + 1}" in line for line in logs.lines)


SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from(
    ["message", "follow", "unfollow", "user", "group", "active", "standby", "text", "U" + "a" * 32])
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["type", "mode", "source", "userId", "webhookEventId", "timestamp", "replyToken", "message",
                     "text", "events", "destination"]), inner, max_size=6), max_leaves=20)


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(JSON, max_size=4), destination=SCALARS)
def test_no_signed_body_gets_a_5xx(bot, events, destination):
    answer = post(bot, json.dumps({"destination": destination, "events": events}).encode())
    assert answer.status_code in (200, 400)


# -- the reply token, the push fallback ---------------------------------------------------------------
def test_a_reply_whose_token_expired_by_the_clock_is_dropped_with_a_log_line(bot, emulator):
    say(bot, "hi")
    bot.later[0] = REPLY_TOKEN_SECONDS  # the reply job got to it a minute late
    with captured("catbot.replier") as logs:
        drain(bot.app)
    assert emulator.sent == [] and bot.line.replies == 0 and bot.line.pushes == 0
    [line] = [x for x in logs.lines if "reply.rejected" in x]
    assert "expired" in line and "LINE_PUSH_FALLBACK is off" in line
    assert runtime_of(bot.app).backlog()["pending_messages"] == 0


def test_with_push_fallback_a_late_reply_is_pushed_once(make_bot, emulator):
    bot = make_bot(LINE_PUSH_FALLBACK="true")
    say(bot, "hi")
    bot.later[0] = REPLY_TOKEN_SECONDS
    with captured("catbot.line") as logs:
        drain(bot.app)
    assert len(replies(emulator)) == 1 and bot.line.replies == 0 and bot.line.pushes == 1
    [line] = logs.lines  # a push spends the monthly quota: each one is in the log
    assert "event=line.pushing" in line and "expired" in line


@pytest.mark.parametrize("fallback, pushed", [("true", 1), ("false", 0)])
def test_a_reply_token_line_calls_invalid_is_pushed_only_with_the_fallback(make_bot, emulator, fallback, pushed):
    bot = make_bot(LINE_PUSH_FALLBACK=fallback)
    bot.line.token_ttl = 0.0  # LINE's minute is not a promise: the token is gone already
    say(bot, "hi")
    drain(bot.app)
    assert bot.line.replies == 1 and bot.line.pushes == pushed and len(replies(emulator)) == pushed


def test_a_reply_that_went_out_but_whose_answer_was_lost_is_not_pushed_again(make_bot, emulator):
    """LINE sent the reply, then answered 500: the retry finds the token used, and does not
    push the same text a second time."""
    bot = make_bot(LINE_PUSH_FALLBACK="true")
    bot.line.faults.errors_5xx_after = 1
    say(bot, "hi")
    drain(bot.app)
    bot.later[0] = 20.0  # past the back-off, well within the token's minute
    drain(bot.app)
    assert len(replies(emulator)) == 1 and bot.line.replies == 2 and bot.line.pushes == 0
    assert runtime_of(bot.app).backlog()["pending_messages"] == 0


def test_a_push_whose_answer_was_lost_is_retried_with_its_retry_key_and_not_doubled(make_bot, emulator):
    bot = make_bot(LINE_PUSH_FALLBACK="true")
    say(bot, "hi")
    bot.later[0] = REPLY_TOKEN_SECONDS
    bot.line.faults.errors_5xx_after = 1
    drain(bot.app)
    bot.later[0] += 20.0
    with captured("catbot.replier") as logs:
        drain(bot.app)
    assert len(replies(emulator)) == 1 and bot.line.pushes == 1
    assert any("reply.sent" in line and "status=409" in line for line in logs.lines)


def test_a_push_to_a_user_line_cannot_reach_is_dropped(make_bot, emulator):
    bot = make_bot(LINE_PUSH_FALLBACK="true")
    bot.line.faults.unreachable.add(USER)
    say(bot, "hi")
    bot.later[0] = REPLY_TOKEN_SECONDS
    with captured("catbot.replier") as logs:
        drain(bot.app)
    assert emulator.sent == [] and any("reply.rejected" in x and "Failed to send messages" in x for x in logs.lines)
    assert runtime_of(bot.app).backlog()["pending_messages"] == 0


def test_a_push_beyond_the_monthly_quota_is_dropped_not_retried(make_bot, emulator):
    bot = make_bot(LINE_PUSH_FALLBACK="true")
    bot.line.push_quota = 0
    say(bot, "hi")
    bot.later[0] = REPLY_TOKEN_SECONDS
    drain(bot.app)
    assert emulator.sent == [] and runtime_of(bot.app).backlog()["pending_messages"] == 0


# -- LINE's limits and failures ---------------------------------------------------------------------
def test_a_429_defers_the_reply_which_goes_out_later_once(bot, emulator):
    bot.line.faults.burst_429 = 1
    say(bot, "hi")
    with captured("catbot.replier") as logs:
        drain(bot.app)
    assert replies(emulator) == [] and any("reply.rate_limited" in x for x in logs.lines)
    assert runtime_of(bot.app).backlog()["pending_messages"] == 1
    drain(bot.app)  # not yet: the wait is not over
    assert bot.line.replies == 1
    bot.later[0] = 15.0  # past the wait, still within the token's minute
    drain(bot.app)
    assert len(replies(emulator)) == 1 and bot.line.replies == 2
    drain(bot.app)
    assert len(replies(emulator)) == 1 and runtime_of(bot.app).backlog()["pending_messages"] == 0


def test_a_5xx_is_retried_and_the_reply_goes_out_once(bot, emulator):
    bot.line.faults.errors_5xx = 1
    say(bot, "hi")
    drain(bot.app)
    assert replies(emulator) == []
    bot.later[0] = 20.0
    drain(bot.app)
    assert len(replies(emulator)) == 1 and bot.line.replies == 2


def test_a_timeout_is_a_retry_not_a_loss(emulator, settings):
    """The sender's own timeout (short here): the call is abandoned and tried again later."""
    values = line_values(emulator)
    sender = LineSender(messaging_api(emulator.url, TOKEN), False, timeout=0.3)
    line_settings = settings.replace(channels={"line": values})
    later = [0.0]
    app = create_app(line_settings, build_runtime(line_settings, senders={"line": sender},
                                                  clock=lambda: time.time() + later[0]))
    sender.clock = lambda: time.time() + later[0]
    server = ServerThread(app)
    try:
        line = emulator.platform("line")
        line.configure(server.url + "/webhook/line", CONSOLE)
        line.faults.latency = 0.6
        line.deliver(USER, "hi")
        drain(app)
        line.faults.latency = 0.0
        time.sleep(0.5)  # the abandoned call lands meanwhile: LINE did send it
        later[0] = 20.0
        drain(app)
        assert len(replies(emulator)) == 1 and line.replies == 2  # the retry found the token used
    finally:
        server.stop()


def test_a_wrong_access_token_is_a_rejection_in_lines_words(make_bot, emulator):
    bot = make_bot(LINE_CHANNEL_ACCESS_TOKEN="not-the-token")
    say(bot, "hi")
    with captured("catbot.replier") as logs:
        drain(bot.app)
    assert emulator.sent == []
    [line] = [x for x in logs.lines if "reply.rejected" in x]
    assert "status=401" in line and "Authentication failed" in line and "not-the-token" not in line


# -- no text at rest or in logs ------------------------------------------------------------------------
def test_no_message_text_is_written_or_logged(bot, emulator, tmp_path):
    words = "marmalade-pangolin-quartz"
    with captured("catbot", logging.DEBUG) as logs:
        say(bot, f"hello {words}")
        drain(bot.app)
    assert len(replies(emulator)) == 1 and any("event=reply.sent" in line for line in logs.lines)
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert b'"reply_token"' in written  # the journal line was found: the search can find things
    assert words.encode() not in written and all(words not in line for line in logs.lines)


# -- settings ---------------------------------------------------------------------------------------------
X_KEYS = {"CONSUMER_KEY": "ck", "CONSUMER_SECRET": "cs", "ACCESS_TOKEN": "2000000001-at", "ACCESS_TOKEN_SECRET": "ats"}


def config(tmp_path, values):
    env = tmp_path / ".env"
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return Config(RepositoryEnv(str(env)))


@pytest.mark.parametrize("given, missing", [("LINE_CHANNEL_SECRET", "LINE_CHANNEL_ACCESS_TOKEN"),
                                            ("LINE_CHANNEL_ACCESS_TOKEN", "LINE_CHANNEL_SECRET")])
def test_half_of_lines_settings_stop_the_bot_with_one_message_naming_the_other(tmp_path, given, missing):
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, {**X_KEYS, given: "very-secret-value"}))
    message = str(err.value)
    assert f"line needs {missing}" in message and "very-secret-value" not in message


def test_lines_settings_alone_switch_it_on_with_defaults(tmp_path):
    settings = load_settings(config(tmp_path, CONSOLE))
    assert not settings.x_enabled
    assert settings.channels["line"] == {**CONSOLE, "LINE_API_BASE_URL": "https://api.line.me",
                                         "LINE_PUSH_FALLBACK": "false"}
    channel = LineChannel(settings.channels["line"])
    assert SECRET not in repr(channel) and TOKEN not in repr(channel) and not channel.push_fallback


@pytest.mark.parametrize("name, value", [("LINE_PUSH_FALLBACK", "perhaps"), ("LINE_API_BASE_URL", "ftp://x")])
def test_a_bad_optional_setting_stops_the_bot_with_one_message_naming_it(tmp_path, name, value):
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, {**CONSOLE, name: value}))
    assert name in str(err.value) and SECRET not in str(err.value) and TOKEN not in str(err.value)


def test_healthz_shows_no_line_secret(bot):
    text = bot.client.get("/healthz").get_data(as_text=True)
    assert SECRET not in text and TOKEN not in text


def test_line_off_means_no_line_route(client):
    assert client.post("/webhook/line", data=b"{}").status_code == 404


# -- set-up: register_webhook.py line set-endpoint | test | info -----------------------------------------
class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.warnings: list[str] = []
        self.result: dict = {}
        self.changed = False

    def say(self, line: str) -> None:
        self.lines.append(line)

    def warn(self, line: str) -> None:
        self.warnings.append(line)


def setup(channel: LineChannel, command: str, **args) -> Report:
    report = Report()
    channel.run_setup(command, SimpleNamespace(**args), report)
    return report


def test_set_endpoint_then_test_then_info(bot, emulator):
    channel = LineChannel(line_values(emulator))
    bot.line.endpoint = ""
    report = setup(channel, "set-endpoint", url=bot.url)
    assert report.changed and bot.line.endpoint == bot.url
    assert not setup(channel, "set-endpoint", url=bot.url).changed  # again: nothing to change
    report = setup(channel, "test")
    assert report.result == {"success": True, "statusCode": 200, "reason": "OK", "detail": "200"}
    assert bot.line.tests == 1
    assert setup(channel, "info").result == {"endpoint": bot.url, "active": True}


def test_a_test_the_bot_refuses_says_why_and_what_to_check(bot, emulator):
    channel = LineChannel(line_values(emulator))
    bot.line.secret = "f" * 32  # the console's secret is not the bot's
    with pytest.raises(PlatformRefused) as refused:
        setup(channel, "test")
    assert refused.value.status == 403 and "LINE_CHANNEL_SECRET" in refused.value.advice


def test_a_test_of_an_unreachable_url_says_so(bot, emulator):
    with pytest.raises(PlatformRefused) as refused:
        setup(LineChannel(line_values(emulator)), "test", url="http://127.0.0.1:9/webhook/line")
    assert refused.value.status is None and "could_not_connect" in str(refused.value)


def test_set_endpoint_refuses_a_plain_http_url_with_advice(bot, emulator):
    with pytest.raises(PlatformRefused) as refused:
        setup(LineChannel(line_values(emulator)), "set-endpoint", url="http://example.com/webhook/line")
    assert refused.value.status == 400 and "https://" in refused.value.advice


def test_a_wrong_access_token_in_set_up_names_the_setting_and_never_the_token(bot, emulator):
    with pytest.raises(PlatformRefused) as refused:
        setup(LineChannel(line_values(emulator, LINE_CHANNEL_ACCESS_TOKEN="wrong-token-x")), "info")
    assert refused.value.status == 401 and "LINE_CHANNEL_ACCESS_TOKEN" in refused.value.advice
    assert "wrong-token-x" not in str(refused.value) + refused.value.advice


def test_an_unreachable_line_api_is_a_refusal_without_a_status(emulator):
    with pytest.raises(PlatformRefused) as refused:
        setup(LineChannel(line_values(emulator, LINE_API_BASE_URL="http://127.0.0.1:9")), "info")
    assert refused.value.status is None and "LINE_API_BASE_URL" in refused.value.advice


def test_the_emulators_control_routes_deliver_and_set_up(bot, emulator):
    import requests

    http = requests.Session()
    http.trust_env = False
    assert http.post(f"{emulator.url}/_emulator/line/setup", json={"webhook_url": bot.url, "settings": CONSOLE}
                     ).status_code == 200
    answer = http.post(f"{emulator.url}/_emulator/line/deliver", json={"sender_id": USER, "text": "help"}).json()
    assert answer["webhook_status"] == 200 and len(answer["event_id"]) == 26
    drain(bot.app)
    assert replies(emulator) == [HELP_TEXT]
    assert http.post(f"{emulator.url}/_emulator/line/deliver",
                     json={"sender_id": USER, "event_type": "nonsense"}).status_code == 400
