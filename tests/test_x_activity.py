"""Deliveries through the X Activity API, as X publishes them (tests/payloads/xaa/, ids
substituted), through the real HTTP layer: answered, de-duplicated against the Account
Activity API during a migration, and every other event type acknowledged and named in the log."""
import copy
import logging

import pytest

from helpers import BOT_ID, captured, drain, payload, post_delivery


@pytest.fixture
def web_records():
    with captured("catbot.web") as handler:
        yield handler.records


def test_a_dm_received_as_x_sends_it_is_answered(app, client, emulator):
    assert post_delivery(client, payload("xaa/dm_received.json")).status_code == 200
    drain(app)
    assert [dm.participant_id for dm in emulator.sent] == ["3000000002"]


def test_the_bots_own_dm_sent_event_is_never_answered(app, client, emulator):
    assert post_delivery(client, payload("xaa/dm_sent.json")).status_code == 200
    drain(app)
    assert emulator.sent == []


def _as_account_activity(xaa: dict) -> dict:
    """The same DM as the Account Activity API delivers it."""
    events = copy.deepcopy(xaa["data"]["payload"]["direct_message_events"])
    return {"for_user_id": xaa["data"]["filter"]["user_id"], "direct_message_events": events,
            "users": {uid: user["data"] for uid, user in xaa["data"]["payload"]["users"].items()}}


@pytest.mark.parametrize("order", ["aaa first", "xaa first"])
def test_during_a_move_from_aaa_to_xaa_the_same_dm_gets_one_reply(app, client, emulator, order):
    """While both subscriptions exist, X delivers the DM twice, once per API: one event id,
    one reply, whichever arrives first and however late the other is."""
    xaa = payload("xaa/dm_received.json")
    first, second = (_as_account_activity(xaa), xaa) if order == "aaa first" else (xaa, _as_account_activity(xaa))
    assert post_delivery(client, first).status_code == 200
    assert post_delivery(client, second).status_code == 200
    drain(app)
    assert post_delivery(client, second).status_code == 200  # after the reply went out too
    drain(app)
    assert [dm.participant_id for dm in emulator.sent] == ["3000000002"]


def _xaa(event_type: str, payload_: dict) -> dict:
    return {"data": {"event_uuid": "-1234567890123456789", "filter": {"user_id": BOT_ID},
                     "event_type": event_type, "payload": payload_}}


@pytest.mark.parametrize("delivery", [
    _xaa("dm.read", {"dm_conversation_id": f"3000000002-{BOT_ID}", "last_read_event_id": "2080765901528535096"}),
    _xaa("dm.indicate_typing", {"dm_conversation_id": f"3000000002-{BOT_ID}", "sender_id": "3000000002"}),
    payload("xaa/chat_sent.json"), payload("xaa/follow_follow.json"), payload("xaa/oauth_revoke.json"),
    payload("xaa/like_create.json"),
], ids=lambda d: d["data"]["event_type"])
def test_other_event_types_are_acknowledged_ignored_and_named_in_the_log(app, client, emulator, web_records,
                                                                       delivery):
    assert post_delivery(client, delivery).status_code == 200
    drain(app)
    assert emulator.sent == []
    [line] = [r for r in web_records if "event=delivery.accepted" in r.getMessage()]
    assert line.levelno == logging.INFO and f"activity={delivery['data']['event_type']}" in line.getMessage()
