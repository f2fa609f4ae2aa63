"""Messenger (issue 14) in one process, through HTTP: the emulator plays Meta (a Page, its users,
the Graph API) and posts signed deliveries to the bot on loopback; the reply job runs in the test's
thread (``drain``), its clock movable (``bot.later``) to pass a rate limit or a 24-hour window.

Payloads in tests/payloads/messenger/ are Meta's published samples (Messenger Platform, Webhook
Events Reference: messages, message_echoes, message_deliveries, message_reads, message_reactions,
messaging_postbacks; developers.facebook.com/documentation/business-messaging/messenger-platform/
webhooks/webhook-events/...), each event wrapped in the ``{"object": "page", "entry": [...]}``
envelope those pages show, ``<PAGE_ID>`` and ``<PSID>`` substituted. The postback sample is
published in the ``{"field", "value"}`` form with every property a string (its timestamp in
seconds); its ``value`` stands in ``messaging``, as Page deliveries carry it."""
import json
import logging
import time
from types import SimpleNamespace

import pytest

from api_config import SettingsError, load_settings
from catbot.channels import PlatformRefused
from catbot.channels.messenger import DEFAULT_GRAPH_VERSION, MessengerChannel, event_key, sign
from catbot.replies import FACT_OPENERS, HELP_TEXT, START_TEXT, STOP_TEXT
from catbot.runtime import build_runtime
from catbot.web import create_app
from helpers import PAYLOADS, ServerThread, captured, drain
from register_webhook import Report
from test_settings import config  # the one way tests write a .env
from test_webhook_http import pending, web_log  # noqa: F401 - a fixture
from x_emulator.platforms.messenger import DEMO_SETTINGS, PAGE_ID, encode

USER = "5000000000000001"
SECRET, TOKEN = DEMO_SETTINGS["MESSENGER_APP_SECRET"], DEMO_SETTINGS["MESSENGER_PAGE_ACCESS_TOKEN"]
VERIFY = DEMO_SETTINGS["MESSENGER_VERIFY_TOKEN"]
SECRET_WORDS = "umber-pangolin-waltz"  # in a user's message: findable if the bot wrote it anywhere


def channel_settings(emulator, **changes) -> dict[str, str]:
    return {**DEMO_SETTINGS, "MESSENGER_API_BASE_URL": emulator.url, "MESSENGER_GRAPH_VERSION": DEFAULT_GRAPH_VERSION,
            **changes}


@pytest.fixture
def bot(emulator, settings):
    """The bot with Messenger on, served on loopback, its webhook saved at the emulator's Page."""
    bot_settings = settings.replace(channels={"messenger": channel_settings(emulator)})
    later = [0.0]  # seconds the bot's clock is ahead of the emulator's
    app = create_app(bot_settings, build_runtime(bot_settings, clock=lambda: time.time() + later[0]))
    server = ServerThread(app)
    state = emulator.platform("messenger")
    state.setup(server.url + "/webhook/messenger", DEMO_SETTINGS)
    yield SimpleNamespace(app=app, client=app.test_client(), state=state, later=later, settings=bot_settings)
    server.stop()


def is_fact(text: str) -> bool:
    return text.split("\n", 1)[0] in FACT_OPENERS


def sample(name: str, now_ms: int | None = None) -> dict:
    """A published sample; with ``now_ms``, its timestamps moved to now (the window is 24 hours)."""
    delivery = json.loads((PAYLOADS / "messenger" / f"{name}.json").read_text())
    if now_ms is not None:
        for entry in delivery["entry"]:
            for ev in entry.get("messaging", []):
                ev["timestamp"] = now_ms
    return delivery


def post(client, body: bytes | dict, headers: dict | None = None, secret: str = SECRET):
    body = body if isinstance(body, bytes) else encode(body)
    sent = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body)} if headers is None else headers
    return client.post("/webhook/messenger", data=body, headers=sent)


# -- conversations ------------------------------------------------------------------------------------------
def test_a_message_gets_a_cat_fact_and_meta_gets_event_received(bot, emulator):
    _, answer = bot.state.deliver(USER, "hello there")
    assert (answer.status_code, answer.text) == (200, "EVENT_RECEIVED")
    assert answer.headers["Content-Type"].startswith("text/plain")
    drain(bot.app)
    [reply] = bot.state.replies(USER)
    assert is_fact(reply) and [m.channel for m in emulator.sent] == ["messenger"]


