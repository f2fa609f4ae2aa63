"""Messenger with the bot's real processes (issue 14's "Done when"): gunicorn as the Procfile runs
it, a ``python -m catbot.worker`` consumer, the emulator playing Meta over loopback (its
verification request, signed deliveries, the Send API); SIGKILL between claim and send."""
import pytest

from catbot.replies import FACT_OPENERS, HELP_TEXT, START_TEXT, STOP_TEXT
from helpers import counts, wait_until
from processes import Deployment
from test_xchat_processes import _written_by_the_bot  # logs, files, and Redis when used
from x_emulator.platforms.messenger import DEMO_SETTINGS

SECRET_WORDS = "saffron-okapi-mazurka"  # in a message below: findable if the bot wrote it anywhere


@pytest.fixture
def messenger_bot(settings, emulator, tmp_path):
    deployment = Deployment(settings, emulator, tmp_path, REPLY_LEASE_SECONDS="5", X_TIMEOUT="2",
                            CATFACTS_TIMEOUT="1", REPLAY_ON_START="false", LOG_LEVEL="DEBUG",
                            MESSENGER_API_BASE_URL=emulator.url, **DEMO_SETTINGS)
    deployment.state, deployment.redis_url = emulator.platform("messenger"), ""
    yield deployment
    deployment.stop()


def say_and_wait(state, user: str, text: str, replies_before: int, expect_reply: bool = True) -> str:
    mid, answer = state.deliver(user, text)
    assert (answer.status_code, answer.text) == (200, "EVENT_RECEIVED")
    if expect_reply:
        assert wait_until(lambda: len(state.replies(user)) > replies_before, 20), text
    return mid


def test_a_conversation_through_gunicorn_and_a_redelivery(messenger_bot):
    web = messenger_bot.web(embedded=True)
    state = messenger_bot.state
    state.setup(web.url + "/webhook/messenger", DEMO_SETTINGS)  # Meta's verification request, through gunicorn
    user = "5000000000000801"
    first = say_and_wait(state, user, f"hello {SECRET_WORDS}", 0)
    say_and_wait(state, user, "help", 1)
    say_and_wait(state, user, "stop", 2)
    say_and_wait(state, user, f"still there? {SECRET_WORDS}", 3, expect_reply=False)
    say_and_wait(state, user, "start", 3)
    assert state.redeliver(first).status_code == 200
    assert wait_until(lambda: False, 2) is False  # a second answer to the redelivery would show by now
    replies = state.replies(user)
    assert replies[0].split("\n", 1)[0] in FACT_OPENERS and replies[1:] == [HELP_TEXT, STOP_TEXT, START_TEXT]
    written = _written_by_the_bot(messenger_bot)
    assert b"event=reply.sent" in written  # the logs were read (at DEBUG): the search can find things
    for secret in (SECRET_WORDS, *DEMO_SETTINGS.values()):
        assert secret.encode() not in written, secret


def test_sigkill_between_claim_and_send_loses_no_messenger_reply(messenger_bot, facts_api):
    facts_api.mode = "slow"  # the consumer dies while it waits for a fact: claimed, not yet sent
    web = messenger_bot.web()
    messenger_bot.state.setup(web.url + "/webhook/messenger", DEMO_SETTINGS)
    worker = messenger_bot.worker()
    say_and_wait(messenger_bot.state, "5000000000000802", "hi", 0, expect_reply=False)
    assert wait_until(lambda: len(facts_api.calls) >= 1, 15)
    worker.kill()
    facts_api.mode = "ok"
    messenger_bot.worker()
    assert wait_until(lambda: len(messenger_bot.state.replies("5000000000000802")) >= 1, 30)
    assert wait_until(lambda: False, 2) is False  # and nothing more arrives
    assert counts(messenger_bot.emulator) == {"5000000000000802": 1}
