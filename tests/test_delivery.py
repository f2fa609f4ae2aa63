"""From a signed delivery to a DM at the (emulated) X: replies, de-duplication, restarts,
conversation, budget, fairness and every failure answer X can give.

tweepy talks real HTTP to the emulator, which verifies each request's OAuth 1.0a signature.
A small clock stands in for waiting on retry times; X's own rate windows are real seconds.
"""
import time

import pytest

from helpers import BOT_ID, captured, dm_delivery, post_delivery, runtime_of
from catbot.events import IncomingDM
from catbot.replies import HELP_TEXT, START_TEXT, STOP_TEXT, Intent
from catbot.runtime import build_runtime
from catbot.web import create_app
import catfacts
from catbot.budget import next_utc_midnight, utc_day


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture(params=["sqlite", "redis"])
def settings(request, settings):
    """Every test here runs on both backends: the rest of the code must not know which one it has."""
    if request.param == "redis":
        return settings.replace(redis_url=request.getfixturevalue("redis_url"))
    return settings


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def bot(settings, clock):
    """An app whose runtime runs on the test clock; ``bot.run()`` drains due replies."""
    return Bot(settings, clock)


class Bot:
    def __init__(self, settings, clock) -> None:
        self.settings, self.clock = settings, clock
        self.app = create_app(settings, build_runtime(settings, clock=clock))
        self.client = self.app.test_client()
        self._ids = iter(range(1800000000000100000, 1900000000000000000))

    def dm(self, sender: str, text: str = "hi", event_id: str | None = None, **data) -> dict:
        return dm_delivery(sender, text, event_id or str(next(self._ids)), created_ms=int(time.time() * 1000), **data)

    def send(self, sender: str, text: str = "hi", **kw):
        delivery = self.dm(sender, text, **kw)
        response = post_delivery(self.client, delivery)
        assert response.status_code == 200, response.get_data()
        return delivery

    def run(self):
        return runtime_of(self.app).replier.run_pass()

    def pending(self) -> int:
        return runtime_of(self.app).store.health()["pending_messages"]

    def restart(self) -> "Bot":
        runtime_of(self.app).store.close()
        return Bot(self.settings, self.clock)

    @property
    def store(self):
        return runtime_of(self.app).store


def texts(emulator, user):
    return [dm.text for dm in emulator.sent_to(user)]


def test_the_backend_asked_for_is_in_use(bot):
    expected = "redis" if bot.settings.redis_url else "sqlite"
    assert bot.store.backend == expected
    assert bot.client.get("/healthz").get_json()["store"]["backend"] == expected


def test_a_dm_gets_a_cat_fact_through_tweepy(bot, emulator, facts_api):
    bot.send("3000000002", "hi cat bot")
    bot.run()
    [reply] = emulator.sent_to("3000000002")
    assert "API fact number 1: cats are great." in reply.text
    assert emulator.rejected == []  # every request carried a valid OAuth 1.0a signature
    assert facts_api.calls[0]["max_length"] == str(bot.settings.catfacts_max_length)
    assert bot.pending() == 0


def test_redelivered_event_is_answered_once(bot, emulator):
    delivery = bot.send("3000000002")
    post_delivery(bot.client, delivery)
    bot.run()
    post_delivery(bot.client, delivery)  # X retries after the reply went out
    bot.run()
    assert len(emulator.sent_to("3000000002")) == 1


def test_redelivery_after_restart_is_not_answered_again(bot, emulator):
    delivery = bot.send("3000000002")
    bot.run()
    restarted = bot.restart()
    assert post_delivery(restarted.client, delivery).status_code == 200
    restarted.run()
    assert len(emulator.sent_to("3000000002")) == 1


def test_pending_reply_survives_a_restart(bot, emulator):
    bot.send("3000000002")
    restarted = bot.restart()  # nothing was sent before the "crash"
    assert emulator.sent == []
    restarted.run()
    assert len(emulator.sent_to("3000000002")) == 1


def test_same_event_id_for_another_account_is_a_different_event(bot):
    """De-duplication keys on (for_user_id, event id), as X advises when several accounts share a webhook."""
    store = runtime_of(bot.app).store
    first = IncomingDM("2000000001", "1800000000000000042", "3000000002", "hi", 0).inbound(None)
    other = IncomingDM("2000000009", "1800000000000000042", "3000000003", "hi", 0).inbound(None)
    assert store.record([first], time.time()).new == 1
    assert store.record([other], time.time()).new == 1
    assert store.record([first], time.time()).duplicates == 1


def test_every_event_of_a_multi_event_delivery_is_answered(bot, emulator):
    events = [bot.dm(str(3000000100 + i))["direct_message_events"][0] for i in range(3)]
    assert post_delivery(bot.client, {"for_user_id": BOT_ID, "direct_message_events": events}).status_code == 200
    bot.run()
    assert sorted(dm.participant_id for dm in emulator.sent) == ["3000000100", "3000000101", "3000000102"]


