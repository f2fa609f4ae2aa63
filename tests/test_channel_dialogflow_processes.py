"""Dialogflow fulfillment with the bot's real processes: ``gunicorn app:app`` as the Procfile runs
it, the emulator playing ES and CX agents that call it with basic auth.

The other channels' SIGKILL test (a consumer killed between claim and send loses no reply) does
not apply: Dialogflow answers in the webhook's response, so nothing is claimed, queued or sent
later. A process killed mid-request leaves Dialogflow without an answer, and the agent plays its
own response for that turn, as for any failed fulfillment; there is nothing to recover. What can
go wrong in time instead is a slow facts API holding the answer past Dialogflow's 5 s: tested
below through gunicorn, several users at once. No store is used by this channel, so the
embedded default is the only backend tested here.
"""
import threading
import time

import pytest

from catbot.channels.dialogflow import FACT_INTENTS
from catbot.replies import FACT_OPENERS, HELP_TEXT, START_TEXT, STOP_TEXT
from processes import Deployment
from x_emulator.platforms.dialogflow import CX, DEMO_SETTINGS, ES

SECRET_WORDS = "violet-armadillo-tango"  # in every message a user writes below: findable if written anywhere


@pytest.fixture
def deployment(settings, emulator, tmp_path):
    """The bot with Dialogflow on beside X, its web processes serving both."""
    deployment = Deployment(settings, emulator, tmp_path, REPLAY_ON_START="false", LOG_LEVEL="DEBUG",
                            **DEMO_SETTINGS, **{FACT_INTENTS: ""})
    yield deployment
    deployment.stop()


@pytest.fixture
def agent(emulator):
    return emulator.platform("dialogflow")


def is_fact(text):
    return text is not None and text.split("\n", 1)[0] in FACT_OPENERS


def _written_by_the_bot(tmp_path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(tmp_path.rglob("*")) if path.is_file())


def test_a_conversation_through_gunicorn_on_es_and_cx(deployment, agent, tmp_path):
    web = deployment.web()
    agent.setup(web.url + "/webhook/dialogflow", DEMO_SETTINGS)
    for user, flavour in (("3000000911", ES), ("3000000912", CX)):
        said = [agent.deliver(user, text, flavour=flavour)
                for text in (f"hello {SECRET_WORDS}", "help", "stop", f"still there? {SECRET_WORDS}", "start")]
        assert [d.webhook_status for d in said] == [200] * 5
        assert is_fact(said[0].text) and [d.text for d in said[1:]] == [HELP_TEXT, STOP_TEXT, None, START_TEXT]
        # Sent again byte for byte (a caller re-sending its detectIntent): the same decision, once.
        assert agent.redeliver(said[-1].event_id).text == START_TEXT
        assert is_fact(agent.deliver(user, f"one more {SECRET_WORDS}", flavour=flavour).text)
        assert len(agent.kept(user, flavour)["sent"]) == 5  # hello, help, stop, start (once), one more
    written = _written_by_the_bot(tmp_path)
    assert b"event=reply.sent" in written  # the logs were read (at DEBUG): the search can find things
    assert SECRET_WORDS.encode() not in written
    assert DEMO_SETTINGS["DIALOGFLOW_PASSWORD"].encode() not in written


def test_a_slow_facts_api_still_gets_every_user_an_answer_in_time(deployment, agent, facts_api):
    web = deployment.web(CATFACTS_TIMEOUT="2")
    agent.setup(web.url + "/webhook/dialogflow", DEMO_SETTINGS)
    facts_api.mode = "slow"  # answers after 3 s: past the bot's 1.5 s, inside Dialogflow's 5 s
    done, took = {}, {}

    def ask(user):
        started = time.monotonic()
        done[user] = agent.deliver(user, "a fact please", flavour=ES if int(user) % 2 else CX)
        took[user] = time.monotonic() - started

    users = [str(3000000920 + i) for i in range(4)]  # as many as gunicorn's 2 workers x 2 threads hold at once
    threads = [threading.Thread(target=ask, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for user in users:
        assert done[user].error is None and is_fact(done[user].text) and "API fact" not in done[user].text
        assert took[user] < 2.5, took  # 1.5 s of waiting for the API, and the rest
