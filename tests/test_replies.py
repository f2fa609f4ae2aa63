"""Conversation rules: commands, folding several messages into one reply, framing."""
import re

import pytest

from catbot.replies import (HELP_TEXT, START_TEXT, STOP_TEXT, Intent, Plan, classify, compose, plan)


@pytest.mark.parametrize("text", ["stop", "STOP", "  Stop  ", "stop!", "Stop.", "🛑 stop 🛑", "*STOP*", "stop\n"])
def test_stop_tolerates_case_whitespace_punctuation_and_emoji(text):
    assert classify(text) is Intent.STOP


@pytest.mark.parametrize("text,intent", [("help", Intent.HELP), ("Help?", Intent.HELP), ("?", Intent.HELP),
                                         ("start", Intent.START), ("START 😺", Intent.START)])
def test_commands(text, intent):
    assert classify(text) is intent


@pytest.mark.parametrize("text", ["please stop now", "help me with my cat", "", "🐱", "こんにちは", "stopping"])
def test_everything_else_asks_for_a_fact(text):
    assert classify(text) is Intent.FACT


def test_trigger_pattern_limits_facts_but_not_commands():
    trigger = re.compile(r"\bcat\b", re.IGNORECASE)
    assert classify("tell me a CAT fact", trigger) is Intent.FACT
    assert classify("hello", trigger) is Intent.IGNORE
    assert classify("stop", trigger) is Intent.STOP


def test_several_questions_fold_into_one_fact():
    assert plan([Intent.FACT, Intent.FACT, Intent.FACT], opted_out=False) == Plan(opted_out=False, fact=True)


def test_stop_cancels_what_came_before_it():
    assert plan([Intent.FACT, Intent.HELP, Intent.STOP], opted_out=False) == Plan(opted_out=True, confirmation=STOP_TEXT)


def test_opted_out_user_hears_nothing_but_start():
    assert not plan([Intent.FACT, Intent.HELP], opted_out=True).sends_anything
    assert plan([Intent.FACT, Intent.START], opted_out=True) == Plan(opted_out=False, confirmation=START_TEXT)


def test_stop_then_start_in_one_batch_ends_subscribed():
    assert plan([Intent.STOP, Intent.START], opted_out=False) == Plan(opted_out=False, confirmation=START_TEXT)


def test_start_while_subscribed_just_gets_a_fact():
    assert plan([Intent.START], opted_out=False) == Plan(opted_out=False, fact=True)


def test_ignored_messages_get_nothing():
    assert not plan([Intent.IGNORE], opted_out=False).sends_anything


def test_compose_frames_the_fact():
    text = compose(Plan(opted_out=False, fact=True), "Cats purr.", opener_seed=1)
    assert text.endswith("Cats purr.") and len(text) > len("Cats purr.")


def test_compose_help_and_fact_in_one_message():
    text = compose(Plan(opted_out=False, help=True, fact=True), "Cats purr.")
    assert HELP_TEXT in text and "Cats purr." in text


def test_compose_refuses_a_fact_plan_without_a_fact():
    with pytest.raises(ValueError):
        compose(Plan(opted_out=False, fact=True), None)
