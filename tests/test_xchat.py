"""X Chat (issue 13) through the HTTP layer: the emulator's simulated users write end-to-end
encrypted messages (their own Chat XDK identities, X's framing, signed deliveries); the bot
opens them in the reply job, answers as for a legacy DM, and the emulator decrypts the reply
as the user. Faults: tampered, forged, undecryptable events; key rotation; a second process."""
import logging
import time
from types import SimpleNamespace

import pytest

from catbot.replies import FACT_OPENERS, HELP_TEXT, START_TEXT, STOP_TEXT
from catbot.runtime import build_runtime
from catbot.web import create_app
from helpers import BOT_ID, ServerThread, captured, drain, runtime_of, xchat_keys

USER = "3000000702"


@pytest.fixture
def bot(emulator, settings):
    """The bot with X Chat on (its key registered at the emulator), served on loopback."""
    blob, version, public = xchat_keys()
    emulator.set_public_keys(BOT_ID, public)
    chat_settings = settings.replace(xchat_private_keys=blob, xchat_key_version=version)
    later = [0.0]  # seconds the bot's clock is ahead of the emulator's (to pass a rate window)
    app = create_app(chat_settings, build_runtime(chat_settings, clock=lambda: time.time() + later[0]))
    server = ServerThread(app)
    yield SimpleNamespace(app=app, url=server.url + "/webhook/twitter", blob=blob, settings=chat_settings,
                          later=later)
    server.stop()


def say(emulator, bot, text: str, user: str = USER, fault: str | None = None) -> str:
    message_id, answer = emulator.deliver_chat(user, text, fault=fault, url=bot.url)
    assert answer.status_code == 200
    return message_id


def replies(emulator, user: str = USER) -> list[str]:
    return [m.text for m in emulator.sent_to(user) if m.channel == "xchat"]


@pytest.fixture
def refusals():
    with captured("catbot.xchat") as handler:
        yield handler.records


def test_an_x_chat_message_gets_an_encrypted_fact_the_user_can_read(bot, emulator):
    say(emulator, bot, "hello there")
    drain(bot.app)
    [reply] = replies(emulator)
    assert reply.split("\n", 1)[0] in FACT_OPENERS
    assert [m.channel for m in emulator.sent] == ["xchat"]  # not as a legacy DM


def test_help_stop_and_start_work_over_x_chat(bot, emulator):
    for text in ("help", "stop", "hi", "start"):
        say(emulator, bot, text)
        drain(bot.app)
    assert replies(emulator) == [HELP_TEXT, STOP_TEXT, START_TEXT]  # "hi" while stopped: silence


def test_a_redelivered_x_chat_message_gets_no_second_reply(bot, emulator):
    message_id = say(emulator, bot, "hi")
    drain(bot.app)
    assert emulator.redeliver(message_id, bot.url).status_code == 200
    drain(bot.app)
    assert len(replies(emulator)) == 1


def test_messages_after_a_key_rotation_are_answered_with_the_new_key(bot, emulator):
    say(emulator, bot, "first")
    drain(bot.app)
    say(emulator, bot, "after rotation", fault="rotate")
    drain(bot.app)
    say(emulator, bot, "and after that")
    drain(bot.app)
    assert len(replies(emulator)) == 3 and emulator.rejected == []


def test_a_second_process_opens_a_conversation_whose_key_change_the_first_one_saw(bot, emulator):
    """Each process has its own SDK instance; the key change came in the first delivery only."""
    say(emulator, bot, "first")
    drain(bot.app)
    other = create_app(bot.settings)  # another worker: same store, its own identity and caches
    say(emulator, bot, "second")
    drain(other)
    assert len(replies(emulator)) == 2


@pytest.mark.parametrize("fault, reason", [
    ("tamper", "did not decrypt or verify"),
    ("forged", "did not decrypt or verify"),
    ("unknown_key", "unknown conversation key version"),
    ("no_key_change", "unknown conversation key version"),
])
def test_an_event_the_bot_cannot_trust_gets_no_reply_one_line_and_a_count(bot, emulator, refusals, fault, reason):
    if fault != "no_key_change":
        say(emulator, bot, "a good first message")
        drain(bot.app)
    before = len(replies(emulator))
    say(emulator, bot, "do not answer this", fault=fault)
    drain(bot.app)
    assert len(replies(emulator)) == before
    [line] = [r for r in refusals if r.levelno == logging.WARNING]
    assert reason in line.getMessage() and "do not answer this" not in line.getMessage()
    health = bot.app.test_client().get("/healthz").get_json()
    assert health["store"]["xchat_refused"] == 1 and health["backlog"] == 0


def test_a_429_on_chat_sends_defers_the_reply_until_the_reset_and_loses_nothing(bot, emulator):
    emulator.faults.chat_429 = 1
    say(emulator, bot, "hi")
    drain(bot.app)
    assert replies(emulator) == [] and runtime_of(bot.app).backlog()["pending_messages"] == 1
    drain(bot.app)  # the window is spent: nothing is tried before its reset
    assert emulator.chat.send_attempts == 1
    bot.later[0] = 901.0  # past the reset X gave
    drain(bot.app)
    assert len(replies(emulator)) == 1 and runtime_of(bot.app).backlog()["pending_messages"] == 0


def test_participants_keys_come_from_x_once_not_per_message(bot, emulator):
    for text in ("one", "two", "three"):
        say(emulator, bot, text)
        drain(bot.app)
    assert len(replies(emulator)) == 3
    assert emulator.public_key_fetches <= 2  # the user's keys (and at most the bot's own), cached


def test_with_x_chat_off_a_chat_message_is_acknowledged_and_not_kept(emulator, settings):
    emulator.set_public_keys(BOT_ID, xchat_keys()[2])  # registered once, but this bot has no blob set
    app = create_app(settings)
    server = ServerThread(app)
    try:
        with captured("catbot.web") as handler:
            _, answer = emulator.deliver_chat(USER, "anyone there?", url=server.url + "/webhook/twitter")
        assert answer.status_code == 200
        drain(app)
        assert runtime_of(app).backlog()["pending_messages"] == 0 and emulator.sent == []
        assert any("xchat_off=1" in r.getMessage() for r in handler.records)
    finally:
        server.stop()


def test_the_longest_message_x_allows_is_answered(bot, emulator):
    """10,000 characters of four bytes each: the largest event X can deliver fits the bounds the
    webhook puts on sealed records (which keep a journal line far below what an import reads)."""
    say(emulator, bot, "🐈" * 10_000)
    drain(bot.app)
    assert len(replies(emulator)) == 1
