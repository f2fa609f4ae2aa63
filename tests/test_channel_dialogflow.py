"""Dialogflow fulfillment (ES and CX) through the HTTP layer: the emulator plays the agent that
calls the bot's webhook with basic auth and shows the answer; Google's published sample
requests are in tests/payloads/dialogflow/.

Dialogflow answers synchronously, so some of the other channels' rules take another form here:
nothing is queued or sent later (no rate limit to respect, no 429 to wait out: the bot calls no
Dialogflow API), there are no echoes of the bot's own messages (Dialogflow shows the answer
itself), and a turn Dialogflow starts without the user's words (an event) is its own "system
event": acknowledged with an empty answer.
"""
import base64
import json
import logging
import time

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from api_config import SettingsError, load_settings
from catbot.channels.dialogflow import (FACT_INTENTS, FACT_WAIT, PASSWORD, STATE_NAME, USERNAME, DialogflowChannel,
                                        basic_authorization, check_basic_auth, Auth)
from catbot.outbound import Outcome
from catbot.replies import FACT_OPENERS, HELP_TEXT, START_TEXT, STOP_TEXT, Intent
from catbot.store import Batch
from catbot.web import MAX_BODY, create_app
from helpers import PAYLOADS, captured, runtime_of
from test_settings import FULL, config  # the one way tests write a .env
from x_emulator.platforms.dialogflow import CX, DEMO_SETTINGS, ES

USER = "3000000901"
SECRET_WORDS = "violet-armadillo-tango"
# Google's published samples, ids substituted: ES from "Webhook service"
# (https://cloud.google.com/dialogflow/es/docs/fulfillment-webhook, "Webhook request"), CX from
# googleapis/python-dialogflow-cx samples/snippets/webhook_test.py.
ES_SAMPLE = (PAYLOADS / "dialogflow" / "es_webhook_request.json").read_bytes()
CX_SAMPLE = (PAYLOADS / "dialogflow" / "cx_webhook_request.json").read_bytes()
GOOD_AUTH = basic_authorization(DEMO_SETTINGS[USERNAME], DEMO_SETTINGS[PASSWORD])


def channel_settings(settings, **values):
    return settings.replace(channels={"dialogflow": {**DEMO_SETTINGS, FACT_INTENTS: "", **values}})


@pytest.fixture
def make_bot(emulator, settings, serve):
    """The bot with Dialogflow on, served on loopback, the emulator's agents calling it; its
    clock can run ahead (``bot.later``, to pass the cap's hour)."""
    def make(changes=None, **values):
        bot = serve(channel_settings(settings, **values).replace(**(changes or {})))
        bot.agent = emulator.platform("dialogflow")
        bot.agent.setup(bot.url + "/webhook/dialogflow", DEMO_SETTINGS)
        return bot
    return make


@pytest.fixture
def bot(make_bot):
    return make_bot()


def post(client, body: bytes, authorization: str | None = GOOD_AUTH):
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return client.post("/webhook/dialogflow", data=body, headers=headers)


def texts(emulator, user: str = USER) -> list[str]:
    return [m.text for m in emulator.sent_to(user) if m.channel == "dialogflow"]


def is_fact(text: str) -> bool:
    return text.split("\n", 1)[0] in FACT_OPENERS


# -- the published samples --------------------------------------------------------------------------
def test_the_published_es_request_gets_a_fact_in_the_response(bot):
    answer = post(bot.client, ES_SAMPLE)
    assert answer.status_code == 200
    body = answer.get_json()
    text = body["fulfillmentText"]
    assert is_fact(text) and body["fulfillmentMessages"] == [{"text": {"text": [text]}}]
    [context] = body["outputContexts"]  # the bot's own state only; the agent keeps its other contexts
    assert context["name"] == "projects/catfacts-demo-agent/agent/sessions/3000000901/contexts/" + STATE_NAME
    assert context["parameters"]["stopped"] is False and len(context["parameters"]["sent"]) == 1


def test_the_published_cx_request_gets_a_fact_in_the_response(bot):
    answer = post(bot.client, CX_SAMPLE)
    assert answer.status_code == 200
    body = answer.get_json()
    [message] = body["fulfillmentResponse"]["messages"]
    assert is_fact(message["text"]["text"][0])
    assert set(body["sessionInfo"]["parameters"]) == {STATE_NAME}


