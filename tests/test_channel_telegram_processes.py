"""Telegram with the bot's real processes (issue 14's "Done when"): gunicorn as the Procfile runs
it, ``python -m catbot.worker`` consumers, the emulator playing the Bot API; SIGKILL between
claim and send; and a search of everything the bot wrote for users' words and its secrets."""
import pytest

from catbot.replies import FACT_OPENERS, HELP_TEXT, START_TEXT, STOP_TEXT
from helpers import counts, wait_until
from processes import Deployment
from test_channel_telegram import SECRET, TOKEN, values
from test_xchat_processes import _written_by_the_bot

SECRET_WORDS = "saffron-otter-bolero"  # in messages below: findable if the bot wrote them anywhere


@pytest.fixture
def telegram_bot(request, settings, emulator, tmp_path):
    """Telegram on (X too) on the embedded SQLite file, or with the parameter "redis" on the test's
    redis-server. ``listen(web)`` tells the emulator to deliver to that web process."""
    backend = getattr(request, "param", "sqlite")
    redis_url = request.getfixturevalue("redis_url") if backend == "redis" else ""
    deployment = Deployment(settings.replace(redis_url=redis_url), emulator, tmp_path, REPLY_LEASE_SECONDS="5",
                            X_TIMEOUT="2", CATFACTS_TIMEOUT="1", REPLAY_ON_START="false", LOG_LEVEL="DEBUG",
                            **values(emulator.url))
    deployment.redis_url = redis_url
    deployment.state = emulator.platform("telegram")
    deployment.listen = lambda web: deployment.state.setup(web.url + "/webhook/telegram", values(emulator.url))
    yield deployment
    deployment.stop()


def say_and_wait(state, user: str, text: str, replies_before: int, expect_reply: bool = True) -> str:
    update_id, answer = state.deliver(user, text)
    assert answer.status_code == 200
    if expect_reply:
        assert wait_until(lambda: len(state.replies(user)) > replies_before, 20), text
    return update_id


@pytest.mark.parametrize("telegram_bot", ["redis"], indirect=True)  # the SIGKILL test runs on SQLite
def test_a_conversation_through_gunicorn_is_answered_once_and_nothing_secret_is_written(telegram_bot):
    state = telegram_bot.state
    telegram_bot.listen(telegram_bot.web(embedded=True))
    user = "3000000951"
    first = say_and_wait(state, user, f"hello {SECRET_WORDS}", 0)
    say_and_wait(state, user, "/help", 1)
    say_and_wait(state, user, "/stop", 2)
    say_and_wait(state, user, f"still there? {SECRET_WORDS}", 3, expect_reply=False)
    say_and_wait(state, user, "/start", 3)
    assert state.redeliver(first).status_code == 200
    assert wait_until(lambda: False, 2) is False  # a second reply to the redelivery would show by now
    replies = state.replies(user)
    assert replies[0].split("\n", 1)[0] in FACT_OPENERS and replies[1:] == [HELP_TEXT, STOP_TEXT, START_TEXT]
    written = _written_by_the_bot(telegram_bot)
    assert b"event=reply.sent" in written and b"channel=telegram" in written  # the logs were read, at DEBUG
    for secret in (SECRET_WORDS, SECRET, TOKEN, TOKEN.split(":")[1]):
        assert secret.encode() not in written, secret[:12]


def test_sigkill_between_claim_and_send_loses_no_telegram_reply(telegram_bot, emulator, facts_api):
    facts_api.mode = "slow"  # the consumer dies while it waits for a fact: claimed, not yet sent
    telegram_bot.listen(telegram_bot.web())
    worker = telegram_bot.worker()
    state, user = telegram_bot.state, "3000000952"
    say_and_wait(state, user, "hi", 0, expect_reply=False)
    assert wait_until(lambda: len(facts_api.calls) >= 1, 15)
    worker.kill()
    facts_api.mode = "ok"
    telegram_bot.worker()
    assert wait_until(lambda: len(state.replies(user)) >= 1, 30)
    assert wait_until(lambda: False, 2) is False  # and nothing more arrives
    assert counts(emulator) == {user: 1}
