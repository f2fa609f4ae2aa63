"""The embedded default's store: all of the bot's state in one SQLite file, safe across threads
and processes (see :class:`catbot.store.Store` for what every method guarantees).

WAL with ``synchronous=NORMAL``: a commit survives the process being killed, which is what
SIGKILL and dyno restarts need; a power cut may lose the last commits. Every write is one
``BEGIN IMMEDIATE`` transaction, so concurrent writers queue instead of failing. The tables are
in ``schema.sql``, beside this file.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

from catbot.budget import RateWindow, budget_verdict, daily_window, utc_day
from catbot.liveness import SEPARATOR, LockFiles, holder_of, new_token
from catbot.replies import Intent
from catbot.store import (SEEN_RETENTION, SENT_RETENTION, Batch, Completion, Inbound, RecordResult,
                          StoreUnavailable)

SCHEMA, STAGING = (Path(__file__).with_name("schema.sql").read_text().split("-- @staging"))
_INCOMING = "kind, for_user_id, event_id, user_id, intent, created_ms, received_at, payload"


class SqliteStore:
    """All of the bot's state in one SQLite file, safe across threads and processes."""

    backend = "sqlite"

    def __init__(self, path: str, busy_timeout: float = 5.0, daily_send_limit: int = 0) -> None:
        self.path = path
        self.daily_send_limit = daily_send_limit  # DAILY_SEND_LIMIT: 0 for none
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        try:
            db = self._conn()
            try:  # in one write transaction, which waits its turn (a bare CREATE may not)
                db.executescript(f"begin immediate;\n{SCHEMA}\ncommit;")
            except sqlite3.Error:
                _rollback(db)
                raise
            self._migrate()
        except (sqlite3.Error, StoreUnavailable) as exc:
            raise StoreUnavailable(f"cannot open {path}: {exc}") from exc

    # -- plumbing -----------------------------------------------------------------------------
    def _migrate(self) -> None:
        """Bring a file made by an earlier version up to ``schema.sql``, in one write
        transaction: two workers booting at once must not both alter a table."""
        with self._tx() as db:
            inbox = {row[1] for row in db.execute("pragma table_info(catbot_inbox)")}
            if "kind" not in inbox:
                db.execute("alter table catbot_inbox add column kind text not null default 'x_dm'")
                db.execute("alter table catbot_inbox add column payload text")
            if "sending" not in {row[1] for row in db.execute("pragma table_info(catbot_users)")}:
                db.execute("alter table catbot_users add column sending integer not null default 0")
            if "holder" in {row[1] for row in db.execute("pragma table_info(catbot_leases)")}:
                db.execute("drop table catbot_leases")  # its rows last seconds
                db.execute("create table catbot_leases (name text primary key, until real not null)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            _use_wal(conn, self.busy_timeout)
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
    def record(self, messages: Sequence[Inbound], now: float) -> RecordResult:
        with self._tx() as db:
            db.execute("delete from temp.catbot_incoming")
            db.executemany(f"insert into temp.catbot_incoming ({_INCOMING}) values (?, ?, ?, ?, ?, ?, ?, ?)",
                           [(m.kind, m.for_user_id, m.event_id, m.user_id, m.intent.value, m.created_ms, now,
                             m.payload) for m in messages])
            return self._record_staged(db)

    # -- the journal's side (embedded default; the journal owns the line format and the files) ---
    def record_lines(self, read: Callable[[Mapping[str, int]], tuple[list[str], dict[str, int]]],
                     decode: str) -> RecordResult:
        """Record journal lines and the files' new offsets in one transaction, so each line is
        imported once. ``read(offsets)`` returns the lines past the saved offsets and the offsets
        after them; ``decode`` is the journal's SQL turning ``temp.catbot_lines`` into staged
        messages (decoding inside SQLite leaves the GIL to the webhook thread beside it). Lines
        it cannot decode are counted (``journal_malformed_lines``)."""
        with self._tx() as db:
            lines, ends = read(dict(db.execute("select file, offset from catbot_journal").fetchall()))
            if not lines:
                return RecordResult(0, 0, 0)
            db.execute("delete from temp.catbot_lines")
            db.execute("delete from temp.catbot_incoming")
            db.executemany("insert into temp.catbot_lines (line) values (?)", zip(lines))
            staged = db.execute(f"insert into temp.catbot_incoming ({_INCOMING}) {decode}").rowcount
            result = self._record_staged(db)
            if len(lines) > staged:  # never silently: lines the webhook wrote and nobody can read
                self._count(db, "journal_malformed_lines", len(lines) - staged)
                result = RecordResult(result.new, result.duplicates, result.ignored, result.wake,
                                      malformed=len(lines) - staged)
            db.executemany("insert or replace into catbot_journal (file, offset) values (?, ?)", ends.items())
            return result

    def forget_journal(self, name: str) -> None:
        """The journal file ``name`` was retired: its offset is no longer needed."""
        with self._tx() as db:
            db.execute("delete from catbot_journal where file = ?", (name,))

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
        db.execute("insert into catbot_daily (day, received) select strftime('%Y-%m-%d', received_at, 'unixepoch'),"
                   " count(*) from temp.catbot_incoming where fresh group by 1"
                   " on conflict (day) do update set received = received + excluded.received")
        (last_seq,) = db.execute("select coalesce((select seq from sqlite_sequence where name = 'catbot_inbox'), 0)"
                                 ).fetchone()
        new = db.execute(
            "insert into catbot_inbox (kind, for_user_id, user_id, event_id, intent, created_ms, received_at, payload)"
            " select kind, for_user_id, user_id, event_id, intent, created_ms, received_at, payload"
            " from temp.catbot_incoming where fresh and intent != ? order by n", (Intent.IGNORE.value,)).rowcount
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
            db.execute("update catbot_users set claimed_until = ?, claim_token = ?, sending = 0"
                       " where for_user_id = ? and user_id = ?", (now + lease, token, for_user_id, user_id))
            opted_out, attempts, seed, pos = db.execute(
                "select opted_out, attempts, fact_seed, fact_pos from catbot_users"
                " where for_user_id = ? and user_id = ?", (for_user_id, user_id)).fetchone()
            messages = db.execute(
                "select seq, intent, payload, kind from catbot_inbox where for_user_id = ? and user_id = ?"
                " order by created_ms, seq", (for_user_id, user_id)).fetchall()
        return Batch(messages[0][3] if messages else "", for_user_id, user_id, token, tuple(m[0] for m in messages),
                     tuple(Intent(m[1]) for m in messages), tuple(m[2] for m in messages), bool(opted_out),
                     attempts, seed, pos)

    def complete(self, batch: Batch, done: Completion, now: float) -> bool:
        """Close a batch: drop its messages, apply the user's new state, count a sent reply.

        Returns False when the claim is no longer ours (the lease ran out, or its holder was
        taken for dead, and another consumer may hold the user now). Then only what is provably
        ours is written: that a DM went out (the per-user cap must count it). The user's
        messages and state belong to the new holder; a stale "opted in" must never undo a stop
        confirmed meanwhile."""
        with self._tx() as db:
            if done.sent:  # counted, and its reservation dropped, at once: never neither, never both
                db.execute("delete from catbot_inflight where token = ?", (batch.token,))
                db.execute("insert into catbot_sent (for_user_id, user_id, sent_at) values (?, ?, ?)",
                           (batch.for_user_id, batch.user_id, now))
                db.execute("insert into catbot_daily (day, sent) values (?, 1)"
                           " on conflict (day) do update set sent = sent + 1", (utc_day(now),))
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
            db.execute(f"update catbot_users set opted_out = :out{rotation}, claimed_until = 0, claim_token = null, sending = 0,"
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
            ours = db.execute("update catbot_users set claimed_until = ?, sending = 1 where for_user_id = ?"
                              " and user_id = ? and claim_token = ?",
                              (now + lease, batch.for_user_id, batch.user_id, batch.token)).rowcount == 1
            if ours:  # the send's reservation lasts as long as the claim: no lapse mid-send
                db.execute("update catbot_inflight set until = max(until, ?) where token = ?", (now + lease, batch.token))
            return ours

    def void_leases(self, now: float, alive: Callable[[str], bool], sending_too: bool = False) -> int:
        """Make the claims (and send reservations) of holders that are gone claimable now,
        instead of when their lease runs out. Returns how many claims were voided."""
        sending = "" if sending_too else " and not sending"
        rows = self._read("select distinct claim_token from catbot_users where claim_token is not null"
                          f" and claimed_until > ?{sending}", (now,))
        dead = {holder_of(token) for (token,) in rows if SEPARATOR in token}
        dead = {holder for holder in dead if not alive(holder)}
        if not dead:
            return 0
        voided = 0
        with self._tx() as db:
            for holder in dead:
                prefix = holder + SEPARATOR
                voided += db.execute("update catbot_users set claimed_until = 0, claim_token = null, sending = 0"
                                     f" where claim_token is not null{sending} and substr(claim_token, 1, ?) = ?",
                                     (len(prefix), prefix)).rowcount
                db.execute("delete from catbot_inflight where substr(token, 1, ?) = ?", (len(prefix), prefix))
        return voided

    def release(self, batch: Batch, not_before: float, count_attempt: bool) -> None:
        """Give a claimed batch back, to be tried again from ``not_before`` on."""
        with self._tx() as db:
            db.execute("update catbot_users set claimed_until = 0, claim_token = null, sending = 0, not_before = ?,"
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
        windows = self._read("select remaining, reset_at, lim from catbot_budget")
        return budget_verdict(windows, inflight, now, self._cap(self.day_counts(utc_day(now))[1], now))

    def _cap(self, sent_today: int, now: float) -> tuple[int, float, int] | None:
        return daily_window(self.daily_send_limit, sent_today, now) if self.daily_send_limit else None

    def day_counts(self, day: str) -> tuple[int, int]:
        row = self._read("select received, sent from catbot_daily where day = ?", (day,))
        return row[0] if row else (0, 0)

    def reserve_send(self, now: float, token: str, hold: float) -> float | None:
        """Reserve one send. None: go ahead. A number: nobody may send before then.

        See :func:`budget_verdict` for the rule; the reservation lapses after ``hold`` seconds
        if its holder dies before :meth:`settle_send`."""
        with self._tx() as db:
            db.execute("delete from catbot_inflight where until <= ?", (now,))
            (inflight,) = db.execute("select count(*) from catbot_inflight").fetchone()
            windows = db.execute("select remaining, reset_at, lim from catbot_budget").fetchall()
            row = db.execute("select sent from catbot_daily where day = ?", (utc_day(now),)).fetchone()
            wait = budget_verdict(windows, inflight, now, self._cap(row[0] if row else 0, now))
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
            db.execute("insert or replace into catbot_leases (name, until) values (?, ?)", (name, now + seconds))
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

    def count(self, name: str, n: int = 1) -> None:
        with self._tx() as db:
            self._count(db, name, n)

    def keep_chat_key(self, conversation_id: str, change_id: str, key_change: str) -> None:
        with self._tx() as db:
            db.execute("insert or ignore into catbot_chat_keys (conversation_id, change_id, key_change, kept_at)"
                       " values (?, ?, ?, ?)", (conversation_id, change_id, key_change, time.time()))

    def chat_key_changes(self, conversation_id: str) -> dict[str, str]:
        return dict(self._read("select change_id, key_change from catbot_chat_keys where conversation_id = ?"
                               " order by kept_at", (conversation_id,)))

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
            db.execute("delete from catbot_leases where until < ?", (now,))
            db.execute("delete from catbot_daily where day < ?", (utc_day(now - 7 * 86400),))
            db.execute("delete from catbot_sent where sent_at < ?", (now - SENT_RETENTION,))



#####ROLLBACK


def _use_wal(db: sqlite3.Connection, timeout: float) -> None:
    """Put the file in WAL mode, waiting for other processes as long as for any lock.

    Switching a new file to WAL needs a write lock that SQLite does not wait for: when two
    workers open a new file together, the second gets "database is locked" at once (huey's
    own storage retries the same way). Once the file is in WAL mode this is a no-op."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("pragma journal_mode=wal")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def _rollback(db: sqlite3.Connection) -> None:
    try:
        db.execute("rollback")
    except sqlite3.Error:
        pass
