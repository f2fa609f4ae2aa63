"""X Chat, X's end-to-end encrypted DMs: users' public keys (``/2/users/:id/public_keys``), the
bot's encrypted sends (``POST /2/chat/conversations/:id/messages``), and simulated users who write
to the bot (``chat.received`` through the X Activity API). See the "X Chat" section of
../shared/docs/x-api-facts.md.

What is X's behaviour (its docs, OpenAPI and published samples):

- the routes, their OAuth 1.0a user context, the request and answer bodies, the v2 not-found form
  (200 with ``errors``) for a user without keys, 404 for an unknown conversation;
- a client registers its own keys only, and only a few times a day;
- the ``chat.received`` payload's fields and their order, the key change travelling only in the
  delivery of the message that needs it, and X's Thrift framing of a client's send into the
  ``encoded_event`` a recipient decrypts (:func:`frame`): X adds the sequence id, sender,
  conversation and time around the sender's ciphertext and signature (the signature covers the
  message id, conversation and ciphertext; the sender picks the key it is checked with; the
  sequence id and time are X's own and unsigned);
- ``generate_version: true`` lets X choose the key's version (the client must use the answer's).

What is the emulator's choice (X does not document it, or cannot do it):

- each simulated user has a real ``chat_xdk`` identity, made the first time it is needed; their
  messages are encrypted and signed for real, so a bot that decrypts them decrypts X's;
- 3 registrations per user per 24 hours; a 429 carries ``x-rate-limit-*`` headers like the DM send;
- X cannot read a reply (it is end-to-end encrypted); the emulator decrypts it as the recipient
  would, and answers 400 to one the recipient could not decrypt or verify, so a test sees the bug
  instead of a user's silent unreadable message; only text messages are played;
- the chat send's rate window (X documents none): :attr:`ChatState.send_limit` per
  :attr:`ChatState.send_window` seconds, generous by default; ``Faults.chat_429`` forces a 429;
- the ``conversation_token`` is an opaque JWT-like string, not checked on sends; conversations are
  1:1 with the bot only (no groups), and the bot's own sends are not delivered back as
  ``chat.sent``;
- faults a test asks of :func:`deliver` (:data:`FAULTS`): ``tamper`` (a flipped ciphertext byte),
  ``forged`` (another identity signs and encrypts, with the real conversation key, while the frame
  and payload claim the sender), ``unknown_key`` (encrypted under a key version never sent),
  ``no_key_change`` (a conversation's first message without its key change; every later message
  then fails too, as X offers the missing change only through a history fetch not emulated here),
  ``rotate`` (a new key version, its change attached, used from this message on).
"""
from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
from chat_xdk import Chat, PublicKeyRegistrationPayload, SendPayload
from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from x_emulator import activity
from x_emulator.area import emulator, invalid_parameter, invalid_request, problem
from x_emulator.auth import requires, unauthorized, user_auth_error
from x_emulator.records import SentDM

if TYPE_CHECKING:
    from x_emulator.server import XEmulator

KEYS_PATH = "/2/users/<user_id>/public_keys"
MESSAGES_PATH = "/2/chat/conversations/<conversation_id>/messages"
CONVERSATION_ID = re.compile(r"[0-9]{1,19}|[0-9]{1,19}-[0-9]{1,19}|g[0-9]{1,19}")  # the OpenAPI's pattern
USER_ID = re.compile(r"[0-9]{1,19}")
KEY_FIELDS = ("public_key", "signing_public_key", "identity_public_key_signature")  # what a registration needs
REGISTRATIONS_PER_DAY = 3
DAY = 24 * 3600
FAULTS = ("tamper", "forged", "unknown_key", "no_key_change", "rotate")
FORGER_ID = "3099999999"  # the identity that signs a ``forged`` message
NOT_FOUND = "https://api.x.com/2/problems/resource-not-found"

bp = Blueprint("chat", __name__)


