"""The source of truth: which events were seen, which replies are pending, users' state and the
shared X rate budget.

The webhook answers 200 only once a delivery is durable (in the embedded default a journal line
that consumers import here, see ``catbot.journal``; on Redis a store call), and the reply job
takes work only through :meth:`SqliteStore.claim_next`, so nothing depends on the queue keeping
a task: a task lost with a killed consumer costs latency, never a reply. A claim is a lease with
a token; if its holder dies, the lease runs out and another consumer takes the batch.

The embedded default keeps everything in one SQLite file (WAL, ``synchronous=NORMAL``: a
commit survives the process being killed, which is what SIGKILL and dyno restarts need).
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from catbot.events import IncomingDM
from catbot.liveness import SEPARATOR, Heartbeats, LockFiles, holder_of, new_token
from catbot.replies import Intent
from catbot.xclient import RateWindow

SEEN_RETENTION = 7 * 24 * 3600  # X replays at most 24 h back; keep ids well beyond that
SENT_RETENTION = 2 * 3600  # the per-user cap looks back one hour


class StoreUnavailable(Exception):
    """The store could not read or write; the webhook answers 503 so X delivers again."""


@dataclass(frozen=True)
class RecordResult:
    new: int  # messages that now wait for a reply
    duplicates: int  # events seen before (redelivery, replay)
    ignored: int  # new events that need no reply (TRIGGER_PATTERN did not match)
    wake: bool = False  # no wake-up was pending: the caller should enqueue one
    malformed: int = 0  # journal lines that could not be read (logged and counted)


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
    queue_pos real,  -- place in line while messages wait: a time (null: nothing waiting)
    primary key (for_user_id, user_id)) without rowid;
create index if not exists catbot_users_queue on catbot_users (queue_pos) where queue_pos is not null;
create index if not exists catbot_users_claimed on catbot_users (claim_token) where claim_token is not null;
create table if not exists catbot_sent (
    for_user_id text not null, user_id text not null, sent_at real not null);
create index if not exists catbot_sent_user on catbot_sent (for_user_id, user_id, sent_at);
create table if not exists catbot_budget (
    name text primary key, remaining integer not null, reset_at real not null, lim integer);
create table if not exists catbot_inflight (
    token text primary key, until real not null);
create table if not exists catbot_leases (
    name text primary key, holder text not null, until real not null);
create table if not exists catbot_marks (
    name text primary key, at real not null);
create table if not exists catbot_journal (
    file text primary key, offset integer not null);
create table if not exists catbot_flags (
    name text primary key, value integer not null);
create table if not exists catbot_counters (
    name text primary key, value integer not null);
insert or ignore into catbot_flags (name, value) values ('wake', 0);
"""

