"""The X emulator behaves like the parts of X the bot touches, refusals included."""
import json
import time

import pytest
import requests
from flask import Flask, jsonify, request
from requests_oauthlib import OAuth1

from conftest import CREDS, ServerThread
from catbot.security import crc_response_token

USER = OAuth1(CREDS.consumer_key, CREDS.consumer_secret, CREDS.access_token, CREDS.access_token_secret)


def send(emulator, auth=USER, to="3000000002", text="hi"):
    return requests.post(f"{emulator.url}/2/dm_conversations/with/{to}/messages", json={"text": text}, auth=auth)


@pytest.fixture
def webhook_server():
    """A webhook on loopback that answers CRC with a chosen secret and records deliveries."""
    app = Flask("recorder")
    state = {"secret": CREDS.consumer_secret, "deliveries": []}

    @app.get("/webhook")
    def crc():
        return jsonify(response_token=crc_response_token(state["secret"], request.args["crc_token"]))

    @app.post("/webhook")
    def deliver():
        state["deliveries"].append((request.headers.get("x-twitter-webhooks-signature"), request.get_data()))
        return "", 200

    server = ServerThread(app)
    state["url"] = server.url + "/webhook"
    yield state
    server.stop()


def test_signed_dm_is_accepted_with_xs_shape_and_rate_headers(emulator):
    response = send(emulator)
    assert response.status_code == 201
    data = response.json()["data"]
    assert data["dm_conversation_id"] == "2000000001-3000000002" and data["dm_event_id"]
    assert response.headers["x-rate-limit-limit"] == "15" and response.headers["x-rate-limit-remaining"] == "14"
    assert int(response.headers["x-rate-limit-reset"]) > time.time()
    assert emulator.sent[0].text == "hi"


@pytest.mark.parametrize("auth", [
    OAuth1(CREDS.consumer_key, "wrong", CREDS.access_token, CREDS.access_token_secret),
    OAuth1(CREDS.consumer_key, CREDS.consumer_secret, CREDS.access_token, "wrong"),
    OAuth1("other-key", CREDS.consumer_secret, CREDS.access_token, CREDS.access_token_secret),
    None,
])
def test_badly_signed_dm_is_401(emulator, auth):
    response = send(emulator, auth=auth)
    assert response.status_code == 401
    assert emulator.sent == []


def test_tampered_url_breaks_the_signature(emulator):
    prepared = requests.Request("POST", f"{emulator.url}/2/dm_conversations/with/3000000002/messages",
                                json={"text": "hi"}, auth=USER).prepare()
    prepared.url = prepared.url.replace("3000000002", "3000000003")
    assert requests.Session().send(prepared).status_code == 401


def test_rate_limit_answers_429_with_reset(emulator):
    emulator.set_rate_limit(2, 30)
    assert [send(emulator).status_code for _ in range(3)] == [201, 201, 429]
    limited = send(emulator)
    assert limited.headers["x-rate-limit-remaining"] == "0"
    assert time.time() < int(limited.headers["x-rate-limit-reset"]) <= time.time() + 32


def test_rate_window_resets(emulator):
    emulator.set_rate_limit(1, 0.5)
    assert send(emulator).status_code == 201
    assert send(emulator).status_code == 429
    time.sleep(0.6)
    assert send(emulator).status_code == 201


def test_injected_faults(emulator):
    emulator.faults.errors_5xx = 1
    emulator.faults.forbidden = {"3000000009"}
    assert send(emulator).status_code == 503
    assert send(emulator, to="3000000009").status_code == 403
    emulator.faults.latency = 0.3
    started = time.monotonic()
    assert send(emulator).status_code == 201
    assert time.monotonic() - started >= 0.3


def test_webhook_creation_runs_a_real_crc(emulator, webhook_server):
    bearer = {"Authorization": f"Bearer {CREDS.bearer_token}"}
    created = requests.post(f"{emulator.url}/2/webhooks", json={"url": webhook_server["url"]}, headers=bearer)
    assert created.status_code == 200 and created.json()["data"]["valid"] is True
    assert emulator.crc_checks == 1


def test_webhook_with_wrong_crc_answer_is_refused(emulator, webhook_server):
    webhook_server["secret"] = "another secret"
    bearer = {"Authorization": f"Bearer {CREDS.bearer_token}"}
    refused = requests.post(f"{emulator.url}/2/webhooks", json={"url": webhook_server["url"]}, headers=bearer)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["message"].startswith("CrcValidationFailed")
    assert emulator.webhooks == {}


