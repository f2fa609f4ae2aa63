"""Scaled out on Redis: several web and worker processes, and the faults they must survive.

Real processes throughout: gunicorn for web, ``python -m catbot.worker`` for workers, a
redis-server the tests start and stop, the X emulator and the fake facts API on loopback.
"""
import json
import threading
import time

import pytest
import requests

from helpers import counts, signed_headers, wait_until
from processes import Deployment
from redis_server import RedisServer


@pytest.fixture
def scaled(settings, redis_url, emulator, tmp_path):
    """Web and worker processes on Redis (``REDIS_URL`` of the test's redis-server unless a test
    names another); everything is stopped afterwards."""
    deployment = Deployment(settings.replace(redis_url=redis_url), emulator, tmp_path,
                            REPLY_LEASE_SECONDS="6", X_TIMEOUT="2.5", CATFACTS_TIMEOUT="1")
    yield deployment
    deployment.stop()


def post(url: str, payload: dict) -> requests.Response:
    return emulator_post(url, json.dumps(payload).encode())


def emulator_post(url, body):  # signed exactly as X signs
    return requests.post(url + "/webhook/twitter", data=body, headers=signed_headers(body), timeout=10)


def test_same_delivery_posted_concurrently_to_two_web_processes_gets_one_reply(scaled, emulator):
    web_a, web_b = scaled.web(), scaled.web()
    scaled.worker()
    scaled.worker()
    users = [str(3000000200 + i) for i in range(10)]
    for user in users:
        body = json.dumps(emulator.envelope([emulator.dm_event(user, "hi")])).encode()
        answers = []
        threads = [threading.Thread(target=lambda u=url: answers.append(emulator_post(u, body).status_code))
                   for url in (web_a.url, web_b.url, web_a.url, web_b.url)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert answers == [200] * 4
    assert wait_until(lambda: len(emulator.sent) >= len(users), 20)
    time.sleep(2)  # time for any duplicate to show up
    assert counts(emulator) == {u: 1 for u in users}


def test_workers_share_one_rate_budget(scaled, emulator):
    emulator.set_rate_limit(3, 60)
    emulator.faults.latency = 0.5  # sends overlap, so in-flight ones must be counted
    scaled.web()
    for _ in range(3):
        scaled.worker()
    users = [str(3000000300 + i) for i in range(8)]
    for user in users:
        emulator.deliver_dm(user, "hi")
    assert wait_until(lambda: len(emulator.sent) >= 3, 15)
    time.sleep(4)
    assert len(emulator.sent) == 3
    assert [r for r in emulator.rejected if r["status"] == 429] == []  # the limit was never hit


def test_sigkill_with_replies_pending_loses_none(scaled, emulator):
    emulator.faults.errors_5xx = 10_000  # X is failing: replies wait for a retry
    scaled.web()
    worker = scaled.worker()
    users = [str(3000000400 + i) for i in range(4)]
    for user in users:
        assert emulator.deliver_dm(user, "hi")[1].status_code == 200
    assert wait_until(lambda: len(emulator.rejected) >= len(users), 15)
    worker.kill()
    emulator.faults.errors_5xx = 0
    scaled.worker()
    assert wait_until(lambda: len(emulator.sent) >= len(users), 30)
    time.sleep(1)
    assert counts(emulator) == {u: 1 for u in users}


def test_sigkill_before_x_accepted_sends_exactly_once(scaled, emulator, facts_api):
    facts_api.mode = "slow"  # the worker is killed while it waits for a fact, before calling X
    scaled.web()
    worker = scaled.worker()
    emulator.deliver_dm("3000000501", "hi")
    assert wait_until(lambda: len(facts_api.calls) >= 1, 10)
    worker.kill()
    facts_api.mode = "ok"
    scaled.worker()
    assert wait_until(lambda: len(emulator.sent) >= 1, 30)  # after the dead worker's lease ran out
    time.sleep(2)
    assert counts(emulator) == {"3000000501": 1}


def test_sigkill_after_x_accepted_is_the_one_duplicate_window(scaled, emulator):
    """Documented in docs/architecture.md: X accepted the DM, the worker died before recording
    it; after the lease the reply goes out again. At most one duplicate, never a loss."""
    emulator.faults.latency = 1.5
    scaled.web()
    worker = scaled.worker()
    emulator.deliver_dm("3000000601", "hi")
    assert wait_until(lambda: emulator.dm_attempts >= 1, 10)
    worker.kill()  # mid-request: X will accept it, the bot will never know
    assert wait_until(lambda: len(emulator.sent) >= 1, 5)
    emulator.faults.latency = 0
    scaled.worker()
    assert wait_until(lambda: len(emulator.sent) >= 2, 30)
    time.sleep(2)
    assert counts(emulator) == {"3000000601": 2}


def test_sigterm_lets_the_send_in_hand_finish(scaled, emulator):
    emulator.faults.latency = 2
    scaled.web()
    worker = scaled.worker()
    emulator.deliver_dm("3000000701", "hi")
    assert wait_until(lambda: emulator.dm_attempts >= 1, 10)
    started = time.monotonic()
    assert worker.terminate(timeout=30) == 0  # Heroku's daily restart: SIGTERM, 30 s of grace
    assert time.monotonic() - started < 30
    assert len(emulator.sent) == 1
    emulator.faults.latency = 0
    scaled.worker()
    time.sleep(8)  # longer than the lease: a batch left claimed would be sent again by now
    assert counts(emulator) == {"3000000701": 1}


def test_sigterm_of_gunicorn_with_embedded_consumer_finishes_the_send(scaled, emulator):
    emulator.faults.latency = 2
    web = scaled.web(embedded=True)
    emulator.deliver_dm("3000000801", "hi")
    assert wait_until(lambda: emulator.dm_attempts >= 1, 10)
    assert web.terminate(timeout=30) == 0
    assert len(emulator.sent) == 1
    emulator.faults.latency = 0
    scaled.worker()
    time.sleep(8)
    assert counts(emulator) == {"3000000801": 1}


def test_redis_down_answers_503_and_recovers_by_itself(settings, emulator, tmp_path, scaled):
    server = RedisServer(tmp_path / "own-redis")
    try:
        web = scaled.web(embedded=True, redis_url=server.url)
        assert emulator.deliver_dm("3000000901", "before")[1].status_code == 200
        assert wait_until(lambda: len(emulator.sent) >= 1, 10)
        server.stop()
        _, answer = emulator.deliver_dm("3000000902", "during")
        assert answer.status_code == 503  # never 200 for a DM that could not be recorded
        health = requests.get(web.url + "/healthz", timeout=10)
        assert health.status_code == 503
        server.start()  # same port, same append-only file
        event = emulator.dm_event("3000000902", "during, retried by X")
        body = emulator.envelope([event])
        assert wait_until(lambda: post(web.url, body).status_code == 200, 15, step=0.5)
        assert wait_until(lambda: counts(emulator).get("3000000902") == 1, 20)
    finally:
        server.stop()


def test_slow_x_and_slow_facts_keep_acknowledgements_fast(scaled, emulator, facts_api):
    emulator.faults.latency = 2.0  # X answers in 2 s...
    facts_api.mode = "slow"  # ...and the facts API in 3 s
    web = scaled.web()
    scaled.worker()
    users = [str(3000001000 + i) for i in range(6)]
    for user in users:
        started = time.monotonic()
        body = emulator.envelope([emulator.dm_event(user, "hi")])
        assert post(web.url, body).status_code == 200
        assert time.monotonic() - started < 1.0  # acknowledged without waiting for either
    emulator.faults.latency = 0
    facts_api.mode = "ok"
    assert wait_until(lambda: len(emulator.sent) >= len(users), 40)
    assert counts(emulator) == {u: 1 for u in users}


def test_a_start_after_downtime_asks_x_for_a_replay(scaled, emulator, redis_url):
    import redis as redis_lib
    scaled.web()
    r = redis_lib.Redis.from_url(redis_url)
    r.set("catbot:mark:alive", time.time() - 3600)  # the bot was last alive an hour ago
    emulator.deliver_dm("3000001101", "sent while the bot was down")
    delivered = len(emulator.delivered)
    scaled.worker(REPLAY_ON_START="true")
    # X re-delivers the window; the bot recognises the event and answers it once.
    assert wait_until(lambda: any("replay_job_status" in p for _, p in emulator.delivered[delivered:]), 15)
    assert wait_until(lambda: len(emulator.sent) >= 1, 15)
    time.sleep(2)
    assert counts(emulator) == {"3000001101": 1}