# Per connection, in memory: what one record or import is bringing in (see _record_staged).
STAGING = """
create temp table if not exists catbot_lines (n integer primary key, line text not null);
create temp table if not exists catbot_incoming (
    n integer primary key, for_user_id text not null, event_id text not null, user_id text not null,
    intent text not null, created_ms integer not null, received_at real not null,
    fresh integer not null default 0);
"""
# Journal lines (``catbot.journal.encode``) decoded inside SQLite, well-formed ones only, in
# arrival order: a Python loop here would hold the GIL the webhook thread beside it needs.
_STAGE_LINES = f"""
insert into temp.catbot_incoming (for_user_id, event_id, user_id, intent, created_ms, received_at)
select json_extract(line, '$[0]'), json_extract(line, '$[1]'), json_extract(line, '$[2]'),
       json_extract(line, '$[3]'), json_extract(line, '$[4]'), json_extract(line, '$[5]')
from temp.catbot_lines
where json_valid(line) and json_array_length(line) = 6
  and json_type(line, '$[0]') = 'text' and json_type(line, '$[1]') = 'text' and json_type(line, '$[2]') = 'text'
  and json_extract(line, '$[3]') in ({", ".join(f"'{intent.value}'" for intent in Intent)})
  and json_type(line, '$[4]') = 'integer' and json_type(line, '$[5]') in ('integer', 'real')
order by json_extract(line, '$[5]'), n
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
            conn.execute("pragma temp_store=memory")
            conn.executescript(STAGING)
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

    def liveness(self) -> LockFiles:
        """Consumers on this machine show they are alive by a locked file beside the database."""
        return LockFiles(self.path + ".consumers")

    # -- the webhook's side -------------------------------------------------------------------
    def record(self, items: Sequence[tuple[IncomingDM, Intent]], now: float) -> RecordResult:
        """Durably note each new event and queue the ones that need a reply, in one commit."""
        with self._tx() as db:
            db.execute("delete from temp.catbot_incoming")
            db.executemany("insert into temp.catbot_incoming (for_user_id, event_id, user_id, intent, created_ms,"
                           " received_at) values (?, ?, ?, ?, ?, ?)",
                           [(dm.for_user_id, dm.event_id, dm.sender_id, intent.value, dm.created_ms, now)
                            for dm, intent in items])
            return self._record_staged(db)

    def import_journal(self, journal) -> RecordResult:
        """Move what the webhooks journaled into the store (see ``catbot.journal``).

        Lines and the files' new offsets are committed together, so a line is imported once;
        and since importing goes through the same de-duplication as ``record``, even a repeat
        would be harmless. Each chunk merges the files by arrival time, so users queue in the
        order they wrote whichever worker took their delivery; chunks repeat until caught up."""
        totals, wake = [0, 0, 0, 0], False
        while True:
            result, more = self._import_chunk(journal)
            totals = [a + b for a, b in zip(totals, (result.new, result.duplicates, result.ignored, result.malformed))]
            wake = wake or result.wake
            if not more:
                return RecordResult(*totals[:3], wake=wake, malformed=totals[3])

    def _import_chunk(self, journal) -> tuple[RecordResult, bool]:
        """One transaction: up to ``catbot.journal.READ_LIMIT`` bytes from every file that grew.
        Returns what was recorded and whether a file had more than that."""
        known = self.journal_offsets()
        grown, done = [], []
        for path in journal.files():
            try:
                (grown if path.stat().st_size > known.get(path.name, 0) else done).append(path)
            except FileNotFoundError:
                continue
        result, more = RecordResult(0, 0, 0), False
        if grown:  # take the write lock only when a file has something new in it
            with self._tx() as db:
                offsets = dict(db.execute("select file, offset from catbot_journal").fetchall())
                db.execute("delete from temp.catbot_lines")
                db.execute("delete from temp.catbot_incoming")
                ends, read = {}, 0
                for path in grown:
                    lines, end, full = journal.read_lines(path, offsets.get(path.name, 0))
                    if lines:
                        db.executemany("insert into temp.catbot_lines (line) values (?)", zip(lines))
                        ends[path.name] = end
                        read += len(lines)
                        more = more or full
                    else:
                        done.append(path)
                staged = db.execute(_STAGE_LINES).rowcount  # merged by arrival time across the workers' files
                result = self._record_staged(db)
                if read > staged:  # never silently: a line the webhook wrote and nobody can read
                    self._count(db, "journal_malformed_lines", read - staged)
                    result = dataclasses.replace(result, malformed=read - staged)
                db.executemany("insert or replace into catbot_journal (file, offset) values (?, ?)", ends.items())
        if done:
            offsets = self.journal_offsets()
            for path in done:
                if journal.retire(path, offsets.get(path.name, 0)):
                    with self._tx() as db:
                        db.execute("delete from catbot_journal where file = ?", (path.name,))
        return result, more

    def journal_offsets(self) -> dict[str, int]:
        return dict(self._read("select file, offset from catbot_journal"))

    def _record_staged(self, db: sqlite3.Connection) -> RecordResult:
        """Note new event ids, queue the messages that need a reply, raise the wake-up flag.

        Set-based, over what is staged in ``temp.catbot_incoming``: a fixed handful of
        statements whatever the batch size. A statement per message would hand the GIL back
        and forth three times a message, which under load starves the webhook thread sharing
        the process (docs/performance.md)."""
        (staged,) = db.execute("select count(*) from temp.catbot_incoming").fetchone()
        if not staged:
            return RecordResult(0, 0, 0)
        # New: the first copy of an event id that was not seen before. Anything else is a duplicate.
        fresh = db.execute(
            "update temp.catbot_incoming set fresh = 1 where n in (select min(n) from temp.catbot_incoming"
            " group by for_user_id, event_id) and not exists (select 1 from catbot_seen s"
            " where s.for_user_id = catbot_incoming.for_user_id and s.event_id = catbot_incoming.event_id)").rowcount
        if not fresh:
            return RecordResult(new=0, duplicates=staged, ignored=0)
        db.execute("insert into catbot_seen (for_user_id, event_id, received_at)"
                   " select for_user_id, event_id, received_at from temp.catbot_incoming where fresh")
        (last_seq,) = db.execute("select coalesce((select seq from sqlite_sequence where name = 'catbot_inbox'), 0)"
                                 ).fetchone()
        new = db.execute(
            "insert into catbot_inbox (for_user_id, user_id, event_id, intent, created_ms, received_at)"
            " select for_user_id, user_id, event_id, intent, created_ms, received_at from temp.catbot_incoming"
            " where fresh and intent != ? order by n", (Intent.IGNORE.value,)).rowcount
        # A user joins the line when their first waiting message arrived (not when it was
        # imported: the import may wait for X's budget); one already in line keeps their place.
        db.execute(
            "insert into catbot_users (for_user_id, user_id, fact_seed, queue_pos)"
            " select for_user_id, user_id, abs(random() % 2147483648), min(received_at) from catbot_inbox not indexed"
            " where seq > ? group by for_user_id, user_id"  # a rowid range; the user index would scan all
            " on conflict (for_user_id, user_id) do update set queue_pos = coalesce(queue_pos, excluded.queue_pos)",
            (last_seq,))
        wake = new > 0 and db.execute("update catbot_flags set value = 1 where name = 'wake' and value = 0"
                                      ).rowcount == 1
        return RecordResult(new=new, duplicates=staged - fresh, ignored=fresh - new, wake=wake)

    def take_wake(self) -> None:
        """A consumer is about to look for work: the next record must enqueue a wake-up again.

        Between the record that set the flag and this call, every record sees it set and skips
        the enqueue; the pass that follows this call sees their messages. So one wake-up per pass
        instead of one per delivery, and nothing is missed."""
        with self._tx() as db:
            db.execute("update catbot_flags set value = 0 where name = 'wake'")

    # -- the reply job's side -----------------------------------------------------------------
    def claim_next(self, now: float, lease: float) -> Batch | None:
        """Take the first user in line: line order is arrival of a user's first waiting
        message, and a user answered with more still waiting goes to the back (round-robin)."""
        with self._tx() as db:
            row = db.execute(
                "select for_user_id, user_id from catbot_users where queue_pos is not null"
                " and claimed_until <= ? and not_before <= ? order by queue_pos limit 1", (now, now)).fetchone()
            if row is None:
                return None
            for_user_id, user_id = row
            token = new_token()
            db.execute("update catbot_users set claimed_until = ?, claim_token = ?"
                       " where for_user_id = ? and user_id = ?", (now + lease, token, for_user_id, user_id))
            opted_out, attempts, seed, pos = db.execute(
                "select opted_out, attempts, fact_seed, fact_pos from catbot_users"
                " where for_user_id = ? and user_id = ?", (for_user_id, user_id)).fetchone()
            messages = db.execute(
                "select seq, intent from catbot_inbox where for_user_id = ? and user_id = ?"
                " order by created_ms, seq", (for_user_id, user_id)).fetchall()
        return Batch(for_user_id, user_id, token, tuple(m[0] for m in messages),
                     tuple(Intent(m[1]) for m in messages), bool(opted_out), attempts, seed, pos)

    def complete(self, batch: Batch, done: Completion, now: float) -> bool:
        """Close a batch: drop its messages, apply the user's new state, count a sent reply.

        Returns False when the claim is no longer ours (the lease ran out, or its holder was
        taken for dead, and another consumer may hold the user now). Then only what is provably
        ours is written: that a DM went out (the per-user cap must count it). The user's
        messages and state belong to the new holder; a stale "opted in" must never undo a stop
        confirmed meanwhile."""
        with self._tx() as db:
            if done.sent:
                db.execute("insert into catbot_sent (for_user_id, user_id, sent_at) values (?, ?, ?)",
                           (batch.for_user_id, batch.user_id, now))
            (token,) = db.execute("select claim_token from catbot_users where for_user_id = ? and user_id = ?",
                                  (batch.for_user_id, batch.user_id)).fetchone()
            if token != batch.token:
                return False
            db.executemany("delete from catbot_inbox where seq = ?", [(s,) for s in batch.seqs])
            if done.absorb_facts:
                later = db.execute("select seq, intent from catbot_inbox where for_user_id = ? and user_id = ?"
                                   " order by created_ms, seq", (batch.for_user_id, batch.user_id)).fetchall()
                for seq, intent in later:  # answered by the fact just sent, up to the next command
                    if intent != Intent.FACT.value:
                        break
                    db.execute("delete from catbot_inbox where seq = ?", (seq,))
            rotation = "" if done.fact_seed is None else ", fact_seed = :seed, fact_pos = :pos"
            left = db.execute("select 1 from catbot_inbox where for_user_id = ? and user_id = ? limit 1",
                              (batch.for_user_id, batch.user_id)).fetchone()
            # More waiting: the back of the line, behind everyone who wrote before now.
            db.execute(f"update catbot_users set opted_out = :out{rotation}, claimed_until = 0, claim_token = null,"
                       f" not_before = 0, attempts = 0, queue_pos = {':now' if left else 'null'}"
                       " where for_user_id = :f and user_id = :u",
                       {"out": int(done.opted_out), "seed": done.fact_seed, "pos": done.fact_pos,
                        "f": batch.for_user_id, "u": batch.user_id, "now": now})
        return True

    def renew(self, batch: Batch, now: float, lease: float) -> bool:
        """Is the claim still ours? If so, it is extended to ``now + lease``. Asked right before
        a send: a consumer that stalled past its lease (paused, swapped) must not send what
        another consumer may have answered meanwhile."""
        with self._tx() as db:
            return db.execute("update catbot_users set claimed_until = ? where for_user_id = ? and user_id = ?"
                              " and claim_token = ?", (now + lease, batch.for_user_id, batch.user_id, batch.token)
                              ).rowcount == 1

    def void_leases(self, now: float, alive: Callable[[str], bool]) -> int:
        """Make the claims (and send reservations) of holders that are gone claimable now,
        instead of when their lease runs out. Returns how many claims were voided."""
        rows = self._read("select distinct claim_token from catbot_users where claim_token is not null"
                          " and claimed_until > ?", (now,))
        dead = {holder_of(token) for (token,) in rows}
        dead = {holder for holder in dead if not alive(holder)}
        if not dead:
            return 0
        voided = 0
        with self._tx() as db:
            for holder in dead:
                prefix = holder + SEPARATOR
                voided += db.execute("update catbot_users set claimed_until = 0, claim_token = null"
                                     " where claim_token is not null and substr(claim_token, 1, ?) = ?",
                                     (len(prefix), prefix)).rowcount
                db.execute("delete from catbot_inflight where substr(token, 1, ?) = ?", (len(prefix), prefix))
        return voided

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
        row = self._read("select min(max(claimed_until, not_before)) from catbot_users where queue_pos is not null")
        return row[0][0]

    # -- X's rate budget, shared by every consumer -----------------------------------------------
    def send_wait(self, now: float) -> float | None:
        """Read-only :func:`budget_verdict`: whether a send would fit now (None) or when to look again."""
        inflight = self._read("select count(*) from catbot_inflight where until > ?", (now,))[0][0]
        return budget_verdict(self._read("select remaining, reset_at, lim from catbot_budget"), inflight, now)

    def reserve_send(self, now: float, token: str, hold: float) -> float | None:
        """Reserve one send. None: go ahead. A number: nobody may send before then.

        See :func:`budget_verdict` for the rule; the reservation lapses after ``hold`` seconds
        if its holder dies before :meth:`settle_send`."""
        with self._tx() as db:
            db.execute("delete from catbot_inflight where until <= ?", (now,))
            (inflight,) = db.execute("select count(*) from catbot_inflight").fetchone()
            windows = db.execute("select remaining, reset_at, lim from catbot_budget").fetchall()
            wait = budget_verdict(windows, inflight, now)
            if wait is None:
                db.execute("insert or replace into catbot_inflight (token, until) values (?, ?)", (token, now + hold))
        return wait

    def settle_send(self, token: str, windows: Sequence[RateWindow], now: float) -> None:
        """The send is over: drop its reservation and keep what X's headers said."""
        with self._tx() as db:
            db.execute("delete from catbot_inflight where token = ?", (token,))
            for w in windows:
                db.execute("insert into catbot_budget (name, remaining, reset_at, lim) values (?, ?, ?, ?)"
                           " on conflict (name) do update set remaining = excluded.remaining,"
                           " reset_at = excluded.reset_at, lim = coalesce(excluded.lim, lim)",
                           (w.name, w.remaining, w.reset_at, w.limit))

    # -- coordination between processes ----------------------------------------------------------
    def try_lease(self, name: str, seconds: float, now: float) -> bool:
        """True for exactly one caller until ``seconds`` pass: periodic work runs once, not once
        per process."""
        with self._tx() as db:
            row = db.execute("select until from catbot_leases where name = ?", (name,)).fetchone()
            if row is not None and row[0] > now:
                return False
            db.execute("insert or replace into catbot_leases (name, holder, until) values (?, ?, ?)",
                       (name, f"{os.getpid()}", now + seconds))
        return True

    def mark(self, name: str, now: float) -> float | None:
        """Record that ``name`` happened at ``now``; return when it happened before (if ever)."""
        with self._tx() as db:
            row = db.execute("select at from catbot_marks where name = ?", (name,)).fetchone()
            db.execute("insert or replace into catbot_marks (name, at) values (?, ?)", (name, now))
        return row[0] if row else None

    # -- operations -----------------------------------------------------------------------------
    def health(self) -> dict[str, object]:
        pending, users = self._read("select count(*), count(distinct for_user_id || ':' || user_id)"
                                    " from catbot_inbox")[0]
        counters = dict(self._read("select name, value from catbot_counters order by name"))
        return {"backend": self.backend, "pending_messages": pending, "users_waiting": users, **counters}

    @staticmethod
    def _count(db: sqlite3.Connection, name: str, n: int) -> None:
        """Add ``n`` to a counter that ``/healthz`` shows (things that went wrong and were
        handled)."""
        db.execute("insert into catbot_counters (name, value) values (?, ?)"
                   " on conflict (name) do update set value = value + excluded.value", (name, n))

    def prune(self, now: float) -> None:
        """Forget what can no longer matter: old event ids and old per-user send times."""
        with self._tx() as db:
            db.execute("delete from catbot_seen where received_at < ?", (now - SEEN_RETENTION,))
            db.execute("delete from catbot_sent where sent_at < ?", (now - SENT_RETENTION,))