def test_the_record_of_a_turn_has_the_pipeline_s_shape(settings):
    """What a turn would be as a record (nothing is kept: the answer is given at once)."""
    channel = DialogflowChannel(DEMO_SETTINGS)
    [es] = channel.parse(ES_SAMPLE, settings).messages
    assert (es.kind, es.for_user_id, es.user_id, es.event_id, es.intent, es.payload) == (
        "dialogflow", "dialogflow:catfacts-demo-agent", "3000000901", "c4b863dd-aafe-41ad-a115-91736b665cb9-0f0e27e1",
        Intent.FACT, None)
    [cx] = channel.parse(CX_SAMPLE, settings).messages
    assert (cx.for_user_id, cx.user_id) == ("dialogflow:0078f973-e212-4c69-a707-a6e66e3270ce",
                                            "bd38c7-398-d25-963-7c23a0533")


# -- a conversation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("flavour", [ES, CX])
def test_help_stop_and_start_work(bot, emulator, flavour):
    for text in ("help", "stop", "hi", "start", "hello"):
        assert bot.agent.deliver(USER, text, flavour=flavour).webhook_status == 200
    replies = texts(emulator)
    assert replies[:3] == [HELP_TEXT, STOP_TEXT, START_TEXT] and is_fact(replies[3]) and len(replies) == 4


def test_an_opted_out_session_gets_no_text_so_the_agent_s_own_response_plays(bot):
    bot.agent.deliver(USER, "stop")
    answer = bot.agent.deliver(USER, "a fact please").answer
    assert "fulfillmentText" not in answer and "fulfillmentMessages" not in answer
    assert answer["outputContexts"][0]["parameters"]["stopped"] is True


def test_stop_is_per_session(bot, emulator):
    bot.agent.deliver(USER, "stop")
    assert is_fact(bot.agent.deliver("3000000902", "hi").text)


def test_a_turn_started_by_an_event_is_acknowledged_and_never_answered(bot, emulator, facts_api):
    for flavour in (ES, CX):
        done = bot.agent.deliver_event(USER, "WELCOME", flavour=flavour)
        assert (done.webhook_status, done.answer) == (200, {})
    assert emulator.sent == [] and facts_api.calls == []


def test_fact_intents_limit_facts_but_not_commands(make_bot, emulator):
    bot = make_bot(**{FACT_INTENTS: "cat.fact, Tell me about cats"})
    assert bot.agent.deliver(USER, "hello", intent="Default Fallback Intent").text is None
    assert bot.agent.deliver(USER, "help", intent="Default Fallback Intent").text == HELP_TEXT
    assert is_fact(bot.agent.deliver(USER, "hello", intent="cat.fact").text)
    assert is_fact(bot.agent.deliver(USER, "hello", intent="Tell me about cats", flavour=CX).text)  # a CX tag too


def test_trigger_pattern_applies(make_bot):
    bot = make_bot(changes={"trigger_pattern": "cat"})
    assert bot.agent.deliver(USER, "hello").text is None
    assert is_fact(bot.agent.deliver(USER, "a cat fact?").text)


def test_the_per_user_cap_holds_for_an_hour_per_session(bot, emulator):
    for i in range(5):
        assert is_fact(bot.agent.deliver(USER, f"fact {i}").text)
    capped = bot.agent.deliver(USER, "one more")
    assert capped.text is None and capped.webhook_status == 200
    assert is_fact(bot.agent.deliver("3000000902", "hi").text)  # another session is not held back
    bot.later[0] = 3601.0
    assert is_fact(bot.agent.deliver(USER, "an hour later").text)
    assert len(texts(emulator)) == 6


@pytest.mark.parametrize("flavour", [ES, CX])
def test_a_retried_request_is_answered_the_same_and_counted_once(bot, emulator, facts_api, flavour):
    facts_api.mode = "down"  # bundled facts: the same request picks the same one
    first = bot.agent.deliver(USER, "hi", flavour=flavour)
    again = bot.agent.redeliver(first.event_id)
    assert again.text == first.text and len(texts(emulator)) == 1  # the user saw one answer
    assert len(bot.agent.kept(USER, flavour)["sent"]) == 1
    bot.agent.deliver(USER, "another", flavour=flavour)
    assert len(bot.agent.kept(USER, flavour)["sent"]) == 2


def test_bundled_facts_walk_the_session_s_own_order(bot, facts_api):
    facts_api.mode = "down"
    facts = {bot.agent.deliver(USER, f"fact {i}").text.split("\n\n")[1] for i in range(3)}
    assert len(facts) == 3


