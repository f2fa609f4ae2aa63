"""The X emulator behaves like the parts of X the bot touches, refusals included."""
import json
import time

import pytest
import requests
from flask import Flask, jsonify, request
from requests_oauthlib import OAuth1

from helpers import CREDS, ServerThread, payload
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
    ("POST", "/2/activity/subscriptions", {"bearer", "user"}),
    ("GET", "/2/activity/subscriptions", {"bearer", "user"}),
    ("PUT", "/2/activity/subscriptions/1", {"bearer"}),
    ("DELETE", "/2/activity/subscriptions/1", {"bearer"}),
    ("DELETE", "/2/activity/subscriptions?ids=1", {"bearer"}),
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


# -- the X Activity API (XAA) -----------------------------------------------------------------------
ACTIVITY = "/2/activity/subscriptions"
BOT_DMS = {"event_type": "dm.received", "filter": {"user_id": CREDS.bot_user_id}}


def create(emulator, body, auth=USER, **kwargs):
    return requests.post(emulator.url + ACTIVITY, json=body, auth=auth, **kwargs)


@pytest.fixture
def hook(emulator, webhook_server):
    """A webhook X has validated, with no subscription yet."""
    created = requests.post(f"{emulator.url}/2/webhooks", json={"url": webhook_server["url"]}, headers=BEARER)
    return created.json()["data"]


def test_subscribing_the_bots_dms_answers_xs_shape(emulator, hook):
    answer = create(emulator, {**BOT_DMS, "webhook_id": hook["id"], "tag": "catfacts-bot"})
    assert answer.status_code == 200, answer.text
    sub = answer.json()["data"]["subscription"]  # OpenAPI 2.167: CreateActivitySubscriptionResponse
    assert sub["subscription_id"].isdigit() and sub["created_at"] and sub["updated_at"]
    assert {k: sub[k] for k in ("event_type", "filter", "tag", "webhook_id")} == {
        **BOT_DMS, "tag": "catfacts-bot", "webhook_id": hook["id"]}
    listed = requests.get(emulator.url + ACTIVITY, headers=BEARER).json()
    assert listed["data"] == [sub] and listed["meta"]["total_subscriptions"] == 1


@pytest.mark.parametrize("body,needle", [
    ({**BOT_DMS, "event_type": "DMReceived"}, "event_type"),
    ({"event_type": "dm.received", "filter": {}}, "user_id"),
    ({"event_type": "dm.received"}, "filter"),
    ({**BOT_DMS, "filter": {"user_id": "2000000001", "colour": "blue"}}, "colour"),
    ({**BOT_DMS, "filter": {"user_id": "not-a-number"}}, "user_id"),
    ({**BOT_DMS, "tag": ""}, "tag"),
    ({**BOT_DMS, "tag": "x" * 201}, "tag"),
    ({**BOT_DMS, "delivery": "fast"}, "delivery"),
    ({**BOT_DMS, "webhook_id": "abc"}, "webhook_id"),
])
def test_invalid_subscriptions_are_refused_naming_the_parameter(emulator, body, needle):
    refused = create(emulator, body)
    assert refused.status_code == 400
    problem = refused.json()
    assert problem["title"] == "Invalid Request" and problem["type"].endswith("/problems/invalid-request")
    assert needle in json.dumps(problem["errors"])
    assert emulator.activity_subscriptions == {}


def test_unknown_webhook_duplicate_and_limit_are_xs_reasons(emulator, hook):
    unknown = create(emulator, {**BOT_DMS, "webhook_id": "1234"})
    assert unknown.json()["errors"][0]["message"].startswith("WebhookIdInvalid")
    assert create(emulator, {**BOT_DMS, "webhook_id": hook["id"]}).status_code == 200
    duplicate = create(emulator, {**BOT_DMS, "webhook_id": hook["id"], "tag": "again"})
    assert duplicate.status_code == 400
    assert duplicate.json()["errors"][0]["message"].startswith("DuplicateSubscriptionFailed")
    emulator.activity_subscription_limit = 1
    full = create(emulator, {"event_type": "dm.sent", "filter": {"user_id": CREDS.bot_user_id}})
    assert full.json()["errors"][0]["message"].startswith("SubscriptionLimitExceeded")


def test_private_events_need_the_monitored_accounts_user_context(emulator):
    """The docs' prose: dm.* are private events; the app's bearer token cannot subscribe to them,
    and the bot's own signature only to its own."""
    with_bearer = create(emulator, BOT_DMS, auth=None, headers=BEARER)
    assert with_bearer.status_code == 403
    assert "User Context" in with_bearer.json()["detail"]
    someone_else = create(emulator, {"event_type": "dm.received", "filter": {"user_id": "3000000002"}})
    assert someone_else.status_code == 403
    public = create(emulator, {"event_type": "follow.follow", "filter": {"user_id": "3000000002"}},
                    auth=None, headers=BEARER)
    assert public.status_code == 200


@pytest.mark.parametrize("access,needle", [("forbidden", "client-forbidden"),
                                           ("oauth2", "unsupported-authentication")])