def budget_verdict(windows: Sequence[tuple[int, float, int | None]], inflight: int, now: float) -> float | None:
    """Whether one more send fits X's rate windows: None if it does, else when to look again.

    ``windows`` are (remaining, reset_at, limit) as X last reported them; ``inflight`` counts the
    sends reserved and not yet answered. X's count may or may not include those, so they are
    subtracted again: the bot may leave a slot unused, but never knowingly exceeds a limit.
    Before X has reported any window, one send at a time probes it. After a reset, the window's
    last known limit applies.
    """
    if not windows:
        return None if inflight == 0 else now + 1.0
    waits = []
    for remaining, reset_at, limit in windows:
        if reset_at > now:
            if remaining - inflight <= 0:
                waits.append(reset_at if inflight == 0 or remaining <= 0 else now + 1.0)
        elif limit is None:
            if inflight > 0:
                waits.append(now + 1.0)
        elif limit - inflight <= 0:
            waits.append(now + 1.0)
    return max(waits) if waits else None


def _rollback(db: sqlite3.Connection) -> None:
    try:
        db.execute("rollback")
    except sqlite3.Error:
        pass


def open_store(settings):
    """The store the settings ask for: Redis with ``REDIS_URL``, else the SQLite file."""
    if settings.redis_url:
        return RedisStore(settings.redis_url)
    return SqliteStore(settings.sqlite_path)


