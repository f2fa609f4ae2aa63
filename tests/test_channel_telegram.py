"""Telegram (issue 14) through the HTTP layer: the emulator plays the Bot API and its users,
delivering to the bot served on loopback with the secret header; the reply job runs in-process.

Payloads in tests/payloads/telegram/ are Telegram's published update samples, from
https://core.telegram.org/bots/webhooks ("Testing your bot with updates"), unchanged: user and
chat 1111111, update_id 10000. They predate the ``is_bot`` field, and the first has no chat type.
"""
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from decouple import Config, RepositoryEnv
from hypothesis import given, settings as hsettings, strategies as st

from api_config import SettingsError, load_settings
from catbot.channels import PlatformRefused
from catbot.channels.telegram import SECRET_HEADER, TelegramChannel, command_intent, parse_update, send_result
from catbot.outbound import Outcome
from catbot.replies import FACT_OPENERS, HELP_TEXT, START_TEXT, STOP_TEXT, Intent
from catbot.runtime import build_runtime
from catbot.web import MAX_BODY, create_app
from helpers import PAYLOADS, ServerThread, captured, drain, runtime_of
from localrun.processes import free_port
from register_webhook import Report

TOKEN = "6000000001:AAFtestTokenNotReal-0123456789abcdef"
SECRET = "test-telegram-secret_0001"
BOT = "6000000001"
USER = "3000000901"
SAMPLES = PAYLOADS / "telegram"


def sample(name: str) -> bytes:
    return (SAMPLES / f"{name}.json").read_bytes()


def values(base_url: str, **changes: str) -> dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_SECRET_TOKEN": SECRET, "TELEGRAM_API_BASE_URL": base_url,
            **changes}


@pytest.fixture
def bot(emulator, settings):
    """The bot with Telegram on (X too), served on loopback; the emulator knows the bot and
    delivers to it. ``later``: seconds the bot's clock runs ahead (to pass a retry_after)."""
    tg = settings.replace(channels={"telegram": values(emulator.url)})
    later = [0.0]
    app = create_app(tg, build_runtime(tg, clock=lambda: time.time() + later[0]))
    server = ServerThread(app)
    state = emulator.platform("telegram")
    state.setup(server.url + "/webhook/telegram", values(emulator.url))
    yield SimpleNamespace(app=app, client=app.test_client(), state=state, later=later, settings=tg,
                          url=server.url + "/webhook/telegram", tmp=Path(tg.sqlite_path).parent)
    server.stop()


def say(bot, text: str | None, user: str = USER, media: bool = False) -> str:
    update_id, answer = bot.state.deliver(user, text, media=media)
    assert answer.status_code == 200
    drain(bot.app)
    return update_id


def post(bot, body: bytes, headers: dict[str, str] | None = None):
    """A delivery through the Flask test client, with the right secret unless ``headers`` say otherwise."""
    return bot.client.post("/webhook/telegram", data=body,
                           headers={"Content-Type": "application/json", SECRET_HEADER: SECRET} if headers is None
                           else headers)


def pending(bot) -> int:
    drain(bot.app)
    return runtime_of(bot.app).backlog()["pending_messages"]


# -- conversations ----------------------------------------------------------------------------------------
def test_a_message_gets_a_cat_fact_in_its_chat(bot, emulator):
    say(bot, "hello there")
    [reply] = emulator.sent
    assert (reply.participant_id, reply.channel) == (USER, "telegram")
    assert reply.text.split("\n", 1)[0] in FACT_OPENERS


def test_slash_commands_and_words_work_as_help_stop_and_start(bot):
    for text in ("/help", "/stop", "hi", "/start", "help", "/help@catfacts_bot"):
        say(bot, text)
    assert bot.state.replies(USER) == [HELP_TEXT, STOP_TEXT, START_TEXT, HELP_TEXT, HELP_TEXT]  # "hi": silence


def test_start_from_a_new_user_is_answered_with_a_fact(bot):
    """Telegram sends /start when a user first opens the bot: the documented choice is a fact."""
    say(bot, "/start")
    [reply] = bot.state.replies(USER)
    assert reply.split("\n", 1)[0] in FACT_OPENERS


