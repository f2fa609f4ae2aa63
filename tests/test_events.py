"""Parsing deliveries: what becomes a DM to answer, and what is skipped without crashing."""
import copy
import json

import pytest

from helpers import BOT_ID, dm_event, payload
from catbot.replies import Intent
from catbot.events import is_own_message, parse_delivery


def dm(event_id="1800000000000000001", sender="3000000002", text="hi", **extra):
    return dm_event(sender, text, event_id, **extra)


def test_documented_delivery_yields_one_message():
    parsed = parse_delivery(payload("dm_message_create.json"))
    [message] = parsed.messages
    assert (message.for_user_id, message.event_id, message.sender_id) == (BOT_ID, "1800000000000000001", "3000000002")
    assert message.text == "hi cat bot"
    assert message.created_ms == 1763800000000


def test_own_message_predicate():
    assert is_own_message(BOT_ID, BOT_ID)
    assert not is_own_message(BOT_ID, "3000000002")


def test_own_messages_are_counted_not_returned():
    parsed = parse_delivery({"for_user_id": BOT_ID, "direct_message_events": [dm(sender=BOT_ID), dm("18", "42")]})
    assert [m.sender_id for m in parsed.messages] == ["42"]
    assert parsed.own_messages == 1


def test_every_event_of_a_multi_event_delivery_is_kept_in_order():
    events = [dm(str(1800 + i), sender=str(3000 + i), text=f"m{i}") for i in range(5)]
    parsed = parse_delivery({"for_user_id": BOT_ID, "direct_message_events": events})
    assert [m.text for m in parsed.messages] == [f"m{i}" for i in range(5)]


def test_a_broken_entry_does_not_hide_good_ones():
    broken = dm()
    broken["message_create"]["sender_id"] = {"not": "an id"}
    parsed = parse_delivery({"for_user_id": BOT_ID, "direct_message_events": [broken, dm("19", "43")]})
    assert [m.event_id for m in parsed.messages] == ["19"]
    assert parsed.malformed == 1


def test_media_only_message_has_empty_text_and_asks_for_a_fact():
    event = dm(text=None, attachment={"type": "media", "media": {"id_str": "1"}})
    [message] = parse_delivery({"for_user_id": BOT_ID, "direct_message_events": [event]}).messages
    assert message.text == "" and message.inbound(None).intent is Intent.FACT


def test_emoji_and_non_latin_text_survive_parsing():
    text = "こんにちは 🐱 привет"
    [message] = parse_delivery({"for_user_id": BOT_ID, "direct_message_events": [dm(text=text)]}).messages
    assert message.text == text


def test_non_message_events_in_the_list_are_skipped():
    parsed = parse_delivery({"for_user_id": BOT_ID, "direct_message_events": [{"type": "welcome_message"}, dm()]})
    assert len(parsed.messages) == 1 and parsed.malformed == 0


def test_ids_must_be_numeric_strings():
    for bad in ["", "abc", "1" * 40, None, True, 1.5, ["1"], 18, "18\n", "١٢٣", " 18"]:
        event = dm()
        event["id"] = bad
        assert parse_delivery({"for_user_id": BOT_ID, "direct_message_events": [event]}).messages == []


def test_ids_are_numbers_so_a_leading_zero_is_malformed():
    """"02000000001" is the bot's id as a number: answering it as another user would let the bot
    talk to itself, and "018" would dodge de-duplication keyed on "18"."""
    parsed = parse_delivery({"for_user_id": BOT_ID, "direct_message_events": [dm(sender="0" + BOT_ID)]})
    assert (parsed.messages, parsed.malformed, parsed.own_messages) == ([], 1, 0)
    for bad in ["0", "00", "018", "0" * 25]:
        for field_ in ("sender", "event id"):
            event = dm(sender=bad) if field_ == "sender" else dm(event_id=bad)
            parsed = parse_delivery({"for_user_id": BOT_ID, "direct_message_events": [event]})
            assert (parsed.messages, parsed.malformed) == ([], 1), (field_, bad)
    parsed = parse_delivery({"for_user_id": "0" + BOT_ID, "direct_message_events": [dm()]})
    assert (parsed.messages, parsed.malformed) == ([], 1)


def test_positive_ids_of_any_length_up_to_25_digits_are_kept():
    for good in ["1", "9", "10", "42", "9" * 19, "1" + "0" * 24]:
        [message] = parse_delivery({"for_user_id": BOT_ID, "direct_message_events": [dm(good, good)]}).messages
        assert (message.event_id, message.sender_id) == (good, good)


def test_missing_for_user_id_yields_nothing():
    delivery = copy.deepcopy(payload("dm_message_create.json"))
    del delivery["for_user_id"]
    assert parse_delivery(delivery).messages == []


