"""What the bot says: recognising commands and writing replies. Pure functions, no I/O.

A DM is classified once, when it arrives, into an :class:`Intent`; the text itself is not
stored. When the reply job runs, all of a user's pending intents are folded in order into one
:class:`Plan`, so a user who sent several messages gets one DM, and a ``stop`` that follows a
question cancels the answer to it.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class Intent(str, enum.Enum):
    FACT = "fact"
    HELP = "help"
    STOP = "stop"
    START = "start"
    IGNORE = "ignore"  # did not match TRIGGER_PATTERN
    SEALED = "sealed"  # encrypted (X Chat): decided when the reply job opens it, never stored


COMMANDS = {
    "help": Intent.HELP, "?": Intent.HELP, "commands": Intent.HELP, "info": Intent.HELP,
    "stop": Intent.STOP, "unsubscribe": Intent.STOP, "quit": Intent.STOP, "cancel": Intent.STOP,
    "start": Intent.START, "subscribe": Intent.START, "resume": Intent.START, "unstop": Intent.START,
}

HELP_TEXT = (
    "Hi! I'm a cat facts bot 🐱 Send me any message and I'll answer with a random cat fact.\n"
    "Commands:\n"
    "• help: this message\n"
    "• stop: I won't message you again until you say start\n"
    "• start: cat facts again"
)
STOP_TEXT = "Okay, no more cat facts. 😿 Send \"start\" whenever you want them back."
START_TEXT = "Welcome back! 😺 Cat facts are on again."
FACT_OPENERS = (
    "Here's a cat fact for you 🐱",
    "Cat fact time 🐾",
    "Did you know? 🐈",
    "A fresh cat fact 😺",
    "Purr-fect timing, here's a fact 🐱",
)
HELP_HINT = "(Send \"help\" for commands.)"
_DECORATION = re.compile(r"[\W_]+")  # what is not a letter or digit: \w is exactly str.isalnum() plus "_"


def _strip_decoration(text: str) -> str:
    """Lower-case ``text`` and keep only letters and digits (any script); a bare "?" stays "?".

    So "  STOP!! 🙀", "Stop." and "*help*" are all commands, whatever the user's keyboard added.
    """
    word = _DECORATION.sub("", text.lower())
    return word or ("?" if "?" in text else "")


MAX_TEXT = 10_000  # X's own DM length limit; longer text is cut before any regex sees it


def classify(text: str, trigger: re.Pattern[str] | None = None) -> Intent:
    """The intent of one DM. Media-only DMs (empty text) ask for a fact like any other. Only
    the first ``MAX_TEXT`` characters count, so no message makes ``TRIGGER_PATTERN`` run long."""
    text = text[:MAX_TEXT]
    word = _strip_decoration(text) if len(text) <= 200 else ""
    if word in COMMANDS:
        return COMMANDS[word]
    if trigger is not None and not trigger.search(text):
        return Intent.IGNORE
    return Intent.FACT


@dataclass(frozen=True)
class Plan:
    """The outcome of folding a user's pending intents in arrival order."""

    opted_out: bool  # the user's state after this batch
    help: bool = False
    fact: bool = False
    confirmation: str = ""  # STOP_TEXT or START_TEXT, when the batch changed the state

    @property
    def sends_anything(self) -> bool:
        return bool(self.help or self.fact or self.confirmation)


def plan(intents: list[Intent], opted_out: bool) -> Plan:
    """Fold pending intents: ``stop`` cancels what came before it; an opted-out user hears
    nothing but the answer to ``start``; repeated questions collapse into one answer."""
    help_ = fact = False
    confirmation = ""
    for intent in intents:
        if intent is Intent.STOP:
            opted_out, help_, fact, confirmation = True, False, False, STOP_TEXT
        elif intent is Intent.START:
            if opted_out:
                opted_out, confirmation = False, START_TEXT
            else:
                fact = True  # "start" from someone already receiving facts: just answer
        elif opted_out or intent is Intent.IGNORE:
            continue
        elif intent is Intent.HELP:
            help_ = True
        elif intent is Intent.FACT:
            fact = True
    return Plan(opted_out=opted_out, help=help_, fact=fact, confirmation=confirmation)


def compose(p: Plan, fact_text: str | None, opener_seed: int = 0) -> str:
    """The DM text for a plan. ``fact_text`` is required when ``p.fact`` is set."""
    parts: list[str] = []
    if p.confirmation:
        parts.append(p.confirmation)
    if p.help:
        parts.append(HELP_TEXT)
    if p.fact:
        if not fact_text:
            raise ValueError("plan asks for a fact but none was given")
        opener = FACT_OPENERS[opener_seed % len(FACT_OPENERS)]
        parts.append(f"{opener}\n\n{fact_text}")
        if not p.help and opener_seed % 4 == 0:
            parts.append(HELP_HINT)
    return "\n\n".join(parts)
