"""Attacks on, and bad luck for, the Telegram and Dialogflow channels (security review).

Each test here reproduces one problem an adversarial review found in
``catbot/channels/telegram.py`` or ``catbot/channels/dialogflow.py`` (or in how the shared
pipeline treats them); each failed before its fix. What the review found and is left as it is
(a timeout after Telegram accepted is retried, as for X: the documented duplicate window; a
Dialogflow stop lasts as long as the session) is in docs/architecture.md and the issue's note. Driven in-process like ``test_channel_telegram.py`` / ``test_channel_dialogflow.py``:
the emulator plays Telegram's Bot API and Dialogflow's agents on loopback, the reply job runs
in this thread (``drain``).
"""
from __future__ import annotations

import copy
import json
import threading
import time
from types import SimpleNamespace

import pytest
from flask import Flask
from werkzeug.serving import make_server

from catbot.channels.dialogflow import PASSWORD, STATE_NAME, USERNAME, basic_authorization
from catbot.channels.telegram import TelegramChannel, send_result
from catbot.outbound import Outcome
from catbot.replies import FACT_OPENERS, Intent
from catbot.store import Batch
from helpers import PAYLOADS, runtime_of
from x_emulator.platforms.dialogflow import DEMO_SETTINGS as DF_SETTINGS, ES

TOKEN = "6000000001:AAFtestTokenNotReal-0123456789abcdef"
SECRET = "test-telegram-secret_0001"
BOT = "6000000001"
USER = "3000000901"
OTHER = "3000000902"
ES_SAMPLE = json.loads((PAYLOADS / "dialogflow" / "es_webhook_request.json").read_text())
GOOD_AUTH = basic_authorization(DF_SETTINGS[USERNAME], DF_SETTINGS[PASSWORD])


def tg_values(base_url: str, **changes: str) -> dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_SECRET_TOKEN": SECRET, "TELEGRAM_API_BASE_URL": base_url,
            **changes}


def is_fact(text: str | None) -> bool:
    return bool(text) and text.split("\n", 1)[0] in FACT_OPENERS


# == Telegram =====================================================================================
@pytest.fixture
def tg(emulator, settings, serve):
    """The bot with Telegram on, served on loopback; ``later``: seconds the bot's clock runs ahead."""
    def make(**changes):
        bot = serve(settings.replace(channels={"telegram": tg_values(emulator.url)}, **changes))
        bot.state = emulator.platform("telegram")
        bot.state.setup(bot.url + "/webhook/telegram", tg_values(emulator.url))
        return bot
    return make


def test_telegram_429_for_one_chat_does_not_hold_back_other_users_replies(tg):
    """MEDIUM. Telegram's 429 on sendMessage is its flood control for *one chat* (about a
    message a second per chat); ``send_result`` even says a wait for one chat "must not hold
    X's DMs". But the replier treats any RATE_LIMITED as "the budget is spent": the pass ends
    at once with ``budget_until = retry_at``, so every other user's due reply (X's DMs too)
    waits, and the embedded consumer stops importing new journal lines until then or the next
    minute sweep. One user who makes Telegram throttle their chat stalls everyone."""
    bot = tg()
    runtime = runtime_of(bot.app)
    bot.state.faults.rate_limited, bot.state.faults.retry_after = 1, 30  # the first send: 429, wait 30 s
    bot.state.deliver(USER, "hi")  # first in line: its chat gets the 429
    bot.state.deliver(OTHER, "hi")  # nothing wrong with this chat
    runtime.queue.send_replies.call_local()  # one consumer pass, as the queue runs it
    assert bot.state.send_attempts >= 1 and bot.state.em.rejected[0]["status"] == 429
    answered = [u for u in (USER, OTHER) if bot.state.replies(u)]
    assert len(answered) == 1, "the other user's due reply was left for a later pass (the next sweep)"
    assert runtime.queue.budget_until == 0.0, \
        f"one chat's 429 paused the consumer for {runtime.queue.budget_until - time.time():.0f} s"


def test_telegram_429_with_a_retry_after_of_days_does_not_park_the_reply_for_days():
    """LOW. ``retry_after`` is believed up to 7 days (``0 < seconds < 7 * 86400``), and a 429
    never counts an attempt: an odd answer (a proxy, a bug, a long flood ban) parks the user's
    batch (and every later message of theirs, stop included) for up to a week, then sends a
    week-old reply; and each such 429 ends the pass for everyone (see the test above). The
    Messenger channel caps its wait (MAX_RETRY_AFTER); Telegram's has no cap."""
    now = 1_000_000.0
    result = send_result(429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 600000",
                               "parameters": {"retry_after": 600000}}, {}, now)
    assert result.outcome is not Outcome.RATE_LIMITED or result.retry_at - now <= 3600, \
        f"a reply parked for {(result.retry_at - now) / 86400:.1f} days"


