"""X Chat: answering end-to-end encrypted DMs (``chat.received``) with X's Chat XDK.

The webhook cannot read an X Chat message and does not try: it records the delivery's fields as
received (ciphertext) with the intent :attr:`~catbot.replies.Intent.SEALED`. The reply job opens
the batch (:meth:`XChatSender.open`): it verifies a conversation key change first, then decrypts
each message, checks it is what its delivery said (sender, conversation, message id), decides
its intent from the text exactly as for a legacy DM, and forgets the text. The reply is
encrypted as a reply to the user's last message and sent to
``POST /2/chat/conversations/:id/messages``. Plaintext exists only in the reply job's memory.

Keys, and why they live where they do (docs/architecture.md, "X Chat"):

- The bot's private keys are the ``XCHAT_PRIVATE_KEYS`` setting; every process loads its own
  ``Chat`` identity from it. They are never written anywhere else.
- Participants' signing keys come from ``GET /2/users/:id/public_keys`` (cached for an hour,
  fetched again once when a signature fails to verify), never from the payload, whose
  ``signing_public_key`` an attacker who could forge an event would also choose.
- A conversation key arrives only in the delivery that carries its key change, and any process
  may have to decrypt the conversation's next message. The store keeps each verified key change
  event exactly as X delivered it: the key inside is wrapped for the bot's identity key, so what
  is kept is no more readable than what X itself keeps, and it needs no key of our own to protect
  it. A process that lacks a version reads the kept events and opens them with its identity.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import requests
from requests_oauthlib import OAuth1

from catbot.logs import event
from catbot.outbound import Outcome, SendResult
from catbot.replies import Intent, classify
from catbot.settings import Settings
from catbot.store import Batch, Store, StoreUnavailable
from catbot.xclient import build_session, rate_limited, rate_windows

X_CHAT = "x_chat"  # the kind of message (catbot.store.Inbound.kind)
API = "https://api.twitter.com"  # signed as this; X_API_BASE_URL is honoured by the transport
SIGNING_KEYS_TTL = 3600.0  # seconds a participant's public keys are trusted without asking X again
REFETCH_AFTER = 60.0  # a signature that fails with keys older than this asks X for fresh ones once
KEY_FIELDS = "public_key,public_key_version,signing_public_key,identity_public_key_signature"
REFUSED_COUNTER = "xchat_refused"

log = logging.getLogger("catbot.xchat")


def account(bot_id: str) -> str:
    """The store's account for X Chat messages to ``bot_id``: apart from its legacy DMs, so a
    user's waiting messages of the two kinds are never answered as one batch."""
    return f"xchat:{bot_id}"


def load_identity(blob_b64: str, version: str, bot_id: str):
    """The bot's ``chat_xdk.Chat`` identity from its private-key blob. Raises ValueError with a
    message that never quotes the blob."""
    from chat_xdk import Chat  # the Chat XDK is loaded only when X Chat is on

    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not base64") from None
    chat = Chat()
    try:
        chat.import_keys(blob, version=version)
        chat.set_identity(bot_id, version)
    except Exception:  # noqa: BLE001 - the SDK's message could carry key material; say only what failed
        raise ValueError("does not load as X Chat private keys") from None
    return chat


@dataclass(frozen=True)
class Sealed:
    """What the webhook records of a ``chat.received`` delivery: its fields as received."""

    message_id: str  # also the record's event id: de-duplicated on, and checked against the signed id
    conversation_id: str
    key_version: str
    encoded_event: str
    key_change: str | None = None
    conversation_token: str | None = None

    def dumps(self) -> str:
        return json.dumps({"message_id": self.message_id, "conversation_id": self.conversation_id, "key_version": self.key_version,
                           "encoded_event": self.encoded_event, "key_change": self.key_change,
                           "conversation_token": self.conversation_token}, separators=(",", ":"))

    @classmethod
    def loads(cls, payload: str) -> "Sealed":
        data = json.loads(payload)
        return cls(data["message_id"], data["conversation_id"], data["key_version"], data["encoded_event"], data.get("key_change"),
                   data.get("conversation_token"))


class Refused(Exception):
    """The event cannot be answered: tampered, forged, or a key the bot does not have."""


class XUnavailable(Exception):
    """X could not be asked for public keys (network, 5xx, 429): try the batch again later."""


def conversation_path_id(conversation_id: str) -> str:
    """The conversation's id as the messages endpoint takes it: ``a-b`` for a one-to-one."""
    return conversation_id.replace(":", "-")


def _members(conversation_id: str) -> set[str]:
    return set(re.split(r"[:-]", conversation_id))


