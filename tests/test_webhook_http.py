"""Every path of the webhook through the real HTTP layer (Flask's test client), one per test."""
import json
import logging
import secrets
from urllib.parse import quote

import pytest

from helpers import BOT_ID, CREDS, captured, dm_delivery, dm_event, drain, payload, post_delivery, runtime_of, signed_headers
from catbot.runtime import import_journals
from catbot.security import MAX_CRC_TOKEN, crc_response_token

X_CRC_TOKEN = "M2RkODJkZmMtYjlkYi00NmQ4LTk0MGUtM2JjYzkwM2Q4MjQ0"  # as X sent it in 2026, with its nonce below


@pytest.fixture
def web_log():
    with captured("catbot.web", logging.DEBUG) as handler:
        yield handler


def pending(app) -> int:
    """Messages recorded and waiting for a reply, journal included (what a consumer would see)."""
    runtime = runtime_of(app)
    import_journals(runtime.backend)
    return runtime.store.health()["pending_messages"]


def test_crc_answers_with_hmac_of_token(client):
    response = client.get("/webhook/twitter?crc_token=abc123")
    assert response.status_code == 200
    assert response.is_json
    assert response.get_json() == {"response_token": crc_response_token(CREDS.consumer_secret, "abc123")}


def test_crc_ignores_extra_parameters(client):
    response = client.get("/webhook/twitter?crc_token=tok&nonce=xyz")
    assert response.get_json()["response_token"] == crc_response_token(CREDS.consumer_secret, "tok")


@pytest.mark.parametrize("query", ["", "?crc_token=", "?nonce=1"])
def test_crc_without_token_is_400(client, query):
    response = client.get("/webhook/twitter" + query)
    assert response.status_code == 400
    assert response.get_json() == {"error": "missing crc_token"}


def test_crc_known_answer_vector_through_http(make_app):
    """X's own known-answer vector whose message is token-shaped, end to end."""
    response = make_app(consumer_secret="ss").test_client().get("/webhook/twitter?crc_token=helloWorld")
    assert response.status_code == 200
    assert response.get_json() == {"response_token": "sha256=YFpPr1o5UmzuIUDQn+BqYQ14kFOjWiWYc7oNiVymMgg="}


@pytest.mark.parametrize("token", [
    X_CRC_TOKEN,
    secrets.token_urlsafe(24),  # what register_webhook.py's pre-flight and the emulator send
    "ab+/cd==",  # standard base64, percent-encoded on the way
    "A" * MAX_CRC_TOKEN,
])
def test_crc_answers_tokens_x_could_send(client, token):
    response = client.get(f"/webhook/twitter?crc_token={quote(token, safe='')}&nonce=MTc2OTUxODI5MjkxNA")
    assert response.status_code == 200
    assert response.get_json() == {"response_token": crc_response_token(CREDS.consumer_secret, token)}


@pytest.mark.parametrize("query", [
    "crc_token=" + quote(json.dumps({"for_user_id": BOT_ID, "direct_message_events": []})),
    "crc_token=" + quote("test=1&other_test=2"),  # a known-answer vector, but not a token
    "crc_token=html+body",  # `+` in a query is a space
    "crc_token=" + quote("tökén"),
    "crc_token=%D9%A1%D9%A2%D9%A3",  # Arabic-Indic digits
    "crc_token=%FF%FE",  # not even UTF-8
    "crc_token=abc%0A",
    "crc_token=abc%00",
    "crc_token=" + "A" * (MAX_CRC_TOKEN + 1),
    "crc_token=abc&crc_token=def",  # which one would be signed is up to the parser: refuse both
    "crc_token=abc&crc_token=",
])
def test_crc_token_that_x_could_not_have_sent_is_400_without_signature(client, query, web_log):
    response = client.get("/webhook/twitter?" + query)
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid crc_token"}
    assert "sha256=" not in response.get_data(as_text=True)
    [line] = [line for line in web_log.lines if "event=crc.rejected" in line]
    assert "abc" not in line and "AAAA" not in line and "for_user_id" not in line  # the token is not echoed


