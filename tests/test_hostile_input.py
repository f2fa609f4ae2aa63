"""Property-based: random and hostile deliveries, validly signed, thrown at the webhook.

The webhook never answers 500, the reply job never crashes, and the bot replies only to
well-formed ``message_create`` events from someone other than itself. The oracle below is an
independent, deliberately plain statement of "well-formed", not a copy of the parser.
"""
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from helpers import BOT_ID, post_delivery, runtime_of
from catbot.runtime import import_journals
from catbot.replier import Replier
from catbot.web import MAX_BODY

IDS = re.compile(r"[1-9][0-9]{0,24}")  # X's ids are positive numbers written without leading zeros
SENDERS = [BOT_ID, "0" + BOT_ID, "3000000002", "3000000003", "42", "042"]  # the bot itself, also zero-padded

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
texts = st.one_of(st.text(max_size=200), st.sampled_from(["stop", "HELP!", " start 😺", "?", ""]),
                  st.text(min_size=5000, max_size=20000))
hostile = st.one_of(json_values, st.text(max_size=30), st.integers(), st.just("18\n"), st.just("١٢٣"),
                    st.just(BOT_ID), st.sampled_from(["0", "00", "0" + BOT_ID, "018"]), st.just(DELETE := object()))
EVENT_PATHS = [("type",), ("id",), ("created_timestamp",), ("message_create",), ("message_create", "sender_id"),
               ("message_create", "message_data"), ("message_create", "message_data", "text"),
               ("message_create", "message_data", "attachment")]


def _mutate(tree: dict, path: tuple, value) -> None:
    node = tree
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        if value is DELETE:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value


@st.composite
def deliveries(draw):
    """A valid delivery of 1 to 5 DMs, then 0 to 2 hostile mutations per event and, now and
    then, damage at the top level: answerable and hostile events side by side."""
    events = []
    for _ in range(draw(st.integers(1, 5))):
        event = {"type": "message_create", "id": draw(st.integers(10**17, 10**18).map(str)),
                 "created_timestamp": "1763800000000",
                 "message_create": {"target": {"recipient_id": BOT_ID}, "sender_id": draw(st.sampled_from(SENDERS)),
                                    "message_data": {"text": draw(texts)}}}
        for _ in range(draw(st.integers(0, 2))):
            _mutate(event, draw(st.sampled_from(EVENT_PATHS)), draw(hostile))
        events.append(event if draw(st.integers(0, 9)) else draw(json_values))
    delivery = {"for_user_id": BOT_ID, "direct_message_events": events,
                "users": draw(json_values), "tweet_create_events": draw(json_values)}
    if not draw(st.integers(0, 7)):
        _mutate(delivery, (draw(st.sampled_from(["for_user_id", "direct_message_events"])),), draw(hostile))
    return delivery


def well_formed(delivery) -> set[tuple[str, str]]:
    """(event id, sender) of every event the bot may answer."""
    if not isinstance(delivery, dict) or delivery.get("for_user_id") != BOT_ID:
        return set()
    events = delivery.get("direct_message_events")
    found = set()
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, dict) or event.get("type") != "message_create":
            continue
        create = event.get("message_create")
        event_id = event.get("id")
        if not (isinstance(event_id, str) and IDS.fullmatch(event_id) and isinstance(create, dict)):
            continue
        sender, data = create.get("sender_id"), create.get("message_data")
        if not (isinstance(sender, str) and IDS.fullmatch(sender)) or sender == BOT_ID:
            continue
        if isinstance(data, dict) and isinstance(data.get("text", ""), (str, type(None))):
            found.add((event_id, sender))
    return found


class Model:
    """What the bot should have done so far, and what it did."""

    def __init__(self, app, emulator) -> None:
        self.app, self.emulator = app, emulator
        self.seen: set[str] = set()
        self.senders: set[str] = set()
        emulator.set_rate_limit(1_000_000, 900)

    def pending(self) -> int:
        runtime = runtime_of(self.app)
        import_journals(runtime.backend)  # the journal, as a consumer would import it
        return runtime.store.health()["pending_messages"]

    def check(self, delivery_or_body, delivery=None) -> None:
        before = self.pending()
        body = delivery_or_body if isinstance(delivery_or_body, bytes) else json.dumps(delivery_or_body).encode()
        response = post_delivery(self.app.test_client(), body)
        allowed = {413} if len(body) > MAX_BODY else {200, 400}
        assert response.status_code in allowed, response.status_code
        expected = well_formed(delivery) if delivery is not None else set()
        new = {event_id for event_id, _ in expected} - self.seen
        if response.status_code == 200:
            assert self.pending() - before == len(new)
            self.seen |= new
            self.senders |= {sender for _, sender in expected}
        else:
            assert self.pending() == before
        replier: Replier = runtime_of(self.app).replier
        replier.run_pass()  # must not raise, whatever was recorded
        assert {dm.participant_id for dm in self.emulator.sent} <= self.senders
        assert BOT_ID not in {dm.participant_id for dm in self.emulator.sent}


@pytest.fixture
def model(app, emulator):
    return Model(app, emulator)


FUZZ = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@FUZZ
@given(delivery=deliveries())
def test_hostile_deliveries(model, delivery):
    model.check(delivery, delivery)


@FUZZ
@given(value=json_values)
def test_random_json(model, value):
    model.check(json.dumps(value).encode(), value if isinstance(value, dict) else None)


@FUZZ
@given(body=st.binary(max_size=300))
def test_random_bytes_including_invalid_utf8(model, body):
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        value = None
    model.check(body, value if isinstance(value, dict) else None)


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(1, 200_000), opener=st.sampled_from(["[", '{"a":']))
def test_deep_nesting(model, depth, opener):
    closer = "]" if opener == "[" else "}"
    model.check((opener * depth + "1" + closer * depth).encode())