def test_an_app_x_refuses_xaa_gets_xs_403(emulator, access, needle):
    emulator.activity_access = access
    refused = create(emulator, BOT_DMS)
    assert refused.status_code == 403 and refused.json()["type"].endswith(needle)
    if access == "oauth2":
        assert "OAuth 2.0 User Context" in refused.json()["detail"]
    assert emulator.activity_subscriptions == {}


def test_subscriptions_are_listed_in_pages(emulator):
    events = ["dm.received", "dm.sent", "dm.read", "dm.indicate_typing", "follow.follow"]
    for event_type in events:
        assert create(emulator, {"event_type": event_type, "filter": {"user_id": CREDS.bot_user_id}}).status_code == 200
    seen, token = [], None
    while True:
        params = {"max_results": 2, **({"pagination_token": token} if token else {})}
        page = requests.get(emulator.url + ACTIVITY, params=params, auth=USER).json()
        assert page["meta"]["result_count"] == len(page["data"]) <= 2
        seen += [s["event_type"] for s in page["data"]]
        token = page["meta"].get("next_token")
        if not token:
            break
    assert seen == events
    bad = requests.get(emulator.url + ACTIVITY, params={"pagination_token": "nope"}, headers=BEARER)
    assert bad.status_code == 400


def test_update_moves_a_subscription_to_another_webhook_and_nothing_else(emulator, hook, webhook_server):
    emulator.webhook_limit = 2
    other = requests.post(f"{emulator.url}/2/webhooks", json={"url": webhook_server["url"] + "?v=2"},
                          headers=BEARER).json()["data"]
    sub = create(emulator, {**BOT_DMS, "webhook_id": hook["id"]}).json()["data"]["subscription"]
    path = f"{emulator.url}{ACTIVITY}/{sub['subscription_id']}"
    assert requests.put(path, json={"webhook_id": other["id"]}, auth=USER).status_code == 401  # bearer only
    moved = requests.put(path, json={"webhook_id": other["id"], "tag": "new"}, headers=BEARER)
    assert moved.status_code == 200
    data = moved.json()["data"]
    assert data["subscription"]["webhook_id"] == other["id"] and data["subscription"]["tag"] == "new"
    assert data["total_subscriptions"] == 1
    refused = requests.put(path, json={"event_type": "dm.sent"}, headers=BEARER)
    assert refused.status_code == 400 and "event_type" in json.dumps(refused.json())
    gone = requests.put(f"{emulator.url}{ACTIVITY}/1234", json={"tag": "x"}, headers=BEARER)
    assert gone.status_code == 404


def test_delete_one_and_by_ids(emulator):
    ids = [create(emulator, {"event_type": t, "filter": {"user_id": CREDS.bot_user_id}}).json()
           ["data"]["subscription"]["subscription_id"] for t in ("dm.received", "dm.sent", "dm.read")]
    deleted = requests.delete(f"{emulator.url}{ACTIVITY}/{ids[0]}", headers=BEARER)
    assert deleted.json() == {"data": {"deleted": True}, "meta": {"total_subscriptions": 2}}
    assert requests.delete(f"{emulator.url}{ACTIVITY}/{ids[0]}", headers=BEARER).status_code == 404
    several = requests.delete(emulator.url + ACTIVITY, params={"ids": f"{ids[1]},{ids[2]},{ids[0]}"},
                              headers=BEARER).json()
    assert several["data"] == [{"subscription_id": ids[1], "deleted": True},
                               {"subscription_id": ids[2], "deleted": True}]
    assert [e["subscription_id"] for e in several["errors"]] == [ids[0]]
    assert several["meta"] == {"total_subscriptions": 0}


def deliveries(webhook_server, count: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while len(webhook_server["deliveries"]) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)  # anything more would be one too many
    return [json.loads(body) for _, body in webhook_server["deliveries"]]