def test_crc_route_is_not_a_signing_oracle(app, client, emulator):
    """The attack from issue 10: ask the CRC route to sign a forged delivery, then post it.

    The forged body opts user 3000000007 out with "stop" and makes the bot DM 3000000008,
    who never wrote. Everything that happened is compared at once, so a failure shows the
    whole attack: signature given, delivery accepted, DMs sent."""
    victim, stranger = "3000000007", "3000000008"
    forged = json.dumps({"for_user_id": BOT_ID, "direct_message_events": [
        dm_event(victim, "stop", "1900000000000000001"), dm_event(stranger, "hi", "1900000000000000002")]},
        separators=(",", ":"))
    assert len(forged) < 3000  # fits in a URL
    crc = client.get("/webhook/twitter", query_string={"crc_token": forged})
    stolen = (crc.get_json() or {}).get("response_token", "")
    post = client.post("/webhook/twitter", data=forged.encode(),
                       headers={"Content-Type": "application/json", "x-twitter-webhooks-signature": stolen})
    drain(app)
    outcome = {"crc_status": crc.status_code, "signature_given": bool(stolen), "post_status": post.status_code,
               "dms_sent": sorted(dm.participant_id for dm in emulator.sent)}
    assert outcome == {"crc_status": 400, "signature_given": False, "post_status": 401, "dms_sent": []}
    # The victim was not opted out: a genuine "hi" from them is answered.
    assert post_delivery(client, {"for_user_id": BOT_ID, "direct_message_events": [
        dm_event(victim, "hi", "1900000000000000003")]}).status_code == 200
    drain(app)
    assert [dm.participant_id for dm in emulator.sent] == [victim]


def test_valid_dm_delivery_is_accepted_and_recorded(app, client):
    response = post_delivery(client, payload("dm_message_create.json"))
    assert response.status_code == 200
    assert pending(app) == 1