@pytest.mark.parametrize("base_url", ["http://api..telegram.org", "http://[::1"])
def test_telegram_sender_never_raises_for_a_base_url_the_settings_check_accepted(base_url):
    """LOW. A base URL requests cannot use made ``send`` raise (ValueError out of urllib3 or
    urlsplit) instead of answering REJECTED: every pass that claimed a Telegram user crashed,
    its claim held until it lapsed. The token stays out of the answer."""
    sender = TelegramChannel(tg_values(base_url)).sender(None, time.time)
    batch = Batch("telegram", f"telegram:{BOT}", USER, "t-1", (1,), (Intent.FACT,), (None,), False, 0, 1, 0)
    result = sender.send(batch, "a fact")
    assert result.outcome in (Outcome.REJECTED, Outcome.RETRY) and TOKEN not in result.detail


# == Dialogflow ===================================================================================
@pytest.fixture
def df(emulator, settings, serve):
    """The bot with Dialogflow on, the emulator's agents calling it over loopback."""
    def make(**changes):
        bot = serve(settings.replace(channels={"dialogflow": {**DF_SETTINGS, "DIALOGFLOW_FACT_INTENTS": ""}},
                                     **changes))
        bot.agent = emulator.platform("dialogflow")
        bot.agent.setup(bot.url + "/webhook/dialogflow", DF_SETTINGS)
        return bot
    return make


def post_df(client, request: dict):
    return client.post("/webhook/dialogflow", data=json.dumps(request).encode(),
                       headers={"Content-Type": "application/json", "Authorization": GOOD_AUTH})


def es_turn(response_id: str, text: str, state: dict | None, session: str | None = None) -> dict:
    """Google's published ES request, with its ids, words and (optionally) the bot's state."""
    request = copy.deepcopy(ES_SAMPLE)
    request["responseId"] = response_id
    request["session"] = session or request["session"]
    request["queryResult"]["queryText"] = text
    if state is not None:
        request["queryResult"]["outputContexts"].append(
            {"name": request["session"] + "/contexts/" + STATE_NAME, "lifespanCount": 49, "parameters": state})
    return request


def test_dialogflow_a_session_named_agents_gets_an_answer_not_a_500(df):
    """MEDIUM-LOW. ``account()`` takes the path part after "agents" as the agent id; an ES
    session whose id is ``agents`` (ES session ids are chosen by whoever calls detectIntent:
    any string up to 36 characters) has nothing after it: IndexError, a 500 and a traceback on
    every turn, and that user never gets an answer. Hostile input must never be a 5xx."""
    bot = df()
    done = bot.agent.deliver("agents", "a cat fact please", flavour=ES)  # projects/<p>/agent/sessions/agents
    assert done.webhook_status == 200 and is_fact(done.text), done
    request = es_turn("resp-env", "a cat fact please", None,
                      session="projects/catfacts-demo-agent/agent/environments/draft/users/-/sessions/agents")
    assert post_df(bot.client, request).status_code == 200


@pytest.fixture
def hostile_facts_api():
    """A facts API whose answer is JSON nested too deep for the decoder (a broken or
    compromised third-party API, or something in between)."""
    app = Flask("hostile_facts")
    calls = []

    @app.get("/fact")
    def fact():
        calls.append(1)
        return ('{"fact": ' + "[" * 100_000 + "]" * 100_000 + "}", 200, {"Content-Type": "application/json"})

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield SimpleNamespace(url="http://127.0.0.1:%d/fact" % server.server_address[1], calls=calls)
    server.shutdown()
    server.server_close()


def test_dialogflow_a_facts_api_answer_that_breaks_the_client_still_gets_a_bundled_fact(df, hostile_facts_api):
    """MEDIUM-LOW. ``BoundedFacts.fetch`` handles only its own timeout; whatever the facts call
    raises comes out of ``future.result()`` into ``respond``. ``CatFactsAPI.fetch`` lets a
    RecursionError out (``response.json()`` on a deeply nested answer), so every fact turn gets
    a 500 (Dialogflow shows its static text, the log a traceback per turn), with no cooldown:
    the bad API is asked again on every turn. The bundled facts exist for exactly this."""
    bot = df(catfacts_api_url=hostile_facts_api.url)
    answers = [post_df(bot.client, es_turn(f"r-{i}", "a cat fact please", None)) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all(is_fact(a.get_json().get("fulfillmentText")) for a in answers)
    assert len(hostile_facts_api.calls) <= 1, "the failing API was asked on every turn"
