"""Turning an Account Activity delivery into the direct messages the bot should consider.

Through the Account Activity API X sends every activity of the subscribed account (tweets,
follows, typing, read receipts, ``user_event``, ``replay_job_status`` ...); through the X
Activity API, the event types subscribed to. Only ``message_create`` entries of legacy DM
events become :class:`IncomingDM`; everything else is acknowledged and ignored.
Parsing never raises on hostile input: an entry with a missing or mistyped field is skipped
and counted, so one bad entry cannot hide the good ones beside it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from catbot.replies import MAX_TEXT, Intent, classify
from catbot.store import Inbound
from catbot.xchat import X_CHAT, Sealed, account

# X's ids are positive numbers written as decimal strings (snowflakes; none is 0). Ids are
# compared and de-duplicated as strings, so one number must have one spelling: "02000000001"
# would be the bot's own id answered as another user, "018" a replay that dodges "18".
# Leading zeros (and "0" itself) are therefore malformed. ASCII digits only; used with fullmatch.
_ID = re.compile(r"[1-9][0-9]{0,24}")
X_DM = "x_dm"  # the kind of message this module makes (catbot.store.Inbound.kind)
XAA_DM_EVENTS = frozenset({"dm.received", "dm.sent"})  # X Activity API types that carry legacy DMs
XAA_CHAT_EVENT = "chat.received"  # an X Chat message to the account (chat.sent: its own, ignored)
_MESSAGE_ID = re.compile(r"[0-9A-Za-z-]{1,64}")  # X Chat message ids are UUIDs
_CONVERSATION = re.compile(r"[1-9][0-9]{0,24}[:-][1-9][0-9]{0,24}|g[1-9][0-9]{0,24}")
_VERSION = re.compile(r"[1-9][0-9]{0,24}")
# An X Chat message is at most X's 10,000 characters: its event, encrypted and framed, is under
# 64 KiB of base64 even in 4-byte characters. The bounds keep a sealed record far below what a
# journal import reads at once (catbot.journal.READ_LIMIT): a longer line would never be whole.
_EVENT = re.compile(r"[A-Za-z0-9+/=_-]{4,65536}")
_KEY_CHANGE = re.compile(r"[A-Za-z0-9+/=_-]{4,16384}")  # a one-to-one key change is about 1 KiB
MAX_TOKEN = 8192
_AAA_DM_KEYS = frozenset({"for_user_id", "direct_message_events", "users", "apps"})


@dataclass(frozen=True)
class IncomingDM:
    """One direct message as the bot needs it: who, which event, what was said."""

    for_user_id: str
    event_id: str
    sender_id: str
    text: str = field(repr=False)  # users' words stay out of logs and reprs
    created_ms: int

    kind = X_DM

    def inbound(self, trigger: re.Pattern[str] | None) -> Inbound:
        """The record of this DM: its intent, decided now, and never its text."""
        return Inbound(X_DM, self.for_user_id, self.sender_id, self.event_id, classify(self.text, trigger),
                       self.created_ms)


@dataclass(frozen=True)
class IncomingChat:
    """One X Chat message as received: who, which message, and its fields still encrypted."""

    for_user_id: str
    event_id: str  # the message id, which the reply job checks against the signed one
    sender_id: str
    created_ms: int
    sealed: str = field(repr=False)  # catbot.xchat.Sealed, as JSON

    kind = X_CHAT

    def inbound(self, trigger: re.Pattern[str] | None) -> Inbound:
        """The record of this message: sealed, its intent decided when the reply job opens it.
        Its account is apart from the legacy DMs' (catbot.xchat.account)."""
        return Inbound(X_CHAT, account(self.for_user_id), self.sender_id, self.event_id, Intent.SEALED,
                       self.created_ms, self.sealed)


def _chat(for_user_id: str, payload: Any) -> IncomingChat:
    """A ``chat.received`` payload, checked field by field (nothing here decrypts)."""
    if not isinstance(payload, dict):
        raise ValueError("chat payload is not an object")
    message_id, sender_id = payload.get("id"), _id(payload.get("sender_id"))
    conversation, version = payload.get("conversation_id"), payload.get("conversation_key_version")
    encoded, key_change = payload.get("encoded_event"), payload.get("conversation_key_change_event")
    token = payload.get("conversation_token")
    if not (isinstance(message_id, str) and _MESSAGE_ID.fullmatch(message_id)) or sender_id is None:
        raise ValueError("chat message without a usable id or sender")
    if not (isinstance(conversation, str) and _CONVERSATION.fullmatch(conversation)
            and isinstance(version, str) and _VERSION.fullmatch(version)):
        raise ValueError("chat message without a usable conversation or key version")
    if not (isinstance(encoded, str) and _EVENT.fullmatch(encoded)) or \
            not (key_change is None or isinstance(key_change, str) and _KEY_CHANGE.fullmatch(key_change)):
        raise ValueError("chat message without a usable encoded event")
    if not (token is None or isinstance(token, str) and len(token) <= MAX_TOKEN):
        raise ValueError("chat message with an unusable conversation token")
    sealed = Sealed(message_id, conversation, version, encoded, key_change, token)
    return IncomingChat(for_user_id, message_id, sender_id, _timestamp(payload.get("created_at_msec")), sealed.dumps())