def test_bots_own_messages_are_never_answered(bot, emulator):
    bot.send(BOT_ID, "Here's a cat fact for you")
    bot.run()
    assert emulator.sent == []


def test_several_messages_while_pending_get_one_reply(bot, emulator):
    for text in ("hi", "hello?", "are you there"):
        bot.send("3000000002", text)
    bot.run()
    assert len(emulator.sent_to("3000000002")) == 1


def test_emoji_and_non_latin_messages_get_facts(bot, emulator):
    bot.send("3000000002", "こんにちは 🐱🐾 привет")
    bot.run()
    assert len(emulator.sent_to("3000000002")) == 1


def test_media_only_dm_gets_a_fact(bot, emulator):
    bot.send("3000000002", "", attachment={"type": "media", "media": {"id_str": "99"}})
    bot.run()
    assert "cats are great" in texts(emulator, "3000000002")[0]


def test_help_explains_the_commands(bot, emulator):
    bot.send("3000000002", "Help!")
    bot.run()
    assert texts(emulator, "3000000002") == [HELP_TEXT]


def test_stop_then_silence_until_start(bot, emulator):
    user = "3000000002"
    bot.send(user, "STOP 🙀")
    bot.run()
    assert texts(emulator, user) == [STOP_TEXT]
    bot.send(user, "hi")
    bot.run()
    assert texts(emulator, user) == [STOP_TEXT]  # nothing for "hi"
    assert bot.pending() == 0
    bot.send(user, " start. ")
    bot.run()
    bot.send(user, "another one")
    bot.run()
    sent = texts(emulator, user)
    assert sent[:2] == [STOP_TEXT, START_TEXT] and "cats are great" in sent[2]


def test_opt_out_survives_a_restart(bot, emulator):
    bot.send("3000000002", "stop")
    bot.run()
    restarted = bot.restart()
    restarted.send("3000000002", "hi")
    restarted.run()
    assert texts(emulator, "3000000002") == [STOP_TEXT]


def test_trigger_pattern_limits_who_gets_facts(settings, clock, emulator):
    bot = Bot(settings.replace(trigger_pattern=r"\bcats?\b"), clock)
    bot.send("3000000002", "good morning")
    bot.send("3000000003", "tell me about CATS")
    bot.run()
    assert emulator.sent_to("3000000002") == [] and len(emulator.sent_to("3000000003")) == 1


def test_per_user_cap(settings, clock, emulator):
    bot = Bot(settings.replace(replies_per_user_per_hour=2), clock)
    for _ in range(4):
        bot.send("3000000002")
        bot.run()
    assert len(emulator.sent_to("3000000002")) == 2
    bot.send("3000000003")  # other users are not affected
    bot.run()
    assert len(emulator.sent_to("3000000003")) == 1
    clock.advance(3601)
    bot.send("3000000002")
    bot.run()
    assert len(emulator.sent_to("3000000002")) == 3


def test_backlog_is_served_oldest_first(bot, emulator):
    emulator.set_rate_limit(2, 60)
    for user in ("3000000001", "3000000002", "3000000003"):
        bot.send(user)
    bot.run()
    assert [dm.participant_id for dm in emulator.sent] == ["3000000001", "3000000002"]


def test_a_chatty_user_does_not_delay_others(bot, emulator):
    emulator.set_rate_limit(2, 60)
    for _ in range(10):
        bot.send("3000000001", "more!")
    bot.send("3000000002")
    bot.run()
    assert [dm.participant_id for dm in emulator.sent] == ["3000000001", "3000000002"]


def test_known_budget_is_not_exceeded(bot, emulator):
    """After X said remaining=0, the bot waits for the reset instead of collecting a 429."""
    emulator.set_rate_limit(2, 60)
    for user in ("3000000001", "3000000002", "3000000003"):
        bot.send(user)
    result = bot.run()
    assert len(emulator.sent) == 2
    assert [r for r in emulator.rejected if r["status"] == 429] == []
    assert result.next_run_at is not None and result.next_run_at > time.time() + 30


def test_429_waits_for_reset_then_sends(bot, emulator):
    emulator.set_rate_limit(15, 2)
    emulator.faults.burst_429 = 1
    bot.send("3000000002")
    result = bot.run()
    assert emulator.sent == [] and len(emulator.rejected) == 1  # one attempt, no busy loop
    assert result.next_run_at is not None
    assert bot.run().handled == 0  # not due before the reset
    time.sleep(max(0.0, result.next_run_at - time.time()) + 0.05)
    bot.run()
    assert len(emulator.sent_to("3000000002")) == 1


def test_server_errors_are_retried_with_backoff(bot, emulator, clock):
    emulator.faults.errors_5xx = 2
    bot.send("3000000002")
    bot.run()
    assert bot.run().handled == 0  # backing off, not hammering
    clock.advance(10)
    bot.run()
    clock.advance(10)
    bot.run()
    assert len(emulator.sent_to("3000000002")) == 1
    assert [r["status"] for r in emulator.rejected] == [503, 503]


