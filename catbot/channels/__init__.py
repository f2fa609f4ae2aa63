"""Messaging platforms beside X (Messenger, LINE, Telegram, Dialogflow): one module each.

A channel is what a kind of message needs at the two ends of the one pipeline: at the door,
a handshake (if the platform has one), a check that the delivery is the platform's, and a
parser into :class:`~catbot.store.Inbound` records; at the far end, a
:class:`~catbot.outbound.Sender`. Everything between (the journal or Redis, de-duplication,
claims, folding, the per-user cap, fairness, the budget, retries) is shared with X's DMs.

A module in this package that defines ``CHANNEL`` (a :class:`Channel` subclass) is a channel:
no list to edit. Its settings are named by the class (``required``, ``optional``);
``api_config`` reads them, and a channel is on when all of its required settings are set. It
is served at ``/webhook/<name>`` (``catbot.web``), and its sender is registered under its
``kind`` (``catbot.runtime``).
"""
from __future__ import annotations

import hmac
import importlib
import json
import pkgutil
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from catbot.outbound import Sender
from catbot.store import Inbound, Store

if TYPE_CHECKING:
    from catbot.runtime import Runtime
    from catbot.settings import Settings


@dataclass(frozen=True)
class Answer:
    """An HTTP answer a channel gives at the door (the web layer turns it into a response)."""

    status: int
    body: Any = None  # JSON-able; None: {"status": "ok"} for 200, {"error": reason} otherwise
    reason: str = ""  # for the log line of a refusal
    content_type: str = "application/json"

    @classmethod
    def refused(cls, status: int, reason: str) -> "Answer":
        return cls(status, {"error": reason}, reason)


@dataclass
class Parsed:
    """What a delivery held: records to keep, and counts of what was skipped and why."""

    messages: list[Inbound] = field(default_factory=list)
    own: int = 0  # the platform's echoes of the bot's own messages
    malformed: int = 0
    other: list[str] = field(default_factory=list)  # event types acknowledged and ignored


class PlatformRefused(Exception):
    """A platform's API refused a set-up call (``register_webhook.py <name> ...`` exits 1 with
    ``reason``, ``detail`` and ``advice``, like X's refusals); ``status`` None: unreachable."""

    def __init__(self, status: int | None, reason: str, detail: str, advice: str = "") -> None:
        self.status, self.reason, self.detail, self.advice = status, reason, detail, advice
        super().__init__(f"{reason}: {detail}")


class Channel:
    """One platform. Subclasses set the class attributes and override what their platform has."""

    name: ClassVar[str]  # the route /webhook/<name>; lower-case
    kind: ClassVar[str]  # the kind of its records (Inbound.kind) and of its sender
    required: ClassVar[tuple[str, ...]]  # settings that switch the channel on, all together
    optional: ClassVar[Mapping[str, str]] = {}  # further settings and their defaults
    secrets: ClassVar[frozenset[str]] = frozenset()  # never logged, shown or put in an error

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)

    def __repr__(self) -> str:
        shown = {k: ("***" if k in self.secrets else v) for k, v in self.values.items()}
        return f"{type(self).__name__}({shown})"

    @classmethod
    def problems(cls, values: Mapping[str, str]) -> list[str]:
        """What is wrong with the channel's settings (``values``, every one of them, defaults
        filled in), each naming the setting and never quoting a secret; checked at start, so
        the bot stops with one message instead of workers failing to boot."""
        return []

    def setting(self, name: str) -> str:
        return self.values[name]

    # -- the door ---------------------------------------------------------------------------------
    def handshake(self, args: Mapping[str, str]) -> Answer:
        """``GET /webhook/<name>``: the platform's subscription check, where it has one."""
        return Answer.refused(405, "this channel has no GET")

    def verify(self, headers: Mapping[str, str], body: bytes) -> Answer | None:
        """None when the delivery is the platform's, else the refusal (401/403), before anything
        else is read. Must be constant-time in what it compares."""
        raise NotImplementedError

    def parse(self, body: bytes, settings: "Settings") -> Parsed:
        """The records a verified delivery holds. Never raises on hostile input."""
        raise NotImplementedError

    def accepted(self, parsed: Parsed) -> Answer:
        """The answer once the records are durable (most platforms: a bare 200)."""
        return Answer(200)

    def respond(self, runtime: "Runtime", body: bytes) -> Answer | None:
        """A channel that answers in the response itself (Dialogflow) does it here; None: the
        reply goes through the pipeline (verify, parse, record, 200; a sender replies)."""
        return None

    # -- the far end ------------------------------------------------------------------------------
    def sender(self, store: Store, clock: Callable[[], float]) -> Sender:
        raise NotImplementedError

    # -- set-up (register_webhook.py <name> <command>) ---------------------------------------------
    setup_commands: ClassVar[Mapping[str, str]] = {}  # command -> one-line help; none: nothing to set up

    @classmethod
    def add_setup_arguments(cls, command: str, parser: Any) -> None:
        """Arguments of a set-up command (an argparse parser), e.g. the webhook URL."""

    def run_setup(self, command: str, args: Any, report: Any) -> None:
        """Run a set-up command. ``report.say(line)`` / ``report.warn(line)`` print (or collect
        for ``--json``), ``report.result`` is the JSON result and ``report.changed`` whether
        anything changed. Raises PlatformRefused when the platform refuses or cannot be reached."""
        raise NotImplementedError


def same_secret(given: str | bytes | None, expected: str | bytes) -> bool:
    """Constant-time equality of a secret a request carries with the configured one."""
    if given is None:
        return False
    given_b = given.encode() if isinstance(given, str) else given
    expected_b = expected.encode() if isinstance(expected, str) else expected
    return bool(expected_b) and hmac.compare_digest(given_b, expected_b)


def json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None (bad JSON, bad UTF-8, absurd nesting, not an object)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


@cache
def channel_classes() -> dict[str, type[Channel]]:
    """Every channel module in this package, by name."""
    found: dict[str, type[Channel]] = {}
    for module in pkgutil.iter_modules(__path__):
        cls = getattr(importlib.import_module(f"{__name__}.{module.name}"), "CHANNEL", None)
        if cls is not None:
            found[cls.name] = cls
    return dict(sorted(found.items()))


def enabled_channels(settings: "Settings") -> dict[str, Channel]:
    """The channels switched on by ``settings`` (``Settings.channels``), built."""
    classes = channel_classes()
    return {name: classes[name](values) for name, values in settings.channels.items() if name in classes}