@pytest.mark.parametrize("text, intent", [
    ("/start", Intent.START), ("/help", Intent.HELP), ("/stop", Intent.STOP), ("/HELP", Intent.HELP),
    ("/help@YourBot", Intent.HELP), ("/start deep-link-payload", Intent.START), ("/stop@x_bot now", Intent.STOP),
    ("/settings", None), ("hello /help", None), ("/help@", None), ("/", None), ("", None),
])
def test_commands_are_the_first_word_with_or_without_the_bots_name(text, intent):
    assert command_intent(text) is intent


def test_a_photo_without_a_caption_asks_for_a_fact(bot):
    say(bot, None, media=True)
    [reply] = bot.state.replies(USER)
    assert reply.split("\n", 1)[0] in FACT_OPENERS


def test_a_redelivered_update_gets_no_second_reply(bot):
    update_id = say(bot, "hi")
    assert bot.state.redeliver(update_id).status_code == 200
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1


def test_the_per_user_cap_holds_on_telegram(emulator, settings):
    tg = settings.replace(channels={"telegram": values(emulator.url)}, replies_per_user_per_hour=2)
    app = create_app(tg)
    state = emulator.platform("telegram")
    state.setup(None, values(emulator.url))
    for text in ("one", "two", "three"):
        state.chats.add(USER)
        assert app.test_client().post("/webhook/telegram", data=json.dumps(state.update("message", state.message(
            USER, text))), headers={SECRET_HEADER: SECRET}).status_code == 200
        drain(app)
    assert len(state.replies(USER)) == 2


def test_no_message_text_is_kept_or_logged(bot):
    with captured("catbot") as logs:
        say(bot, "purple-walrus-sonata is my password")
    written = b"".join(p.read_bytes() for p in bot.tmp.rglob("*") if p.is_file())
    assert b"purple-walrus" not in written and not any("purple-walrus" in line for line in logs.lines)
    assert any("reply.sent" in line for line in logs.lines)


# -- verification: each failure mode, through HTTP, refused with nothing recorded ----------------------------
@pytest.fixture
def refused(bot):
    """Post ``message_text`` with the given headers; the answer, after checking nothing was recorded or sent
    and one line was logged."""
    def check(headers: dict[str, str]):
        with captured("catbot.web") as logs:
            answer = post(bot, sample("message_text"), headers)
        assert runtime_of(bot.app).backlog()["journal_bytes"] == 0 and pending(bot) == 0
        assert bot.state.em.sent == [] and bot.state.send_attempts == 0
        [line] = logs.lines
        assert "event=delivery.rejected" in line and "channel=telegram" in line and SECRET not in line
        return answer
    return check


def test_a_delivery_without_the_secret_header_is_refused_401(refused):
    answer = refused({"Content-Type": "application/json"})
    assert (answer.status_code, answer.get_json()) == (401, {"error": "missing secret token"})


def test_a_delivery_with_an_empty_secret_header_is_refused_401(refused):
    assert refused({SECRET_HEADER: ""}).status_code == 401


def test_a_delivery_with_a_wrong_secret_is_refused_403(refused):
    answer = refused({SECRET_HEADER: "test-telegram-secret_0002"})
    assert (answer.status_code, answer.get_json()) == (403, {"error": "invalid secret token"})


def test_a_delivery_with_the_secret_in_another_case_is_refused_403(refused):
    assert refused({SECRET_HEADER: SECRET.upper()}).status_code == 403


def test_a_delivery_with_the_secret_as_a_prefix_of_the_header_is_refused_403(refused):
    assert refused({SECRET_HEADER: SECRET + "x"}).status_code == 403


def test_a_delivery_signed_with_the_bot_token_instead_of_the_secret_is_refused_403(refused):
    assert refused({SECRET_HEADER: TOKEN.split(":")[1]}).status_code == 403


