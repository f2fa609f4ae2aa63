"""Wiring: every part built once, fully, from one Settings object, in dependency order.

``open_backend`` is the one place that chooses between the embedded default (SQLite file,
journals, SqliteHuey, lock files) and Redis (store, RedisHuey and heartbeats on one connection
pool). ``build_runtime`` then builds the reply job, the upkeep jobs, the queue and the runtime
the web app uses, each handed what it needs.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import catfacts
from catbot.budget import estimated_spend, utc_day
from catbot.channels import enabled_channels
from catbot.events import X_DM
from catbot.journal import Journal
from catbot.liveness import HEARTBEAT_TTL, Heartbeats, Liveness, LockFiles, holder_id
from catbot.logs import event
from catbot.outbound import Sender
from catbot.queue import Jobs, PassResult, Queue, redis_huey, sqlite_huey
from catbot.replier import Replier
from catbot.settings import Settings
from catbot.store import Inbound, Store, StoreUnavailable
from catbot.xclient import XDMSender, build_tweepy_client

log = logging.getLogger("catbot.runtime")
REPLAY_AFTER_DOWNTIME = 120.0  # seconds without a sweep before a start asks X for a replay


@dataclass(frozen=True)
class Backend:
    """Where state, journals, queue and liveness live: chosen together, never mixed."""

    store: Store
    journal: Journal | None  # the embedded default's per-process journals; None on Redis
    huey: object
    liveness: Liveness


def open_backend(settings: Settings) -> Backend:
    """Redis with ``REDIS_URL`` (one connection pool for all), else the SQLite file and what
    sits beside it: ``<file>.journal/`` and ``<file>.consumers/``."""
    if settings.redis_url:
        from catbot.store.redis import RedisStore  # the embedded default does not need redis

        redis_store = RedisStore(settings.redis_url, daily_send_limit=settings.daily_send_limit)
        return Backend(redis_store, None, redis_huey(redis_store.client.connection_pool),
                       Heartbeats(redis_store.client))
    from catbot.store.sqlite import SqliteStore

    path = settings.sqlite_path
    sqlite_store = SqliteStore(path, daily_send_limit=settings.daily_send_limit)
    return Backend(sqlite_store, Journal(path + ".journal", sqlite_store), sqlite_huey(path),
                   LockFiles(path + ".consumers"))


def import_journals(backend: Backend) -> None:
    """Import what webhooks journaled into the store (the embedded default; no-op on Redis)."""
    if backend.journal is not None:
        result = backend.journal.import_into()
        if result.new or result.duplicates or result.ignored:
            event(log, "delivery.recorded", new=result.new, duplicates=result.duplicates, ignored=result.ignored)
        if result.malformed:
            event(log, "journal.malformed", logging.WARNING, lines=result.malformed)


class Upkeep:
    """The queue's jobs: the reply pass, and keeping the store and the consumers healthy."""

    def __init__(self, settings: Settings, backend: Backend, replier: Replier,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.backend = backend
        self.store = backend.store
        self.journal = backend.journal
        self.liveness = backend.liveness
        self.replier = replier
        self.clock = clock
        self._beat_failed_at = float("-inf")

    def run_pass(self) -> PassResult:
        return self.replier.run_pass()

    def sweep(self) -> float | None:
        """Once a minute across all processes: note that the bot is alive, forget stale ids, and
        say when due work needs a wake-up (after crashes)."""
        now = self.clock()
        import_journals(self.backend)
        if self.journal is not None:
            self.journal.remove_leftovers()
        if not self.store.try_lease("sweep", 45, now):
            return None
        yesterday = utc_day(now - 86400)
        if self.store.try_lease(f"day-report:{yesterday}", 2 * 86400, now):  # once a day, across processes
            event(log, "spend.daily", **day_report(self.store, self.settings, now, yesterday))
        self.store.mark("alive", now)
        self.store.prune(now)
        self.store.take_wake()  # a wake-up lost with a crashed consumer must not block later ones
        due = self.store.next_due(now)
        budget_wait = self.store.send_wait(now)
        if due is not None and budget_wait is not None:
            due = max(due, budget_wait)
        if due is not None:
            event(log, "sweep", due_in=max(0, round(due - now)))
        return due

    def consumer_starting(self) -> float | None:
        """Claims of consumers that died (the previous run's, after a crash) are taken over now
        rather than when their lease runs out; returns when the bot was last seen alive."""
        try:
            self.liveness.announce()
            self.take_over_dead_claims()
        except Exception as exc:  # the watch tries again in a few seconds
            event(log, "liveness.unavailable", logging.WARNING, error=f"{type(exc).__name__}: {str(exc)[:160]}")
        try:
            return self.store.mark("alive", self.clock())
        except StoreUnavailable:
            return None

    def take_over_dead_claims(self) -> int:
        """Void the claims of consumers that are gone (``catbot.liveness``)."""
        me = holder_id()
        voided = self.store.void_leases(self.clock(), lambda holder: holder == me or self.liveness.alive(holder),
                                        sending_too=self.liveness.proves_death)
        if voided:
            event(log, "claims.taken_over", claims=voided)
        return voided

    def watch(self) -> bool:
        """After a failed beat (the store was down), others' heartbeats may have lapsed for the
        same reason: take nothing over until this process has beaten for a whole TTL again."""
        try:
            self.liveness.beat()
            if self.clock() - self._beat_failed_at < HEARTBEAT_TTL:
                return False
            return self.take_over_dead_claims() > 0
        except Exception as exc:  # Redis down, a locked database: next beat
            self._beat_failed_at = self.clock()
            event(log, "liveness.unavailable", logging.WARNING, error=f"{type(exc).__name__}: {str(exc)[:160]}")
            return False

    def replay_missed(self, since: float | None) -> None:
        """Ask X to re-deliver what arrived while no consumer was alive (``REPLAY_ON_START``).

        Only one process asks (a store lease); the de-duplication makes the replay safe."""
        now = self.clock()
        if not self.settings.replay_on_start or not self.settings.x_enabled or since is None or now - since < REPLAY_AFTER_DOWNTIME:
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


@dataclass
class Runtime:
    """What the web app uses: record what arrives, report health; and the parts behind it."""

    settings: Settings
    backend: Backend
    upkeep: Upkeep
    queue: Queue
    clock: Callable[[], float] = time.time

    @property
    def store(self) -> Store:
        return self.backend.store

    @property
    def journal(self) -> Journal | None:
        return self.backend.journal

    @property
    def replier(self) -> Replier:
        return self.upkeep.replier

    def accept(self, messages: list[Inbound]) -> dict[str, int]:
        """Durably record inbound messages; returns what to log.

        Embedded default: one append to this process's journal (consumers import it). Redis: one
        store call, then a wake-up if none is pending. Raises ``StoreUnavailable`` when they could
        not be recorded (the webhook answers 503)."""
        if self.journal is not None:
            self.journal.append(messages, self.clock())
            return {"journaled": len(messages)}
        result = self.store.record(messages, self.clock())
        if result.wake:  # only when no wake-up is pending already: one per pass, not per DM
            self.queue.wake()
        return {"new": result.new, "duplicates": result.duplicates, "ignored": result.ignored}

    def backlog(self) -> dict[str, object]:
        """The store's health plus what is journaled but not yet imported."""
        health = self.store.health()
        if self.journal is not None:
            health["journal_bytes"] = self.journal.pending_bytes()
        return health

    def today(self) -> dict[str, object]:
        """This UTC day's traffic and what X bills for it (``/healthz``)."""
        return day_report(self.store, self.settings, self.clock())


def day_report(store: Store, settings: Settings, now: float, day: str | None = None) -> dict[str, object]:
    day = day or utc_day(now)
    received, sent = store.day_counts(day)
    limit = settings.daily_send_limit
    return {"day": day, "received": received, "sent": sent, "estimated_spend_usd": estimated_spend(received, sent),
            "daily_send_limit": limit or None, "sending_paused": bool(limit and sent >= limit)}


def build_runtime(settings: Settings, *, senders: Mapping[str, Sender] | None = None, x_client=None,
                  facts: catfacts.CatFactsAPI | None = None, clock: Callable[[], float] = time.time) -> Runtime:
    """Every part, in order. ``x_client`` is the tweepy client (``api_config.create_x_client``
    in the entry points); tests pass their own ``senders`` or ``facts``."""
    backend = open_backend(settings)
    if senders is None:
        senders = {X_DM: XDMSender(x_client or build_tweepy_client(settings), clock=clock)}
        if settings.xchat_enabled:
            from catbot.xchat import X_CHAT, XChatSender  # the Chat XDK is loaded only when X Chat is on

            senders[X_CHAT] = XChatSender(settings, backend.store, clock=clock)
        for channel in enabled_channels(settings).values():
            senders[channel.kind] = channel.sender(backend.store, clock)
    facts = facts or catfacts.CatFactsAPI(settings.catfacts_api_url, settings.catfacts_timeout,
                                          settings.catfacts_max_length)
    replier = Replier(settings, backend.store, senders, facts, clock=clock,
                      import_journals=functools.partial(import_journals, backend), announce=backend.liveness.announce)
    upkeep = Upkeep(settings, backend, replier, clock)
    return Runtime(settings, backend, upkeep, Queue(backend.huey, upkeep, backend.journal), clock)