def test_x_activity_dm_received_as_x_publishes_it():
    """X's published sample: a signed-integer event_uuid, wrapped user objects, a tag."""
    delivery = payload("xaa/dm_received.json")
    assert delivery["data"]["event_uuid"].startswith("-") and "data" in delivery["data"]["payload"]["users"][BOT_ID]
    parsed = parse_delivery(delivery)
    [message] = parsed.messages
    assert (message.for_user_id, message.sender_id, message.event_id, message.text) == (
        BOT_ID, "3000000002", "2080765901528535096", "hello!")
    assert parsed.malformed == 0 and parsed.other_activity == []


def test_x_activity_dm_sent_is_the_bots_own_message():
    parsed = parse_delivery(payload("xaa/dm_sent.json"))
    assert parsed.messages == [] and parsed.own_messages == 1 and parsed.malformed == 0


def _xaa(event_type: str, payload_: dict) -> dict:
    return {"data": {"event_uuid": "-1234567890123456789", "filter": {"user_id": BOT_ID},
                     "event_type": event_type, "payload": payload_}}


@pytest.mark.parametrize("delivery", [
    payload("xaa/chat_sent.json"), payload("xaa/follow_follow.json"),
    payload("xaa/oauth_revoke.json"), payload("xaa/like_create.json"),
    _xaa("dm.read", {"dm_conversation_id": f"3000000002-{BOT_ID}", "last_read_event_id": "2080765901528535096"}),
    _xaa("dm.indicate_typing", {"dm_conversation_id": f"3000000002-{BOT_ID}", "sender_id": "3000000002"}),
], ids=lambda d: d["data"]["event_type"])
def test_other_x_activity_event_types_are_named_and_ignored(delivery):
    parsed = parse_delivery(delivery)
    assert parsed.messages == [] and parsed.malformed == 0
    assert parsed.other_activity == [delivery["data"]["event_type"]]


def _chat_delivery(**changes) -> dict:
    delivery = payload("xaa/chat_received.json")
    inner = delivery["data"]["payload"]
    inner["encoded_event"], inner["conversation_key_change_event"] = "CwABAAAAEzIw" * 8, "CwABAAAAEzIx" * 8
    inner.update(changes)
    return delivery


def test_an_x_chat_message_is_recorded_sealed_as_received():
    [chat] = parse_delivery(_chat_delivery()).messages
    record = chat.inbound(None)
    inner = _chat_delivery()["data"]["payload"]
    assert (record.kind, record.for_user_id, record.user_id, record.event_id, record.intent) == \
        ("x_chat", f"xchat:{BOT_ID}", "3000000002", inner["id"], Intent.SEALED)
    sealed = json.loads(record.payload)
    assert (sealed["encoded_event"], sealed["key_change"], sealed["conversation_id"], sealed["key_version"]) == \
        (inner["encoded_event"], inner["conversation_key_change_event"], inner["conversation_id"],
         inner["conversation_key_version"])
    assert "signing_public_key" not in record.payload  # never trusted, so not kept


@pytest.mark.parametrize("changes", [
    {"encoded_event": "CwABAAAAEzIw…(truncated)"}, {"encoded_event": None}, {"id": "../../etc"},
    {"sender_id": "03000000002"}, {"conversation_id": "3000000002"}, {"conversation_key_version": "v1"},
    {"conversation_key_change_event": 5}, {"conversation_token": "x" * 9000},
], ids=lambda c: next(iter(c)))
def test_an_x_chat_message_with_an_unusable_field_is_malformed(changes):
    parsed = parse_delivery(_chat_delivery(**changes))
    assert parsed.messages == [] and parsed.malformed == 1


def test_the_bots_own_x_chat_message_is_not_answered():
    parsed = parse_delivery(_chat_delivery(sender_id=BOT_ID))
    assert parsed.messages == [] and parsed.own_messages == 1


def test_text_is_not_in_repr():
    [message] = parse_delivery(payload("dm_message_create.json")).messages
    assert "hi cat bot" not in repr(message)


def test_x_activity_events_without_a_dm_type_carry_no_dm():
    for event_type in (None, ["dm.received"], "", "DmReceived"):
        delivery = payload("xaa/dm_received.json")
        delivery["data"]["event_type"] = event_type
        if event_type is None:
            del delivery["data"]["event_type"]
        assert parse_delivery(delivery).messages == []


def test_a_dm_sent_event_is_never_an_inbound_dm_whatever_its_sender():
    delivery = payload("xaa/dm_sent.json")
    create = delivery["data"]["payload"]["direct_message_events"][0]["message_create"]
    create["sender_id"], create["target"]["recipient_id"] = "3000000002", BOT_ID
    parsed = parse_delivery(delivery)
    assert parsed.messages == [] and parsed.own_messages == 1


def test_a_dm_between_two_other_accounts_is_not_answered():
    event = dm(sender="3000000002")
    event["message_create"]["target"]["recipient_id"] = "3000000003"
    assert parse_delivery({"for_user_id": BOT_ID, "direct_message_events": [event]}).messages == []
