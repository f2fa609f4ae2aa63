"""Small hand-written fakes for unit tests of the reply job (real HTTP fakes live in x_emulator)."""
from __future__ import annotations

from catbot.outbound import Outcome, SendResult
from catbot.store import Batch


class RecordingSender:
    """A sender that records what it was asked to send and answers what the test says."""

    def __init__(self, *answers: SendResult) -> None:
        self.sent: list[tuple[str, str, str]] = []  # (kind, user id, text)
        self.answers = list(answers)

    def send(self, batch: Batch, text: str) -> SendResult:
        self.sent.append((batch.kind, batch.user_id, text))
        return self.answers.pop(0) if self.answers else SendResult(Outcome.SENT, 201)


class NoFacts:
    """The facts API is down: the bundled facts answer."""

    def fetch(self) -> None:
        return None