class XChatIdentity:
    """One process's X Chat identity and what it knows: participants' signing keys (from X) and
    conversation keys (opened from kept key changes). Thread-safe; the SDK is used under a lock."""

    def __init__(self, settings: Settings, store: Store, http: requests.Session | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.bot_id = settings.bot_user_id
        self.store = store
        self.clock = clock
        self._chat = load_identity(settings.xchat_private_keys, settings.xchat_key_version, self.bot_id)
        self._http = build_session(settings, http)
        self._auth = OAuth1(settings.consumer_key, settings.consumer_secret, settings.access_token,
                            settings.access_token_secret)
        self._lock = threading.RLock()
        self._signing: dict[str, tuple[dict[str, str], float]] = {}  # user id -> (SDK entry, fetched at)
        self._keys: dict[str, dict[str, bytes]] = {}  # conversation -> key version -> key

    # -- participants' keys ---------------------------------------------------------------------
    def _fetch_signing_key(self, user_id: str) -> dict[str, str] | None:
        try:
            answer = self._http.get(f"{API}/2/users/{user_id}/public_keys", auth=self._auth,
                                    params={"public_key.fields": KEY_FIELDS})
        except requests.RequestException as exc:
            raise XUnavailable(type(exc).__name__) from None
        if answer.status_code == 429 or answer.status_code >= 500:
            raise XUnavailable(f"HTTP {answer.status_code}")
        try:
            keys = answer.json().get("data") if answer.status_code == 200 else None
        except ValueError:
            raise XUnavailable("unreadable answer") from None
        if not keys:
            return None
        key = max(keys, key=lambda k: int(k.get("public_key_version") or 0))  # the newest registration
        return {"user_id": user_id, "public_key": key.get("signing_public_key", ""),
                "public_key_version": key.get("public_key_version", ""),
                "identity_public_key": key.get("public_key", ""),
                "identity_public_key_signature": key.get("identity_public_key_signature", ""),
                "signing_public_key": key.get("signing_public_key", "")}

    def _ensure_signing_keys(self, user_ids: set[str], refresh: bool = False) -> None:
        now = self.clock()
        changed = False
        for user_id in sorted(user_ids):
            known = self._signing.get(user_id)
            age = now - known[1] if known else None
            if known is None or age > SIGNING_KEYS_TTL or (refresh and age > REFETCH_AFTER):
                entry = self._fetch_signing_key(user_id)
                if entry is None:
                    raise Refused(f"user {user_id} has no X Chat keys")
                self._signing[user_id] = (entry, now)
                changed = True
        if changed:  # the SDK replaces the whole set on each call
            self._chat.set_signing_keys([entry for entry, _ in self._signing.values()])

    # -- conversation keys ------------------------------------------------------------------------
    def _take_key_change(self, conversation_id: str, key_change: str) -> list[str]:
        """Verify a key change and learn its keys; the versions it gave (none: it failed)."""
        try:
            opened = self._chat.decrypt_events([key_change])
        except Exception:  # noqa: BLE001 - the SDK raises ValueError and its own errors alike
            return []
        if opened.get("errors"):
            return []
        keys = (opened.get("conversation_keys") or {}).get("keys") or {}
        self._keys.setdefault(conversation_id, {}).update(keys)
        return list(keys)

    def _key(self, conversation_id: str, version: str, members: set[str]) -> bytes:
        keys = self._keys.get(conversation_id, {})
        if version not in keys:
            for kept_version, kept in self.store.chat_key_changes(conversation_id).items():
                if kept_version not in keys:
                    self._ensure_signing_keys(members)
                    self._take_key_change(conversation_id, kept)
            keys = self._keys.get(conversation_id, {})
        if version not in keys:
            raise Refused("unknown conversation key version")
        return keys[version]

    # -- messages ---------------------------------------------------------------------------------
    def open(self, sealed: Sealed, user_id: str) -> str:
        """The text of the message ``sealed`` from ``user_id``, verified; raises Refused."""
        members = _members(sealed.conversation_id)
        if members != {self.bot_id, user_id}:
            raise Refused("not a one-to-one conversation between the sender and the bot")
        with self._lock:
            self._ensure_signing_keys(members)
            if sealed.key_change:
                versions = self._take_key_change(sealed.conversation_id, sealed.key_change)
                if not versions:
                    self._ensure_signing_keys(members, refresh=True)
                    versions = self._take_key_change(sealed.conversation_id, sealed.key_change)
                if not versions:
                    raise Refused("the key change did not verify")
                for version in versions:
                    self.store.keep_chat_key(sealed.conversation_id, version, sealed.key_change)
            key = self._key(sealed.conversation_id, sealed.key_version, members)
            message = self._decrypt(sealed, {sealed.key_version: key}, members)
        if message.get("type") != "Message":
            raise Refused(f"not a message ({str(message.get('type'))[:40]})")
        if (message.get("sender_id"), message.get("id")) != (user_id, sealed.message_id) or \
                _members(str(message.get("conversation_id"))) != members:
            raise Refused("the event does not match its delivery")
        content = message.get("content") or {}
        return str(content.get("text") or "")

    def _decrypt(self, sealed: Sealed, keys: dict[str, bytes], members: set[str]) -> dict[str, Any]:
        for attempt in (1, 2):
            try:
                message = self._chat.decrypt_event(sealed.encoded_event, keys)
                if message.get("verified") is True:
                    return message
            except Exception:  # noqa: BLE001 - tampered, forged, or keys we lack: the SDK fails closed
                pass
            if attempt == 1:  # the sender may have new keys: ask X once, then give up
                self._ensure_signing_keys(members, refresh=True)
        raise Refused("the message did not decrypt or verify")

    def seal_reply(self, sealed: Sealed, text: str):
        """``text`` encrypted as a reply to the message ``sealed``, with the conversation's newest
        key; the SDK's SendPayload (message_id, encrypted_content, encoded_event_signature)."""
        with self._lock:
            keys = self._keys.get(sealed.conversation_id) or {}
            if not keys:
                self._key(sealed.conversation_id, sealed.key_version, _members(sealed.conversation_id))
                keys = self._keys[sealed.conversation_id]
            version = max(keys, key=int)
            return self._chat.encrypt_reply(sealed.conversation_id, text, sealed.encoded_event,
                                            conversation_key=keys[version], conversation_key_version=version)


class XChatSender:
    """The reply job's sender for X Chat messages: opens a batch before it is planned, and sends
    the encrypted reply. Never raises for X's or the network's failures."""

    def __init__(self, settings: Settings, store: Store, identity: XChatIdentity | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.identity = identity or XChatIdentity(settings, store, clock=clock)
        self._http = self.identity._http
        self._auth = self.identity._auth

    def open(self, batch: Batch) -> Batch | SendResult:
        """The batch with each sealed message's intent decided from its text, and each refused
        message ignored (its payload dropped, so the reply never answers it). A SendResult when X
        could not be asked for keys: the batch is tried again later."""
        intents, payloads = list(batch.intents), list(batch.payloads)
        trigger = self.settings.trigger_regex
        for i, (intent, payload) in enumerate(zip(batch.intents, batch.payloads)):
            if intent is not Intent.SEALED:
                continue
            try:
                sealed = Sealed.loads(payload or "")
                text = self.identity.open(sealed, batch.user_id)
                intents[i] = classify(text, trigger)
                del text
            except XUnavailable as exc:
                return SendResult(Outcome.RETRY, None, f"public keys: {exc}")
            except (Refused, ValueError, KeyError, TypeError) as exc:
                reason = str(exc) if isinstance(exc, Refused) else "unreadable record"
                intents[i], payloads[i] = Intent.IGNORE, None
                event(log, "xchat.refused", logging.WARNING, reason=reason, user=batch.user_id)
                try:
                    self.store.count(REFUSED_COUNTER)
                except StoreUnavailable:
                    pass  # the count is for operators; the refusal itself stands
        return replace(batch, intents=tuple(intents), payloads=tuple(payloads))

    def send(self, batch: Batch, text: str) -> SendResult:
        now = self.clock()
        sealed = Sealed.loads(next(p for p in reversed(batch.payloads) if p))
        try:
            reply = self.identity.seal_reply(sealed, text)
        except Refused as exc:
            return SendResult(Outcome.REJECTED, None, str(exc))
        except XUnavailable as exc:
            return SendResult(Outcome.RETRY, None, f"public keys: {exc}")
        body = {"message_id": reply.message_id, "encoded_message_create_event": reply.encrypted_content,
                "encoded_message_event_signature": reply.encoded_event_signature}
        if sealed.conversation_token:
            body["conversation_token"] = sealed.conversation_token
        path = conversation_path_id(sealed.conversation_id)
        try:
            answer = self._http.post(f"{API}/2/chat/conversations/{path}/messages", json=body, auth=self._auth)
        except requests.RequestException as exc:
            return SendResult(Outcome.RETRY, None, type(exc).__name__)
        return classify_answer(answer, now, reply.message_id)


def classify_answer(answer: requests.Response, now: float, message_id: str) -> SendResult:
    """What an X Chat send came to. X does not document X Chat's send limits, so its headers
    are read like the DM endpoint's, under their own name, and a 429 is treated the same way."""
    detail = answer.text[:300] if answer.status_code >= 300 else ""
    if answer.status_code == 429:
        return rate_limited(answer.headers, now, detail, family="xchat")
    if answer.status_code >= 500:
        return SendResult(Outcome.RETRY, answer.status_code, detail)
    if answer.status_code >= 300:
        return SendResult(Outcome.REJECTED, answer.status_code, detail)
    return SendResult(Outcome.SENT, answer.status_code, windows=rate_windows(answer.headers, now, "xchat"),
                      message_id=message_id)