def test_missing_signature_is_401_and_nothing_stored(app, client):
    body = json.dumps(payload("dm_message_create.json")).encode()
    response = client.post("/webhook/twitter", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.get_json() == {"error": "missing signature"}
    assert pending(app) == 0


def test_malformed_signature_is_401_and_nothing_stored(app, client):
    body = json.dumps(payload("dm_message_create.json")).encode()
    response = client.post("/webhook/twitter", data=body, headers={"x-twitter-webhooks-signature": "sha256=%%%"})
    assert response.status_code == 401
    assert response.get_json() == {"error": "malformed signature"}
    assert pending(app) == 0


def test_wrong_secret_signature_is_403_and_nothing_stored(app, client):
    response = post_delivery(client, payload("dm_message_create.json"), secret="not-the-consumer-secret")
    assert response.status_code == 403
    assert response.get_json() == {"error": "invalid signature"}
    assert pending(app) == 0


def test_signature_over_other_body_is_403(app, client):
    body = json.dumps(payload("dm_message_create.json")).encode()
    headers = signed_headers(body.replace(b"hi cat bot", b"hi dog bot"))
    response = client.post("/webhook/twitter", data=body, headers=headers)
    assert response.status_code == 403
    assert pending(app) == 0


def test_reserialised_json_does_not_verify(app, client):
    """The signature covers the exact bytes received, not a re-encoding of the same JSON."""
    original = json.dumps(payload("dm_message_create.json"), indent=2).encode()
    compact = json.dumps(json.loads(original), separators=(",", ":")).encode()
    response = client.post("/webhook/twitter", data=compact, headers=signed_headers(original))
    assert response.status_code == 403


def test_signed_invalid_json_is_400(app, client):
    response = post_delivery(client, b'{"for_user_id": ')
    assert response.status_code == 400
    assert response.get_json() == {"error": "body is not valid JSON"}


def test_signed_invalid_utf8_is_400(client):
    response = post_delivery(client, b'{"for_user_id": "\xff\xfe"}')
    assert response.status_code == 400


def test_signed_deeply_nested_json_is_400_not_500(client):
    response = post_delivery(client, b"[" * 100_000 + b"]" * 100_000)
    assert response.status_code == 400


def test_signed_json_that_is_not_an_object_is_400(client):
    response = post_delivery(client, b"[1, 2, 3]")
    assert response.status_code == 400
    assert response.get_json() == {"error": "body is not a JSON object"}


def test_body_over_one_mebibyte_is_413(app, client):
    body = b'{"pad": "' + b"a" * (1024 * 1024) + b'"}'
    response = client.post("/webhook/twitter", data=body, headers=signed_headers(body))
    assert response.status_code == 413
    assert response.is_json
    assert pending(app) == 0


def test_body_just_under_the_limit_is_accepted(client):
    body = b'{"pad": "' + b"a" * (1024 * 1024 - 20) + b'"}'
    assert len(body) < 1024 * 1024
    assert client.post("/webhook/twitter", data=body, headers=signed_headers(body)).status_code == 200


@pytest.mark.parametrize("name", ["typing_and_read.json", "follow_event.json", "user_event_revoke.json",
                                  "replay_job_status.json"])
def test_other_activity_is_acknowledged_and_ignored(app, client, name):
    response = post_delivery(client, payload(name))
    assert response.status_code == 200
    assert pending(app) == 0


def test_unknown_keys_are_acknowledged(app, client):
    assert post_delivery(client, {"for_user_id": BOT_ID, "brand_new_events": [{"x": 1}]}).status_code == 200
    assert pending(app) == 0


def test_bots_own_message_is_acknowledged_not_queued(app, client):
    delivery = payload("dm_message_create.json")
    delivery["direct_message_events"][0]["message_create"]["sender_id"] = BOT_ID
    assert post_delivery(client, delivery).status_code == 200
    assert pending(app) == 0


def test_sender_id_with_a_leading_zero_is_malformed_not_answered(app, client, emulator, web_log):
    """"0" + the bot's id is the bot's id as a number: it must not be answered as another user."""
    delivery = dm_delivery("0" + BOT_ID, "hi", "1900000000000000009")
    assert post_delivery(client, delivery).status_code == 200  # acknowledged: X must not retry it
    assert pending(app) == 0
    drain(app)
    assert emulator.sent == []
    [line] = [line for line in web_log.lines if "event=delivery.accepted" in line]
    assert "malformed=1" in line


def test_delivery_for_another_account_is_not_answered(app, client):
    delivery = payload("dm_message_create.json")
    delivery["for_user_id"] = "2999999999"
    assert post_delivery(client, delivery).status_code == 200
    assert pending(app) == 0


def test_x_activity_api_envelope_is_understood(app, client):
    assert post_delivery(client, payload("xaa/dm_received.json")).status_code == 200
    assert pending(app) == 1


def test_unwritable_journal_answers_503_so_x_retries(app, client, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    runtime_of(app).journal.directory = blocker / "journal"  # a directory under a file: cannot exist
    response = post_delivery(client, payload("dm_message_create.json"))
    assert response.status_code == 503
    assert response.get_json() == {"error": "temporarily unavailable, retry"}


def test_a_delivery_is_journaled_before_the_200(app, client):
    """The embedded default's durable record: on disk (in the kernel) when X gets its answer."""
    journal = runtime_of(app).journal
    assert post_delivery(client, payload("dm_message_create.json")).status_code == 200
    [path] = journal.files()
    assert b'"1800000000000000001"' in path.read_bytes()


def test_healthz_counts_what_is_journaled_but_not_imported(client):
    post_delivery(client, payload("dm_message_create.json"))
    assert client.get("/healthz").get_json()["store"]["journal_bytes"] > 0


def test_unknown_route_is_json_404(client):
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.is_json


def test_wrong_method_is_405(client):
    assert client.delete("/webhook/twitter").status_code == 405


def test_healthz_reports_store_and_backlog(app, client):
    post_delivery(client, payload("dm_message_create.json"))
    import_journals(runtime_of(app).backend)  # what a consumer does first
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["store"]["ok"] is True
    assert body["backlog"] == 1


def test_without_xs_keys_xs_routes_do_not_exist(make_app):
    """Only another channel configured: X's secret is empty, so nothing could be checked with it
    (and a CRC answer keyed with it would be forgeable by anyone)."""
    app = make_app(consumer_key="", consumer_secret="", access_token="", access_token_secret="",
                   channels={"telegram": {"TELEGRAM_BOT_TOKEN": "7000000001:AAEsome-test-token-value",
                                          "TELEGRAM_SECRET_TOKEN": "s-1",
                                          "TELEGRAM_API_BASE_URL": "http://127.0.0.1:9"}})
    client = app.test_client()
    assert client.get("/webhook/twitter?crc_token=abc").status_code == 404
    assert post_delivery(client, dm_delivery(), secret="").status_code == 404
    assert client.post("/webhook/telegram", data=b"{}").status_code == 401  # the channel that is on answers


def test_a_channel_that_is_off_or_unknown_is_not_found(client):
    assert client.post("/webhook/telegram", data=b"{}").status_code == 404
    assert client.get("/webhook/nosuchplatform").status_code == 404