def test_server_errors_give_up_after_bounded_attempts(settings, clock, emulator):
    bot = Bot(settings.replace(send_max_attempts=3), clock)
    emulator.faults.errors_5xx = 100
    bot.send("3000000002")
    for _ in range(6):
        bot.run()
        clock.advance(400)
    assert len(emulator.rejected) == 3
    assert bot.pending() == 0


def test_network_failure_is_retried(settings, clock, emulator):
    bot = Bot(settings.replace(x_api_base_url="http://127.0.0.1:9"), clock)  # nothing listens there
    bot.send("3000000002")
    bot.run()
    assert bot.pending() == 1  # kept for a retry, not dropped


def test_slow_x_times_out_and_is_retried(settings, clock, emulator):
    bot = Bot(settings.replace(x_timeout=0.5), clock)
    emulator.faults.latency = 1.5
    bot.send("3000000002")
    started = time.monotonic()
    bot.run()
    assert time.monotonic() - started < 1.4  # the timeout held
    assert bot.pending() == 1
    emulator.faults.latency = 0
    clock.advance(10)
    bot.run()
    assert bot.pending() == 0
    assert len(emulator.sent_to("3000000002")) >= 1


def test_forbidden_recipient_is_not_retried(bot, emulator, clock, caplog):
    emulator.faults.forbidden = {"3000000002"}
    bot.send("3000000002")
    with caplog.at_level("ERROR", logger="catbot"):
        bot.run()
    clock.advance(1000)
    bot.run()
    assert [r["status"] for r in emulator.rejected] == [403]
    assert bot.pending() == 0
    assert "not permitted to send Direct Messages" in caplog.text  # X's message is logged


def test_bad_credentials_are_not_retried(settings, clock, emulator):
    bot = Bot(settings.replace(access_token_secret="wrong-secret"), clock)
    bot.send("3000000002")
    bot.run()
    clock.advance(1000)
    bot.run()
    assert [r["status"] for r in emulator.rejected] == [401]
    assert emulator.sent == []


@pytest.mark.parametrize("mode", ["down", "garbage", "limited", "wrong_shape"])
def test_facts_api_failure_falls_back_to_bundled_facts(bot, emulator, facts_api, mode):
    facts_api.mode = mode
    bot.send("3000000002")
    bot.run()
    [reply] = texts(emulator, "3000000002")
    assert any(fact in reply for fact in catfacts.BUNDLED_FACTS)


def test_bundled_facts_do_not_repeat_for_a_user(settings, clock, emulator):
    emulator.set_rate_limit(1000, 900)
    bot = Bot(settings.replace(catfacts_api_url="", replies_per_user_per_hour=1000), clock)
    for _ in range(12):
        bot.send("3000000002")
        bot.run()
    facts = [next(f for f in catfacts.BUNDLED_FACTS if f in t) for t in texts(emulator, "3000000002")]
    assert len(facts) == 12 and len(set(facts)) == 12


def test_no_dm_text_or_secret_in_info_logs(bot, emulator, caplog, settings):
    with caplog.at_level("INFO"):
        bot.send("3000000002", "my secret diary entry")
        bot.run()
    assert "my secret diary entry" not in caplog.text
    assert settings.consumer_secret not in caplog.text and settings.access_token_secret not in caplog.text
    # One INFO line per delivery where the store records it: the journal import on SQLite.
    recorded = "event=delivery.recorded" if bot.store.backend == "sqlite" else "event=delivery.accepted"
    assert recorded in caplog.text and "event=reply.sent" in caplog.text


# -- what X bills, and the bot's own daily cap (issue 12) -------------------------------------------
def test_healthz_reports_todays_traffic_and_estimated_spend(bot, emulator):
    bot.send("3000000002")
    again = bot.send("3000000003")
    assert post_delivery(bot.client, again).status_code == 200  # a redelivery is one event, billed once
    bot.run()
    today = bot.client.get("/healthz").get_json()["today"]
    assert today == {"day": utc_day(bot.clock()), "received": 2, "sent": 2, "estimated_spend_usd": 0.05,
                     "daily_send_limit": None, "sending_paused": False}


def test_daily_send_limit_stops_sending_keeps_what_is_pending_and_says_so(settings, clock, emulator):
    bot = Bot(settings.replace(daily_send_limit=2), clock)
    with captured("catbot.replier") as lines:
        for user in ("3000000001", "3000000002", "3000000003"):
            bot.send(user)
        bot.run()
        assert len(emulator.sent) == 2 and bot.pending() == 1
        today = bot.client.get("/healthz").get_json()["today"]
        assert (today["sent"], today["daily_send_limit"], today["sending_paused"]) == (2, 2, True)
        bot.run()
        assert len(emulator.sent) == 2  # still paused
        assert any("event=sending.paused" in line and "reason=daily_send_limit" in line for line in lines.lines)
        clock.advance(next_utc_midnight(clock()) - clock() + 1)  # a new UTC day
        bot.run()
        assert [dm.participant_id for dm in emulator.sent] == ["3000000001", "3000000002", "3000000003"]
        assert bot.client.get("/healthz").get_json()["today"]["sending_paused"] is False
