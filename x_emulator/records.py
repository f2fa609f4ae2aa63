"""What the emulator remembers: the app's credentials, the faults a test injects, the DMs (and X
Chat messages) the bot sent, the registered webhooks and X Activity API subscriptions. Plain data,
shared by the server and every product area."""
from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

APIS = ("aaa", "xaa")  # how X delivers the bot's DMs: the Account Activity API, the X Activity API
ACCESS = ("ok", "forbidden", "oauth2")  # how X treats the app's X Activity API calls (see activity.py)


@dataclass(frozen=True)
class Credentials:
    consumer_key: str
    consumer_secret: str
    access_token: str
    access_token_secret: str
    bot_user_id: str = ""
    bearer_token: str = field(default_factory=lambda: "AAAA" + secrets.token_urlsafe(24))

    def __post_init__(self) -> None:
        if not self.bot_user_id:
            object.__setattr__(self, "bot_user_id", self.access_token.split("-", 1)[0])


@dataclass
class Faults:
    latency: float = 0.0  # seconds added before answering a DM or X Chat send
    errors_5xx: int = 0  # the next N DM or X Chat sends answer 503
    burst_429: int = 0  # the next N DM sends answer 429 (reset: end of the current window)
    forbidden: set[str] = field(default_factory=set)  # recipients that cannot be messaged (403)
    chat_429: int = 0  # the next N X Chat sends answer 429 (reset: end of the chat window)


@dataclass
class SentDM:
    """A message the bot sent: a legacy DM, or an X Chat message (its plaintext, as the recipient
    decrypted it, and the client's message id as ``dm_event_id``)."""

    participant_id: str
    text: str
    dm_event_id: str
    at: float
    channel: str = "dm"  # "dm" or "xchat"


@dataclass
class Webhook:
    id: str
    url: str
    valid: bool
    created_at: str


@dataclass
class ActivitySubscription:
    """An X Activity API subscription: which events of whom go to which webhook (if any)."""

    subscription_id: str
    event_type: str
    filter: dict[str, str]
    created_at: str
    updated_at: str
    tag: str | None = None
    webhook_id: str | None = None  # None: the activity stream only

    def as_json(self) -> dict[str, object]:
        """X's field order; absent optional fields are left out, as X does."""
        return {k: v for k, v in asdict(self).items() if v is not None}


def now_iso() -> str:
    """A creation time in the form X's v2 answers carry (UTC, milliseconds, ``Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