@dataclass
class ParsedDelivery:
    """What a delivery held: the DMs to consider, and counts of what was skipped and why."""

    messages: list[IncomingDM | IncomingChat] = field(default_factory=list)
    own_messages: int = 0
    malformed: int = 0
    other_activity: list[str] = field(default_factory=list)


def is_own_message(for_user_id: str, sender_id: str) -> bool:
    """True for the bot's own outgoing DMs, which X delivers back to the webhook.

    Answering them would make the bot talk to itself forever.
    """
    return sender_id == for_user_id


def _id(value: Any) -> str | None:
    """An id as X sends it (a positive decimal string, no leading zero), else None."""
    return value if isinstance(value, str) and _ID.fullmatch(value) else None


def _timestamp(value: Any) -> int:
    if isinstance(value, str) and value.isdigit() and len(value) <= 16:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**16:
        return value
    return 0


def _message(for_user_id: str, event: Any) -> IncomingDM | None:
    if not isinstance(event, dict) or event.get("type") != "message_create":
        return None
    event_id = _id(event.get("id"))
    create = event.get("message_create")
    if event_id is None or not isinstance(create, dict):
        raise ValueError("message_create without a usable id")
    sender_id = _id(create.get("sender_id"))
    data = create.get("message_data")
    if sender_id is None or not isinstance(data, dict):
        raise ValueError("message_create without sender or message_data")
    target = create.get("target")
    recipient = target.get("recipient_id") if isinstance(target, dict) else None
    if recipient is not None and recipient != for_user_id and sender_id != for_user_id:
        return None  # neither to nor from the account: not a conversation the bot is in
    text = data.get("text", "")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValueError("message text is not a string")
    return IncomingDM(
        for_user_id=for_user_id,
        event_id=event_id,
        sender_id=sender_id,
        text=text[:MAX_TEXT],
        created_ms=_timestamp(event.get("created_timestamp")),
    )


def _envelope(delivery: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    """(for_user_id, direct_message_events, other activity) from either envelope X uses.

    The Account Activity API puts DM events at the top level beside every other activity of
    the account. The X Activity API sends one event per delivery, ``{"data": {"event_uuid",
    "event_type", "filter": {"user_id"}, "tag"?, "payload", "includes"?}}``: ``dm.received`` and
    ``dm.sent`` carry legacy DM events in ``payload``; any other type (``dm.read``,
    ``dm.indicate_typing``, ``chat.*``, ``follow.follow``, ``oauth.revoke``...) is only named.
    """
    data = delivery.get("data")
    if "direct_message_events" not in delivery and isinstance(data, dict):
        event_type = data.get("event_type")
        if not isinstance(event_type, str) or event_type not in XAA_DM_EVENTS:  # only named, never read
            return None, None, [event_type[:40] if isinstance(event_type, str) and event_type else "unknown"]
        payload, filt = data.get("payload"), data.get("filter")
        if isinstance(payload, dict) and isinstance(filt, dict):
            return filt.get("user_id"), payload.get("direct_message_events"), []
    other = sorted(k for k in delivery if isinstance(k, str) and k not in _AAA_DM_KEYS)[:20]
    return delivery.get("for_user_id"), delivery.get("direct_message_events"), other


def parse_delivery(delivery: Any) -> ParsedDelivery:
    """Every ``message_create`` in the delivery from someone other than the bot."""
    parsed = ParsedDelivery()
    if not isinstance(delivery, dict):
        parsed.malformed += 1
        return parsed
    data = delivery.get("data")
    if isinstance(data, dict) and data.get("event_type") == XAA_CHAT_EVENT and "direct_message_events" not in delivery:
        filt = data.get("filter")
        for_user_id = _id(filt.get("user_id")) if isinstance(filt, dict) else None
        try:
            if for_user_id is None:
                raise ValueError("chat event without the account it is for")
            chat = _chat(for_user_id, data.get("payload"))
        except ValueError:
            parsed.malformed += 1
            return parsed
        if is_own_message(for_user_id, chat.sender_id):
            parsed.own_messages += 1
        else:
            parsed.messages.append(chat)
        return parsed
    raw_for_user, events, parsed.other_activity = _envelope(delivery)
    if events is None:
        return parsed
    sent_by_account = isinstance(data, dict) and data.get("event_type") == "dm.sent"  # whatever its events say
    for_user_id = _id(raw_for_user)
    if for_user_id is None or not isinstance(events, list):
        parsed.malformed += 1
        return parsed
    for event in events:
        try:
            message = _message(for_user_id, event)
        except ValueError:
            parsed.malformed += 1
            continue
        if message is None:
            continue
        if sent_by_account or is_own_message(for_user_id, message.sender_id):
            parsed.own_messages += 1
            continue
        parsed.messages.append(message)
    return parsed
