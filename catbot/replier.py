"""The reply job: turn a user's pending messages into one sent reply.

Runs inside a queue consumer, never in the webhook. Each pass claims the user whose oldest
pending message is oldest (fair under backlog), folds their messages into a plan, fetches a
fact, takes a slot from the shared rate budget, hands the text to the sender of the messages'
kind (``catbot.outbound``), and records the outcome. Every failure
path ends in the store (retry time, released claim, or closed batch), so a crash anywhere
leaves the batch pending for the next pass rather than lost.
"""
from __future__ import annotations

import logging
import random
import time

from typing import Callable, Mapping

import catfacts
from catbot.budget import utc_day
from catbot.logs import event
from catbot.outbound import Opener, Outcome, Sender, SendResult
from catbot.queue import PassResult
from catbot.replies import Plan, compose, plan
from catbot.settings import Settings
from catbot.store import Batch, Completion, Store, StoreUnavailable

PASS_SECONDS = 20.0  # a pass hands over to a fresh task after this, so shutdowns stay quick
MAX_BACKOFF = 300.0

log = logging.getLogger("catbot.replier")


def backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1-based): 2, 4, 8 ... capped, with jitter."""
    return min(MAX_BACKOFF, 2.0 ** attempt) * random.uniform(0.8, 1.2)


def _nothing() -> None:
    return None


class Replier:
    """Claims batches from the store and answers them through the sender of their kind."""

    def __init__(self, settings: Settings, store: Store, senders: Mapping[str, Sender], facts: catfacts.CatFactsAPI,
                 *, clock: Callable[[], float] = time.time, import_journals: Callable[[], object] = _nothing,
                 announce: Callable[[], None] = _nothing, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.store = store
        self.senders = senders
        self.facts = facts
        self.clock = clock
        self.import_journals = import_journals  # the embedded default's journals into the store (see run_pass)
        self.announce = announce  # this process is alive, before it claims anything (catbot.liveness)
        self.sleep = sleep

    def run_pass(self) -> PassResult:
        """Deliver due replies until none is due, the budget is spent, or the pass is long."""
        result = PassResult()
        started = self.clock()
        first = True
        self.announce()
        while True:
            now = self.clock()
            if now - started > PASS_SECONDS:
                result.more_now = True
                return result
            budget_wait = self.store.send_wait(now)
            if budget_wait is not None:
                self._say_if_paused(now, budget_wait)
                # Nothing can be sent before then. If this pass has not cleared the wake-up flag
                # yet, it stays set, so new messages do not wake consumers for nothing; the task
                # scheduled for then (or the sweep) clears it.
                result.next_run_at = result.budget_until = budget_wait
                return result
            # Journaled deliveries are imported only when a reply can go out: while X's budget
            # is spent (15 DMs per 15 minutes for a bot account) they could only wait in the
            # store instead of the journal, and under a flood importing them takes CPU the
            # webhook needs. The sweep imports once a minute regardless.
            self.import_journals()
            if first:
                self.store.take_wake()  # from here on, a new message enqueues a new wake-up
                first = False
            batch = self.store.claim_next(now, self.settings.reply_lease_seconds)
            if batch is None:
                due = self.store.next_due(now)
                result.next_run_at = due if due is not None and due > now else None
                result.more_now = due is not None and due <= now
                return result
            result.handled += 1
            wait_until = self.reply(batch)
            if wait_until is not None:  # the budget is spent: nobody can send before then
                result.next_run_at = result.budget_until = wait_until
                return result

    def _say_if_paused(self, now: float, until: float) -> None:
        """``DAILY_SEND_LIMIT`` reached: pending replies wait for UTC midnight, and the log says so."""
        limit = self.settings.daily_send_limit
        if limit and self.store.day_counts(utc_day(now))[1] >= limit:
            event(log, "sending.paused", logging.WARNING, reason="daily_send_limit", limit=limit, until=int(until))

    def reply(self, batch: Batch) -> float | None:
        """Handle one claimed batch. Returns a time to wait for when X's budget is spent."""
        who = {"user": batch.user_id, "messages": len(batch.seqs)}
        sender = self.senders.get(batch.kind)
        if sender is None:  # a kind whose channel was switched off after its messages arrived
            self.store.complete(batch, Completion(opted_out=batch.opted_out, sent=False), self.clock())
            event(log, "reply.no_sender", logging.ERROR, kind=batch.kind, **who)
            return None
        if isinstance(sender, Opener):  # sealed messages (X Chat): their intents are decided now
            opened = sender.open(batch)
            if isinstance(opened, SendResult):
                return self._record(batch, plan([], batch.opted_out), opened, who)
            batch = opened
        p = plan(list(batch.intents), batch.opted_out)
        if not p.sends_anything:
            self.store.complete(batch, Completion(opted_out=p.opted_out, sent=False), self.clock())
            event(log, "reply.skipped", reason="opted_out" if p.opted_out else "nothing_to_say", **who)
            return None
        cap = self.settings.replies_per_user_per_hour
        if self.store.sent_since(batch.for_user_id, batch.user_id, self.clock() - 3600) >= cap:
            self.store.complete(batch, Completion(opted_out=p.opted_out, sent=False), self.clock())
            event(log, "reply.capped", limit_per_hour=cap, **who)
            return None
        hold = self.settings.x_timeout + self.settings.catfacts_timeout + 5  # lapses if this process dies
        wait_until = self.store.reserve_send(self.clock(), batch.token, hold)
        if wait_until is not None:
            self.store.release(batch, wait_until, count_attempt=False)
            event(log, "reply.deferred", reason="rate_budget", until=int(wait_until), **who)
            return wait_until
        text, rotation = self._text(p, batch)
        # The last word before the send: a consumer that stalled past its lease (a paused
        # container, swap, a long GC) must not send what another consumer may have answered
        # meanwhile. Renewing also gives the send a whole lease to finish in.
        lease = self.settings.reply_lease_seconds
        if not self.store.renew(batch, self.clock(), lease):
            self.store.settle_send(batch.token, (), self.clock())  # give the reserved slot back
            event(log, "reply.lease_lost", logging.WARNING, stage="before_send", **who)
            return None
        lease_ends = time.monotonic() + lease
        result = sender.send(batch, text)  # never raises for the platform's or the network's failures
        if result.outcome is Outcome.SENT:
            return self._sent(batch, p, result, rotation, who, lease_ends)
        self.store.settle_send(batch.token, result.windows, self.clock())
        return self._record(batch, p, result, who)

    def _text(self, p: Plan, batch: Batch) -> tuple[str, tuple[int, int] | None]:
        fact, rotation = None, None
        if p.fact:
            fact = self.facts.fetch()
            if fact is None:
                fact = catfacts.bundled_fact(batch.fact_seed, batch.fact_pos)
                rotation = catfacts.next_rotation(batch.fact_seed, batch.fact_pos)
        return compose(p, fact, opener_seed=batch.seqs[0]), rotation

    def _sent(self, batch: Batch, p: Plan, result: SendResult, rotation, who, lease_ends: float) -> None:
        """X accepted the DM. Until the store knows, the batch is claimed and would be sent again
        when the lease runs out; so the completion is retried until it lands (within the
        lease) before anything optional. What remains is the process dying right here."""
        try:
            self.import_journals()  # what the user wrote while the reply was on its way: absorbed or queued
        except Exception as exc:  # optional: those messages wait for the next pass; the completion may not
            event(log, "journal.import_failed", logging.WARNING, error=f"{type(exc).__name__}: {str(exc)[:160]}")
        seed, pos = rotation if rotation else (None, None)
        done = Completion(opted_out=p.opted_out, sent=True, absorb_facts=p.fact, fact_seed=seed, fact_pos=pos)
        now = self.clock()  # one time for every try: a retry of a completion that did land is a no-op
        ours = self._until_stored(lambda: self.store.complete(batch, done, now), lease_ends, "complete", who)
        event(log, "reply.sent", status=result.status, dm_event=result.message_id,
              source="bundled" if rotation else ("api" if p.fact else "text"), **who)
        if ours is False:
            event(log, "reply.lease_lost", logging.WARNING, stage="after_send", **who)
        # The reservation lapses by itself; X's headers keep the shared budget exact.
        self._until_stored(lambda: self.store.settle_send(batch.token, result.windows, self.clock()), lease_ends,
                           "settle", who, logging.WARNING)
        return None

    def _until_stored(self, write, until: float, what: str, who, level: int = logging.ERROR) -> object:
        """``write()``, retried while the store is unavailable, until ``until`` (monotonic)."""
        delay = 0.05
        while True:
            try:
                return write()
            except StoreUnavailable as exc:
                if time.monotonic() + delay >= until:
                    event(log, "reply.unrecorded", level, step=what, error=str(exc)[:200], **who)
                    return None
                event(log, "store.retrying", logging.WARNING, step=what, error=str(exc)[:200], **who)
                self.sleep(delay)
                delay = min(0.5, delay * 2)

    def _record(self, batch: Batch, p: Plan, result: SendResult, who) -> float | None:
        now = self.clock()
        status = result.status
        if result.outcome is Outcome.RATE_LIMITED:
            self.store.release(batch, result.retry_at, count_attempt=False)
            event(log, "reply.rate_limited", logging.WARNING, status=status, until=int(result.retry_at), **who)
            # A limit on the shared budget (X's windows) holds every send until its reset. A
            # platform's own pause (one chat's flood control, a Page's) holds this batch only:
            # the pass goes on with other users, and the sender keeps its own pause.
            return result.retry_at if result.windows else None
        if result.outcome is Outcome.RETRY and batch.attempts + 1 < self.settings.send_max_attempts:
            delay = backoff(batch.attempts + 1)
            self.store.release(batch, now + delay, count_attempt=True)
            event(log, "reply.retrying", logging.WARNING, status=status, error=result.detail,
                  attempt=batch.attempts + 1, retry_in=round(delay, 1), **who)
            return None
        # rejected by X (4xx), or out of attempts: close the batch; state changes still apply
        self.store.complete(batch, Completion(opted_out=p.opted_out, sent=False), now)
        name = "reply.rejected" if result.outcome is Outcome.REJECTED else "reply.gave_up"
        event(log, name, logging.ERROR, status=status, error=result.detail, attempts=batch.attempts + 1, **who)
        return None
