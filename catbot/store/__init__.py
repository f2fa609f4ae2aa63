"""The source of truth: which events were seen, which replies are pending, users' state and the
shared X rate budget. :class:`Store` is the contract; ``sqlite.py`` (the embedded default, one
file) and ``redis.py`` (``REDIS_URL``, many processes and machines) keep it, and one suite of
contract tests (``tests/test_store.py``) runs against both.

The webhook answers 200 only once a message is durable (in the embedded default a journal line
that consumers import, see ``catbot.journal``; on Redis a store call), and the reply job takes
work only through :meth:`Store.claim_next`, so nothing depends on the queue keeping a task: a
task lost with a killed consumer costs latency, never a reply.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from catbot.budget import RateWindow
from catbot.liveness import Liveness
from catbot.replies import Intent

SEEN_RETENTION = 7 * 24 * 3600  # X replays at most 24 h back; keep ids well beyond that
SENT_RETENTION = 2 * 3600  # the per-user cap looks back one hour


class StoreUnavailable(Exception):
    """The store (or the journal in front of it) could not read or write; the webhook answers
    503 so X delivers again, and the reply job tries again later."""


@dataclass(frozen=True)
class Inbound:
    """One inbound message as it is recorded: what it is and what its reply needs, never its text.

    ``kind`` names the parser that made it and the sender that answers it (``"x_dm"``). A user's
    waiting messages are answered together, so a kind whose users could collide with another
    kind's names its account apart (e.g. ``"<kind>:<account>"``)."""

    kind: str
    for_user_id: str  # the bot's account the message was sent to
    user_id: str  # who wrote it
    event_id: str  # de-duplication key, per account
    intent: Intent
    created_ms: int
    payload: str | None = None  # what the reply job needs beyond the intent, opaque to the store


@dataclass(frozen=True)
class RecordResult:
    new: int  # messages that now wait for a reply
    duplicates: int  # events seen before (redelivery, replay)
    ignored: int  # new events that need no reply (TRIGGER_PATTERN did not match)
    wake: bool = False  # no wake-up was pending: the caller should enqueue one
    malformed: int = 0  # journal lines that could not be read (logged and counted)


@dataclass(frozen=True)
class Batch:
    """A user's pending messages, in the order they were written, claimed by one consumer."""

    kind: str
    for_user_id: str
    user_id: str
    token: str  # names the claim's holder (``catbot.liveness``)
    seqs: tuple[int, ...]
    intents: tuple[Intent, ...]
    payloads: tuple[str | None, ...]
    opted_out: bool
    attempts: int
    fact_seed: int
    fact_pos: int


@dataclass(frozen=True)
class Completion:
    """How a claimed batch ended; state changes apply even when nothing was sent."""

    opted_out: bool
    sent: bool
    absorb_facts: bool = False  # a fact went out: fact requests that arrived meanwhile are answered
    fact_seed: int | None = None  # new rotation position when a bundled fact was used
    fact_pos: int | None = None


class Store(Protocol):
    """What every backend guarantees. Each method is atomic (one SQLite transaction, one Redis
    script or WATCH/MULTI) and raises :class:`StoreUnavailable` when the store cannot answer.
    A *claim* hands a user's waiting messages to one consumer as a lease with a token; a claim
    is *ours* while the user's token is still that token."""

    backend: str

    def record(self, messages: Sequence[Inbound], now: float) -> RecordResult:
        """Note each new (account, event id) and queue the messages that need a reply; an id
        seen before (within ``SEEN_RETENTION``) is a duplicate, even within one call."""

    def take_wake(self) -> None:
        """A consumer is about to look for work: the next record with news asks for a wake-up
        again (one wake-up per pass, not per message)."""

    def claim_next(self, now: float, lease: float) -> Batch | None:
        """The first user in line (by arrival of their oldest waiting message; one answered with
        more waiting goes to the back), with all their waiting messages, held until ``now +
        lease`` by a new token of this process. None when nobody is due."""

    def renew(self, batch: Batch, now: float, lease: float) -> bool:
        """If the claim is still ours, hold it until ``now + lease`` and say True. Asked right
        before a send: False means another consumer may have answered, so do not send."""

    def complete(self, batch: Batch, done: Completion, now: float) -> bool:
        """Close a batch: drop its messages (and, with ``absorb_facts``, the fact requests that
        followed them up to the next command), apply the user's new state, put a user with more
        waiting at the back of the line. A sent reply is counted even when the claim is no
        longer ours; nothing else is then changed, and the result is False."""

    def release(self, batch: Batch, not_before: float, count_attempt: bool) -> None:
        """Give a claim back, claimable again from ``not_before``; nothing if it is not ours."""

    def void_leases(self, now: float, alive: Callable[[str], bool], sending_too: bool = False) -> int:
        """Void the claims and send reservations of holders ``alive`` says are gone, so they are
        claimable now; returns how many claims. A claim renewed to send is voided only with
        ``sending_too`` (when ``alive`` proves death: a dead process sends nothing more), else
        only its lease ends it."""

    def day_counts(self, day: str) -> tuple[int, int]:
        """(messages received, replies sent) in UTC day ``day`` (``YYYY-MM-DD``): new events
        recorded, and sends completed whoever held the claim. With a ``daily_send_limit`` the
        budget (``send_wait``, ``reserve_send``) also keeps sends within it until UTC midnight."""

    def sent_since(self, for_user_id: str, user_id: str, since: float) -> int:
        """Replies sent to this user after ``since`` (the per-user cap)."""

    def next_due(self, now: float) -> float | None:
        """When the earliest waiting user can be claimed; None when nobody waits."""

    def send_wait(self, now: float) -> float | None:
        """Read-only ``budget_verdict``: None if a send fits X's windows now, else when to look."""

    def reserve_send(self, now: float, token: str, hold: float) -> float | None:
        """Reserve one send under ``budget_verdict`` (None: go ahead; else nobody may send
        before then). Reservations lapse after ``hold`` if their holder dies."""

    def settle_send(self, token: str, windows: Sequence[RateWindow], now: float) -> None:
        """The send is over: drop its reservation, keep what X's headers said."""

    def try_lease(self, name: str, seconds: float, now: float) -> bool:
        """True for exactly one caller until ``seconds`` pass (periodic work runs once)."""

    def mark(self, name: str, now: float) -> float | None:
        """Record that ``name`` happened at ``now``; return when it happened before, if ever."""

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a counter that ``/healthz`` shows: something that went wrong and was
        handled (an X Chat event refused, say), so an operator sees it without reading logs."""

    def keep_chat_key(self, conversation_id: str, change_id: str, key_change: str) -> None:
        """Keep an X Chat conversation key change event, as X delivered it (base64, its key
        wrapped for the bot's identity key), under the id of the message that carried it: any
        process holding the private keys can open it later, and nobody else can. It is kept
        before it is verified (the conversation needs it even if its message is never answered),
        so whoever reads it verifies it. Keeping one twice is a no-op."""

    def chat_key_changes(self, conversation_id: str) -> dict[str, str]:
        """The kept key change events of a conversation, by the id of the message that carried
        each (oldest first on SQLite)."""

    def health(self) -> dict[str, object]:
        """``backend``, ``pending_messages``, ``users_waiting`` and counters, for ``/healthz``."""

    def prune(self, now: float) -> None:
        """Forget what can no longer matter (old event ids, old send times)."""

    def liveness(self) -> Liveness:
        """How consumers of this store show they are alive (``catbot.liveness``)."""

    def close(self) -> None:
        """Release connections."""