def test_help_stop_and_start_work(bot):
    for text in ("help", "STOP!", "hi", "start"):
        bot.state.deliver(USER, text)
        drain(bot.app)
    assert bot.state.replies(USER) == [HELP_TEXT, STOP_TEXT, START_TEXT]  # "hi" while stopped: silence


def test_a_photo_without_text_gets_a_fact(bot):
    bot.state.deliver(USER, None, attachment=True)
    drain(bot.app)
    assert [is_fact(t) for t in bot.state.replies(USER)] == [True]


def test_several_messages_waiting_get_one_reply(bot):
    for text in ("one", "two", "help"):
        bot.state.deliver(USER, text)
    drain(bot.app)
    [reply] = bot.state.replies(USER)
    assert HELP_TEXT in reply and "\n\n" in reply


def test_a_redelivered_event_gets_no_second_reply(bot):
    mid, _ = bot.state.deliver(USER, "hi")
    drain(bot.app)
    assert bot.state.redeliver(mid).status_code == 200
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1


def test_a_postback_is_answered_as_the_button_the_user_tapped(bot):
    bot.state.deliver_postback(USER, "Get Started", "GET_STARTED")
    drain(bot.app)
    bot.state.deliver_postback(USER, "Help", "MENU_HELP")
    drain(bot.app)
    first, second = bot.state.replies(USER)
    assert is_fact(first) and second == HELP_TEXT


def test_an_older_postback_without_a_mid_is_deduplicated_on_its_sender_and_time(bot):
    now_ms = int(time.time() * 1000)
    tapped = {"sender": {"id": USER}, "recipient": {"id": PAGE_ID}, "timestamp": now_ms,
              "postback": {"payload": "USER_DEFINED_PAYLOAD", "title": "help"}}
    bot.state.last_written[USER] = time.time()
    for _ in range(2):
        assert post(bot.client, bot.state.envelope([tapped])).status_code == 200
    drain(bot.app)
    assert bot.state.replies(USER) == [HELP_TEXT]


def test_the_per_user_cap_holds_on_messenger(bot):
    for i in range(7):
        bot.state.deliver(USER, f"fact {i}")
        drain(bot.app)
    assert len(bot.state.replies(USER)) == bot.settings.replies_per_user_per_hour


def test_users_are_answered_in_turn_under_a_backlog(bot):
    users = [str(5000000000000010 + i) for i in range(3)]
    for user in users:
        for i in range(3):
            bot.state.deliver(user, f"hi {i}")
    drain(bot.app)
    assert {u: len(bot.state.replies(u)) for u in users} == {u: 1 for u in users}


def test_the_users_words_are_never_written(bot, tmp_path):
    with captured("catbot", logging.DEBUG) as logs:
        bot.state.deliver(USER, f"tell me {SECRET_WORDS}")
        drain(bot.app)
    assert len(bot.state.replies(USER)) == 1
    written = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert SECRET_WORDS.encode() not in written and b"messenger:" + PAGE_ID.encode() in written
    assert not [line for line in logs.lines if SECRET_WORDS in line] and logs.lines


# -- the subscription handshake -------------------------------------------------------------------------------
def handshake(client, **params):
    return client.get("/webhook/messenger", query_string={f"hub.{k}": v for k, v in params.items()})


def test_the_handshake_echoes_the_challenge_as_text(bot):
    answer = handshake(bot.client, mode="subscribe", verify_token=VERIFY, challenge="1158201444")
    assert (answer.status_code, answer.get_data(as_text=True), answer.mimetype) == (200, "1158201444", "text/plain")


def test_the_emulators_verification_request_passes_through_http(bot):
    assert bot.state.verifications == 1 and bot.state.webhook_url.endswith("/webhook/messenger")


def test_a_wrong_verify_token_is_403(bot, web_log):
    answer = handshake(bot.client, mode="subscribe", verify_token=VERIFY + "x", challenge="1")
    assert answer.status_code == 403 and b"1" not in answer.data
    [line] = web_log.lines
    assert "wrong verify token" in line and VERIFY not in line


def test_a_mode_other_than_subscribe_is_403(bot):
    assert handshake(bot.client, mode="unsubscribe", verify_token=VERIFY, challenge="1").status_code == 403


def test_a_missing_parameter_is_400(bot):
    for params in (dict(verify_token=VERIFY, challenge="1"), dict(mode="subscribe", challenge="1"),
                   dict(mode="subscribe", verify_token=VERIFY)):
        assert handshake(bot.client, **params).status_code == 400, params


