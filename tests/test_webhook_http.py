"""Every path of the webhook through the real HTTP layer (Flask's test client), one per test."""
import json

import pytest

from conftest import BOT_ID, CREDS, payload, post_delivery, runtime_of, signed_headers
from catbot.security import crc_response_token


def pending(app) -> int:
    """Messages recorded and waiting for a reply, journal included (what a consumer would see)."""
    runtime = runtime_of(app)
    runtime.ingest()
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


def test_delivery_for_another_account_is_not_answered(app, client):
    delivery = payload("dm_message_create.json")
    delivery["for_user_id"] = "2999999999"
    assert post_delivery(client, delivery).status_code == 200
    assert pending(app) == 0


def test_x_activity_api_envelope_is_understood(app, client):
    assert post_delivery(client, payload("x_activity_dm_received.json")).status_code == 200
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
    runtime_of(app).ingest()  # what a consumer does first
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["store"]["ok"] is True
    assert body["backlog"] == 1
