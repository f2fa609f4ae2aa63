"""LINE with the bot's real processes (issue 14's "Done when"): gunicorn as the Procfile runs
it and ``python -m catbot.worker``, on the embedded SQLite file; the emulator plays LINE; SIGKILL
between claim and send; and a search of everything the bot wrote for what users said."""
import pytest

from catbot.replies import FACT_OPENERS, HELP_TEXT, START_TEXT, STOP_TEXT
from helpers import counts, wait_until
from processes import Deployment

SECRET = "89abcdef0123456789abcdef01234567"
TOKEN = "process-test-line-access-token-0001"
SECRET_WORDS = "saffron-okapi-lantern"  # in what the user writes below: findable if written anywhere


@pytest.fixture
def line_bot(settings, emulator, tmp_path):
    """The bot's processes with LINE on (and X), the emulator delivering LINE's events to them."""
    deployment = Deployment(settings, emulator, tmp_path, REPLY_LEASE_SECONDS="5", X_TIMEOUT="2", CATFACTS_TIMEOUT="1",
                            REPLAY_ON_START="false", LOG_LEVEL="DEBUG", LINE_CHANNEL_SECRET=SECRET,
                            LINE_CHANNEL_ACCESS_TOKEN=TOKEN, LINE_API_BASE_URL=emulator.url, LINE_PUSH_FALLBACK="true")
    deployment.line = emulator.platform("line")
    yield deployment
    deployment.stop()


def serve(deployment, web) -> None:
    deployment.line.configure(web.url + "/webhook/line", {"LINE_CHANNEL_SECRET": SECRET,
                                                          "LINE_CHANNEL_ACCESS_TOKEN": TOKEN})


def line_texts(emulator, user):
    return [m.text for m in emulator.sent_to(user) if m.channel == "line"]


def say_and_wait(deployment, emulator, user, text, replies_before, expect_reply=True):
    event_id, answer = deployment.line.deliver(user, text)
    assert answer.status_code == 200
    if expect_reply:
        assert wait_until(lambda: len(line_texts(emulator, user)) > replies_before, 20), text
    return event_id


def test_a_conversation_through_gunicorn_is_answered_once_each_and_no_text_is_written(line_bot, emulator):
    serve(line_bot, line_bot.web(embedded=True))
    user = "3000000951"
    first = say_and_wait(line_bot, emulator, user, f"hello {SECRET_WORDS}", 0)
    assert line_bot.line.redeliver(first, as_redelivery=True).status_code == 200  # LINE's redelivery
    say_and_wait(line_bot, emulator, user, "help", 1)
    say_and_wait(line_bot, emulator, user, "stop", 2)
    say_and_wait(line_bot, emulator, user, f"still there? {SECRET_WORDS}", 3, expect_reply=False)
    say_and_wait(line_bot, emulator, user, "start", 3)
    assert wait_until(lambda: False, 1.5) is False  # a late duplicate would show by now
    replies = line_texts(emulator, user)
    assert replies[0].split("\n", 1)[0] in FACT_OPENERS and replies[1:] == [HELP_TEXT, STOP_TEXT, START_TEXT]
    assert line_bot.line.pushes == 0  # every answer went out as a reply, within its token's minute
    written = b"".join(p.read_bytes() for p in sorted(line_bot.tmp_path.rglob("*")) if p.is_file())
    assert b"event=reply.sent" in written  # the logs were read (at DEBUG): the search can find things
    assert SECRET_WORDS.encode() not in written and TOKEN.encode() not in written and SECRET.encode() not in written


def test_sigkill_between_claim_and_send_loses_no_line_reply(line_bot, emulator, facts_api):
    facts_api.mode = "slow"  # the consumer dies while it waits for a fact: claimed, not yet sent
    serve(line_bot, line_bot.web())
    worker = line_bot.worker()
    user = "3000000952"
    say_and_wait(line_bot, emulator, user, "hi", 0, expect_reply=False)
    assert wait_until(lambda: len(facts_api.calls) >= 1, 15)
    worker.kill()
    facts_api.mode = "ok"
    line_bot.worker()
    assert wait_until(lambda: len(line_texts(emulator, user)) >= 1, 30)
    assert wait_until(lambda: False, 2) is False  # and nothing more arrives
    assert counts(emulator) == {user: 1}