# -- Redis ---------------------------------------------------------------------------------------
# Every operation that reads and writes several keys is one Lua script, so it is atomic exactly
# like the SQLite transactions above. Keys (prefix catbot:):
#   seen:<for_user>:<event>   "1" with a TTL of SEEN_RETENTION (de-duplication)
#   inbox:<for_user>:<user>   list of JSON [seq, event id, intent, created_ms], arrival order
#   ready                     zset of users in line; score = seq of their first waiting message,
#                             or the newest seq when re-queued after a reply (round-robin)
#   delayed                   zset of users claimed or waiting to retry, score = when claimable
#   user:<for_user>:<user>    hash: opted_out, attempts, fact_seed, fact_pos, token
#   sent:<for_user>:<user>    zset of send times (per-user cap), expires
#   budget:<name>, budgets    hash: remaining, reset_at, limit; the set of known names
#   inflight                  zset of reserved sends, score = when the reservation lapses
#   pending, seq              counters; lease:<name>, mark:<name> for coordination

_RECORD = """
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local new, dup, ign = 0, 0, 0
for i = 3, #ARGV, 6 do
  local f, ev, u, intent, created, seed = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5]
  if not redis.call('SET', 'catbot:seen:'..f..':'..ev, '1', 'NX', 'EX', ttl) then
    dup = dup + 1
  elseif intent == 'ignore' then
    ign = ign + 1
  else
    local key = f..':'..u
    local seq = redis.call('INCR', 'catbot:seq')
    redis.call('RPUSH', 'catbot:inbox:'..key, cjson.encode({seq, ev, intent, tonumber(created)}))
    redis.call('INCR', 'catbot:pending')
    redis.call('HSETNX', 'catbot:user:'..key, 'fact_seed', seed)
    if not redis.call('ZSCORE', 'catbot:delayed', key) and not redis.call('ZSCORE', 'catbot:ready', key) then
      redis.call('ZADD', 'catbot:ready', seq, key)
    end
    new = new + 1
  end
end
local wake = 0
if new > 0 and redis.call('SET', 'catbot:wake', '1', 'NX') then wake = 1 end
return {new, dup, ign, wake}
"""