# -- the platform's other rules: its published samples, echoes and system events ----------------------------
@pytest.mark.parametrize("name, intent", [
    ("message_text", Intent.START), ("message_text_untyped_chat", Intent.START), ("forwarded_message", Intent.START),
    ("forwarded_channel_message", Intent.START), ("message_with_reply", Intent.START),
    ("message_with_entities", Intent.FACT), ("message_with_audio", Intent.FACT), ("voice_message", Intent.FACT),
    ("message_with_document", Intent.FACT),
    ("edited_message", None), ("inline_query", None), ("chosen_inline_result", None), ("callback_query", None),
])
def test_telegrams_published_samples_are_read_as_published(name, intent):
    parsed = parse_update(json.loads(sample(name)), BOT, None)
    assert parsed.malformed == 0 and parsed.own == 0
    if intent is None:
        assert parsed.messages == [] and parsed.other == [name]
    else:
        [m] = parsed.messages
        assert (m.kind, m.for_user_id, m.user_id, m.event_id, m.intent, m.created_ms, m.payload) == \
            ("telegram", f"telegram:{BOT}", "1111111", "10000", intent, 1441645532000, None)


def test_a_published_sample_from_a_user_who_never_started_the_bot_is_recorded_and_its_reply_rejected(bot, emulator):
    """The sample's user is not a chat the emulator knows: Telegram answers 400 chat not found,
    which is final (no retry), and the message is no longer pending."""
    with captured("catbot.replier") as logs:
        assert post(bot, sample("message_with_audio")).status_code == 200
        assert pending(bot) == 0
    assert bot.state.send_attempts == 1 and emulator.rejected[-1]["reason"] == "Bad Request: chat not found"
    assert any("event=reply.rejected" in line and "status=400" in line for line in logs.lines)


@pytest.mark.parametrize("event", ["edited_message", "channel_post", "callback_query", "my_chat_member",
                                   "bot_message", "own_message", "group_message", "service_message"])
def test_echoes_and_system_events_are_acknowledged_and_never_answered(bot, event):
    bot.state.chats.add(USER)
    with captured("catbot.web") as logs:
        answer = bot.state.post(bot.state.event(event, USER), url=bot.url)  # as if every type were allowed
    assert answer.status_code == 200 and pending(bot) == 0
    assert bot.state.send_attempts == 0
    [line] = logs.lines
    assert ("own=1" if event == "own_message" else "activity=") in line and "new=" not in line


def test_a_webhook_set_for_messages_only_gets_nothing_else(bot):
    assert bot.state.post(bot.state.event("callback_query", USER)) is None  # allowed_updates: ["message"]


# -- rate limits and failures of the send ---------------------------------------------------------------------
def test_a_429_defers_the_reply_by_retry_after_and_loses_or_doubles_nothing(bot):
    bot.state.faults.rate_limited, bot.state.faults.retry_after = 1, 30
    with captured("catbot.replier") as logs:
        say(bot, "hi")
    assert bot.state.replies(USER) == [] and runtime_of(bot.app).backlog()["pending_messages"] == 1
    assert any("event=reply.rate_limited" in line and "status=429" in line for line in logs.lines)
    bot.later[0] = 20.0
    drain(bot.app)  # before retry_after: nothing is tried
    assert bot.state.send_attempts == 1
    bot.later[0] = 31.0
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1 and bot.state.send_attempts == 2
    bot.later[0] = 400.0
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1 and pending(bot) == 0


def test_telegrams_own_per_chat_limit_is_a_429_the_reply_waits_out(bot):
    bot.state.per_chat = 0  # any send to the chat is one too many this second
    say(bot, "hi")
    assert bot.state.replies(USER) == [] and bot.state.send_attempts == 1
    bot.state.per_chat = 5
    bot.later[0] = 2.0  # the 429 said retry after 1
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1


def test_a_user_who_blocked_the_bot_is_not_retried(bot):
    bot.state.faults.blocked.add(USER)
    say(bot, "hi")
    bot.later[0] = 600.0
    drain(bot.app)
    assert bot.state.send_attempts == 1 and pending(bot) == 0
    assert bot.state.em.rejected[-1]["reason"] == "Forbidden: bot was blocked by the user"


def test_a_5xx_is_retried_and_then_the_reply_goes_out_once(bot):
    bot.state.faults.errors_5xx = 1
    say(bot, "hi")
    assert bot.state.replies(USER) == [] and pending(bot) == 1
    bot.later[0] = 5.0  # past the first backoff (2 s, with jitter)
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1 and bot.state.send_attempts == 2