@dataclass
class Conversation:
    """A simulated user's 1:1 conversation with the bot, as that user's client knows it."""

    conversation_id: str
    user_id: str
    key_version: str  # the key new messages use
    keys: dict[str, bytes]  # every version the user made: a reply may come under an older one
    token: str


@dataclass
class ChatState:
    """What X Chat remembers, guarded by ``XEmulator.lock``; the SDK calls are made under it too,
    so no simulated user's ``Chat`` is used by two threads at once."""

    identities: dict[str, Chat] = field(default_factory=dict)  # simulated users' own clients
    public_keys: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # user -> keys, newest first
    registrations: dict[str, list[float]] = field(default_factory=dict)  # user -> when it registered
    conversations: dict[str, Conversation] = field(default_factory=dict)  # by the user's id
    send_attempts: int = 0  # chat sends received, counted before any refusal
    send_limit: int = 1000
    send_window: float = 900.0
    send_window_start: float = field(default_factory=time.time)
    send_window_count: int = 0


# -- identities and keys --------------------------------------------------------------------------
def public_keys_of(registration: PublicKeyRegistrationPayload) -> dict[str, str]:
    """What ``GET /2/users/:id/public_keys`` answers for a key made by ``generate_keypairs``."""
    key = registration.public_key
    return {"public_key": key.public_key, "public_key_version": str(registration.version),
            "signing_public_key": key.signing_public_key,
            "identity_public_key_signature": key.identity_public_key_signature}


def set_public_keys(em: XEmulator, user_id: str, keys: dict[str, str] | list[dict[str, str]]) -> None:
    """Replace what X holds as ``user_id``'s public keys (a dict, or a list newest first)."""
    listed = [keys] if isinstance(keys, dict) else list(keys)
    for key in listed:
        if not all(isinstance(key.get(f), str) and key[f] for f in (*KEY_FIELDS, "public_key_version")):
            raise ValueError(f"public keys need {', '.join(KEY_FIELDS)} and public_key_version")
    with em.lock:
        em.chat.public_keys[user_id] = [dict(k) for k in listed]


def identity(em: XEmulator, user_id: str) -> Chat:
    """The simulated user's own client, made (and its public key published) on first use."""
    if user_id == em.creds.bot_user_id or not USER_ID.fullmatch(user_id):
        raise ValueError(f"a simulated X Chat user has a numeric id other than the bot's, not {user_id!r}")
    with em.lock:
        client = em.chat.identities.get(user_id)
        if client is None:
            client = Chat()
            registration = client.generate_keypairs()
            client.set_identity(user_id, str(registration.version))
            em.chat.identities[user_id] = client
            em.chat.public_keys[user_id] = [public_keys_of(registration)]
        return client


def signing_keys(em: XEmulator, *user_ids: str) -> list[dict[str, str]]:
    """The ``set_signing_keys`` entries for every key X holds of these users."""
    with em.lock:
        return [{"user_id": uid, "public_key": k["signing_public_key"], "signing_public_key": k["signing_public_key"],
                 "public_key_version": k["public_key_version"], "identity_public_key": k["public_key"],
                 "identity_public_key_signature": k["identity_public_key_signature"]}
                for uid in user_ids for k in em.chat.public_keys.get(uid, [])]


# -- X's framing ----------------------------------------------------------------------------------
# Thrift binary protocol: a field is its type byte, its id (i16), its value; a struct ends with 0.
STOP = b"\x00"
STRING, STRUCT = 11, 12


