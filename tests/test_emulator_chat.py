"""The X emulator plays X Chat users: real keys and ciphertext, X's framing, the bot's sends read by
their recipient, and the faults a bot must survive. The bot's side here is the Chat XDK driven the
way a bot would drive it, over HTTP."""
from __future__ import annotations

import base64
import json
import time

import pytest
import requests
from chat_xdk import Chat
from flask import Flask, jsonify, request
from requests_oauthlib import OAuth1

from catbot.security import crc_response_token
from helpers import BOT_ID, CREDS, ServerThread, payload

USER = OAuth1(CREDS.consumer_key, CREDS.consumer_secret, CREDS.access_token, CREDS.access_token_secret)
ALICE, BOB = "3000000002", "3000000003"


def keys_url(emulator, user_id: str = BOT_ID) -> str:
    return f"{emulator.url}/2/users/{user_id}/public_keys"


def registration(chat: Chat, generate_version: bool = False) -> dict:
    """An AddUserPublicKeyRequest body for a fresh key pair of ``chat``."""
    made = chat.generate_keypairs()
    key = made.public_key
    fields = ("public_key", "signing_public_key", "identity_public_key_signature", "public_key_fingerprint",
              "registration_method", "signing_public_key_signature")
    return {"public_key": {f: getattr(key, f) for f in fields}, "version": str(made.version),
            "generate_version": generate_version}


class BotSide:
    """The bot: its private-key blob, its key registered through X, participants' keys fetched
    from X (never from the payload), conversation keys kept from the key changes it was sent."""

    def __init__(self, emulator, blob: bytes, version: str) -> None:
        self.emulator = emulator
        self.chat = Chat()
        self.chat.import_keys(blob, version=version)
        self.chat.set_identity(BOT_ID, version)
        self.keys: dict[str, bytes] = {}

    @classmethod
    def registered(cls, emulator) -> BotSide:
        """A new key pair, registered through X (saved before posting, as a bot must)."""
        maker = Chat()
        body = registration(maker)
        blob = bytes(maker.export_keys())
        answer = requests.post(keys_url(emulator), json=body, auth=USER)
        assert answer.status_code == 200, answer.text
        return cls(emulator, blob, answer.json()["data"]["public_key_version"])

    def signing_keys(self, *user_ids: str) -> list[dict[str, str]]:
        found = []
        for user_id in user_ids:
            for k in requests.get(keys_url(self.emulator, user_id), auth=USER).json()["data"]:
                found.append({"user_id": user_id, "public_key": k["signing_public_key"],
                              "signing_public_key": k["signing_public_key"],
                              "public_key_version": k["public_key_version"], "identity_public_key": k["public_key"],
                              "identity_public_key_signature": k["identity_public_key_signature"]})
        return found

    def read(self, chat_payload: dict) -> dict:
        """Verify and decrypt a ``chat.received`` payload; ValueError when it cannot be trusted."""
        self.chat.set_signing_keys(self.signing_keys(chat_payload["sender_id"], BOT_ID))
        if change := chat_payload.get("conversation_key_change_event"):
            result = self.chat.decrypt_events([change])
            if result["errors"]:  # the SDK returns the key even when its signature failed
                raise ValueError(f"key change refused: {result['errors']}")
            self.keys.update(result["conversation_keys"]["keys"])
        return self.chat.decrypt_event(chat_payload["encoded_event"], dict(self.keys))

    def reply(self, chat_payload: dict, text: str) -> dict:
        """The SendChatMessageRequest body of a reply to this message."""
        version = chat_payload["conversation_key_version"]
        sent = self.chat.encrypt_reply(chat_payload["conversation_id"], text, chat_payload["encoded_event"],
                                       conversation_key=self.keys[version], conversation_key_version=version)
        return {"message_id": sent.message_id, "encoded_message_create_event": sent.encrypted_content,
                "encoded_message_event_signature": sent.encoded_event_signature,
                "conversation_token": chat_payload["conversation_token"]}


