"""Where cat facts come from: the facts API when it answers well, a bundled list when not.

``CATFACTS_API_URL`` (default https://catfact.ninja/fact, ``{"fact": ..., "length": ...}``) is
asked with a short timeout. When it is down, slow, rate-limited, answers garbage, or the
setting is empty, the bundled list in ``catbot/cat_facts.txt`` answers instead. After a
failure the API is left alone for a while, so an outage costs one timeout, not one per reply.

Each user walks the bundled list in their own shuffled order, so nobody gets the same bundled
fact twice before seeing them all; the store keeps each user's (seed, position).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from functools import lru_cache
from pathlib import Path

import requests

from catbot.logs import event

FACTS_FILE = Path(__file__).resolve().parent / "catbot" / "cat_facts.txt"
FAILURE_COOLDOWN = 60.0  # seconds to skip the API after it failed

log = logging.getLogger("catbot.catfacts")


def load_bundled_facts(path: Path = FACTS_FILE) -> tuple[str, ...]:
    """The bundled facts, one per non-empty line."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return tuple(line for line in lines if line)


BUNDLED_FACTS: tuple[str, ...] = load_bundled_facts()


@lru_cache(maxsize=256)
def _order(seed: int, count: int) -> tuple[int, ...]:
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return tuple(order)


def bundled_fact(seed: int, position: int, facts: tuple[str, ...] = BUNDLED_FACTS) -> str:
    """The fact at ``position`` in the shuffled order that ``seed`` gives the bundled list."""
    return facts[_order(seed, len(facts))[position % len(facts)]]


def next_rotation(seed: int, position: int, count: int = len(BUNDLED_FACTS)) -> tuple[int, int]:
    """The (seed, position) after using one fact: a fresh shuffle once the list is used up."""
    position += 1
    if position >= count:
        return random.getrandbits(31), 0
    return seed, position


class CatFactsAPI:
    """A small client for the facts API that never raises and never waits long."""

    def __init__(self, url: str, timeout: float = 2.0, max_length: int = 240,
                 session: requests.Session | None = None, clock=time.monotonic) -> None:
        self.url = url
        self.timeout = timeout  # settings keep it at most 2 s
        self.max_length = max_length
        self.session = session or requests.Session()
        self.clock = clock
        self._skip_until = 0.0
        self._lock = threading.Lock()

    def fetch(self) -> str | None:
        """A fact from the API, or None when it cannot give a good one right now."""
        if not self.url or self.clock() < self._skip_until:
            return None
        try:
            response = self.session.get(self.url, params={"max_length": self.max_length},
                                        timeout=self.timeout, headers={"Accept": "application/json"})
            if response.status_code != 200:
                raise ValueError(f"status {response.status_code}")
            fact = response.json().get("fact")
            if not isinstance(fact, str) or not fact.strip() or len(fact) > self.max_length:
                raise ValueError("no usable fact in the answer")
            return " ".join(fact.split())
        except Exception as exc:  # noqa: BLE001 - whatever the API sends (absurd nesting: RecursionError),
            # the caller gets a bundled fact, never an exception
            with self._lock:
                self._skip_until = self.clock() + FAILURE_COOLDOWN
            event(log, "catfacts.unavailable", logging.WARNING, reason=str(exc)[:120] or type(exc).__name__,
                  retry_in=int(FAILURE_COOLDOWN))
            return None
