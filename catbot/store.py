"""The source of truth: which events were seen, which replies are pending, users' state and the
shared X rate budget.

The webhook answers 200 only after :meth:`SqliteStore.record` committed, and the reply job
takes work only through :meth:`SqliteStore.claim_next`, so nothing depends on the queue keeping
a task: a task lost with a killed consumer costs latency, never a reply. A claim is a lease with
a token; if its holder dies, the lease runs out and another consumer takes the batch.

The embedded default keeps everything in one SQLite file (WAL, ``synchronous=NORMAL``: a
commit survives the process being killed, which is what SIGKILL and dyno restarts need).
"""
from __future__ import annotations

import os
import random
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

from catbot.events import IncomingDM
from catbot.replies import Intent

SEEN_RETENTION = 7 * 24 * 3600  # X replays at most 24 h back; keep ids well beyond that
SENT_RETENTION = 2 * 3600  # the per-user cap looks back one hour


class StoreUnavailable(Exception):
    """The store could not read or write; the webhook answers 503 so X delivers again."""


@dataclass(frozen=True)
class RecordResult:
    new: int  # messages that now wait for a reply
    duplicates: int  # events seen before (redelivery, replay)
    ignored: int  # new events that need no reply (TRIGGER_PATTERN did not match)


@dataclass(frozen=True)
class Batch:
    """A user's pending messages, claimed by one consumer until ``lease_until``."""

    for_user_id: str
    user_id: str
    token: str
    seqs: tuple[int, ...]
    intents: tuple[Intent, ...]
    opted_out: bool
    attempts: int
    fact_seed: int
    fact_pos: int
    claimed_at: float


@dataclass(frozen=True)
class Completion:
    """How a claimed batch ended; state changes apply even when nothing was sent."""

    opted_out: bool
    sent: bool
    absorb_facts: bool = False  # a fact went out: fact requests that arrived meanwhile are answered
    fact_seed: int | None = None  # new rotation position when a bundled fact was used
    fact_pos: int | None = None


SCHEMA = """
create table if not exists catbot_seen (
    for_user_id text not null, event_id text not null, received_at real not null,
    primary key (for_user_id, event_id)) without rowid;
create index if not exists catbot_seen_received on catbot_seen (received_at);
create table if not exists catbot_inbox (
    seq integer primary key autoincrement,
    for_user_id text not null, user_id text not null, event_id text not null,
    intent text not null, created_ms integer not null, received_at real not null);
create index if not exists catbot_inbox_user on catbot_inbox (for_user_id, user_id, seq);
create table if not exists catbot_users (
    for_user_id text not null, user_id text not null,
    opted_out integer not null default 0,
    claimed_until real not null default 0, claim_token text,
    not_before real not null default 0, attempts integer not null default 0,
    fact_seed integer not null, fact_pos integer not null default 0,
    primary key (for_user_id, user_id)) without rowid;
create table if not exists catbot_sent (
    for_user_id text not null, user_id text not null, sent_at real not null);
create index if not exists catbot_sent_user on catbot_sent (for_user_id, user_id, sent_at);
create table if not exists catbot_budget (
    name text primary key, remaining integer not null, reset_at real not null);
"""