_CLAIM = """
local now, lease, token = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for _, key in ipairs(redis.call('ZRANGEBYSCORE', 'catbot:delayed', '-inf', now, 'LIMIT', 0, 500)) do
  redis.call('ZREM', 'catbot:delayed', key)
  redis.call('HDEL', 'catbot:user:'..key, 'token')  -- a lease that ran out is void
  local head = redis.call('LINDEX', 'catbot:inbox:'..key, 0)
  if head then redis.call('ZADD', 'catbot:ready', cjson.decode(head)[1], key) end
end
local top = redis.call('ZRANGE', 'catbot:ready', 0, 0)
if #top == 0 then return false end
local key = top[1]
redis.call('ZREM', 'catbot:ready', key)
redis.call('ZADD', 'catbot:delayed', now + lease, key)
local ukey = 'catbot:user:'..key
redis.call('HSET', ukey, 'token', token)
local u = redis.call('HMGET', ukey, 'opted_out', 'attempts', 'fact_seed', 'fact_pos')
return {key, u[1] or '0', u[2] or '0', u[3] or '0', u[4] or '0', redis.call('LRANGE', 'catbot:inbox:'..key, 0, -1)}
"""

_COMPLETE = """
local key, token, max_seq = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ukey, ikey = 'catbot:user:'..key, 'catbot:inbox:'..key
if ARGV[5] == '1' then  -- a DM went out: true whoever holds the user now (the per-user cap)
  local skey = 'catbot:sent:'..key
  redis.call('ZADD', skey, ARGV[9], ARGV[10])
  redis.call('ZREMRANGEBYSCORE', skey, '-inf', tonumber(ARGV[9]) - 3600)
  redis.call('EXPIRE', skey, 7200)
end
if redis.call('HGET', ukey, 'token') ~= token then return 0 end  -- not ours: nothing else is
local removed = 0
while true do
  local head = redis.call('LINDEX', ikey, 0)
  if not head then break end
  local entry = cjson.decode(head)
  if entry[1] <= max_seq or (ARGV[6] == '1' and entry[3] == 'fact') then
    redis.call('LPOP', ikey)
    removed = removed + 1
  else
    break
  end
end
if removed > 0 then redis.call('DECRBY', 'catbot:pending', removed) end
redis.call('HSET', ukey, 'opted_out', ARGV[4])
if ARGV[7] ~= '' then redis.call('HSET', ukey, 'fact_seed', ARGV[7], 'fact_pos', ARGV[8]) end
redis.call('HDEL', ukey, 'token')
redis.call('HSET', ukey, 'attempts', 0)
redis.call('ZREM', 'catbot:delayed', key)
if redis.call('LLEN', ikey) > 0 then  -- more waiting: back of the line (round-robin)
  redis.call('ZADD', 'catbot:ready', redis.call('GET', 'catbot:seq'), key)
end
return 1
"""