def test_a_slow_facts_api_still_gets_an_answer_well_inside_the_deadline(bot, facts_api):
    facts_api.mode = "slow"  # answers after 3 s
    started = time.monotonic()
    done = bot.agent.deliver(USER, "hi")
    took = time.monotonic() - started
    assert done.error is None and is_fact(done.text) and "API fact" not in done.text
    assert took < min(FACT_WAIT, 1.0) + 0.5  # the fixture's CATFACTS_TIMEOUT is 1 s: the shorter bound
    started = time.monotonic()
    assert is_fact(bot.agent.deliver("3000000902", "hi").text)
    assert time.monotonic() - started < 0.3  # the API is left alone for a while: no second wait


def test_user_words_are_never_logged_or_kept(bot, emulator):
    with captured("catbot", logging.DEBUG) as handler:
        for flavour in (ES, CX):
            for text in (f"hello {SECRET_WORDS}", "stop", f"there? {SECRET_WORDS}", "start"):
                done = bot.agent.deliver(USER, text, flavour=flavour)
                assert SECRET_WORDS not in json.dumps(done.answer)
    assert handler.lines and not any(SECRET_WORDS in line for line in handler.lines)
    assert any("event=reply.sent" in line for line in handler.lines)


def test_the_emulator_s_control_routes_play_a_turn(bot, emulator):
    """What the demo uses: set-up, then turns of either flavour, and an event."""
    control = emulator.app.test_client()
    setup = {"webhook_url": bot.agent.webhook_url, "settings": DEMO_SETTINGS}
    assert control.post("/_emulator/dialogflow/setup", json=setup).status_code == 200

    def deliver(**turn):
        return control.post("/_emulator/dialogflow/deliver", json={"sender_id": USER, **turn})

    done = deliver(text="help", flavour="cx").get_json()
    assert done["webhook_status"] == 200 and done["text"] == HELP_TEXT and done["event_id"]
    assert deliver(event="WELCOME").get_json()["text"] is None
    assert deliver(text="hi", flavour="v1").status_code == 400


# -- verification: each failure mode, through HTTP ------------------------------------------------------
def refused(bot, facts_api, authorization, status, reason):
    with captured("catbot") as handler:
        answer = post(bot.client, ES_SAMPLE, authorization)
    assert answer.status_code == status and answer.get_json() == {"error": reason}
    [line] = handler.lines
    assert "event=delivery.rejected" in line and f'reason="{reason}"' in line
    assert DEMO_SETTINGS[PASSWORD] not in line + answer.get_data(as_text=True)
    assert facts_api.calls == [] and runtime_of(bot.app).backlog()["pending_messages"] == 0
    return answer


def test_no_credentials_are_refused_401_with_a_challenge(bot, facts_api):
    answer = refused(bot, facts_api, None, 401, "missing credentials")
    assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_another_scheme_is_refused_401(bot, facts_api):
    refused(bot, facts_api, "Bearer " + DEMO_SETTINGS[PASSWORD], 401, "malformed credentials")


def test_credentials_that_are_not_base64_are_refused_401(bot, facts_api):
    refused(bot, facts_api, "Basic not*base64!", 401, "malformed credentials")


def test_credentials_without_a_colon_are_refused_401(bot, facts_api):
    refused(bot, facts_api, "Basic " + base64.b64encode(b"justonepart").decode(), 401, "malformed credentials")


def test_a_wrong_password_is_refused_403(bot, facts_api):
    answer = refused(bot, facts_api, basic_authorization(DEMO_SETTINGS[USERNAME], "wrong-password"), 403,
                     "invalid credentials")
    assert "WWW-Authenticate" not in answer.headers


def test_a_wrong_login_is_refused_403(bot, facts_api):
    refused(bot, facts_api, basic_authorization("someone-else", DEMO_SETTINGS[PASSWORD]), 403, "invalid credentials")


def test_the_check_compares_the_whole_pair():
    assert check_basic_auth(basic_authorization("a", "b:c"), "a", "b:c") is Auth.OK
    # the same bytes on the wire: RFC 7617 allows no colon in a login, so the pair is compared whole
    assert check_basic_auth(basic_authorization("a:b", "c"), "a", "b:c") is Auth.OK
    assert check_basic_auth("basic " + basic_authorization("a", "b").split()[1], "a", "b") is Auth.OK
    assert check_basic_auth(basic_authorization("a", "B"), "a", "b") is Auth.WRONG


