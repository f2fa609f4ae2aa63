"""What a reply job needs of a channel's sender, and what a send can come to.

Each kind of inbound message (``catbot.store.Inbound.kind``) has a sender; the reply job
composes the text the same way for all of them and hands it to the sender of the batch's kind.
A sender never raises for its platform's or the network's failures: it classifies them.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from catbot.budget import RateWindow
from catbot.store import Batch


class Outcome(enum.Enum):
    SENT = "sent"  # the platform accepted the reply
    RATE_LIMITED = "rate_limited"  # try again at ``retry_at``; not the batch's fault
    RETRY = "retry"  # a server error or a network failure: back off and try again
    REJECTED = "rejected"  # the platform refused it (4xx): trying again will not help


@dataclass(frozen=True)
class SendResult:
    """One attempt's outcome."""

    outcome: Outcome
    status: int | None = None
    detail: str = ""
    retry_at: float | None = None
    windows: tuple[RateWindow, ...] = ()  # rate windows the platform reported
    message_id: str | None = None  # the platform's id of the reply, for the log


class Sender(Protocol):
    def send(self, batch: Batch, text: str) -> SendResult:
        """Send ``text`` as the reply to ``batch`` (its user, and whatever its payloads say)."""


@runtime_checkable
class Opener(Protocol):
    """A sender whose messages arrive sealed (X Chat): the reply job asks it to open a batch
    before planning the reply, since only then are the messages' intents known."""

    def open(self, batch: Batch) -> Batch | SendResult:
        """The batch with its intents decided, or why it cannot be opened now (a RETRY or
        RATE_LIMITED result: the batch is tried again later, as after a failed send)."""
