"""X's rate budget: the rule every consumer applies before a send, whatever the store.

X reports its windows in headers on every answer (``x-rate-limit-*``, and the 24-hour
``x-user-limit-24hour-*`` / ``x-app-limit-24hour-*``); the store keeps the last report and the
sends under way, shared by every consumer; this module decides. Kept apart from the X client and
the store so neither imports the other.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class RateWindow:
    """One window as X last reported it."""

    name: str
    remaining: int
    reset_at: float
    limit: int | None = None


def budget_verdict(windows: Sequence[tuple[int, float, int | None]], inflight: int, now: float,
                   cap: tuple[int, float, int] | None = None) -> float | None:
    """Whether one more send fits X's rate windows: None if it does, else when to look again.

    ``windows`` are (remaining, reset_at, limit) as X last reported them; ``inflight`` counts the
    sends reserved and not yet answered. X's count may or may not include those, so they are
    subtracted again: the bot may leave a slot unused, but never knowingly exceeds a limit.
    Before X has reported any window, one send at a time probes it. After a reset, the window's
    last known limit applies. ``cap`` is the bot's own daily window (:func:`daily_window`): it
    also counts sends in flight, and never stands in for X's windows in the probe rule.
    """
    if cap is not None and cap[0] - inflight <= 0:
        return cap[1] if inflight == 0 or cap[0] <= 0 else now + 1.0
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


# -- what X charges, and the bot's own daily cap --------------------------------------------------
# Pay-per-use prices (2026): each delivered dm.received (or chat.received) event, each DM sent.
PRICE_RECEIVED = 0.010
PRICE_SENT = 0.015


def utc_day(now: float) -> str:
    """The UTC day X bills by, as ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(now))


def next_utc_midnight(now: float) -> float:
    return (int(now) // 86400 + 1) * 86400.0


def daily_window(limit: int, sent_today: int, now: float) -> tuple[int, float, int]:
    """``DAILY_SEND_LIMIT`` as one more window for :func:`budget_verdict`: it resets at UTC
    midnight, and sends in flight count against it like against X's own windows."""
    return (max(0, limit - sent_today), next_utc_midnight(now), limit)


def estimated_spend(received: int, sent: int) -> float:
    return round(received * PRICE_RECEIVED + sent * PRICE_SENT, 3)