# -- malformed input: a clear 4xx, never a 5xx ------------------------------------------------------------
MALFORMED = [
    (b"", "body is not a JSON object"),
    (b"{not json", "body is not a JSON object"),
    (b"[1, 2]", "body is not a JSON object"),
    (b'{"hello": "world"}', "not a Dialogflow webhook request"),
    (b'{"responseId": "r1", "queryResult": {"queryText": "hi"}}', "not a Dialogflow webhook request"),
    (b'{"responseId": "r1", "session": "not/a/session", "queryResult": {}}', "not a Dialogflow webhook request"),
    (b'{"detectIntentResponseId": "r1", "sessionInfo": "x"}', "not a Dialogflow webhook request"),
]


def test_malformed_requests_get_a_clear_400(bot):
    for body, reason in MALFORMED:
        answer = post(bot.client, body)
        assert (answer.status_code, answer.get_json()) == (400, {"error": reason}), body


def test_an_oversized_body_gets_413(bot):
    assert post(bot.client, b"{" + b" " * MAX_BODY + b"}").status_code == 413


def test_hostile_state_in_the_session_is_read_as_a_new_session(bot):
    request = json.loads(ES_SAMPLE)
    request["queryResult"]["outputContexts"] = [{"name": request["session"] + "/contexts/" + STATE_NAME,
                                                 "parameters": {"stopped": "yes", "sent": ["x", 1e300, None] * 1000,
                                                                "seed": -5, "pos": 10**9}}]
    body = post(bot.client, json.dumps(request).encode()).get_json()
    assert is_fact(body["fulfillmentText"])
    assert len(body["outputContexts"][0]["parameters"]["sent"]) == 1


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                  max_size=4),
                    max_leaves=20)
KEYS = st.sampled_from(["responseId", "session", "queryResult", "detectIntentResponseId", "sessionInfo", "text",
                        "queryText", "intentInfo", "fulfillmentInfo", "outputContexts", "parameters", STATE_NAME])


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(KEYS, JSON | st.dictionaries(KEYS, JSON, max_size=4), max_size=6))
def test_no_request_shape_gets_a_5xx(bot, request):
    assert post(bot.client, json.dumps(request).encode()).status_code in (200, 400)


def test_get_is_not_served(bot):
    assert bot.client.get("/webhook/dialogflow").status_code == 405


# -- settings and the runtime ------------------------------------------------------------------------------
A_PASSWORD = "pw-very-secret-0123456789"


def test_a_login_without_its_password_stops_the_bot_naming_what_is_missing(tmp_path):
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, {**FULL, USERNAME: "agent"}))
    assert "dialogflow needs DIALOGFLOW_PASSWORD" in str(err.value)


def test_a_password_without_its_login_stops_the_bot_and_is_never_quoted(tmp_path):
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, {**FULL, PASSWORD: A_PASSWORD}))
    assert "dialogflow needs DIALOGFLOW_USERNAME" in str(err.value) and A_PASSWORD not in str(err.value)


@pytest.mark.parametrize("values, named", [
    ({USERNAME: "agent:one", PASSWORD: A_PASSWORD}, USERNAME),
    ({USERNAME: "agent", PASSWORD: "short-secret"}, PASSWORD),
])
def test_settings_dialogflow_could_not_use_stop_the_bot_naming_them_without_their_value(tmp_path, values, named):
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, {**FULL, **values}))
    message = str(err.value)
    assert named in message and values[PASSWORD] not in message


def test_dialogflow_alone_is_a_whole_bot_and_its_password_is_never_shown(tmp_path, emulator):
    loaded = load_settings(config(tmp_path, {USERNAME: "agent", PASSWORD: A_PASSWORD,
                                             "SQLITE_PATH": str(tmp_path / "bot.sqlite3")}))
    assert loaded.channels == {"dialogflow": {USERNAME: "agent", PASSWORD: A_PASSWORD, FACT_INTENTS: ""}}
    assert A_PASSWORD not in repr(loaded) + repr(DialogflowChannel(loaded.channels["dialogflow"]))
    client = create_app(loaded).test_client()
    assert A_PASSWORD not in client.get("/healthz").get_data(as_text=True)
    assert post(client, ES_SAMPLE, basic_authorization("agent", A_PASSWORD)).status_code == 200


def test_the_registered_sender_refuses_since_nothing_is_ever_sent_later(bot):
    sender = runtime_of(bot.app).replier.senders["dialogflow"]
    batch = Batch("dialogflow", "dialogflow:x", USER, "t", (1,), (Intent.FACT,), (None,), False, 0, 1, 0)
    assert sender.send(batch, "hello").outcome is Outcome.REJECTED