def test_a_repeated_challenge_is_400(bot):
    query = f"hub.mode=subscribe&hub.verify_token={VERIFY}&hub.challenge=1&hub.challenge=2"
    assert bot.client.get("/webhook/messenger?" + query).status_code == 400


def test_a_challenge_that_is_not_token_shaped_is_not_echoed(bot):
    for challenge in ("<script>alert(1)</script>", "9" * 129, "a b", "é"):
        answer = handshake(bot.client, mode="subscribe", verify_token=VERIFY, challenge=challenge)
        assert answer.status_code == 400 and challenge.encode() not in answer.data, challenge


def test_an_odd_challenge_with_a_wrong_token_is_403_not_400(bot):
    """The shape of the challenge is judged only for the right token: a stranger learns nothing."""
    assert handshake(bot.client, mode="subscribe", verify_token="guess", challenge="<x>").status_code == 403


# -- verification of deliveries: one test per failure mode ---------------------------------------------------
def refused_and_nothing_recorded(bot, answer, status: int, web_log) -> str:
    assert answer.status_code == status and answer.is_json
    drain(bot.app)
    assert pending(bot.app) == 0 and bot.state.replies(USER) == []
    [line] = web_log.lines
    assert "delivery.rejected" in line and SECRET not in line
    return line


def test_a_delivery_without_a_signature_is_401(bot, web_log):
    answer = post(bot.client, sample("message_text"), headers={"Content-Type": "application/json"})
    assert "missing signature" in refused_and_nothing_recorded(bot, answer, 401, web_log)


def test_a_delivery_with_only_the_legacy_sha1_signature_is_401(bot, web_log):
    body = encode(sample("message_text"))
    legacy = {"X-Hub-Signature": "sha1=" + "0" * 40}
    line = refused_and_nothing_recorded(bot, post(bot.client, body, headers=legacy), 401, web_log)
    assert "SHA-1" in line


def test_a_malformed_signature_is_401(bot, web_log):
    for header in ("sha1=" + "0" * 40, "sha256=" + "0" * 63, "sha256=" + "z" * 64, "0" * 64, "sha256=",
                   "sha256=" + "é" * 64):
        web_log.records.clear()
        answer = post(bot.client, sample("message_text"), headers={"X-Hub-Signature-256": header})
        assert "malformed signature" in refused_and_nothing_recorded(bot, answer, 401, web_log), header


def test_a_signature_with_another_secret_is_403(bot, web_log):
    answer = post(bot.client, sample("message_text"), secret=SECRET + "-not")
    assert "invalid signature" in refused_and_nothing_recorded(bot, answer, 403, web_log)


def test_a_body_changed_after_signing_is_403(bot, web_log):
    body = encode(sample("message_text"))
    headers = {"X-Hub-Signature-256": sign(SECRET, body)}
    answer = post(bot.client, body.replace(b"hello", b"HELLO"), headers=headers)
    assert "invalid signature" in refused_and_nothing_recorded(bot, answer, 403, web_log)


def test_the_signature_covers_the_escaped_bytes_as_sent_not_reserialised_json(bot, web_log):
    delivery = sample("message_text")
    body = encode(delivery)  # Meta's escaped unicode and \/ : json.dumps of the parsed body differs
    headers = {"X-Hub-Signature-256": sign(SECRET, json.dumps(delivery).encode())}
    assert "invalid signature" in refused_and_nothing_recorded(bot, post(bot.client, body, headers), 403, web_log)


# -- what else Meta delivers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name, messages, own, other", [
    ("message_text", 1, 0, ""),
    ("message_reply", 1, 0, ""),
    ("message_attachment", 1, 0, ""),
    ("messaging_postbacks", 1, 0, ""),
    ("message_echo", 0, 1, ""),
    ("standby_echo", 0, 0, "standby"),
    ("message_deliveries", 0, 0, "delivery"),
    ("message_reads", 0, 0, "read"),
    ("message_reactions", 0, 0, "reaction"),
])
def test_metas_samples_are_recorded_or_acknowledged(bot, web_log, name, messages, own, other):
    answer = post(bot.client, sample(name))
    assert (answer.status_code, answer.get_data(as_text=True)) == (200, "EVENT_RECEIVED")
    assert pending(bot.app) == messages
    [line] = [l for l in web_log.lines if "delivery.accepted" in l]
    assert (f"own={own}" in line) == bool(own) and (f"activity={other}" in line) == bool(other)