def _string(field_id: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack(">bhi", STRING, field_id, len(data)) + data


def _struct(field_id: int, body: bytes) -> bytes:
    """``body`` is a whole struct body, its stop byte included."""
    return struct.pack(">bh", STRUCT, field_id) + body


def frame(sequence_id: str, message_id: str, sender_id: str, conversation_id: str, created_ms: int,
          detail: bytes, signature: bytes) -> str:
    """The ``encoded_event`` X makes of a client's send: what the recipient's ``decrypt_event`` takes."""
    return base64.b64encode(_string(1, sequence_id) + _string(2, message_id) + _string(3, sender_id)
                            + _string(4, conversation_id) + _string(6, str(created_ms)) + _struct(7, detail)
                            + _struct(9, signature) + STOP).decode()


def message_detail(encrypted_content: bytes) -> bytes:
    """The event-detail union of a message: field 1 holds the sender's ``encrypted_content``."""
    return _struct(1, encrypted_content) + STOP


def key_change_signature(action: dict[str, str]) -> bytes:
    return _string(1, action["signature"]) + _string(2, action["public_key_version"]) \
        + _string(3, action["signature_version"]) + STOP


def _tampered(encrypted_content: bytes) -> bytes:
    """``encrypted_content`` (a MessageCreateEvent: field 100 the ciphertext) with one ciphertext
    byte flipped. Checked, because a flip elsewhere (the trailing flag) goes unnoticed."""
    kind, field_id, size = struct.unpack(">bhi", encrypted_content[:7])
    if (kind, field_id) != (STRING, 100) or size < 2:
        raise RuntimeError("the SDK's MessageCreateEvent no longer starts with its ciphertext")
    data = bytearray(encrypted_content)
    data[7 + size // 2] ^= 0x01
    return bytes(data)


# -- simulated users write to the bot -------------------------------------------------------------
def deliver(em: XEmulator, sender_id: str, text: str, fault: str | None = None,
            url: str | None = None) -> tuple[str, requests.Response]:
    """A ``chat.received`` from ``sender_id`` to every webhook subscribed to it (or to ``url``);
    (the message id, the first webhook's answer). See the module docstring for ``fault``."""
    if fault is not None and fault not in FAULTS:
        raise ValueError(f"fault is one of {FAULTS}, not {fault!r}")
    bot = em.creds.bot_user_id
    routes = [(url, "catfacts-bot", bot)] if url else \
        [(to, tag, user_id) for to, api, tag, user_id in em._routes("chat.received") if api == "xaa"]
    if not routes:
        raise RuntimeError("no webhook is subscribed to the bot's chat.received; register with chat=True")
    with em.lock:
        message_id, payload = _payload(em, sender_id, text, fault)
    answers = [em.post_delivery(activity.envelope("chat.received", payload, user_id, tag), to)
               for to, tag, user_id in routes]
    return message_id, answers[0]


def _payload(em: XEmulator, sender_id: str, text: str, fault: str | None) -> tuple[str, dict[str, Any]]:
    """Encrypt, sign and frame one message as the user's client and X would. Lock held."""
    if not em.chat.public_keys.get(em.creds.bot_user_id):
        raise RuntimeError("the bot has no X Chat key registered")
    user = identity(em, sender_id)
    conversation, change, key_version, key = _keys_for(em, user, sender_id, fault)
    signer, signer_id = (identity(em, FORGER_ID), FORGER_ID) if fault == "forged" else (user, sender_id)
    claimed_version = em.chat.public_keys[sender_id][0]["public_key_version"]
    sent = signer.encrypt_message(conversation.conversation_id, text, sender_id=sender_id,
                                  signing_key_version=claimed_version, conversation_key=key,
                                  conversation_key_version=key_version)
    content = base64.b64decode(sent.encrypted_content)
    if fault == "tamper":
        content = _tampered(content)
    created_ms, conversation_id = int(time.time() * 1000), conversation.conversation_id
    payload: dict[str, Any] = {
        "conversation_token": conversation.token, "id": sent.message_id, "created_at_msec": str(created_ms),
        "sender_id": sender_id, "conversation_id": conversation_id, "conversation_key_version": key_version,
        "encoded_event": None,  # framed below, after the key change so that its sequence id comes first
    }
    if change is not None:
        action = change["action_signatures"][0]
        payload["conversation_key_change_event"] = frame(
            em.next_id(), action["message_id"], sender_id, conversation_id, created_ms,
            base64.b64decode(action["encoded_message_event_detail"]), key_change_signature(action))
    payload["encoded_event"] = frame(em.next_id(), sent.message_id, sender_id, conversation_id, created_ms,
                                     message_detail(content), base64.b64decode(sent.encoded_event_signature))
    payload["message_event_signature"] = _signature(em, sent, signer_id)
    return sent.message_id, payload


def _keys_for(em: XEmulator, user: Chat, sender_id: str,
              fault: str | None) -> tuple[Conversation, dict[str, Any] | None, str, bytes]:
    """The conversation (started here when new), the key change the delivery carries (or None),
    and the key version and key the message is encrypted under."""
    conversation = em.chat.conversations.get(sender_id)
    if fault == "no_key_change" and conversation is not None:
        raise ValueError("no_key_change is a conversation's first message; this one has started")
    if fault == "unknown_key":
        if conversation is None:
            raise ValueError("unknown_key needs a started conversation: deliver a message first")
        unsent = _key_change(em, user, sender_id, conversation)  # later messages use the old key again
        return conversation, None, unsent["conversation_key_version"], unsent["conversation_key"]
    change = None
    if conversation is None or fault == "rotate":
        change = _key_change(em, user, sender_id, conversation)
        if conversation is None:
            conversation = Conversation(change["conversation_id"], sender_id, "", {}, _token(change["conversation_id"]))
            em.chat.conversations[sender_id] = conversation
        conversation.key_version = change["conversation_key_version"]
        conversation.keys[conversation.key_version] = change["conversation_key"]
    attached = None if fault == "no_key_change" else change
    return conversation, attached, conversation.key_version, conversation.keys[conversation.key_version]


def _key_change(em: XEmulator, user: Chat, user_id: str, conversation: Conversation | None) -> dict[str, Any]:
    """A new conversation key for the user and the bot (their newest registered keys)."""
    bot = em.creds.bot_user_id
    participants = [{"user_id": uid, "public_key": em.chat.public_keys[uid][0]["public_key"],
                     "key_version": em.chat.public_keys[uid][0]["public_key_version"]} for uid in (bot, user_id)]
    if conversation is None:
        return user.prepare_conversation_key_change(participants)
    return user.prepare_conversation_key_change(participants, conversation_id=conversation.conversation_id)


def _signature(em: XEmulator, sent: SendPayload, signer_id: str) -> dict[str, str]:
    """``message_event_signature``: what X says signed the event (a forger's key, for ``forged``)."""
    return {"public_key_version": sent.signature_info.public_key_version, "signature": sent.signature,
            "signature_version": sent.signature_info.signature_version,
            "signing_public_key": em.chat.public_keys[signer_id][0]["signing_public_key"]}


def _token(conversation_id: str) -> str:
    """An opaque token shaped like X's (a JWT); nothing reads it back."""
    header, claims = {"alg": "HS256"}, {"conversation_id": conversation_id, "nonce": secrets.token_hex(8)}
    parts = (json.dumps(header).encode(), json.dumps(claims).encode(), secrets.token_bytes(32))
    return ".".join(base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in parts)


# -- routes: public keys --------------------------------------------------------------------------
@bp.get(KEYS_PATH)
@requires(user=True)
def get_public_keys(user_id: str) -> ResponseReturnValue:
    em = emulator()
    if not USER_ID.fullmatch(user_id):
        return invalid_parameter("id", user_id, "The `id` query parameter value is not a user id.")
    with em.lock:
        em.public_key_fetches += 1
        keys = [dict(k) for k in em.chat.public_keys.get(user_id, [])]
    if keys:
        return jsonify(data=keys)
    return jsonify(errors=[{"value": user_id, "detail": f"Could not find public keys for user with id: [{user_id}].",
                            "title": "Not Found Error", "resource_type": "user", "parameter": "id",
                            "resource_id": user_id, "type": NOT_FOUND}])


@bp.post(KEYS_PATH)
@requires(user=True)
def add_public_key(user_id: str) -> ResponseReturnValue:
    """Only the authenticating user's own keys; 3 a day (the emulator's number); X picks the
    version when asked to (``generate_version``)."""
    em = emulator()
    if user_id != em.creds.bot_user_id:
        return problem(403, "Forbidden", "You can only register public keys for the authenticating user.",
                       kind="not-authorized-for-resource", fields={"resource_type": "user", "resource_id": user_id})
    now = time.time()
    with em.lock:
        recent = [t for t in em.chat.registrations.get(user_id, []) if t > now - DAY]
        em.chat.registrations[user_id] = recent
        headers = {"x-rate-limit-limit": str(REGISTRATIONS_PER_DAY),
                   "x-rate-limit-remaining": str(max(0, REGISTRATIONS_PER_DAY - len(recent) - 1)),
                   "x-rate-limit-reset": str(int((recent[0] if recent else now) + DAY) + 1)}
        if len(recent) >= REGISTRATIONS_PER_DAY:
            response, status = problem(429, "Too Many Requests", "Too Many Requests")
            response.headers.update({**headers, "x-rate-limit-remaining": "0"})
            return response, status
    body = request.get_json(silent=True)
    if refused := _invalid_registration(body):
        return refused
    version = body["version"]
    if body.get("generate_version"):
        version = str(max(int(time.time() * 1000), int(version) + 1 if version.isdigit() else 0))
    with em.lock:
        em.chat.registrations[user_id].append(now)
        em.chat.public_keys[user_id] = [{**{f: body["public_key"][f] for f in KEY_FIELDS},
                                         "public_key_version": version}] + em.chat.public_keys.get(user_id, [])
    response = jsonify(data={"public_key_version": version})
    response.headers.update(headers)
    return response


def _invalid_registration(body: Any) -> ResponseReturnValue | None:
    """Why X would refuse this AddUserPublicKeyRequest: a missing field, or keys whose identity
    signature does not bind the signing key to the identity key."""
    if not isinstance(body, dict) or not isinstance(body.get("public_key"), dict):
        return invalid_request("The body must be a JSON object with `public_key` (an object) and `version`.")
    key = body["public_key"]
    for name in KEY_FIELDS:
        if not (isinstance(key.get(name), str) and key[name]):
            return invalid_parameter(f"public_key.{name}", key.get(name), f"`public_key.{name}` is required.")
    if not (isinstance(body.get("version"), str) and body["version"]):
        return invalid_parameter("version", body.get("version"), "`version` is required (a string).")
    if not isinstance(body.get("generate_version", False), bool):
        return invalid_parameter("generate_version", body["generate_version"], "`generate_version` is a boolean.")
    try:
        bound = Chat().verify_key_binding(key["public_key"], key["signing_public_key"],
                                          key["identity_public_key_signature"])
    except ValueError:
        bound = False
    if not bound:
        return invalid_request("The identity public key signature does not verify.")
    return None


# -- routes: the bot sends ------------------------------------------------------------------------
@bp.post(MESSAGES_PATH)
def send_message(conversation_id: str) -> ResponseReturnValue:
    """Refusals in the DM send's order (signature, id, body, faults and limits), then what only
    this route has: the conversation must exist, and its other participant must read the message."""
    em = emulator()
    with em.lock:
        em.chat.send_attempts += 1
    if reason := user_auth_error():  # not ``requires``: this refusal is counted and recorded
        return _refuse(em, conversation_id, 401, reason, unauthorized(reason))
    if not CONVERSATION_ID.fullmatch(conversation_id):
        return _refuse(em, conversation_id, 400, "conversation id", invalid_parameter(
            "id", conversation_id, "The `id` query parameter value is not a conversation id."))
    if em.faults.latency:
        time.sleep(em.faults.latency)
    body = request.get_json(silent=True)
    fields = ("message_id", "encoded_message_create_event", "encoded_message_event_signature")
    if not isinstance(body, dict) or not all(isinstance(body.get(f), str) and body[f] for f in fields):
        return _refuse(em, conversation_id, 400, "body", invalid_request(f"The body needs {', '.join(fields)}."))
    with em.lock:
        now = time.time()
        reset = _roll_window(em, now)
        if refused := _injected_fault_or_limit(em, conversation_id, reset):
            return refused
        em.chat.send_window_count += 1
        remaining = max(0, em.chat.send_limit - em.chat.send_window_count)
        conversation = next((c for c in em.chat.conversations.values()
                             if c.conversation_id == conversation_id.replace("-", ":")), None)
        if conversation is None:
            return _refuse(em, conversation_id, 404, "unknown conversation", problem(
                404, "Not Found Error", f"Could not find conversation with id: [{conversation_id}].",
                kind="resource-not-found", fields={"resource_type": "conversation", "resource_id": conversation_id,
                                                   "parameter": "id", "value": conversation_id}))
        try:
            event, text = _read_as_recipient(em, conversation, body, now)
        except ValueError as exc:
            return _refuse(em, conversation.user_id, 400, f"unreadable: {exc}", invalid_request(
                "The message could not be verified and decrypted by its recipient."))
        em.record_sent(SentDM(conversation.user_id, text, body["message_id"], now, channel="xchat"))
    response = jsonify(data={"encoded_message_event": event})
    response.headers.update(_rate_headers(em, remaining, reset))
    return response, 201


def _read_as_recipient(em: XEmulator, conversation: Conversation, body: dict[str, str],
                       now: float) -> tuple[str, str]:
    """Frame the send as X would (sender: the bot) and decrypt it with the user's own client;
    (the framed event, the text). ValueError says why the user could not read it."""
    bot = em.creds.bot_user_id
    try:
        content = base64.b64decode(body["encoded_message_create_event"], validate=True)
        signature = base64.b64decode(body["encoded_message_event_signature"], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64 ({exc})") from None
    event = frame(em.next_id(), body["message_id"], bot, conversation.conversation_id, int(now * 1000),
                  message_detail(content), signature)
    user = identity(em, conversation.user_id)
    user.set_signing_keys(signing_keys(em, conversation.user_id, bot))
    message = user.decrypt_event(event, dict(conversation.keys))
    text = (message.get("content") or {}).get("text")
    if message.get("type") != "Message" or not isinstance(text, str):
        raise ValueError(f"a {message.get('type')} event, not a text message")
    if not message.get("verified") or message.get("sender_id") != bot:
        raise ValueError("not verified as the bot's")
    return event, text


def _roll_window(em: XEmulator, now: float) -> int:
    """Start a new rate window when the current one is over; the unix second it resets at."""
    state = em.chat
    if now >= state.send_window_start + state.send_window:
        state.send_window_start, state.send_window_count = now, 0
    return int(state.send_window_start + state.send_window) + 1


def _injected_fault_or_limit(em: XEmulator, conversation_id: str, reset: int) -> ResponseReturnValue | None:
    """An injected 503 (shared with the DM send), an injected 429 burst, or the window's limit."""
    if em.faults.errors_5xx > 0:
        em.faults.errors_5xx -= 1
        return _refuse(em, conversation_id, 503, "injected", problem(503, "Service Unavailable", "Service Unavailable"))
    if em.faults.chat_429 > 0 or em.chat.send_window_count >= em.chat.send_limit:
        em.faults.chat_429 = max(0, em.faults.chat_429 - 1)
        response, status = problem(429, "Too Many Requests", "Too Many Requests")
        response.headers.update(_rate_headers(em, 0, reset))
        return _refuse(em, conversation_id, 429, "rate limit", (response, status))
    return None


def _refuse(em: XEmulator, participant_id: str, status: int, reason: str,
            answer: ResponseReturnValue) -> ResponseReturnValue:
    with em.lock:
        em.rejected.append({"participant_id": participant_id, "status": status, "reason": reason,
                            "at": time.time(), "channel": "xchat"})
    return answer


def _rate_headers(em: XEmulator, remaining: int, reset: int) -> dict[str, str]:
    return {"x-rate-limit-limit": str(em.chat.send_limit), "x-rate-limit-remaining": str(remaining),
            "x-rate-limit-reset": str(reset)}
