"""The background queue (huey): wake-ups, timed retries, the periodic sweep, the consumer.

With ``REDIS_URL`` the queue is RedisHuey on the store's connection pool (consumers block on
the list, so wake-ups are instant); otherwise SqliteHuey in the store's SQLite file.

The queue only says *when* to look at the store; the store says *what* to do. So a task lost
with a killed consumer costs at most one sweep interval of latency, never a reply.

``gunicorn app:app`` alone answers DMs: ``gunicorn.conf.py`` starts an :class:`EmbeddedConsumer`
(threads, no signal handlers of its own, since gunicorn owns the worker's signals) in every
worker. Several consumers are safe because the store hands each batch to exactly one claimant.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from huey import RedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer, Worker
from huey.storage import SqliteStorage

from catbot.journal import Journal
from catbot.liveness import HEARTBEAT_SECONDS
from catbot.logs import event

log = logging.getLogger("catbot.queue")
JOURNAL_GAP = 0.02  # seconds between journal imports while deliveries keep arriving


class _SqliteStorage(SqliteStorage):
    """huey's SQLite storage with the store's durability setting (WAL + synchronous=NORMAL):
    its tasks are hints, and fsync on every enqueue would slow the webhook for nothing."""

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=normal")
        return conn


def sqlite_huey(path: str) -> SqliteHuey:
    """The queue in the store's SQLite file (the embedded default)."""
    return SqliteHuey("catbot", filename=path, results=False, utc=True, storage_class=_SqliteStorage)


def redis_huey(connection_pool) -> RedisHuey:
    """The queue on the store's Redis connection pool; consumers block on the list."""
    return RedisHuey("catbot", results=False, utc=True, blocking=True, read_timeout=1,
                     connection_pool=connection_pool)


@dataclass
class PassResult:
    """What one pass of the reply job found, so the queue knows when to run the next."""

    handled: int = 0
    next_run_at: float | None = None  # when more work becomes due, if it is not due now
    more_now: bool = False  # stopped early with work still due
    budget_until: float | None = None  # stopped because X's budget is spent until then


class Jobs(Protocol):
    """The work the queue runs; nothing here knows the queue (wake-ups are returned, not made)."""

    def run_pass(self) -> PassResult:
        """Send due replies until none is due, the budget is spent, or the pass is long."""

    def sweep(self) -> float | None:
        """Once a minute across all processes: upkeep. Returns when due work needs a wake-up."""

    def replay_missed(self, since: float | None) -> None:
        """Ask X for what arrived while no consumer was alive (since when it was last alive)."""

    def consumer_starting(self) -> float | None:
        """A consumer starts in this process; returns when the bot was last seen alive."""

    def watch(self) -> bool:
        """Every few seconds in a consumer's process: show it alive, take over dead ones'
        claims. True when there is work to wake a consumer for."""


class EmbeddedConsumer(Consumer):
    """A huey consumer that lives inside another process (a gunicorn worker, a test)."""

    def _set_signal_handlers(self) -> None:  # the host process owns its signals
        pass