def test_a_mid_meta_spells_with_a_dollar_is_deduplicated_by_its_digest(bot):
    delivery = sample("message_attachment", now_ms=int(time.time() * 1000))
    bot.state.last_written[USER] = time.time()
    for _ in range(2):
        assert post(bot.client, delivery).status_code == 200
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1
    assert event_key("mid.$cAAJdkrCd2ORnva8ErFhjGm0X_Q_c").startswith("sha256:")


def test_echoes_and_system_events_are_never_answered(bot, emulator):
    bot.state.deliver(USER, "hi")
    drain(bot.app)
    bot.state.deliver_echo(USER, "the bot's own reply, delivered back")
    for kind in ("delivery", "read", "reaction", "message_edit", "standby"):
        assert bot.state.deliver_system(kind, USER).status_code == 200
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1 and pending(bot.app) == 0


def test_several_entries_and_events_in_one_delivery(bot):
    now_ms = int(time.time() * 1000)
    other = "5000000000000002"
    for user in (USER, other):
        bot.state.last_written[user] = time.time()
    events = [bot.state.message_event(USER, "one"), bot.state.message_event(USER, "two"),
              {"sender": {"id": USER}, "recipient": {"id": PAGE_ID}, "timestamp": now_ms, "read": {"watermark": now_ms}}]
    delivery = bot.state.envelope(events)
    delivery["entry"].append({"id": PAGE_ID, "time": now_ms, "messaging": [bot.state.message_event(other, "help")]})
    assert post(bot.client, delivery).status_code == 200
    drain(bot.app)
    assert [len(bot.state.replies(USER)), bot.state.replies(other)] == [1, [HELP_TEXT]]


def test_an_object_other_than_page_is_acknowledged_and_ignored(bot):
    delivery = {**sample("message_text"), "object": "instagram"}
    assert post(bot.client, delivery).status_code == 200 and pending(bot.app) == 0


def test_a_signed_body_that_is_no_json_object_is_400_not_5xx(bot):
    for body in (b"not json", b"\xff\xfe", b"[1, 2]", b"[" * 100000 + b"]" * 100000, b""):
        answer = post(bot.client, body)
        assert answer.status_code == 400 and answer.get_json() == {"error": "body is not a JSON object"}, body[:9]


MALFORMED = [
    {"object": "page"},
    {"object": "page", "entry": "nope"},
    {"object": "page", "entry": [None, 1, "x", {"id": 104000000000001}, {"id": "0104"}]},
    {"object": "page", "entry": [{"id": PAGE_ID, "messaging": {"not": "a list"}}]},
    {"object": "page", "entry": [{"id": PAGE_ID, "messaging": [None, [], {"message": "text"}, {"postback": 1}]}]},
    {"object": "page", "entry": [{"id": PAGE_ID, "messaging": [
        {"sender": {"id": USER}, "recipient": {"id": PAGE_ID}, "message": {"mid": 7, "text": "hi"}},
        {"sender": {"id": USER}, "recipient": {"id": PAGE_ID}, "message": {"mid": "m_1", "text": ["hi"]}},
        {"sender": {"id": "0" + USER}, "recipient": {"id": PAGE_ID}, "message": {"mid": "m_2", "text": "hi"}},
        {"sender": {"id": USER}, "recipient": {"id": "999"}, "message": {"mid": "m_3", "text": "hi"}},
        {"sender": {"user_ref": "guest"}, "recipient": {"id": PAGE_ID}, "message": {"mid": "m_4", "text": "hi"}},
        {"sender": {"id": USER}, "recipient": {"id": PAGE_ID}, "message": {"mid": "m" * 1001, "text": "hi"}},
    ]}]},
]


def test_malformed_deliveries_are_acknowledged_and_nothing_is_answered(bot):
    for delivery in MALFORMED:
        assert post(bot.client, delivery).status_code == 200, delivery
    drain(bot.app)
    assert pending(bot.app) == 0 and bot.state.replies(USER) == []


def test_a_bad_entry_does_not_hide_a_good_one_beside_it(bot):
    delivery = bot.state.envelope([None, bot.state.message_event(USER, "hi")])
    bot.state.last_written[USER] = time.time()
    assert post(bot.client, delivery).status_code == 200
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1


