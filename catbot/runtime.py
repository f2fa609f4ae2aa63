"""Wiring: build every part from one Settings object, once per process."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import catfacts
from catbot.delivery import Deliverer
from catbot.events import IncomingDM
from catbot.logs import event
from catbot.queue import Queue, build_huey
from catbot.replies import classify
from catbot.settings import Settings
from catbot.store import RecordResult, open_store
from catbot.xclient import XSender, build_tweepy_client

log = logging.getLogger("catbot.runtime")


@dataclass
class Runtime:
    settings: Settings
    store: object
    queue: Queue
    deliverer: Deliverer
    clock: object = time.time

    def accept(self, messages: list[IncomingDM]) -> RecordResult:
        """Classify and durably record incoming DMs, then wake a consumer. Raises
        ``StoreUnavailable`` when they could not be recorded (the webhook then answers 503)."""
        trigger = self.settings.trigger_regex
        items = [(dm, classify(dm.text, trigger)) for dm in messages]
        result = self.store.record(items, self.clock())
        if result.new:
            self.queue.wake()
        return result

    def sweep(self) -> None:
        """Periodic: forget stale ids, and make sure due work has a task (after crashes)."""
        now = self.clock()
        self.store.prune(now)
        due = self.store.next_due(now)
        if due is not None:
            if due <= now:
                self.queue.wake()
            else:
                self.queue.wake_at(due)
            event(log, "sweep", due_in=max(0, round(due - now)))


def build_runtime(settings: Settings, *, sender: XSender | None = None,
                  facts: catfacts.CatFactsAPI | None = None, clock=time.time) -> Runtime:
    store = open_store(settings)
    sender = sender or XSender(build_tweepy_client(settings), clock=clock)
    facts = facts or catfacts.CatFactsAPI(settings.catfacts_api_url, settings.catfacts_timeout,
                                          settings.catfacts_max_length)
    deliverer = Deliverer(settings, store, sender, facts, clock=clock)
    runtime = Runtime(settings, store, None, deliverer, clock)  # type: ignore[arg-type]
    runtime.queue = Queue(build_huey(settings), deliverer.run_pass, runtime.sweep)
    return runtime
