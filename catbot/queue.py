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
import threading
import time
from typing import Callable

from huey import RedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer, Worker
from huey.storage import SqliteStorage

from catbot.logs import event
from catbot.settings import Settings

log = logging.getLogger("catbot.queue")
JOURNAL_GAP = 0.02  # seconds between journal imports while deliveries keep arriving


class _SqliteStorage(SqliteStorage):
    """huey's SQLite storage with the store's durability setting (WAL + synchronous=NORMAL):
    its tasks are hints, and fsync on every enqueue would slow the webhook for nothing."""

    def _create_connection(self):
        conn = super()._create_connection()
        conn.execute("pragma synchronous=normal")
        return conn


def build_huey(settings: Settings, store=None):
    """The huey instance for these settings, beside the store: same Redis or same SQLite file."""
    if settings.redis_url:
        pool = store.client.connection_pool if store is not None else None
        return RedisHuey("catbot", results=False, utc=True, blocking=True, read_timeout=1,
                         connection_pool=pool, **({} if pool else {"url": settings.redis_url}))
    return SqliteHuey("catbot", filename=settings.sqlite_path, results=False, utc=True,
                      storage_class=_SqliteStorage)


class EmbeddedConsumer(Consumer):
    """A huey consumer that lives inside another process (a gunicorn worker, a test)."""

    def _set_signal_handlers(self) -> None:  # the host process owns its signals
        pass


class Queue:
    """The bot's named jobs on one huey instance, behind a small API the rest of the code uses."""

    def __init__(self, huey, run_pass: Callable[[], object], sweep: Callable[[], None],
                 replay_missed: Callable[[float | None], None] | None = None,
                 on_consumer_start: Callable[[], float | None] | None = None, journal=None) -> None:
        self.huey = huey
        self._scheduled: set[int] = set()  # whole seconds a resume is already scheduled for
        self._lock = threading.Lock()
        self._consumer: EmbeddedConsumer | None = None

        self.budget_until = 0.0  # what the last pass here learned: no send fits before then

        @huey.task(name="deliver_replies")
        def deliver_replies() -> None:
            outcome = run_pass()
            self.budget_until = getattr(outcome, "budget_until", None) or 0.0
            if getattr(outcome, "more_now", False):
                self.wake()
            next_run_at = getattr(outcome, "next_run_at", None)
            if next_run_at is not None:
                self.wake_at(next_run_at)

        @huey.periodic_task(crontab(minute="*"), name="sweep")
        def sweep_task() -> None:
            sweep()

        @huey.task(name="replay_missed")
        def replay_task(since: float | None) -> None:
            if replay_missed is not None:
                replay_missed(since)

        self.deliver_replies = deliver_replies
        self.sweep = sweep_task
        self.replay_missed = replay_task
        self._on_consumer_start = on_consumer_start
        self._journal = journal

    def wake(self) -> bool:
        """Ask a consumer to deliver now. False if the queue could not take it (the sweep will)."""
        try:
            self.deliver_replies()
            return True
        except Exception as exc:  # the store already holds the work; this is only a hint
            event(log, "queue.unavailable", logging.WARNING, error=type(exc).__name__)
            return False

    def wake_at(self, when: float) -> None:
        """Deliver at ``when`` (a rate-limit reset, a retry time); once per second, per process."""
        key = int(when) + 1
        with self._lock:
            if key in self._scheduled:
                return
            self._scheduled = {k for k in self._scheduled if k > time.time() - 5}
            self._scheduled.add(key)
        try:
            self.deliver_replies.schedule(delay=max(0.0, key - time.time()))
        except Exception as exc:
            event(log, "queue.unavailable", logging.WARNING, error=type(exc).__name__)

    # -- consumers --------------------------------------------------------------------------------
    def _consumer_class(self, base: type[Consumer]) -> type[Consumer]:
        """``base`` with workers that also run a pass when a webhook's journal grew: in the
        embedded default, deliveries reach consumers through journals, not queued tasks."""
        journal, deliver, queue = self._journal, self.deliver_replies, self
        if journal is None:
            return base

        class JournalWorker(Worker):
            def loop(self, now=None):
                # While X's budget is spent, new lines wait: the pass scheduled for the reset
                # (and the minute sweep) will import them.
                if time.time() >= queue.budget_until and journal.has_news():
                    self.delay = self.default_delay
                    self.huey.execute(deliver.s(), now)
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
        """Before consuming: note the start (and the downtime before it), pick up waiting work."""
        since = self._on_consumer_start() if self._on_consumer_start else None
        self.replay_missed(since)
        self.wake()

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