class Queue:
    """The bot's named jobs on one huey instance, behind a small API the rest of the code uses."""

    def __init__(self, huey, jobs: Jobs, journal: Journal | None = None) -> None:
        self.huey = huey
        self.jobs = jobs
        self._journal = journal
        self._scheduled: set[int] = set()  # whole seconds a resume is already scheduled for
        self._lock = threading.Lock()
        self._consumer: EmbeddedConsumer | None = None
        self._watching = 0  # pid of the process whose watch thread runs
        self.budget_until = 0.0  # what the last pass here learned: no send fits before then

        @huey.task(name="send_replies")
        def send_replies() -> None:
            outcome = jobs.run_pass()
            self.budget_until = outcome.budget_until or 0.0
            if outcome.more_now:
                self.wake()
            if outcome.next_run_at is not None:
                self.wake_at(outcome.next_run_at)

        @huey.periodic_task(crontab(minute="*"), name="sweep")
        def sweep() -> None:
            self._wake_for(jobs.sweep())

        @huey.task(name="replay_missed")
        def replay_missed(since: float | None) -> None:
            jobs.replay_missed(since)

        self.send_replies = send_replies
        self.replay_missed = replay_missed

    def _wake_for(self, due: float | None) -> None:
        if due is not None:
            if due <= time.time():
                self.wake()
            else:
                self.wake_at(due)

    def wake(self) -> bool:
        """Ask a consumer to reply now. False if the queue could not take it (the sweep will)."""
        try:
            self.send_replies()
            return True
        except Exception as exc:  # the store already holds the work; this is only a hint
            event(log, "queue.unavailable", logging.WARNING, error=type(exc).__name__)
            return False

    def wake_at(self, when: float) -> None:
        """Reply at ``when`` (a rate-limit reset, a retry time); once per second, per process."""
        key = int(when) + 1
        with self._lock:
            if key in self._scheduled:
                return
            self._scheduled = {k for k in self._scheduled if k > time.time() - 5}
            self._scheduled.add(key)
        try:
            self.send_replies.schedule(delay=max(0.0, key - time.time()))
        except Exception as exc:
            event(log, "queue.unavailable", logging.WARNING, error=type(exc).__name__)

    # -- consumers --------------------------------------------------------------------------------
    def _consumer_class(self, base: type[Consumer]) -> type[Consumer]:
        """``base`` with workers that also run a pass when a webhook's journal grew: in the
        embedded default, deliveries reach consumers through journals, not queued tasks."""
        journal, send, queue = self._journal, self.send_replies, self
        if journal is None:
            return base

        class JournalWorker(Worker):
            def loop(self, now=None):
                # While X's budget is spent, new lines wait: the pass scheduled for the reset
                # (and the minute sweep) will import them.
                if time.time() >= queue.budget_until and journal.has_news():
                    self.delay = self.default_delay
                    self.huey.execute(send.s(), now)
                    # Let the next batch gather: under load, importing the moment a line lands
                    # costs a transaction per few messages and starves the webhook thread.
                    self.stop_flag.wait(JOURNAL_GAP)
                    return
                super().loop(now)

        return type("CatbotConsumer", (base,), {"worker_class": JournalWorker})

    def _consumer_options(self, workers: int) -> dict:
        return dict(workers=workers, worker_type="thread", periodic=True, initial_delay=0.02, backoff=1.3,
                    max_delay=0.25, shutdown_timeout=20.0)

    def _starting(self) -> None:
        """Before consuming: note the start (and the downtime before it), take over what dead
        consumers held, pick up waiting work, and keep watching the other consumers."""
        since = self.jobs.consumer_starting()
        self._start_watch()
        self.replay_missed(since)
        self.wake()

    def _start_watch(self) -> None:
        """Once per process: every few seconds, ``jobs.watch()``, and a wake-up when it found work."""
        with self._lock:
            if self._watching == os.getpid():
                return
            self._watching = os.getpid()

        def watch() -> None:
            while True:
                time.sleep(HEARTBEAT_SECONDS)
                if self.jobs.watch():
                    self.wake()

        threading.Thread(target=watch, name="catbot-liveness", daemon=True).start()

    def start_consumer(self, workers: int = 1) -> EmbeddedConsumer:
        """A consumer in threads of this process (a gunicorn worker, a test)."""
        if self._consumer is None:
            self._consumer = self._consumer_class(EmbeddedConsumer)(self.huey, check_worker_health=False,
                                                                    **self._consumer_options(workers))
            self._consumer.start()
            self._starting()
            event(log, "consumer.started", workers=workers, embedded=True)
        return self._consumer

    def run_consumer(self, workers: int) -> None:
        """A consumer as the whole process (``python -m catbot.worker``): SIGTERM is graceful."""
        consumer = self._consumer_class(Consumer)(self.huey, graceful_signal="TERM",
                                                  **self._consumer_options(workers))
        self._starting()
        event(log, "consumer.started", workers=workers, embedded=False)
        consumer.run()
        event(log, "consumer.stopped")

    def stop_consumer(self) -> None:
        """Finish the task in hand (up to 20 s, inside Heroku's 30 s grace), then stop."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.stop(graceful=True)
            event(log, "consumer.stopped")
