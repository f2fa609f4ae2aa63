"""The facts source: the API when it answers well, the bundled list when it does not."""
import time

import catfacts
from catfacts import BUNDLED_FACTS, CatFactsAPI, bundled_fact, next_rotation


def test_api_fact_is_returned_and_max_length_is_sent(facts_api):
    api = CatFactsAPI(facts_api.url, timeout=1, max_length=123)
    assert api.fetch() == "API fact number 1: cats are great."
    assert facts_api.calls == [{"max_length": "123"}]


def test_api_down_returns_none_then_cools_down(facts_api):
    facts_api.mode = "down"
    api = CatFactsAPI(facts_api.url, timeout=1)
    assert api.fetch() is None
    assert api.fetch() is None
    assert len(facts_api.calls) == 1  # the outage costs one call, not one per reply


def test_api_recovers_after_the_cooldown(facts_api):
    now = [1000.0]
    api = CatFactsAPI(facts_api.url, timeout=1, clock=lambda: now[0])
    facts_api.mode = "down"
    assert api.fetch() is None
    facts_api.mode = "ok"
    now[0] += catfacts.FAILURE_COOLDOWN + 1
    assert api.fetch() is not None


def test_slow_api_is_abandoned_within_the_timeout(facts_api):
    facts_api.mode = "slow"  # answers after 3 s
    api = CatFactsAPI(facts_api.url, timeout=0.5)
    started = time.monotonic()
    assert api.fetch() is None
    assert time.monotonic() - started < 1.5


def test_garbage_and_wrong_shapes_are_refused(facts_api):
    for mode in ("garbage", "wrong_shape", "limited"):
        facts_api.mode = mode
        assert CatFactsAPI(facts_api.url, timeout=1).fetch() is None


def test_too_long_fact_is_refused(facts_api):
    assert CatFactsAPI(facts_api.url, timeout=1, max_length=10).fetch() is None


def test_empty_url_never_calls_out():
    assert CatFactsAPI("", timeout=1).fetch() is None


def test_at_least_150_distinct_bundled_facts():
    assert len(BUNDLED_FACTS) >= 150
    assert len(set(BUNDLED_FACTS)) == len(BUNDLED_FACTS)
    assert all(10 < len(f) <= 240 for f in BUNDLED_FACTS)


def test_rotation_shows_every_fact_before_any_repeats():
    seed, pos, seen = 12345, 0, []
    for _ in range(len(BUNDLED_FACTS)):
        seen.append(bundled_fact(seed, pos))
        seed, pos = next_rotation(seed, pos)
    assert sorted(seen) == sorted(BUNDLED_FACTS)
    assert pos == 0  # a fresh shuffle begins


def test_two_users_get_different_orders():
    first = [bundled_fact(1, i) for i in range(10)]
    second = [bundled_fact(2, i) for i in range(10)]
    assert first != second