# ARGV: user key, token, lease end. Extends the claim if it is still ours.
_RENEW = """
if redis.call('HGET', 'catbot:user:'..ARGV[1], 'token') ~= ARGV[2] then return 0 end
redis.call('ZADD', 'catbot:delayed', ARGV[3], ARGV[1])
return 1
"""

# ARGV: now, then pairs of (user key, token of a dead holder). Voids each claim still held by
# that token: claimable at once (the next claim moves it to the ready line).
_VOID = """
local voided = 0
for i = 2, #ARGV, 2 do
  local key, token = ARGV[i], ARGV[i+1]
  if redis.call('HGET', 'catbot:user:'..key, 'token') == token then
    redis.call('HDEL', 'catbot:user:'..key, 'token')
    redis.call('ZADD', 'catbot:delayed', ARGV[1], key)
    redis.call('ZREM', 'catbot:inflight', token)
    voided = voided + 1
  end
end
return voided
"""

_RELEASE = """
local key, token = ARGV[1], ARGV[2]
local ukey = 'catbot:user:'..key
if redis.call('HGET', ukey, 'token') ~= token then return 0 end
redis.call('HDEL', ukey, 'token')
if ARGV[4] == '1' then redis.call('HINCRBY', ukey, 'attempts', 1) end
redis.call('ZREM', 'catbot:ready', key)
redis.call('ZADD', 'catbot:delayed', ARGV[3], key)
return 1
"""

