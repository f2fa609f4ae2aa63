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
from catbot.xclient import DEFAULT_RETRY_AFTER, build_session, rate_limited, rate_windows

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
    """X could not be asked for public keys (network, 5xx, 429, our credentials refused): try
    the batch again later; ``retry_at`` is X's reset time after a 429."""

    def __init__(self, why: str, retry_at: float | None = None) -> None:
        super().__init__(why)
        self.retry_at = retry_at


def canonical(conversation_id: str) -> str:
    """One spelling per conversation: a one-to-one as ``low:high`` (the Chat XDK's own), whatever
    separator and order a delivery used (X's samples use ``b:a`` and ``a-b``); a group as is."""
    if conversation_id.startswith("g"):
        return conversation_id
    return ":".join(sorted(re.split(r"[:-]", conversation_id), key=int))


def conversation_path_id(conversation_id: str) -> str:
    """The conversation's id as the messages endpoint takes it: ``a-b`` for a one-to-one."""
    return canonical(conversation_id).replace(":", "-")


def _members(conversation_id: str) -> set[str]:
    return set(re.split(r"[:-]", conversation_id))


_KEY_FIELDS = ("public_key", "public_key_version", "signing_public_key", "identity_public_key_signature")


def _signing_entries(user_id: str, answer: requests.Response, now: float) -> list[dict[str, str]] | None:
    """The SDK's signing-key entries from X's answer to ``GET /2/users/:id/public_keys``: every
    registration the user has (a second device verifies with an older one), None when X has
    none. Anything X should not have said is XUnavailable, never a crash or another's refusal."""
    status = answer.status_code
    if status == 429:
        try:
            reset = float(answer.headers.get("x-rate-limit-reset", ""))
        except ValueError:
            reset = 0.0
        raise XUnavailable("HTTP 429", reset if reset > now else now + DEFAULT_RETRY_AFTER)
    if status >= 500 or status in (401, 403):  # X's trouble, or our credentials: not the user's doing
        raise XUnavailable(f"HTTP {status}")
    if status == 404:
        return None
    try:
        body = answer.json()
    except ValueError:
        raise XUnavailable("unreadable answer") from None
    keys = body.get("data") if isinstance(body, dict) else None
    if keys is None and isinstance(body, dict) and "errors" in body:
        return None  # X's not-found form: the user registered no X Chat key
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise XUnavailable("unreadable answer")
    entries = [{"user_id": user_id, "public_key": k["signing_public_key"], "public_key_version": k["public_key_version"],
                "identity_public_key": k["public_key"], "identity_public_key_signature": k["identity_public_key_signature"],
                "signing_public_key": k["signing_public_key"]}
               for k in keys if all(isinstance(k.get(f), str) and k.get(f) for f in _KEY_FIELDS)]
    return entries or None


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
        self._signing: dict[str, tuple[list[dict[str, str]], float]] = {}  # user -> (SDK entries, fetched at)
        self._keys: dict[str, dict[str, bytes]] = {}  # conversation -> key version -> key
        self._learned: dict[str, set[str]] = {}  # conversation -> kept key changes already tried

    # -- participants' keys ---------------------------------------------------------------------
    def _fetch_signing_keys(self, user_id: str) -> list[dict[str, str]] | None:
        try:
            answer = self._http.get(f"{API}/2/users/{user_id}/public_keys", auth=self._auth,
                                    params={"public_key.fields": KEY_FIELDS})
        except requests.RequestException as exc:
            raise XUnavailable(type(exc).__name__) from None
        return _signing_entries(user_id, answer, self.clock())

    def _use_signing_keys(self, members: set[str], refresh: bool = False) -> None:
        """Give the SDK exactly the members' signing keys, so nothing signed by anyone else
        verifies (the SDK replaces the whole set on each call)."""
        now = self.clock()
        for user_id in sorted(members):
            known = self._signing.get(user_id)
            age = now - known[1] if known else None
            if known is None or age > SIGNING_KEYS_TTL or (refresh and age > REFETCH_AFTER):
                entries = self._fetch_signing_keys(user_id)
                if entries is None:
                    raise Refused(f"user {user_id} has no X Chat keys")
                self._signing[user_id] = (entries, now)
        try:
            self._chat.set_signing_keys([e for user_id in sorted(members) for e in self._signing[user_id][0]])
        except Exception:  # noqa: BLE001 - keys X gave that the SDK will not take: this conversation only
            raise Refused("a participant's public keys are unusable") from None

    # -- conversation keys ------------------------------------------------------------------------
    def _learn(self, conversation_id: str, members: set[str], key_change: str) -> list[str]:
        """Verify a key change made by a member for this conversation and learn its keys; the
        versions it gave (none: refused). The SDK hands over the key of a key change whose
        signature failed (reported only in ``errors``), so any error refuses it."""
        try:
            opened = self._chat.decrypt_events([key_change])
        except Exception:  # noqa: BLE001 - the SDK raises ValueError and its own errors alike
            return []
        messages = opened.get("messages") or []
        change = messages[0].get("event") if len(messages) == 1 and isinstance(messages[0], dict) else None
        if opened.get("errors") or not isinstance(change, dict) or change.get("type") != "KeyChange" or \
                change.get("verified") is not True or change.get("sender_id") not in members or \
                canonical(str(change.get("conversation_id") or "0")) != conversation_id:
            return []
        keys = (opened.get("conversation_keys") or {}).get("keys") or {}
        self._keys.setdefault(conversation_id, {}).update(keys)
        return list(keys)

    def _key(self, conversation_id: str, version: str, members: set[str]) -> bytes:
        keys = self._keys.get(conversation_id, {})
        if version not in keys:
            tried = self._learned.setdefault(conversation_id, set())
            for change_id, kept in self.store.chat_key_changes(conversation_id).items():
                if change_id not in tried:
                    tried.add(change_id)
                    self._learn(conversation_id, members, kept)
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
        conversation = canonical(sealed.conversation_id)
        if sealed.key_change:  # kept first, as delivered: the conversation needs it even if this message fails
            self.store.keep_chat_key(conversation, sealed.message_id, sealed.key_change)
        with self._lock:
            self._use_signing_keys(members)
            if sealed.key_change:
                self._learned.setdefault(conversation, set()).add(sealed.message_id)
                if not self._learn(conversation, members, sealed.key_change):
                    self._use_signing_keys(members, refresh=True)
                    if not self._learn(conversation, members, sealed.key_change):
                        raise Refused("the key change did not verify")
            key = self._key(conversation, sealed.key_version, members)
            message = self._decrypt(sealed, {sealed.key_version: key}, members)
        if message.get("type") != "Message":
            raise Refused(f"not a message ({str(message.get('type'))[:40]})")
        if (message.get("sender_id"), message.get("id")) != (user_id, sealed.message_id) or \
                canonical(str(message.get("conversation_id") or "0")) != conversation:
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
                self._use_signing_keys(members, refresh=True)
        raise Refused("the message did not decrypt or verify")

    def seal_reply(self, sealed: Sealed, text: str):
        """``text`` encrypted as a reply to the message ``sealed``, under that message's key
        version (the user holds it; a newer one may not have reached their device); the SDK's
        SendPayload (message_id, encrypted_content, encoded_event_signature)."""
        members = _members(sealed.conversation_id)
        conversation = canonical(sealed.conversation_id)
        with self._lock:
            self._use_signing_keys(members)
            key = self._key(conversation, sealed.key_version, members)
            return self._chat.encrypt_reply(conversation, text, sealed.encoded_event,
                                            conversation_key=key, conversation_key_version=sealed.key_version)


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
        self._memo_lock = threading.Lock()
        self._refused_seqs: dict[int, None] = {}  # messages refused by this process (bounded, oldest out)

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
                intents[i] = classify(self.identity.open(sealed, batch.user_id), trigger)
            except XUnavailable as exc:
                if exc.retry_at is not None:
                    return SendResult(Outcome.RATE_LIMITED, 429, f"public keys: {exc}", exc.retry_at)
                return SendResult(Outcome.RETRY, None, f"public keys: {exc}")
            except Exception as exc:  # noqa: BLE001 - Refused, an unreadable record, or the SDK's surprise:
                # this message is not answered, and the batch is never stuck on it
                intents[i], payloads[i] = Intent.IGNORE, None
                self._refused(batch, i, str(exc) if isinstance(exc, Refused) else
                              f"unreadable ({type(exc).__name__})")
        return replace(batch, intents=tuple(intents), payloads=tuple(payloads))

    def _refused(self, batch: Batch, index: int, reason: str) -> None:
        """One log line and one count per refused message, though its batch may be opened again
        (a retried send, a crash): the refusal is not written back to the store."""
        with self._memo_lock:
            if batch.seqs[index] in self._refused_seqs:
                return
            self._refused_seqs[batch.seqs[index]] = None
            while len(self._refused_seqs) > 10_000:
                self._refused_seqs.pop(next(iter(self._refused_seqs)))
        event(log, "xchat.refused", logging.WARNING, reason=reason, user=batch.user_id)
        try:
            self.store.count(REFUSED_COUNTER)
        except StoreUnavailable:
            pass  # the count is for operators; the refusal itself stands

    def send(self, batch: Batch, text: str) -> SendResult:
        now = self.clock()
        sealed = Sealed.loads(next(p for p in reversed(batch.payloads) if p))
        try:
            reply = self.identity.seal_reply(sealed, text)
        except XUnavailable as exc:
            return SendResult(Outcome.RETRY, None, f"public keys: {exc}")
        except Exception as exc:  # noqa: BLE001 - Refused or the SDK's own error: retrying will not help
            return SendResult(Outcome.REJECTED, None, str(exc) if isinstance(exc, Refused) else
                              f"could not encrypt the reply ({type(exc).__name__})")
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
