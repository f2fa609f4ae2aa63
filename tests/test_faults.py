"""Faults between a claim and the store knowing a reply went out, on both backends, with real
processes: gunicorn for the webhook, ``python -m catbot.worker`` consumers, SIGSTOP/SIGCONT,
SIGKILL, a redis-server stopped and started, SQLite's write lock held by another process.
Every test counts replies: none lost, none doubled (issue 10, items 5 to 7)."""
import signal
import sqlite3
import threading
import time

import pytest
import requests

from catbot.replies import STOP_TEXT
from processes import Deployment
from redis_server import RedisServer
from helpers import counts, wait_until


@pytest.fixture(params=["sqlite", "redis"])
def deployment(request, settings, emulator, tmp_path):
    """A web process that only acknowledges and records, and consumers started on demand,
    on the embedded SQLite file or on a redis-server of the test's own (so it can be stopped)."""
    redis = RedisServer(tmp_path / "redis") if request.param == "redis" else None
    emulator.set_rate_limit(1000, 900)
    deployment = Deployment(settings.replace(redis_url=redis.url if redis else ""), emulator, tmp_path,
                            REPLY_LEASE_SECONDS="5", X_TIMEOUT="2", CATFACTS_TIMEOUT="1", REPLAY_ON_START="false")
    deployment.backend, deployment.redis_server = request.param, redis
    yield deployment
    deployment.stop()
    if redis:
        redis.stop()


def texts(emulator, user):
    return [dm.text for dm in emulator.sent_to(user)]


def test_a_consumer_stalled_past_its_lease_does_not_send_and_cannot_undo_a_stop(deployment, emulator, facts_api):
    """The report's case: "hi", the first consumer freezes while fetching a fact, "stop", a
    second consumer takes over and confirms the stop; the first wakes. One DM, and the user
    stays opted out."""
    facts_api.delay = 0.5
    deployment.web()
    first = deployment.worker()
    user = "3000002001"
    assert emulator.deliver_dm(user, "hi")[1].status_code == 200
    assert wait_until(lambda: len(facts_api.calls) >= 1, 15)
    first.signal(signal.SIGSTOP)  # a paused container, swap, a long GC
    assert emulator.deliver_dm(user, "stop")[1].status_code == 200
    deployment.worker()
    assert wait_until(lambda: texts(emulator, user) == [STOP_TEXT], 30)
    first.signal(signal.SIGCONT)
    time.sleep(3)  # the first consumer finishes what it was doing
    assert emulator.deliver_dm(user, "hi again")[1].status_code == 200
    time.sleep(3)
    assert texts(emulator, user) == [STOP_TEXT]  # no late fact, and the stop still holds
    assert "stage=before_send" in first.log()


def _hold_sqlite_write_lock(path: str, seconds: float) -> threading.Thread:
    """Another process's long write transaction (a backup, a migration, a stuck tool)."""
    ready = threading.Event()

    def hold():
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        db.execute("begin immediate")
        ready.set()
        time.sleep(seconds)
        db.execute("rollback")
        db.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    ready.wait(30)
    return thread


def test_a_store_outage_right_after_x_accepted_sends_nothing_twice(deployment, emulator):
    """X answered 201, then the store failed: Redis down for 3 s, or SQLite's write lock held
    for 8 s (past its 5 s busy timeout). The completion is retried until it lands; without
    that, the batch stayed claimed and went out again when its lease ran out."""
    emulator.faults.latency = 1.0  # so the outage starts while sends are in flight
    web = deployment.web()
    deployment.worker(REPLY_LEASE_SECONDS="20")  # outlasts the outage, as the default 90 s does
    deployment.worker(REPLY_LEASE_SECONDS="20")
    users = [str(3000002100 + n) for n in range(6)]
    for user in users:
        assert emulator.deliver_dm(user, "hi")[1].status_code == 200
    assert wait_until(lambda: emulator.dm_attempts >= 1, 15)
    if deployment.backend == "redis":
        deployment.redis_server.stop()
        time.sleep(3)
        deployment.redis_server.start()  # same port, same append-only file
    else:
        _hold_sqlite_write_lock(deployment.settings.sqlite_path, 8).join()
    emulator.faults.latency = 0
    assert wait_until(lambda: set(counts(emulator)) == set(users), 40)
    # Every batch closed: none is left claimed, to go out again when its lease runs out.
    assert wait_until(lambda: _pending(web) == 0, 20)
    time.sleep(1)
    assert counts(emulator) == {u: 1 for u in users}


def _pending(web) -> int | None:
    try:
        return requests.get(web.url + "/healthz", timeout=5).json()["store"]["pending_messages"]
    except (requests.RequestException, KeyError, ValueError):
        return None


def test_a_reply_pending_at_a_crash_goes_out_soon_after_the_restart(deployment, emulator, facts_api):
    """Every consumer killed with a reply in flight; the next one to start must not wait out
    the dead one's lease (60 s here)."""
    facts_api.mode = "slow"  # the consumer dies while it waits for a fact, before calling X
    deployment.web()
    first = deployment.worker(REPLY_LEASE_SECONDS="60")
    assert emulator.deliver_dm("3000002201", "hi")[1].status_code == 200
    assert wait_until(lambda: len(facts_api.calls) >= 1, 15)
    first.kill()
    facts_api.mode = "ok"
    restarted = time.monotonic()
    deployment.worker(REPLY_LEASE_SECONDS="60")
    assert wait_until(lambda: len(emulator.sent) >= 1, 40)
    assert time.monotonic() - restarted < 25  # seconds, not the 60 s lease
    time.sleep(2)
    assert counts(emulator) == {"3000002201": 1}


def test_a_consumer_paused_mid_send_is_not_taken_for_dead(deployment, emulator):
    """Paused longer than the heartbeats' TTL while its DM is on the wire (a paused container,
    swap): it renewed its claim to send, so only the lease may end it, not a missed heartbeat
    (Redis) or anything else. One DM."""
    emulator.faults.latency = 2.0
    deployment.web()
    first = deployment.worker(REPLY_LEASE_SECONDS="40")
    assert emulator.deliver_dm("3000002301", "hi")[1].status_code == 200
    assert wait_until(lambda: emulator.dm_attempts >= 1, 15)
    first.signal(signal.SIGSTOP)
    deployment.worker(REPLY_LEASE_SECONDS="40")
    time.sleep(16)  # past HEARTBEAT_TTL (12 s) with the watch beating every 3 s
    first.signal(signal.SIGCONT)
    assert wait_until(lambda: len(emulator.sent) >= 1, 15)
    time.sleep(3)
    assert counts(emulator) == {"3000002301": 1}