def test_management_needs_the_bearer_token(emulator):
    assert requests.get(f"{emulator.url}/2/webhooks").status_code == 401
    assert requests.get(f"{emulator.url}/2/webhooks", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_oauth2_token_checks_the_consumer_credentials(emulator):
    ok = requests.post(f"{emulator.url}/oauth2/token", data={"grant_type": "client_credentials"},
                       auth=(CREDS.consumer_key, CREDS.consumer_secret))
    assert ok.json() == {"token_type": "bearer", "access_token": CREDS.bearer_token}
    bad = requests.post(f"{emulator.url}/oauth2/token", data={"grant_type": "client_credentials"},
                        auth=(CREDS.consumer_key, "wrong"))
    assert bad.status_code == 403


def test_strict_urls_refuse_http(emulator, webhook_server):
    emulator.strict_urls = True
    bearer = {"Authorization": f"Bearer {CREDS.bearer_token}"}
    refused = requests.post(f"{emulator.url}/2/webhooks", json={"url": webhook_server["url"]}, headers=bearer)
    assert refused.json()["errors"][0]["message"].startswith("UrlValidationFailed")


def test_deliveries_are_signed_and_the_bots_own_dms_echo_back(emulator, webhook_server):
    emulator.register(webhook_server["url"])
    emulator.deliver_dm("3000000002", "hello")
    assert send(emulator, text="a cat fact").status_code == 201
    deadline = time.monotonic() + 5
    while len(webhook_server["deliveries"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    (sig1, body1), (sig2, body2) = webhook_server["deliveries"]
    assert sig1 == crc_response_token(CREDS.consumer_secret, body1.decode())  # same primitive
    echoed = json.loads(body2)["direct_message_events"][0]
    assert echoed["message_create"]["sender_id"] == "2000000001"  # the bot's own DM, as X does


def test_redelivery_sends_identical_bytes(emulator, webhook_server):
    emulator.register(webhook_server["url"])
    event_id, _ = emulator.deliver_dm("3000000002", "hello")
    emulator.redeliver(event_id)
    first, second = webhook_server["deliveries"]
    assert first == second


BEARER = {"Authorization": f"Bearer {CREDS.bearer_token}"}
SUBS = "/2/account_activity/webhooks/1/subscriptions"
# Every authenticated route and the credentials X accepts there (x-api-facts.md): "bearer" is the
# app-only token, "user" an OAuth 1.0a signature as the bot account.
ROUTES = [
    ("POST", "/2/dm_conversations/with/3000000002/messages", {"user"}),
    ("POST", "/2/webhooks", {"bearer", "user"}),
    ("GET", "/2/webhooks", {"bearer"}),
    ("PUT", "/2/webhooks/1", {"bearer", "user"}),
    ("DELETE", "/2/webhooks/1", {"bearer", "user"}),
    ("POST", SUBS + "/all", {"user"}),
    ("GET", SUBS + "/all", {"user"}),
    ("GET", SUBS + "/all/list", {"bearer"}),
    ("GET", "/2/account_activity/subscriptions/count", {"bearer"}),
    ("DELETE", SUBS + "/3000000002/all", {"bearer"}),
    ("POST", "/2/webhooks/replay", {"bearer"}),
]
CREDENTIALS = {
    "bearer": {"headers": BEARER},
    "user": {"auth": USER},
    "none": {},
    "wrong bearer": {"headers": {"Authorization": "Bearer nope"}},
    "badly signed user": {"auth": OAuth1(CREDS.consumer_key, "wrong", CREDS.access_token, CREDS.access_token_secret)},
}


@pytest.mark.parametrize("method,path,accepted", ROUTES)
def test_each_route_accepts_exactly_xs_credentials(emulator, method, path, accepted):
    for name, credential in CREDENTIALS.items():
        status = requests.request(method, emulator.url + path, **credential).status_code
        assert (status != 401) == (name in accepted), (name, status)


@pytest.mark.parametrize("method,path,accepted", ROUTES)
def test_a_refusal_says_why_only_where_the_bot_signature_is_the_one_way_in(emulator, method, path, accepted):
    refused = requests.request(method, emulator.url + path)
    detail = "Unauthorized" if "bearer" in accepted else "Unauthorized (missing OAuth 1.0a Authorization header)"
    assert refused.json() == {"title": "Unauthorized", "detail": detail, "type": "about:blank", "status": 401}


def test_a_refused_dm_is_counted_and_recorded(emulator):
    assert send(emulator, auth=None).status_code == 401
    assert emulator.dm_attempts == 1
    assert [(r["status"], r["reason"]) for r in emulator.rejected] == [(401, "missing OAuth 1.0a Authorization header")]


def test_a_failed_recheck_answers_200_with_valid_false(emulator, webhook_server):
    """X's docs: 200 on PUT /2/webhooks/:id only means the check ran; ``valid`` is its verdict."""
    hook = emulator.register(webhook_server["url"])
    webhook_server["secret"] = "another secret"
    answer = requests.put(f"{emulator.url}/2/webhooks/{hook.id}", headers=BEARER)
    assert (answer.status_code, answer.json()) == (200, {"data": {"valid": False}})
    assert emulator.webhooks[hook.id].valid is False
    webhook_server["secret"] = CREDS.consumer_secret
    assert requests.put(f"{emulator.url}/2/webhooks/{hook.id}", headers=BEARER).json() == {"data": {"valid": True}}


def _replay(emulator, webhook_id, start: float, end: float):
    fmt = "%Y%m%d%H%M"
    body = {"webhook_id": webhook_id, "from_date": time.strftime(fmt, time.gmtime(start)),
            "to_date": time.strftime(fmt, time.gmtime(end))}
    return requests.post(f"{emulator.url}/2/webhooks/replay", json=body, headers=BEARER)


def test_replay_refuses_a_from_date_older_than_24_hours_to_the_minute(emulator, webhook_server):
    hook = emulator.register(webhook_server["url"])
    now = time.time()
    refused = _replay(emulator, hook.id, now - 24 * 3600 - 60, now)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["message"].startswith("QueryParamInvalid")
    assert _replay(emulator, hook.id, now - 24 * 3600 + 60, now).status_code == 200
    future = _replay(emulator, hook.id, now - 3600, now + 120)
    assert future.json()["errors"][0]["message"].startswith("QueryParamInvalid")