@pytest.fixture
def hook():
    """A webhook on loopback that passes CRC and keeps each delivery (raw body, parsed)."""
    app = Flask("chat-recorder")
    received: list[tuple[bytes, dict]] = []

    @app.get("/webhook")
    def crc():
        return jsonify(response_token=crc_response_token(CREDS.consumer_secret, request.args["crc_token"]))

    @app.post("/webhook")
    def deliver():
        received.append((request.get_data(), request.get_json()))
        return "", 200

    server = ServerThread(app)
    yield {"url": server.url + "/webhook", "received": received}
    server.stop()


@pytest.fixture
def bot(emulator, hook) -> BotSide:
    """The bot with its X Chat key registered and its webhook subscribed to chat.received."""
    emulator.register(hook["url"], api="xaa", chat=True)
    return BotSide.registered(emulator)


def chat_payloads(hook) -> list[dict]:
    return [body["data"]["payload"] for _, body in hook["received"] if body["data"]["event_type"] == "chat.received"]


def send(emulator, conversation_id: str, body: dict, auth=USER) -> requests.Response:
    return requests.post(f"{emulator.url}/2/chat/conversations/{conversation_id}/messages", json=body, auth=auth)


# -- public keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("credential", [{}, {"headers": {"Authorization": f"Bearer {CREDS.bearer_token}"}},
                                        {"auth": OAuth1(CREDS.consumer_key, "wrong", CREDS.access_token,
                                                        CREDS.access_token_secret)}])
def test_public_keys_take_only_the_bots_signature(emulator, method, credential):
    answer = requests.request(method, keys_url(emulator), json=registration(Chat()), **credential)
    assert answer.status_code == 401
    assert emulator.public_key_fetches == 0 and emulator.chat.public_keys == {}


def test_a_registered_key_is_what_x_answers_for_the_bot(emulator):
    body = registration(Chat())
    answer = requests.post(keys_url(emulator), json=body, auth=USER)
    assert answer.status_code == 200 and answer.json() == {"data": {"public_key_version": body["version"]}}
    assert answer.headers["x-rate-limit-limit"] == "3" and answer.headers["x-rate-limit-remaining"] == "2"
    [key] = requests.get(keys_url(emulator), auth=USER).json()["data"]
    assert key == {"public_key": body["public_key"]["public_key"], "public_key_version": body["version"],
                   "signing_public_key": body["public_key"]["signing_public_key"],
                   "identity_public_key_signature": body["public_key"]["identity_public_key_signature"]}
    assert emulator.public_key_fetches == 1


def test_generate_version_lets_x_choose_the_version(emulator):
    body = registration(Chat(), generate_version=True)
    version = requests.post(keys_url(emulator), json=body, auth=USER).json()["data"]["public_key_version"]
    assert version != body["version"] and version.isdigit()
    assert requests.get(keys_url(emulator), auth=USER).json()["data"][0]["public_key_version"] == version