def shape(value):
    """The structure of a JSON value: keys in order and the types of leaves (ids as "id")."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


def test_a_dm_arrives_in_the_envelope_of_xs_published_dm_received_sample(emulator, webhook_server):
    emulator.register(webhook_server["url"], api="xaa")
    emulator.deliver_dm("3000000002", "hello!")
    [delivery] = deliveries(webhook_server, 1)
    sample = payload("xaa/dm_received.json")  # X's sample from event-payloads.mdx, ids substituted
    data = delivery["data"]
    assert list(data) == list(sample["data"])  # event_uuid, filter, event_type, tag, payload
    assert shape(data["payload"]["direct_message_events"]) == shape(sample["data"]["payload"]["direct_message_events"])
    assert (data["filter"], data["event_type"], data["tag"]) == ({"user_id": CREDS.bot_user_id}, "dm.received",
                                                                 "catfacts-bot")
    assert int(data["event_uuid"]) < 2**63 and int(data["event_uuid"]) >= -2**63
    users = data["payload"]["users"]
    assert sorted(users) == ["2000000001", "3000000002"]
    sample_user = next(iter(sample["data"]["payload"]["users"].values()))["data"]
    assert set(users["3000000002"]) == {"data"} and set(users["3000000002"]["data"]) <= set(sample_user)
    assert users["3000000002"]["data"]["id"] == "3000000002"


def test_deliveries_follow_subscriptions_both_apis_during_a_move(emulator, webhook_server):
    emulator.register(webhook_server["url"])  # the helpers' default: an Account Activity subscription
    [hook] = emulator.webhooks.values()
    emulator.subscribe_activity("dm.received", hook.id)
    event_id, answer = emulator.deliver_dm("3000000002", "hi")
    assert answer.status_code == 200
    received = deliveries(webhook_server, 2)
    assert len(received) == 2
    xaa = next(d for d in received if "data" in d)["data"]["payload"]["direct_message_events"][0]
    aaa = next(d for d in received if "for_user_id" in d)["direct_message_events"][0]
    assert xaa["id"] == aaa["id"] == event_id  # one DM, two envelopes: the bot de-duplicates on the id


def test_the_bots_own_dm_is_dm_sent_only_for_a_dm_sent_subscription(emulator, webhook_server):
    emulator.register(webhook_server["url"], api="xaa")
    assert send(emulator, text="a cat fact").status_code == 201
    assert deliveries(webhook_server, 1, timeout=0.5) == []  # dm.received only: no echo through XAA
    [hook] = emulator.webhooks.values()
    emulator.subscribe_activity("dm.sent", hook.id, tag="dm-outbound")
    assert send(emulator, text="another fact").status_code == 201
    [delivery] = deliveries(webhook_server, 1)
    assert delivery["data"]["event_type"] == "dm.sent" and delivery["data"]["tag"] == "dm-outbound"
    event = delivery["data"]["payload"]["direct_message_events"][0]
    assert event["message_create"]["sender_id"] == CREDS.bot_user_id
    assert event["message_create"]["target"]["recipient_id"] == "3000000002"


@pytest.mark.parametrize("event_type,fixture", [
    ("follow.follow", "xaa/follow_follow.json"),
    ("oauth.revoke", "xaa/oauth_revoke.json"),
    ("chat.sent", "xaa/chat_sent.json"),
    ("dm.read", None),
    ("dm.indicate_typing", None),
])
def test_other_event_types_reach_only_their_subscribers(emulator, webhook_server, event_type, fixture):
    emulator.register(webhook_server["url"], api="xaa")
    assert emulator.deliver_activity(event_type, "3000000002") == []  # nobody subscribed to it
    [hook] = emulator.webhooks.values()
    emulator.subscribe_activity(event_type, hook.id)
    [answer] = emulator.deliver_activity(event_type, "3000000002")
    assert answer.status_code == 200
    [delivery] = deliveries(webhook_server, 1)
    assert delivery["data"]["event_type"] == event_type
    if fixture:
        sample = payload(fixture)["data"]
        assert list(delivery["data"]) == [k for k in sample if k != "tag"]
        assert list(delivery["data"]["payload"]) == list(sample["payload"])


def test_the_switch_chooses_what_register_subscribes_and_the_helpers_build(emulator, webhook_server):
    assert "for_user_id" in emulator.envelope([emulator.dm_event("3000000002", "hi")])
    answer = requests.post(f"{emulator.url}/_emulator/config", json={"api": "xaa"})
    assert answer.json()["api"] == "xaa" and emulator.api == "xaa"
    assert emulator.envelope([emulator.dm_event("3000000002", "hi")])["data"]["event_type"] == "dm.received"
    emulator.register(webhook_server["url"])
    assert emulator.subscriptions == {} and len(emulator.activity_subscriptions) == 1
    assert requests.get(f"{emulator.url}/_emulator/state").json()["activity_subscriptions"][0]["event_type"] \
        == "dm.received"


def test_redelivery_finds_a_dm_in_either_envelope(emulator, webhook_server):
    emulator.register(webhook_server["url"], api="xaa")
    event_id, _ = emulator.deliver_dm("3000000002", "hello")
    emulator.redeliver(event_id)
    first, second = webhook_server["deliveries"]
    assert first == second


def test_the_control_api_registers_and_delivers_through_the_switchs_api(emulator, webhook_server):
    control = emulator.url + "/_emulator"
    assert requests.post(control + "/config", json={"api": "sideways"}).status_code == 400
    assert requests.post(control + "/register", json={"url": webhook_server["url"], "api": "xaa"}).status_code == 200
    assert requests.post(control + "/deliver", json={"sender_id": "3000000002", "text": "hi"}).json()[
        "webhook_status"] == 200
    explicit = {"sender_id": "3000000002", "text": "hi", "url": webhook_server["url"], "api": "aaa"}
    assert requests.post(control + "/deliver", json=explicit).status_code == 200
    assert requests.post(control + "/activity", json={"event_type": "follow.follow"}).json() == {
        "webhook_statuses": []}
    first, second = deliveries(webhook_server, 2)
    assert first["data"]["event_type"] == "dm.received" and "for_user_id" in second