@pytest.mark.parametrize("status, body, headers, outcome, wait", [
    (429, {"ok": False, "error_code": 429, "parameters": {"retry_after": 5}}, {}, Outcome.RATE_LIMITED, 5),
    (429, {}, {"Retry-After": "7"}, Outcome.RATE_LIMITED, 7),
    (429, {"parameters": {"retry_after": "soon"}}, {}, Outcome.RATE_LIMITED, 60),
    (429, {"parameters": {"retry_after": -1}}, {}, Outcome.RATE_LIMITED, 60),
    (502, {}, {}, Outcome.RETRY, None),
    (401, {"ok": False, "error_code": 401, "description": "Unauthorized"}, {}, Outcome.REJECTED, None),
    (200, {"ok": False}, {}, Outcome.REJECTED, None),
    (200, {}, {}, Outcome.SENT, None),
])
def test_what_each_send_answer_means(status, body, headers, outcome, wait):
    result = send_result(status, body, headers, 1000.0)
    assert result.outcome is outcome and result.windows == ()
    assert result.retry_at == (None if wait is None else 1000.0 + wait)


def test_an_unreachable_api_is_retried_and_the_token_is_never_logged(emulator, settings):
    dead = f"http://127.0.0.1:{free_port()}"
    tg = settings.replace(channels={"telegram": values(dead)})
    app = create_app(tg)
    with captured("catbot") as logs:
        assert app.test_client().post("/webhook/telegram", data=sample("message_text"),
                                      headers={SECRET_HEADER: SECRET}).status_code == 200
        drain(app)
    assert any("event=reply.retrying" in line and "ConnectionError" in line for line in logs.lines)
    assert not any(TOKEN.split(":")[1] in line for line in logs.lines)
    assert runtime_of(app).backlog()["pending_messages"] == 1


# -- malformed input: never a 5xx -------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [
    b"", b"not json", b"\xff\xfe{}", b"[]", b'"update"', b"null", b"[" * 50000,
    b'{"message": {"text": "hi"}}', b'{"update_id": "10000", "message": {}}', b'{"update_id": true}',
    b'{"update_id": 10000.5}', b'{"update_id": -3}', b'{"update_id": 10000}',
    b'{"update_id": 1, "message": "hi"}', b'{"update_id": 1, "message": {"text": "hi"}}',
    b'{"update_id": 1, "message": {"from": {"id": "3000000901"}, "chat": {"id": 3000000901}, "text": "hi"}}',
    b'{"update_id": 1, "message": {"from": {"id": 3000000901}, "chat": {"id": 3000000901}, "text": ["hi"]}}',
    b'{"update_id": 1, "message": {"from": {"id": 3000000901}, "chat": [], "text": "hi"}}',
    b'{"update_id": 1, "message": {"from": {"id": 99999999999999999999}, "chat": {"id": 1}, "text": "hi"}}',
])
def test_malformed_updates_are_acknowledged_and_never_answered(bot, body):
    answer = post(bot, body)
    assert answer.status_code == 200 and pending(bot) == 0 and bot.state.send_attempts == 0


def test_an_oversized_delivery_is_refused_413(bot):
    assert post(bot, b"{" + b" " * MAX_BODY + b"}").status_code == 413


ids = st.one_of(st.integers(-5, 2**60), st.booleans(), st.none(), st.text(max_size=5), st.floats())
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                           max_leaves=8)


@hsettings(max_examples=200, deadline=None)
@given(update_id=ids, sender=ids, chat=ids, chat_type=st.sampled_from(["private", "group", None, 3]),
       text=st.one_of(st.text(max_size=50), st.none(), st.integers()), is_bot=json_values, extra=json_values)
def test_any_update_parses_without_raising_into_at_most_one_well_formed_record(update_id, sender, chat, chat_type,
                                                                                text, is_bot, extra):
    update = {"update_id": update_id, "message": {"from": {"id": sender, "is_bot": is_bot},
                                                  "chat": {"id": chat, "type": chat_type}, "text": text,
                                                  "extra": extra}}
    parsed = parse_update(update, BOT, None)
    assert len(parsed.messages) + parsed.own + parsed.malformed + len(parsed.other) == 1
    for m in parsed.messages:
        assert m.user_id.isdigit() and m.event_id.isdigit() and m.user_id == str(chat) and is_bot is not True


