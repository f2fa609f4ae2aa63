"""Sustained load against the production process model on Redis, loopback only, bounded.

60 s of signed deliveries at 200 per second (each from a different user, so "answered exactly
once" is unambiguous) into gunicorn web processes, with separate worker processes replying
through the emulator (its rate limit lifted). No answer may be a 5xx, and every acknowledged
DM must be answered exactly once. Throughput and latency numbers belong to ``make bench``.
"""
import json
import threading
import time

import requests

from helpers import CREDS, dm_delivery, signed_headers
from processes import Gunicorn, Process, VENV_BIN, Worker, bot_env, free_port

RATE = 200  # deliveries per second
SECONDS = 60
CLIENTS = 8


def delivery(n: int) -> tuple[str, bytes]:
    user = str(4_000_000_000 + n)
    return user, json.dumps(dm_delivery(user, f"hello {n}", str(1_900_000_000_000_000_000 + n))).encode()


def test_sustained_load_every_dm_answered_once(settings, redis_url, tmp_path):
    port = free_port()
    emulator_url = f"http://127.0.0.1:{port}"
    env = bot_env(settings.replace(redis_url=redis_url, x_api_base_url=emulator_url, catfacts_api_url=""),
                  EMBEDDED_CONSUMER="false", WORKER_THREADS="3", LOG_LEVEL="WARNING")
    started = [Process([str(VENV_BIN / "python"), "-m", "x_emulator", "--port", str(port), "--no-echo",
                        "--dm-limit", "1000000000"], env, tmp_path / "emulator.log")]
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                requests.get(emulator_url + "/_emulator/state", timeout=1)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, "emulator did not start"
                time.sleep(0.1)
        web = Gunicorn(env, workers=3, log_path=tmp_path / "web.log")
        started += [web, Worker(env, tmp_path / "worker1.log"), Worker(env, tmp_path / "worker2.log")]
        total = RATE * SECONDS
        prepared = [delivery(n) for n in range(total)]  # signed ahead, so the client keeps pace
        signatures = [signed_headers(body, CREDS.consumer_secret) for _, body in prepared]
        statuses: list[int] = [0] * total
        start = time.monotonic() + 0.5

        def client(offset: int) -> None:
            session = requests.Session()
            session.trust_env = False
            for n in range(offset, total, CLIENTS):
                wait = start + n / RATE - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                try:
                    statuses[n] = session.post(web.url + "/webhook/twitter", data=prepared[n][1],
                                               headers=signatures[n], timeout=10).status_code
                except requests.RequestException:
                    statuses[n] = -1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - start
        assert elapsed < SECONDS * 1.25, f"the load generator fell behind: {elapsed:.0f} s"
        assert [s for s in statuses if s >= 500 or s < 0] == []
        accepted = {prepared[n][0] for n, s in enumerate(statuses) if s == 200}
        assert len(accepted) == total

        sent: dict[str, int] = {}
        drain_deadline = time.monotonic() + 240
        after = 0
        while time.monotonic() < drain_deadline:
            page = requests.get(emulator_url + "/_emulator/sent", params={"after": after}, timeout=30).json()
            for item in page["sent"]:
                sent[item["participant_id"]] = sent.get(item["participant_id"], 0) + 1
            after = page["total"]
            if len(sent) >= len(accepted):
                break
            time.sleep(1)
        time.sleep(3)  # any duplicate would arrive now
        for item in requests.get(emulator_url + "/_emulator/sent", params={"after": after}, timeout=30).json()["sent"]:
            sent[item["participant_id"]] = sent.get(item["participant_id"], 0) + 1
        assert set(sent) == accepted, f"{len(accepted - set(sent))} unanswered, {len(set(sent) - accepted)} unknown"
        assert [u for u, c in sent.items() if c != 1] == []
    finally:
        for proc in reversed(started):
            proc.stop()