# -- the Send API's rules --------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [429, 400])  # Meta mostly answers code 613 with 400
def test_a_rate_limit_defers_the_reply_until_meta_says_and_loses_nothing(bot, status):
    bot.state.faults.rate_limited, bot.state.faults.rate_limit_status = 1, status
    bot.state.faults.regain_minutes = 2
    bot.state.deliver(USER, "hi")
    drain(bot.app)
    assert bot.state.replies(USER) == [] and pending(bot.app) == 1
    bot.later[0] = 61.0
    drain(bot.app)  # Meta's pause (two minutes) is not over: nothing is tried
    assert bot.state.send_attempts == 1
    bot.later[0] = 121.0
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1 and pending(bot.app) == 0 and bot.state.send_attempts == 2


def test_a_rate_limit_pauses_other_users_replies_too_without_calling_meta(bot):
    bot.state.faults.rate_limited = 1
    bot.state.deliver(USER, "hi")
    drain(bot.app)
    bot.state.deliver("5000000000000002", "hi")
    drain(bot.app)
    assert bot.state.send_attempts == 1 and pending(bot.app) == 2
    bot.later[0] = 61.0
    drain(bot.app)
    assert bot.state.send_attempts == 3 and pending(bot.app) == 0


def test_a_server_error_is_retried(bot):
    bot.state.faults.errors_5xx = 1
    bot.state.deliver(USER, "hi")
    drain(bot.app)
    assert bot.state.replies(USER) == [] and pending(bot.app) == 1
    bot.later[0] = 10.0  # past the backoff
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1


def test_a_user_who_cannot_be_reached_is_not_retried(bot):
    bot.state.faults.unreachable.add(USER)
    with captured("catbot.replier") as logs:
        bot.state.deliver(USER, "hi")
        drain(bot.app)
        bot.later[0] = 600.0
        drain(bot.app)
    assert bot.state.send_attempts == 1 and pending(bot.app) == 0
    assert any("reply.rejected" in line and "user unavailable" in line for line in logs.lines)


def test_a_reply_that_missed_the_24_hour_window_is_dropped_never_sent_late(bot, emulator):
    bot.state.faults.errors_5xx = 1  # the first try fails; then the bot is down for a day
    bot.state.deliver(USER, "stop")
    drain(bot.app)
    bot.later[0] = 24 * 3600.0
    with captured("catbot.replier") as logs:
        drain(bot.app)
    assert bot.state.send_attempts == 1 and bot.state.replies(USER) == [] and pending(bot.app) == 0
    assert any("reply.rejected" in line and "24-hour window" in line for line in logs.lines)
    bot.later[0] = 24 * 3600.0 + 10  # the stop still counts: the user's next message is not answered
    bot.state.deliver(USER, "hi")
    drain(bot.app)
    assert bot.state.replies(USER) == []


def day_old_message(bot, text: str) -> None:
    """A message written 25 hours ago, delivered only now (Meta retries a failing webhook)."""
    old = bot.state.message_event(USER, text)
    old["timestamp"] -= 25 * 3600 * 1000
    bot.state.last_written[USER] = time.time()
    assert post(bot.client, bot.state.envelope([old])).status_code == 200


def test_a_message_delivered_a_day_late_is_not_answered(bot):
    day_old_message(bot, "hi")
    drain(bot.app)
    assert bot.state.send_attempts == 0 and pending(bot.app) == 0


def test_a_new_message_reopens_the_window_for_what_waits(bot):
    day_old_message(bot, "hi")
    bot.state.deliver(USER, "still there?")  # one batch: its newest message is new
    drain(bot.app)
    assert len(bot.state.replies(USER)) == 1


def test_the_page_token_is_never_logged_even_when_meta_refuses_it(bot, emulator):
    bot.state.settings["MESSENGER_PAGE_ACCESS_TOKEN"] = "another-token"  # Meta no longer takes the bot's
    with captured("catbot", logging.DEBUG) as logs:
        bot.state.deliver(USER, "hi")
        drain(bot.app)
    assert any("reply.rejected" in line and "(190)" in line for line in logs.lines)
    assert not [line for line in logs.lines if TOKEN in line or SECRET in line]
    assert TOKEN not in repr(MessengerChannel(bot.settings.channels["messenger"]))


# -- settings ----------------------------------------------------------------------------------------------------
def test_some_but_not_all_messenger_settings_stop_the_bot_naming_what_is_missing(tmp_path):
    values = {"MESSENGER_APP_SECRET": SECRET, "MESSENGER_VERIFY_TOKEN": VERIFY}
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, values))
    message = str(err.value)
    assert message.count("MESSENGER_PAGE_ACCESS_TOKEN") == 2 and "messenger needs MESSENGER_PAGE_ACCESS_TOKEN" in message
    assert SECRET not in message and VERIFY not in message