# -- settings -------------------------------------------------------------------------------------------------
def config(tmp_path, given: dict[str, str]) -> Config:
    env = tmp_path / ".env"
    env.write_text("".join(f"{k}={v}\n" for k, v in given.items()))
    return Config(RepositoryEnv(str(env)))


@pytest.mark.parametrize("given, missing", [
    ({"TELEGRAM_BOT_TOKEN": TOKEN}, "TELEGRAM_SECRET_TOKEN"),
    ({"TELEGRAM_SECRET_TOKEN": SECRET}, "TELEGRAM_BOT_TOKEN"),
])
def test_some_but_not_all_telegram_settings_stop_the_bot_with_one_message_naming_the_missing(tmp_path, given, missing):
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, given))
    message = str(err.value)
    assert f"telegram needs {missing}" in message and message.count("telegram needs") == 1
    assert TOKEN not in message and SECRET not in message


def test_telegram_alone_is_a_whole_bot_with_the_api_base_url_defaulted(tmp_path):
    loaded = load_settings(config(tmp_path, {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_SECRET_TOKEN": SECRET}))
    assert not loaded.x_enabled
    assert loaded.channels["telegram"]["TELEGRAM_API_BASE_URL"] == "https://api.telegram.org"


@pytest.mark.parametrize("name, value", [
    ("TELEGRAM_SECRET_TOKEN", "has spaces and a ; in it"), ("TELEGRAM_SECRET_TOKEN", "x" * 257),
    ("TELEGRAM_BOT_TOKEN", "AAFtestTokenNotReal-0123456789abcdef"), ("TELEGRAM_API_BASE_URL", "api.telegram.org"),
])
def test_a_setting_telegram_would_refuse_stops_the_bot_and_names_it_without_its_value(tmp_path, name, value):
    """At start, with the one settings message (api_config asks the channel), not as workers
    that fail to boot."""
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, {**values("https://api.telegram.org"), name: value,
                                        "SQLITE_PATH": str(tmp_path / "db.sqlite3")}))
    assert name in str(err.value) and value not in str(err.value)


def test_the_channels_secrets_are_not_in_its_repr_or_healthz(bot):
    channel = bot.app.extensions["catbot.channels"]["telegram"]
    shown = repr(channel) + bot.client.get("/healthz").get_data(as_text=True)
    assert TOKEN not in shown and SECRET not in shown and TOKEN.split(":")[1] not in shown


# -- set-up: register_webhook.py telegram <command>, against the emulator ---------------------------------------
def setup(channel: TelegramChannel, command: str, url: str | None = None) -> Report:
    report = Report(as_json=True)  # register_webhook.py's own report, collecting instead of printing
    channel.run_setup(command, SimpleNamespace(url=url), report)
    return report


@pytest.fixture
def known_bot(emulator):
    """Telegram knows the bot (its token); no webhook is set yet."""
    emulator.platform("telegram").setup(None, values(emulator.url))
    return TelegramChannel(values(emulator.url))


def test_set_webhook_points_telegram_at_the_bot_with_the_secret_for_messages_only(known_bot, emulator, settings):
    tg = settings.replace(channels={"telegram": values(emulator.url)})
    app = create_app(tg)
    server = ServerThread(app)
    try:
        report = setup(known_bot, "set-webhook", server.url + "/webhook/telegram")
        assert report.changed and report.warnings == []
        assert report.result["url"] == server.url + "/webhook/telegram"
        assert report.result["allowed_updates"] == ["message"] and report.result["pending_update_count"] == 0
        state = emulator.platform("telegram")
        assert state.secret_token == SECRET
        _, answer = state.deliver(USER, "/help")
        assert answer.status_code == 200
        drain(app)
        assert state.replies(USER) == [HELP_TEXT]
    finally:
        server.stop()


def test_info_shows_telegrams_last_delivery_error(known_bot, emulator):
    state = emulator.platform("telegram")
    setup(known_bot, "set-webhook", f"http://127.0.0.1:{free_port()}/webhook/telegram")
    with pytest.raises(requests.ConnectionError):
        state.deliver(USER, "hi")
    report = setup(known_bot, "info")
    assert report.result["pending_update_count"] == 1 and not report.changed
    assert report.result["bot"] == {"id": int(BOT), "username": "catfacts_bot"}
    assert any("last delivery error" in w and "ConnectionError" in w for w in report.warnings)


def test_delete_webhook_stops_deliveries_and_says_when_there_was_none(known_bot, emulator):
    setup(known_bot, "set-webhook", "https://catbot.example/webhook/telegram")
    first, second = setup(known_bot, "delete-webhook"), setup(known_bot, "delete-webhook")
    assert first.changed and first.result["was"] == "https://catbot.example/webhook/telegram"
    assert not second.changed and emulator.platform("telegram").webhook_url == ""
    assert any("no webhook is set" in w for w in setup(known_bot, "info").warnings)


def test_set_webhook_warns_about_a_url_the_bot_does_not_listen_at(known_bot):
    assert any("/webhook/telegram" in w for w in setup(known_bot, "set-webhook", "https://catbot.example/hook").warnings)


def test_telegram_refusing_a_plain_http_webhook_is_explained(known_bot):
    with pytest.raises(PlatformRefused) as err:
        setup(known_bot, "set-webhook", "http://catbot.example/webhook/telegram")
    assert err.value.status == 400 and "HTTPS" in err.value.detail and "https://" in err.value.advice


def test_a_wrong_token_is_refused_with_advice_and_never_shown(emulator):
    emulator.platform("telegram").setup(None, values(emulator.url))
    other = TelegramChannel(values(emulator.url, TELEGRAM_BOT_TOKEN="6000000001:AAFsomeOtherTokenNotReal-012345678"))
    with pytest.raises(PlatformRefused) as err:
        setup(other, "info")
    refused = err.value
    assert refused.status == 401 and "@BotFather" in refused.advice
    assert "AAFsomeOther" not in f"{refused} {refused.advice}"


def test_an_unreachable_api_at_set_up_names_the_setting_and_not_the_token(emulator):
    channel = TelegramChannel(values(f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(PlatformRefused) as err:
        setup(channel, "set-webhook", "https://catbot.example/webhook/telegram")
    refused = err.value
    assert refused.status is None and "TELEGRAM_API_BASE_URL" in refused.advice
    assert TOKEN.split(":")[1] not in f"{refused} {refused.detail}"


# -- the emulator plays Telegram's rules -------------------------------------------------------------------------
def test_the_emulator_refuses_an_unknown_token_and_method_as_telegram_does(known_bot, emulator):
    assert requests.post(f"{emulator.url}/bot6000000001:AAFwrong/getMe").json() == \
        {"ok": False, "error_code": 401, "description": "Unauthorized"}
    assert requests.post(f"{emulator.url}/bot{TOKEN}/sendSomething").status_code == 404
    answer = requests.post(f"{emulator.url}/bot{TOKEN}/sendmessage", data={"chat_id": USER, "text": "hi"})
    assert answer.json()["description"] == "Bad Request: chat not found"


def test_the_emulators_control_routes_set_up_deliver_and_inject_faults(emulator, bot):
    http = requests.Session()
    faults = http.post(f"{emulator.url}/_emulator/telegram/faults", json={"rate_limited": 1, "retry_after": 7}).json()
    assert faults["faults"]["rate_limited"] == 1
    answer = http.post(f"{emulator.url}/_emulator/telegram/deliver", json={"sender_id": USER, "text": "hi"}).json()
    assert answer["webhook_status"] == 200 and answer["event_id"].isdigit()
    again = http.post(f"{emulator.url}/_emulator/telegram/redeliver", json={"event_id": answer["event_id"]}).json()
    assert again == {"webhook_status": 200}
    drain(bot.app)
    assert bot.state.replies(USER) == [] and bot.state.send_attempts == 1  # the forced 429
    bot.later[0] = 8.0
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1
    event = http.post(f"{emulator.url}/_emulator/telegram/deliver", json={"event": "my_chat_member"})
    assert event.status_code == 409  # the webhook takes messages only