def test_the_fourth_registration_in_a_day_is_429(emulator):
    answers = [requests.post(keys_url(emulator), json=registration(Chat()), auth=USER) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    limited = answers[-1]
    assert limited.headers["x-rate-limit-limit"] == "3" and limited.headers["x-rate-limit-remaining"] == "0"
    assert time.time() + 24 * 3600 - 60 < int(limited.headers["x-rate-limit-reset"]) <= time.time() + 24 * 3600 + 2
    assert len(requests.get(keys_url(emulator), auth=USER).json()["data"]) == 3  # newest first, all kept


def test_keys_of_another_user_cannot_be_registered(emulator):
    answer = requests.post(keys_url(emulator, ALICE), json=registration(Chat()), auth=USER)
    assert answer.status_code == 403 and answer.json()["type"].endswith("not-authorized-for-resource")


def _without(body: dict, *path: str) -> dict:
    body = json.loads(json.dumps(body))
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


@pytest.mark.parametrize("change", [
    lambda b: [b],
    lambda b: _without(b, "version"),
    lambda b: _without(b, "public_key"),
    lambda b: _without(b, "public_key", "signing_public_key"),
    lambda b: {**b, "generate_version": "yes"},
    lambda b: {**b, "public_key": {**b["public_key"], "signing_public_key": registration(Chat())["public_key"][
        "signing_public_key"]}},  # a signing key the identity key never signed
], ids=["not an object", "no version", "no public_key", "no signing key", "generate_version", "unbound"])
def test_a_malformed_registration_is_400(emulator, change):
    answer = requests.post(keys_url(emulator), json=change(registration(Chat())), auth=USER)
    assert answer.status_code == 400
    assert emulator.chat.public_keys == {}


def test_a_user_without_keys_is_xs_not_found_form(emulator):
    answer = requests.get(keys_url(emulator, "3999999998"), auth=USER)
    assert answer.status_code == 200 and "data" not in answer.json()
    [error] = answer.json()["errors"]
    assert error["type"] == "https://api.x.com/2/problems/resource-not-found" and error["resource_id"] == "3999999998"


# -- deliveries -----------------------------------------------------------------------------------
def test_a_message_arrives_in_xs_shape_and_the_bot_decrypts_it(emulator, hook, bot):
    message_id, answer = emulator.deliver_chat(ALICE, "hello bot")
    assert answer.status_code == 200
    [(_, delivery)] = hook["received"]
    sample = payload("xaa/chat_received.json")["data"]
    data = delivery["data"]
    assert list(data) == list(sample) and list(data["payload"]) == list(sample["payload"])
    assert (data["event_type"], data["filter"]) == ("chat.received", {"user_id": BOT_ID})
    first = data["payload"]
    assert first["id"] == message_id and first["sender_id"] == ALICE
    assert first["conversation_id"] in (f"{BOT_ID}:{ALICE}", f"{ALICE}:{BOT_ID}")
    assert first["created_at_msec"].isdigit() and first["conversation_token"]
    assert list(first["message_event_signature"]) == list(sample["payload"]["message_event_signature"])
    message = bot.read(first)
    assert (message["type"], message["sender_id"], message["id"], message["verified"]) == (
        "Message", ALICE, message_id, True)
    assert message["content"]["text"] == "hello bot"

    emulator.deliver_chat(ALICE, "again")
    second = chat_payloads(hook)[1]
    assert "conversation_key_change_event" not in second  # the key came with the first message only
    assert second["conversation_key_version"] == first["conversation_key_version"]
    assert bot.read(second)["content"]["text"] == "again"
    assert hook["received"][1][1]["data"]["event_uuid"] != data["event_uuid"]


def test_nothing_subscribed_or_no_bot_key_is_refused(emulator, hook):
    with pytest.raises(RuntimeError, match="chat.received"):
        emulator.deliver_chat(ALICE, "hi")
    emulator.register(hook["url"], api="xaa")  # DMs only
    answer = requests.post(f"{emulator.url}/_emulator/chat/deliver", json={"sender_id": ALICE, "text": "hi"})
    assert answer.status_code == 409
    emulator.register(hook["url"], api="xaa", chat=True)
    with pytest.raises(RuntimeError, match="the bot has no X Chat key registered"):
        emulator.deliver_chat(ALICE, "hi")
    assert hook["received"] == []
    with pytest.raises(ValueError, match="X Activity API"):
        emulator.register(hook["url"], api="aaa", chat=True)


def test_the_control_api_registers_for_chat_and_delivers(emulator, hook):
    control = emulator.url + "/_emulator"
    assert requests.post(control + "/register", json={"url": hook["url"], "api": "xaa", "chat": True}).ok
    bot = BotSide.registered(emulator)
    answer = requests.post(control + "/chat/deliver", json={"sender_id": ALICE, "text": "hi"})
    assert answer.status_code == 200 and answer.json()["webhook_status"] == 200
    [delivered] = chat_payloads(hook)
    assert delivered["id"] == answer.json()["message_id"] and bot.read(delivered)["content"]["text"] == "hi"
    assert requests.post(control + "/chat/deliver", json={"sender_id": ALICE, "fault": "bogus"}).status_code == 400


def test_redelivery_resends_a_chat_message_byte_for_byte(emulator, hook, bot):
    message_id, _ = emulator.deliver_chat(ALICE, "hello")
    emulator.redeliver(message_id)
    first, second = hook["received"]
    assert first[0] == second[0]


@pytest.mark.parametrize("fault,refusal", [
    ("tamper", "Signature verification failed"),
    ("forged", "Signature verification failed"),
    ("unknown_key", "no matching key found"),
])
def test_a_faulty_message_fails_on_the_bot_side_and_a_normal_one_passes(emulator, hook, bot, fault, refusal):
    emulator.deliver_chat(ALICE, "first")
    emulator.deliver_chat(ALICE, "bad", fault=fault)
    emulator.deliver_chat(ALICE, "fine")
    first, bad, fine = chat_payloads(hook)
    assert bot.read(first)["content"]["text"] == "first"
    assert bad["sender_id"] == ALICE and "conversation_key_change_event" not in bad
    with pytest.raises(ValueError, match=refusal):
        bot.read(bad)
    assert bot.read(fine)["content"]["text"] == "fine"


def test_a_forged_message_claims_the_sender_but_carries_another_signing_key(emulator, hook, bot):
    emulator.deliver_chat(ALICE, "first")
    emulator.deliver_chat(ALICE, "send me your password", fault="forged")
    first, forged = chat_payloads(hook)
    alice_key = bot.signing_keys(ALICE)[0]
    assert forged["message_event_signature"]["public_key_version"] == alice_key["public_key_version"]
    assert forged["message_event_signature"]["signing_public_key"] != alice_key["signing_public_key"]
    assert forged["conversation_key_version"] == first["conversation_key_version"]  # the real key


def test_a_first_message_without_its_key_change_cannot_be_read(emulator, hook, bot):
    emulator.deliver_chat(ALICE, "hi", fault="no_key_change")
    emulator.deliver_chat(BOB, "hi")
    lost, normal = chat_payloads(hook)
    assert "conversation_key_change_event" not in lost
    with pytest.raises(ValueError, match="no matching key found"):
        bot.read(lost)
    assert bot.read(normal)["content"]["text"] == "hi"
    with pytest.raises(ValueError, match="first message"):
        emulator.deliver_chat(ALICE, "again", fault="no_key_change")


def test_unknown_key_needs_a_started_conversation(emulator, bot):
    with pytest.raises(ValueError, match="started conversation"):
        emulator.deliver_chat(ALICE, "hi", fault="unknown_key")


def test_rotate_attaches_a_new_key_used_from_then_on(emulator, hook, bot):
    emulator.deliver_chat(ALICE, "first")
    emulator.deliver_chat(ALICE, "rotated", fault="rotate")
    emulator.deliver_chat(ALICE, "after")
    first, rotated, after = chat_payloads(hook)
    assert rotated["conversation_key_change_event"]
    assert rotated["conversation_key_version"] != first["conversation_key_version"]
    assert after["conversation_key_version"] == rotated["conversation_key_version"]
    assert "conversation_key_change_event" not in after
    assert [bot.read(p)["content"]["text"] for p in (first, rotated, after)] == ["first", "rotated", "after"]


# -- the bot sends --------------------------------------------------------------------------------
def test_an_encrypted_reply_is_read_by_its_recipient_and_recorded(emulator, hook, bot):
    emulator.deliver_chat(ALICE, "hello")
    [received] = chat_payloads(hook)
    bot.read(received)
    body = bot.reply(received, "Cats sleep 16 hours a day.")
    answer = send(emulator, received["conversation_id"].replace(":", "-"), body)
    assert answer.status_code == 201, answer.text
    assert answer.headers["x-rate-limit-remaining"] == str(int(answer.headers["x-rate-limit-limit"]) - 1)
    assert int(answer.headers["x-rate-limit-reset"]) > time.time()
    [sent] = emulator.wait_for_sent(1, timeout=1)
    assert (sent.channel, sent.participant_id, sent.text, sent.dm_event_id) == (
        "xchat", ALICE, "Cats sleep 16 hours a day.", body["message_id"])
    assert emulator.sent_to(ALICE) == [sent]
    assert requests.get(f"{emulator.url}/_emulator/sent").json()["sent"][0]["channel"] == "xchat"
    echoed = bot.chat.decrypt_event(answer.json()["data"]["encoded_message_event"], dict(bot.keys))
    assert (echoed["sender_id"], echoed["content"]["text"]) == (BOT_ID, "Cats sleep 16 hours a day.")


def test_a_reply_its_recipient_cannot_read_is_400_and_recorded(emulator, hook, bot):
    emulator.deliver_chat(ALICE, "hello")
    [received] = chat_payloads(hook)
    bot.read(received)
    body = bot.reply(received, "a fact")
    conversation = received["conversation_id"].replace(":", "-")
    forged_id = {**body, "message_id": "00000000-0000-0000-0000-000000000000"}  # not the id it signed
    not_base64 = {**body, "encoded_message_create_event": "%%%"}
    assert [send(emulator, conversation, b).status_code for b in (forged_id, not_base64)] == [400, 400]
    assert [r["reason"].split(":")[0] for r in emulator.rejected] == ["unreadable", "unreadable"]
    assert emulator.sent == []


def test_sends_to_no_conversation_or_unsigned_are_refused(emulator, hook, bot):
    emulator.deliver_chat(ALICE, "hello")
    [received] = chat_payloads(hook)
    bot.read(received)
    body = bot.reply(received, "a fact")
    conversation = received["conversation_id"].replace(":", "-")
    assert send(emulator, f"{BOT_ID}-3999999998", body).status_code == 404
    assert send(emulator, "not:an-id", body).status_code == 400
    assert send(emulator, conversation, {"message_id": "x"}).status_code == 400
    assert send(emulator, conversation, body, auth=None).status_code == 401
    assert emulator.sent == [] and emulator.chat.send_attempts == 4


def test_injected_chat_429_then_the_send_goes_through(emulator, hook, bot):
    emulator.deliver_chat(ALICE, "hello")
    [received] = chat_payloads(hook)
    bot.read(received)
    conversation = received["conversation_id"].replace(":", "-")
    assert requests.post(f"{emulator.url}/_emulator/faults", json={"chat_429": 1}).json()["faults"]["chat_429"] == 1
    limited = send(emulator, conversation, bot.reply(received, "a fact"))
    assert limited.status_code == 429 and limited.headers["x-rate-limit-remaining"] == "0"
    assert int(limited.headers["x-rate-limit-reset"]) > time.time()
    assert send(emulator, conversation, bot.reply(received, "a fact")).status_code == 201
    assert [(r["status"], r["channel"]) for r in emulator.rejected] == [(429, "xchat")]


def test_set_public_keys_stands_in_for_a_registration(emulator, hook):
    maker = Chat()
    made = maker.generate_keypairs()
    with pytest.raises(ValueError):
        emulator.set_public_keys(BOT_ID, {"public_key": made.public_key.public_key})
    emulator.set_public_keys(BOT_ID, {"public_key": made.public_key.public_key, "public_key_version": made.version,
                                      "signing_public_key": made.public_key.signing_public_key,
                                      "identity_public_key_signature": made.public_key.identity_public_key_signature})
    message_id, answer = emulator.deliver_chat(ALICE, "hi", url=hook["url"])  # to a URL: no subscription needed
    assert answer.status_code == 200
    [delivered] = chat_payloads(hook)
    assert BotSide(emulator, bytes(maker.export_keys()), made.version).read(delivered)["id"] == message_id
    assert requests.get(keys_url(emulator, "not-a-user"), auth=USER).status_code == 400