def test_messenger_alone_is_a_whole_bot_with_defaults(tmp_path):
    loaded = load_settings(config(tmp_path, DEMO_SETTINGS))
    assert not loaded.x_enabled and loaded.channels["messenger"] == {
        **DEMO_SETTINGS, "MESSENGER_API_BASE_URL": "https://graph.facebook.com", "MESSENGER_GRAPH_VERSION": "v26.0"}
    assert TOKEN not in repr(loaded) and SECRET not in repr(MessengerChannel(loaded.channels["messenger"]))


def test_the_graph_version_may_be_written_without_its_v(bot, emulator):
    channel = MessengerChannel(channel_settings(emulator, MESSENGER_GRAPH_VERSION="25.0"))
    report = Report(as_json=True)
    channel.run_setup("status", SimpleNamespace(), report)
    assert report.result["page"]["id"] == PAGE_ID


# -- set-up: register_webhook.py messenger subscribe-page | status --------------------------------------------
@pytest.fixture
def unsubscribed(emulator, bot):
    """The dashboard step is done; the Page's subscription is not (yet)."""
    bot.state.subscribed_fields = []
    return MessengerChannel(channel_settings(emulator))


def test_subscribe_page_subscribes_and_says_what_to_do_in_the_dashboard(bot, unsubscribed):
    report = Report(as_json=True)
    unsubscribed.run_setup("subscribe-page", SimpleNamespace(webhook_url="https://cat.example/webhook/messenger"),
                           report)
    assert report.changed and bot.state.subscribed_fields == ["messages", "messaging_postbacks"]
    assert report.result["page"] == {"id": PAGE_ID, "name": "Cat Facts"} and not report.warnings
    text = "\n".join(report.lines)
    assert "Callback URL: https://cat.example/webhook/messenger" in text and "MESSENGER_VERIFY_TOKEN" in text
    assert VERIFY not in text and TOKEN not in text and SECRET not in text


def test_subscribe_page_again_changes_nothing_and_keeps_other_fields(bot, unsubscribed):
    bot.state.subscribed_fields = ["message_reads", "messages"]
    report = Report(as_json=True)
    unsubscribed.run_setup("subscribe-page", SimpleNamespace(webhook_url=None), report)
    assert bot.state.subscribed_fields == ["message_reads", "messages", "messaging_postbacks"]
    again = Report(as_json=True)
    unsubscribed.run_setup("subscribe-page", SimpleNamespace(webhook_url=None), again)
    assert report.changed and not again.changed


def test_status_says_what_is_missing(bot, unsubscribed):
    report = Report(as_json=True)
    unsubscribed.run_setup("status", SimpleNamespace(), report)
    assert report.result["subscribed_fields"] == [] and not report.changed
    assert "subscribe-page" in report.warnings[0]


def test_status_after_subscribing_is_quiet(bot, unsubscribed):
    unsubscribed.run_setup("subscribe-page", SimpleNamespace(webhook_url=None), Report(as_json=True))
    report = Report(as_json=True)
    unsubscribed.run_setup("status", SimpleNamespace(), report)
    assert report.result["subscribed_fields"] == ["messages", "messaging_postbacks"] and not report.warnings


def test_a_token_meta_refuses_is_a_refusal_with_advice(bot, emulator):
    channel = MessengerChannel(channel_settings(emulator, MESSENGER_PAGE_ACCESS_TOKEN="EAAexpired"))
    with pytest.raises(PlatformRefused) as refused:
        channel.run_setup("status", SimpleNamespace(), Report(as_json=True))
    assert refused.value.status == 400 and "(190)" in refused.value.detail
    assert "MESSENGER_PAGE_ACCESS_TOKEN" in refused.value.advice and "EAAexpired" not in str(refused.value)


def test_an_unreachable_graph_api_is_a_refusal_without_status(bot, emulator):
    channel = MessengerChannel(channel_settings(emulator, MESSENGER_API_BASE_URL="http://127.0.0.1:9"))
    with pytest.raises(PlatformRefused) as refused:
        channel.run_setup("status", SimpleNamespace(), Report(as_json=True))
    assert refused.value.status is None and "MESSENGER_API_BASE_URL" in refused.value.advice