class SqliteStore:
    """All of the bot's state in one SQLite file, safe across threads and processes."""

    backend = "sqlite"

    def __init__(self, path: str, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        try:
            self._conn().executescript(SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {path}: {exc}") from exc

    # -- plumbing -----------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("pragma journal_mode=wal")
            conn.execute("pragma synchronous=normal")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so concurrent writers queue instead of failing."""
        try:
            db = self._conn()
            db.execute("begin immediate")
        except sqlite3.Error as exc:
            self._local.conn = None
            raise StoreUnavailable(str(exc)) from exc
        try:
            yield db
            db.execute("commit")
        except sqlite3.Error as exc:
            _rollback(db)
            raise StoreUnavailable(str(exc)) from exc
        except BaseException:
            _rollback(db)
            raise

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            self._local.conn = None
            raise StoreUnavailable(str(exc)) from exc

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- the webhook's side -------------------------------------------------------------------
    def record(self, items: Sequence[tuple[IncomingDM, Intent]], now: float) -> RecordResult:
        """Durably note each new event and queue the ones that need a reply, in one commit."""
        new = duplicates = ignored = 0
        with self._tx() as db:
            for dm, intent in items:
                cur = db.execute(
                    "insert or ignore into catbot_seen (for_user_id, event_id, received_at) values (?, ?, ?)",
                    (dm.for_user_id, dm.event_id, now))
                if cur.rowcount == 0:
                    duplicates += 1
                    continue
                if intent is Intent.IGNORE:
                    ignored += 1
                    continue
                db.execute(
                    "insert into catbot_inbox (for_user_id, user_id, event_id, intent, created_ms, received_at)"
                    " values (?, ?, ?, ?, ?, ?)",
                    (dm.for_user_id, dm.sender_id, dm.event_id, intent.value, dm.created_ms, now))
                db.execute(
                    "insert or ignore into catbot_users (for_user_id, user_id, fact_seed) values (?, ?, ?)",
                    (dm.for_user_id, dm.sender_id, random.getrandbits(31)))
                new += 1
        return RecordResult(new=new, duplicates=duplicates, ignored=ignored)

    # -- the reply job's side -----------------------------------------------------------------
    def claim_next(self, now: float, lease: float) -> Batch | None:
        """Take the user whose oldest pending message is oldest (fair under backlog)."""
        with self._tx() as db:
            row = db.execute(
                "select i.for_user_id, i.user_id, min(i.seq) as first from catbot_inbox i"
                " join catbot_users u on u.for_user_id = i.for_user_id and u.user_id = i.user_id"
                " where u.claimed_until <= ? and u.not_before <= ?"
                " group by i.for_user_id, i.user_id order by first limit 1", (now, now)).fetchone()
            if row is None:
                return None
            for_user_id, user_id, _ = row
            token = uuid.uuid4().hex
            db.execute("update catbot_users set claimed_until = ?, claim_token = ?"
                       " where for_user_id = ? and user_id = ?", (now + lease, token, for_user_id, user_id))
            opted_out, attempts, seed, pos = db.execute(
                "select opted_out, attempts, fact_seed, fact_pos from catbot_users"
                " where for_user_id = ? and user_id = ?", (for_user_id, user_id)).fetchone()
            messages = db.execute(
                "select seq, intent from catbot_inbox where for_user_id = ? and user_id = ?"
                " order by created_ms, seq", (for_user_id, user_id)).fetchall()
        return Batch(for_user_id, user_id, token, tuple(m[0] for m in messages),
                     tuple(Intent(m[1]) for m in messages), bool(opted_out), attempts, seed, pos, now)

    def complete(self, batch: Batch, done: Completion, now: float) -> bool:
        """Close a batch: drop its messages, apply the user's new state, count a sent reply.

        Returns False when the lease had run out and another consumer holds the user now.
        """
        with self._tx() as db:
            (token,) = db.execute("select claim_token from catbot_users where for_user_id = ? and user_id = ?",
                                  (batch.for_user_id, batch.user_id)).fetchone()
            ours = token == batch.token
            db.executemany("delete from catbot_inbox where seq = ?", [(s,) for s in batch.seqs])
            if done.absorb_facts:
                later = db.execute("select seq, intent from catbot_inbox where for_user_id = ? and user_id = ?"
                                   " order by created_ms, seq", (batch.for_user_id, batch.user_id)).fetchall()
                for seq, intent in later:  # answered by the fact just sent, up to the next command
                    if intent != Intent.FACT.value:
                        break
                    db.execute("delete from catbot_inbox where seq = ?", (seq,))
            rotation = "" if done.fact_seed is None else ", fact_seed = :seed, fact_pos = :pos"
            release = ", claimed_until = 0, claim_token = null, not_before = 0, attempts = 0" if ours else ""
            db.execute(f"update catbot_users set opted_out = :out{rotation}{release}"
                       " where for_user_id = :f and user_id = :u",
                       {"out": int(done.opted_out), "seed": done.fact_seed, "pos": done.fact_pos,
                        "f": batch.for_user_id, "u": batch.user_id})
            if done.sent:
                db.execute("insert into catbot_sent (for_user_id, user_id, sent_at) values (?, ?, ?)",
                           (batch.for_user_id, batch.user_id, now))
        return ours

    def release(self, batch: Batch, not_before: float, count_attempt: bool) -> None:
        """Give a claimed batch back, to be tried again from ``not_before`` on."""
        with self._tx() as db:
            db.execute("update catbot_users set claimed_until = 0, claim_token = null, not_before = ?,"
                       " attempts = attempts + ? where for_user_id = ? and user_id = ? and claim_token = ?",
                       (not_before, int(count_attempt), batch.for_user_id, batch.user_id, batch.token))

    def sent_since(self, for_user_id: str, user_id: str, since: float) -> int:
        return self._read("select count(*) from catbot_sent where for_user_id = ? and user_id = ?"
                          " and sent_at > ?", (for_user_id, user_id, since))[0][0]

    def next_due(self, now: float) -> float | None:
        """When the earliest pending batch can be claimed (``now`` or earlier if one is due)."""
        row = self._read("select min(max(u.claimed_until, u.not_before)) from catbot_users u"
                         " where exists (select 1 from catbot_inbox i where i.for_user_id = u.for_user_id"
                         " and i.user_id = u.user_id)")
        return row[0][0]

    # -- X's rate budget, shared by every consumer -----------------------------------------------
    def reserve_send(self, now: float) -> float | None:
        """Take one send from the budget. None: go ahead. A number: wait until then."""
        with self._tx() as db:
            rows = db.execute("select remaining, reset_at from catbot_budget where reset_at > ?", (now,)).fetchall()
            blocked = [reset for remaining, reset in rows if remaining <= 0]
            if blocked:
                return max(blocked)
            db.execute("update catbot_budget set remaining = remaining - 1 where reset_at > ?", (now,))
        return None

    def observe_budget(self, name: str, remaining: int, reset_at: float) -> None:
        """Record what X's ``x-rate-limit-*`` headers said. Within one window the lower count
        wins, because sends still in flight were already taken off ours."""
        with self._tx() as db:
            row = db.execute("select remaining, reset_at from catbot_budget where name = ?", (name,)).fetchone()
            if row is not None and abs(row[1] - reset_at) < 2:
                remaining = min(remaining, row[0])
            db.execute("insert or replace into catbot_budget (name, remaining, reset_at) values (?, ?, ?)",
                       (name, remaining, reset_at))

    # -- operations -----------------------------------------------------------------------------
    def health(self) -> dict[str, object]:
        pending, users = self._read("select count(*), count(distinct for_user_id || ':' || user_id)"
                                    " from catbot_inbox")[0]
        return {"backend": self.backend, "pending_messages": pending, "users_waiting": users}

    def prune(self, now: float) -> None:
        """Forget what can no longer matter: old event ids and old per-user send times."""
        with self._tx() as db:
            db.execute("delete from catbot_seen where received_at < ?", (now - SEEN_RETENTION,))
            db.execute("delete from catbot_sent where sent_at < ?", (now - SENT_RETENTION,))


def _rollback(db: sqlite3.Connection) -> None:
    try:
        db.execute("rollback")
    except sqlite3.Error:
        pass


def open_store(settings) -> SqliteStore:
    """The store the settings ask for (SQLite now; Redis arrives with REDIS_URL support)."""
    return SqliteStore(settings.sqlite_path)
