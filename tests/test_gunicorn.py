"""The bot as production runs it: real ``gunicorn app:app`` processes, several workers, each
with its embedded consumer, talking to the X emulator over loopback."""
import json
import subprocess
import time

import pytest
import requests

from helpers import BOT_ID, signed_headers
from processes import ROOT, VENV_BIN, Gunicorn, bot_env


@pytest.fixture
def served(settings, emulator, tmp_path):
    """Start gunicorn for these settings and subscribe it at the emulator; stop it afterwards."""
    started = []

    def serve(workers: int = 2, **env):
        bot = Gunicorn(bot_env(settings, **env), workers=workers, log_path=tmp_path / "gunicorn.log")
        started.append(bot)
        if not emulator.webhook_url():
            emulator.register(bot.url + "/webhook/twitter")
        else:
            next(iter(emulator.webhooks.values())).url = bot.url + "/webhook/twitter"
        return bot

    yield serve
    for bot in started:
        bot.stop()


def settle(emulator, seconds: float = 1.5) -> None:
    """Give any duplicate reply the chance to show up before counting."""
    time.sleep(seconds)


def test_gunicorn_alone_answers_dms_exactly_once(served, emulator):
    served(workers=3)
    users = [str(3000000100 + i) for i in range(6)]
    for user in users:
        _, answer = emulator.deliver_dm(user, "hello")
        assert answer.status_code == 200
    emulator.wait_for_sent(len(users), timeout=15)
    settle(emulator)  # the bot's own DMs come back as deliveries meanwhile; none may be answered
    assert sorted(dm.participant_id for dm in emulator.sent) == users
    assert emulator.rejected == []


def test_redelivery_to_another_worker_is_not_answered_twice(served, emulator):
    served(workers=3)
    event_id, _ = emulator.deliver_dm("3000000002", "hi")
    emulator.wait_for_sent(1, timeout=10)
    for _ in range(5):
        assert emulator.redeliver(event_id).status_code == 200
    settle(emulator)
    assert len(emulator.sent) == 1


def chunks(data: bytes, size: int = 4096):
    """A body requests sends with ``Transfer-Encoding: chunked`` (no Content-Length)."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_a_chunked_delivery_is_read_whole_and_answered(served, emulator):
    bot = served()
    body = json.dumps({"for_user_id": BOT_ID, "direct_message_events": [{
        "type": "message_create", "id": "1800000000000000077", "created_timestamp": "1763790000000",
        "message_create": {"target": {"recipient_id": BOT_ID}, "sender_id": "3000000002",
                           "message_data": {"text": "hi " + "x" * 9000}}}]}).encode()
    response = requests.post(bot.url + "/webhook/twitter", data=chunks(body), headers=signed_headers(body))
    assert response.status_code == 200
    emulator.wait_for_sent(1, timeout=10)


def test_a_chunked_body_past_one_mebibyte_is_413(served):
    bot = served()
    body = b"x" * (1024 * 1024 + 1)
    response = requests.post(bot.url + "/webhook/twitter", data=chunks(body, 65536), headers=signed_headers(body))
    assert response.status_code == 413


def test_pending_replies_survive_sigkill(served, emulator):
    emulator.faults.errors_5xx = 1000  # X is failing: replies stay pending, retried later
    bot = served()
    for user in ("3000000002", "3000000003"):
        assert emulator.deliver_dm(user, "hi")[1].status_code == 200  # acknowledged = recorded
    deadline = time.monotonic() + 10
    while len(emulator.rejected) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    bot.kill()  # SIGKILL: master, workers and consumers, mid-backoff
    emulator.faults.errors_5xx = 0
    served()
    emulator.wait_for_sent(2, timeout=20)
    settle(emulator)
    assert sorted(dm.participant_id for dm in emulator.sent) == ["3000000002", "3000000003"]


def test_sigterm_stops_cleanly_within_herokus_grace(served, emulator):
    bot = served()
    emulator.deliver_dm("3000000002", "hi")
    emulator.wait_for_sent(1, timeout=10)
    started = time.monotonic()
    assert bot.terminate(timeout=30) == 0
    assert time.monotonic() - started < 30


def test_missing_settings_stop_the_process_with_one_clear_message(tmp_path):
    env = {"PATH": str(VENV_BIN), "CATBOT_ENV_DIR": str(tmp_path), "CONSUMER_KEY": "set"}
    result = subprocess.run([str(VENV_BIN / "gunicorn"), "app:app", "-b", "127.0.0.1:0"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "missing required settings: CONSUMER_SECRET, ACCESS_TOKEN, ACCESS_TOKEN_SECRET" in output
    assert ".env.example" in output