_SETTLE = """
redis.call('ZREM', 'catbot:inflight', ARGV[1])
redis.call('ZREMRANGEBYSCORE', 'catbot:inflight', '-inf', ARGV[#ARGV])
for i = 2, #ARGV - 1, 4 do
  local k = 'catbot:budget:'..ARGV[i]
  redis.call('SADD', 'catbot:budgets', ARGV[i])
  redis.call('HSET', k, 'remaining', ARGV[i+1], 'reset_at', ARGV[i+2])
  if ARGV[i+3] ~= '' then redis.call('HSET', k, 'limit', ARGV[i+3]) end
  redis.call('EXPIRE', k, 2 * 86400)
end
redis.call('INCR', 'catbot:budgets:version')
return 1
"""

_MARK = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
return old
"""

class RedisStore:
    """All of the bot's state in Redis, for several web and worker processes (``REDIS_URL``)."""

    backend = "redis"

    def __init__(self, url: str, client=None) -> None:
        import redis  # imported here: the embedded default does not need it

        self._errors = (redis.exceptions.RedisError, OSError)
        options = {"socket_timeout": 5, "socket_connect_timeout": 5, "health_check_interval": 30,
                   "retry_on_timeout": False}
        if url.startswith("rediss://"):
            options["ssl_cert_reqs"] = None  # Heroku Key-Value Store uses self-signed certificates
        self.client = client or redis.Redis.from_url(url, **options)
        self._scripts = {name: self.client.register_script(src) for name, src in (
            ("record", _RECORD), ("claim", _CLAIM), ("complete", _COMPLETE), ("release", _RELEASE),
            ("settle", _SETTLE), ("mark", _MARK), ("renew", _RENEW), ("void", _VOID))}

    def _run(self, name: str, args: Sequence[object] = (), keys: Sequence[str] = ()):
        try:
            return self._scripts[name](keys=list(keys), args=list(args))
        except self._errors as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    def _do(self, fn, *args):
        try:
            return fn(*args)
        except self._errors as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    def close(self) -> None:
        self.client.close()

    def liveness(self) -> Heartbeats:
        """Consumers on any machine show they are alive by a key with a short TTL."""
        return Heartbeats(self.client)

    def record(self, items: Sequence[tuple[IncomingDM, Intent]], now: float) -> RecordResult:
        args: list[object] = [now, SEEN_RETENTION]
        for dm, intent in items:
            args += [dm.for_user_id, dm.event_id, dm.sender_id, intent.value, dm.created_ms, random.getrandbits(31)]
        if not items:
            return RecordResult(0, 0, 0)
        new, duplicates, ignored, wake = self._run("record", args)
        return RecordResult(new=int(new), duplicates=int(duplicates), ignored=int(ignored), wake=bool(wake))

    def take_wake(self) -> None:
        """See :meth:`SqliteStore.take_wake`."""
        self._do(self.client.delete, "catbot:wake")

    def _budget(self, pipe, now: float) -> tuple[list[tuple[int, float, int | None]], int]:
        inflight = pipe.zcount("catbot:inflight", f"({now}", "+inf")
        windows = []
        for name in pipe.smembers("catbot:budgets"):
            remaining, reset_at, limit = pipe.hmget(b"catbot:budget:" + name, "remaining", "reset_at", "limit")
            if remaining is not None:
                windows.append((int(remaining), float(reset_at), None if limit is None else int(limit)))
        return windows, inflight

    def send_wait(self, now: float) -> float | None:
        """Read-only :func:`budget_verdict` (see :meth:`SqliteStore.send_wait`)."""
        windows, inflight = self._do(self._budget, self.client, now)
        return budget_verdict(windows, inflight, now)

    def claim_next(self, now: float, lease: float) -> Batch | None:
        token = new_token()
        found = self._run("claim", [now, lease, token])
        if not found:
            return None
        key, opted_out, attempts, seed, pos, raw = found
        for_user_id, user_id = key.decode().split(":", 1)
        entries = sorted((json.loads(e) for e in raw), key=lambda e: (e[3], e[0]))
        return Batch(for_user_id, user_id, token, tuple(e[0] for e in entries),
                     tuple(Intent(e[2]) for e in entries), opted_out == b"1", int(attempts), int(seed),
                     int(pos))

    def complete(self, batch: Batch, done: Completion, now: float) -> bool:
        key = f"{batch.for_user_id}:{batch.user_id}"
        args = [key, batch.token, max(batch.seqs), int(done.opted_out), int(done.sent), int(done.absorb_facts),
                "" if done.fact_seed is None else done.fact_seed, "" if done.fact_pos is None else done.fact_pos,
                now, f"{now}:{batch.token}"]
        return bool(self._run("complete", args))

    def renew(self, batch: Batch, now: float, lease: float) -> bool:
        """See :meth:`SqliteStore.renew`."""
        return bool(self._run("renew", [f"{batch.for_user_id}:{batch.user_id}", batch.token, now + lease]))

    def void_leases(self, now: float, alive: Callable[[str], bool]) -> int:
        """See :meth:`SqliteStore.void_leases`. Claimed users sit in ``delayed`` with their lease
        end as score; those still ahead are the live claims."""
        def claims() -> list[tuple[bytes, bytes]]:
            keys = self.client.zrangebyscore("catbot:delayed", f"({now}", "+inf")
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.hget(b"catbot:user:" + key, "token")
            return [(k, t) for k, t in zip(keys, pipe.execute()) if t]

        held = self._do(claims)
        verdicts = {h: self._do(alive, h) for h in {holder_of(t.decode()) for _, t in held}}
        args: list[object] = [now]
        for key, token in held:
            if not verdicts[holder_of(token.decode())]:
                args += [key, token]
        return int(self._run("void", args)) if len(args) > 1 else 0

    def release(self, batch: Batch, not_before: float, count_attempt: bool) -> None:
        self._run("release", [f"{batch.for_user_id}:{batch.user_id}", batch.token, not_before, int(count_attempt)])

    def sent_since(self, for_user_id: str, user_id: str, since: float) -> int:
        return int(self._do(self.client.zcount, f"catbot:sent:{for_user_id}:{user_id}", f"({since}", "+inf"))

    def next_due(self, now: float) -> float | None:
        if self._do(self.client.zcard, "catbot:ready"):
            return now
        first = self._do(self.client.zrange, "catbot:delayed", 0, 0, False, True)
        return float(first[0][1]) if first else None

    def reserve_send(self, now: float, token: str, hold: float) -> float | None:
        """As :meth:`SqliteStore.reserve_send`, with the same rule (:func:`budget_verdict`): read
        under WATCH, decide, reserve in MULTI; a concurrent reservation or settlement makes
        Redis refuse the EXEC and redis-py decide again."""
        def decide(pipe) -> float | None:
            wait = budget_verdict(*self._budget(pipe, now), now)
            if wait is None:
                pipe.multi()
                pipe.zadd("catbot:inflight", {token: now + hold})
            return wait

        return self._do(lambda: self.client.transaction(decide, "catbot:inflight", "catbot:budgets:version",
                                                        value_from_callable=True))

    def settle_send(self, token: str, windows: Sequence[RateWindow], now: float) -> None:
        args: list[object] = [token]
        for w in windows:
            args += [w.name, w.remaining, w.reset_at, "" if w.limit is None else w.limit]
        self._run("settle", args + [now])

    def try_lease(self, name: str, seconds: float, now: float) -> bool:
        return bool(self._do(lambda: self.client.set(f"catbot:lease:{name}", os.getpid(), nx=True,
                                                     px=max(1, int(seconds * 1000)))))

    def mark(self, name: str, now: float) -> float | None:
        old = self._run("mark", [now], keys=[f"catbot:mark:{name}"])
        return float(old) if old else None

    def health(self) -> dict[str, object]:
        pipe = self.client.pipeline(transaction=False)
        pipe.get("catbot:pending").zcard("catbot:ready").zcard("catbot:delayed")
        pending, ready, delayed = self._do(pipe.execute)
        return {"backend": self.backend, "pending_messages": int(pending or 0), "users_waiting": ready + delayed}

    def prune(self, now: float) -> None:
        """Nothing to do: every key that can go stale carries a TTL."""
