"""Wiring: build every part from one Settings object, once per process."""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

import catfacts
from catbot.delivery import Deliverer
from catbot.events import IncomingDM
from catbot.journal import Journal
from catbot.liveness import HEARTBEAT_SECONDS, Liveness, holder_id
from catbot.logs import event
from catbot.queue import Queue, build_huey
from catbot.replies import classify
from catbot.settings import Settings
from catbot.store import StoreUnavailable, open_store
from catbot.xclient import XSender, build_tweepy_client

log = logging.getLogger("catbot.runtime")
REPLAY_AFTER_DOWNTIME = 120.0  # seconds without a sweep before a start asks X for a replay
_watch_lock = threading.Lock()


@dataclass
class Runtime:
    settings: Settings
    store: object
    queue: Queue
    deliverer: Deliverer
    clock: object = time.time
    journal: Journal | None = None  # the embedded default's per-process journal; None on Redis
    liveness: Liveness = None  # type: ignore[assignment]  # which consumers are alive (store.liveness())
    _watching: int = field(default=0, repr=False)  # pid of the process whose watch runs

    def accept(self, messages: list[IncomingDM]) -> dict[str, int]:
        """Classify and durably record incoming DMs; returns what to log.

        Embedded default: one append to this process's journal (consumers import it). Redis: one
        store call, then a wake-up if none is pending. Raises ``StoreUnavailable`` or
        ``JournalUnavailable`` when they could not be recorded (the webhook answers 503)."""
        trigger = self.settings.trigger_regex
        items = [(dm, classify(dm.text, trigger)) for dm in messages]
        if self.journal is not None:
            self.journal.append(items, self.clock())
            return {"journaled": len(items)}
        result = self.store.record(items, self.clock())
        if result.wake:  # only when no wake-up is pending already: one per pass, not per DM
            self.queue.wake()
        return {"new": result.new, "duplicates": result.duplicates, "ignored": result.ignored}

    def ingest(self) -> None:
        """Import what webhooks journaled into the store (no-op on Redis)."""
        if self.journal is not None:
            result = self.store.import_journal(self.journal)
            if result.new or result.duplicates or result.ignored:
                event(log, "delivery.recorded", new=result.new, duplicates=result.duplicates,
                      ignored=result.ignored)
            if result.malformed:
                event(log, "journal.malformed", logging.WARNING, lines=result.malformed)

    def backlog(self) -> dict[str, object]:
        """The store's health plus what is journaled but not yet imported."""
        health = self.store.health()
        if self.journal is not None:
            health["journal_bytes"] = self.journal.pending_bytes(self.store.journal_offsets())
        return health

    def sweep(self) -> None:
        """Periodic, once a minute across all processes: note that the bot is alive, forget stale
        ids, and make sure due work has a task (after crashes)."""
        now = self.clock()
        self.ingest()
        if self.journal is not None:
            self.journal.remove_leftovers()
        if not self.store.try_lease("sweep", 45, now):
            return
        self.store.mark("alive", now)
        self.store.prune(now)
        self.store.take_wake()  # a wake-up lost with a crashed consumer must not block later ones
        due = self.store.next_due(now)
        budget_wait = self.store.send_wait(now)
        if due is not None and budget_wait is not None:
            due = max(due, budget_wait)
        if due is not None:
            if due <= now:
                self.queue.wake()
            else:
                self.queue.wake_at(due)
            event(log, "sweep", due_in=max(0, round(due - now)))

    def consumer_starting(self) -> float | None:
        """Note that a consumer is starting; returns when the bot was last seen alive.

        Claims of consumers that died (the previous run's, after a crash) are taken over now
        rather than when their lease runs out, and a watch keeps doing so while this runs."""
        try:
            self.liveness.announce()
            self.take_over_dead_claims()
        except Exception as exc:  # the watch tries again in a few seconds
            event(log, "liveness.unavailable", logging.WARNING, error=f"{type(exc).__name__}: {str(exc)[:160]}")
        self._start_watch()
        try:
            return self.store.mark("alive", self.clock())
        except StoreUnavailable:
            return None

    def take_over_dead_claims(self) -> int:
        """Void the claims of consumers that are gone and wake a consumer for them."""
        me = holder_id()
        voided = self.store.void_leases(self.clock(), lambda holder: holder == me or self.liveness.alive(holder))
        if voided:
            event(log, "claims.taken_over", claims=voided)
            self.queue.wake()
        return voided

    def _start_watch(self) -> None:
        """Once per process: every few seconds, show this process alive and take over the claims
        of consumers that are not."""
        with _watch_lock:
            if self._watching == os.getpid():
                return
            self._watching = os.getpid()

        def watch() -> None:
            while True:
                time.sleep(HEARTBEAT_SECONDS)
                try:
                    self.liveness.beat()
                    self.take_over_dead_claims()
                except Exception as exc:  # Redis down, a locked database: next beat
                    event(log, "liveness.unavailable", logging.WARNING,
                          error=f"{type(exc).__name__}: {str(exc)[:160]}")

        threading.Thread(target=watch, name="catbot-liveness", daemon=True).start()

    def replay_missed(self, since: float | None) -> None:
        """Ask X to re-deliver what arrived while no consumer was alive (``REPLAY_ON_START``).

        Only one process asks (a store lease); the de-duplication makes the replay safe."""
        now = self.clock()
        if not self.settings.replay_on_start or since is None or now - since < REPLAY_AFTER_DOWNTIME:
            return
        if not self.store.try_lease("replay", 600, now):
            return
        from catbot.account_activity import AccountActivity, XRefused  # set-up code, rarely needed

        start = max(since - 60, now - 24 * 3600 + 120)
        try:
            api = AccountActivity(self.settings)
            hooks = api.webhooks()
            if len(hooks) != 1:
                event(log, "replay.skipped", logging.WARNING, reason=f"{len(hooks)} webhooks registered")
                return
            job = api.replay(hooks[0]["id"], start, now)
            event(log, "replay.requested", downtime_s=round(now - since), job=job.get("job_id"))
        except XRefused as refused:
            event(log, "replay.failed", logging.WARNING, reason=refused.reason, detail=refused.detail[:200])


def build_runtime(settings: Settings, *, sender: XSender | None = None,
                  facts: catfacts.CatFactsAPI | None = None, clock=time.time) -> Runtime:
    store = open_store(settings)
    sender = sender or XSender(build_tweepy_client(settings), clock=clock)
    facts = facts or catfacts.CatFactsAPI(settings.catfacts_api_url, settings.catfacts_timeout,
                                          settings.catfacts_max_length)
    journal = None if settings.redis_url else Journal(settings.sqlite_path + ".journal")
    liveness = store.liveness()
    deliverer = Deliverer(settings, store, sender, facts, clock=clock, ingest=lambda: runtime.ingest(),
                          announce=liveness.announce)
    runtime = Runtime(settings, store, None, deliverer, clock, journal, liveness)  # type: ignore[arg-type]
    runtime.queue = Queue(build_huey(settings, store), deliverer.run_pass, runtime.sweep,
                          runtime.replay_missed, runtime.consumer_starting, journal)
    return runtime
