"""``make bench``: the figures in docs/performance.md, measured side by side in one run.

Loopback only, bounded (about three minutes). The bot runs as production runs it
(``gunicorn app:app`` with ``gunicorn.conf.py``) against the X emulator; the baseline is a
bare Flask app (``bench/baseline.py``) under the identical gunicorn settings (the same file:
worker class, threads, keep-alive, workers). wrk drives both with the same pre-signed
deliveries. Medians over alternating rounds, so a noisy neighbour hits both sides alike. The
baseline also runs under gunicorn's sync workers, which is what the slow-client defence
(``catbot/server.py``) costs the web stack. Writes the table to docs/performance.md
(``--no-write`` to skip).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import runpy
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from catbot.security import sign  # noqa: E402
from localrun.processes import Process, free_port  # noqa: E402
from tests.helpers import dm_delivery  # noqa: E402  (the one builder of a DM delivery)
from x_emulator import Credentials, XEmulator  # noqa: E402
from x_emulator.facts import FactsAPIStub  # noqa: E402

WORK = ROOT / ".bench"
CONFIG = ROOT / "gunicorn.conf.py"  # bot and baseline alike
BIN = Path(sys.executable).parent
BOT_ID = "2000000001"
CREDS = Credentials("bench-consumer-key-00000001", "bench-consumer-secret-not-real",
                    f"{BOT_ID}-benchaccesstoken0000001", "bench-access-token-secret-not-real")
WEB_CONCURRENCY = os.environ.get("BENCH_WEB_CONCURRENCY", "2")  # the same for the bot and the baseline
CONNECTIONS, THREADS = 8, 2
SYNC_WORKERS = ("--worker-class", "sync", "--threads", "1")  # gunicorn's default server, for comparison

WRK_SCRIPT = r"""
local data = dofile("%(bodies)s")
local n, i, step = #data, 0, 1
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("start", counter)
end
function init(args)
  i, step = start, %(threads)d
end
function request()
  local item = data[((i - 1) %% n) + 1]
  i = i + step
  return wrk.format("POST", "/webhook/twitter",
    {["Content-Type"] = "application/json", ["x-twitter-webhooks-signature"] = item[2]}, item[1])
end
function done(summary, latency, requests)
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "non2xx": %%d, "socket_errors": %%d, "p50_us": %%d, "p99_us": %%d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def env_for(emulator_url: str, facts_url: str, db: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS", "SQLITE", "X_API", "CATFACTS"))}
    env.update(CONSUMER_KEY=CREDS.consumer_key, CONSUMER_SECRET=CREDS.consumer_secret,
               ACCESS_TOKEN=CREDS.access_token, ACCESS_TOKEN_SECRET=CREDS.access_token_secret,
               X_API_BASE_URL=emulator_url, CATFACTS_API_URL=facts_url, SQLITE_PATH=str(WORK / db),
               WEB_CONCURRENCY=WEB_CONCURRENCY, CATBOT_ENV_DIR=str(WORK),
               REPLAY_ON_START="false", REPLIES_PER_USER_PER_HOUR="1000")
    env.update(extra)
    return env


class Server(Process):
    """A gunicorn process for ``target`` on a free port; stopped with SIGTERM."""

    def __init__(self, target: str, env: dict[str, str], name: str, flags: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [str(BIN / "gunicorn"), target, "-c", str(CONFIG), "-b", f"127.0.0.1:{self.port}", *flags]
        super().__init__(args, env, WORK / f"{name}.log")
        try:
            self.wait_http(self.url + "/healthz")
        except RuntimeError:
            self.stop()
            raise SystemExit(f"{name} did not start; see {WORK / (name + '.log')}") from None
        time.sleep(0.5)  # let every worker finish booting

    def pids(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [self.proc.pid] + [int(p) for p in out.stdout.split()]


def delivery(n: int, run: str, user: str | None = None) -> tuple[str, bytes]:
    user = user or str(4_000_000_000 + n)
    body = dm_delivery(user, "hello cat bot", f"{run}{n:012d}", for_user_id=BOT_ID, recipient=BOT_ID,
                       created_ms=int(time.time() * 1000),
                       entities={"hashtags": [], "symbols": [], "user_mentions": [], "urls": []})
    body["users"] = {user: {"id": user, "name": "Bench User", "screen_name": "bench"}}  # as X sends it
    return user, json.dumps(body).encode()


def write_bodies(run: str, count: int) -> Path:
    path = WORK / f"bodies-{run}.lua"
    with open(path, "w") as out:
        out.write("return {\n")
        for n in range(count):
            _, body = delivery(n, run)
            out.write("{%s,%s},\n" % (json.dumps(body.decode()), json.dumps(sign(CREDS.consumer_secret.encode(), body))))
        out.write("}\n")
    return path


def wrk(url: str, bodies: Path, seconds: int) -> dict:
    script = WORK / f"wrk-{bodies.stem}.lua"
    script.write_text(WRK_SCRIPT % {"bodies": bodies, "threads": THREADS})
    out = subprocess.run(["wrk", "-t", str(THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds}s", "--timeout", "10s",
                          "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 60)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not line:
        raise SystemExit("wrk failed: " + out.stdout + out.stderr)
    result = json.loads(line[-1])
    if result["requests"] > PER_ROUND:
        print(f"warning: {result['requests']} requests in one round repeated some of the {PER_ROUND} bodies",
              file=sys.stderr)
    result["rps"] = (result["requests"] - result["non2xx"]) / (result["duration_us"] / 1e6)
    return result


class MemorySampler:
    """Peak RSS and PSS summed over a process tree, sampled every 100 ms."""

    def __init__(self, server: Server) -> None:
        self.server, self.peak_rss, self.peak_pss = server, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            rss = pss = 0
            for pid in self.server.pids():
                try:
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Rss:"):
                            rss += int(line.split()[1])
                        elif line.startswith("Pss:"):
                            pss += int(line.split()[1])
                except OSError:
                    continue
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def stop(self) -> tuple[float, float]:
        self._stop.set()
        self._thread.join()
        return self.peak_rss / 1024, self.peak_pss / 1024


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -- the figures ----------------------------------------------------------------------------------
PER_ROUND = 40_000  # unique deliveries per wrk round: a repeat would be a cheap duplicate


def ingest_and_latency(emulator: XEmulator, facts: FactsAPIStub, rounds: int, seconds: int) -> dict:
    bodies = [write_bodies(f"19{n}", PER_ROUND) for n in range(rounds)]
    baseline = Server("bench.baseline:app", env_for(emulator.url, facts.url, "baseline.sqlite3"), "baseline")
    sync_baseline = Server("bench.baseline:app", env_for(emulator.url, facts.url, "baseline-sync.sqlite3"),
                           "baseline-sync", SYNC_WORKERS)
    bot = Server("app:app", env_for(emulator.url, facts.url, "ingest.sqlite3"), "bot-ingest")
    memory = MemorySampler(bot)
    bot_runs, base_runs, sync_runs = [], [], []
    try:
        for n in range(rounds):
            base_runs.append(wrk(baseline.url, bodies[n], seconds))
            sync_runs.append(wrk(sync_baseline.url, bodies[n], seconds))
            bot_runs.append(wrk(bot.url, bodies[n], seconds))
    finally:
        rss, pss = memory.stop()
        bot.stop()
        baseline.stop()
        sync_baseline.stop()
    bad = sum(r["non2xx"] + r["socket_errors"] for r in bot_runs)
    return {"bot_rps": statistics.median(r["rps"] for r in bot_runs),
            "base_rps": statistics.median(r["rps"] for r in base_runs),
            "sync_base_rps": statistics.median(r["rps"] for r in sync_runs),
            "p50_ms": statistics.median(r["p50_us"] for r in bot_runs) / 1000,
            "p99_ms": statistics.median(r["p99_us"] for r in bot_runs) / 1000,
            "base_p99_ms": statistics.median(r["p99_us"] for r in base_runs) / 1000,
            "bot_errors": bad, "rss_mb": rss, "pss_mb": pss}


def isolation(emulator: XEmulator, facts: FactsAPIStub, rounds: int, seconds: int) -> dict:
    bodies = [write_bodies(f"18{n}", PER_ROUND) for n in range(rounds)]
    emulator.set_rate_limit(10**9, 900)
    emulator.faults.latency, facts.delay = 2.0, 2.0
    bot = Server("app:app", env_for(emulator.url, facts.url, "isolation.sqlite3"), "bot-isolation")
    try:
        runs = [wrk(bot.url, bodies[n], seconds) for n in range(rounds)]
    finally:
        bot.stop()
        emulator.faults.latency, facts.delay = 0.0, 0.0
    return {"p99_ms": statistics.median(r["p99_us"] for r in runs) / 1000,
            "sent_during": len(emulator.sent)}


def end_to_end(emulator: XEmulator, facts: FactsAPIStub, rate: int = 20, seconds: int = 10) -> dict:
    emulator.set_rate_limit(10**9, 900)
    bot = Server("app:app", env_for(emulator.url, facts.url, "e2e.sqlite3"), "bot-e2e")
    session = requests.Session()
    session.trust_env = False
    started: dict[str, float] = {}
    first = len(emulator.sent)
    try:
        t0 = time.monotonic()
        for n in range(rate * seconds):
            wait = t0 + n / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            user, body = delivery(n, "17", user=str(5_000_000_000 + n))
            started[user] = time.time()
            session.post(bot.url + "/webhook/twitter", data=body, timeout=10,
                         headers={"Content-Type": "application/json",
                                  "x-twitter-webhooks-signature": sign(CREDS.consumer_secret.encode(), body)})
        emulator.wait_for_sent(first + len(started), timeout=30)
    finally:
        bot.stop()
    latencies = [(dm.at - started[dm.participant_id]) * 1000 for dm in emulator.sent[first:]
                 if dm.participant_id in started]
    return {"p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
            "answered": len(latencies), "sent": len(started)}


def rate_limit_burst(emulator: XEmulator, facts: FactsAPIStub, users: int = 60, per_user: int = 5,
                     limit: int = 15, window: float = 5.0) -> dict:
    emulator.set_rate_limit(limit, window)
    rejected_before, first = len(emulator.rejected), len(emulator.sent)
    bot = Server("app:app", env_for(emulator.url, facts.url, "burst.sqlite3"), "bot-burst")
    people = [str(6_000_000_000 + i) for i in range(users)]
    order = [u for u in people for _ in range(per_user)]
    random.Random(7).shuffle(order)
    session = requests.Session()
    session.trust_env = False
    waiting_since: dict[str, float] = {}  # when each user's first message was acknowledged
    try:
        started = time.time()
        for n, user in enumerate(order):
            _, body = delivery(n, "16", user=user)
            session.post(bot.url + "/webhook/twitter", data=body, timeout=10,
                         headers={"Content-Type": "application/json",
                                  "x-twitter-webhooks-signature": sign(CREDS.consumer_secret.encode(), body)})
            waiting_since.setdefault(user, time.time())
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len({d.participant_id for d in emulator.sent[first:]}) < users:
            time.sleep(0.2)
        time.sleep(window)  # time for any second replies, to check their order
    finally:
        bot.stop()
    replies = [(d.participant_id, d.at) for d in emulator.sent[first:]]
    sent = [user for user, _ in replies]
    first_reply: dict[str, float] = {}
    unfair = 0
    for user, at in replies:
        if user not in first_reply:
            first_reply[user] = at
            continue
        # a second reply to `user`: was anyone waiting since before user's first reply still unanswered?
        unfair += any(since < first_reply[user] and first_reply.get(other, float("inf")) > at
                      for other, since in waiting_since.items() if other != user)
    windows: dict[int, int] = {}
    for r in emulator.rejected[rejected_before:]:
        if r["status"] == 429:
            key = int((r["at"] - started) // window)
            windows[key] = windows.get(key, 0) + 1
    return {"answered": len(set(sent)), "users": users, "max_429_per_window": max(windows.values(), default=0),
            "fair": unfair == 0, "unfair_replies": unfair, "replies": len(sent),
            "seconds": (emulator.sent[-1].at - started) if len(emulator.sent) > first else None}


def import_time() -> float:
    env = env_for("http://127.0.0.1:9", "", "import.sqlite3")
    times = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); import app; "
                              "print(time.perf_counter() - t)"], cwd=ROOT, env=env, capture_output=True, text=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


# -- report -------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def table(r: dict) -> list[tuple[str, str, str, str]]:
    ing, iso, e2e, burst = r["ingest"], r["isolation"], r["e2e"], r["burst"]
    ratio = ing["bot_rps"] / ing["base_rps"]
    defence = ing["base_rps"] / ing["sync_base_rps"]
    iso_ratio = iso["p99_ms"] / ing["p99_ms"]
    return [
        ("ingest ratio (bot / bare Flask, req/s)", f"{ratio:.2f} ({ing['bot_rps']:.0f} / {ing['base_rps']:.0f})",
         ">= 0.7", verdict(ratio >= 0.7 and ing["bot_errors"] == 0)),
        (f"ack latency p50 / p99 ({CONNECTIONS} connections)", f"{ing['p50_ms']:.1f} / {ing['p99_ms']:.1f} ms",
         "p99 < 20 ms", verdict(ing["p99_ms"] < 20)),
        ("isolation: ack p99 with X and facts at 2 s", f"{iso['p99_ms']:.1f} ms ({iso_ratio:.2f}x)",
         "<= 1.2x", verdict(iso_ratio <= 1.2)),
        ("end-to-end p50 / p99 at 20 DMs/s", f"{e2e['p50_ms']:.0f} / {e2e['p99_ms']:.0f} ms ({e2e['answered']}/{e2e['sent']})",
         "< 50 / < 250 ms", verdict(e2e["p50_ms"] < 50 and e2e["p99_ms"] < 250 and e2e["answered"] == e2e["sent"])),
        ("rate limit: 300 DMs, 60 users, 15 per 5 s",
         f"{burst['answered']}/{burst['users']} users, {burst['max_429_per_window']} 429/window, "
         f"{'fair' if burst['fair'] else 'UNFAIR'}", "<= 1 429/window, all, fair",
         verdict(burst["answered"] == burst["users"] and burst["max_429_per_window"] <= 1 and burst["fair"])),
        ("slow-client defence: bare Flask req/s, gunicorn.conf.py / sync workers",
         f"{defence:.2f} ({ing['base_rps']:.0f} / {ing['sync_base_rps']:.0f})", "(its cost)", "—"),
        ("footprint: peak memory of the stack under load", f"RSS {ing['rss_mb']:.0f} MB, PSS {ing['pss_mb']:.0f} MB",
         "RSS < 150 MB", verdict(ing["rss_mb"] < 150)),
        ("time to import app", f"{r['import_s'] * 1000:.0f} ms", "< 1 s", verdict(r["import_s"] < 1)),
    ]


def server_settings() -> str:
    """The gunicorn.conf.py settings both sides ran under, as the table's header states them."""
    conf = runpy.run_path(str(CONFIG))
    return (f"{conf['worker_class'].rsplit('.', 1)[-1]}, {conf['threads']} threads, keep-alive {conf['keepalive']} s, "
            f"timeout {conf['timeout']} s")


def render(rows, r: dict) -> str:
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("flask", "gunicorn", "tweepy", "huey"))
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    lines = [f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node() or 'this machine'}: "
             f"{platform.system()} {platform.release()} {platform.machine()}, {os.cpu_count()} cores, "
             f"Python {platform.python_version()}; {versions}; {wrk_version.split(' [')[0]}. "
             f"gunicorn as in gunicorn.conf.py ({server_settings()}) with WEB_CONCURRENCY={WEB_CONCURRENCY}, "
             f"embedded SQLite store. "
             f"Ingest and latency: medians of {r['rounds']} alternating {r['seconds']} s wrk rounds per side, "
             f"{CONNECTIONS} connections.", "",
             "| figure | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def write_doc(block: str) -> None:
    doc = ROOT / "docs" / "performance.md"
    text = doc.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{start}\n{block}\n{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/performance.md alone")
    parser.add_argument("--only", help="comma-separated steps to run (ingest,isolation,e2e,burst,import_s); "
                                       "implies --no-write")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    for old in WORK.glob("*.sqlite3*"):  # databases, their WAL files and journal folders
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    import logging
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the emulator's request log is noise here
    emulator = XEmulator(CREDS, echo_outgoing=False).start()
    facts = FactsAPIStub()
    results: dict = {"rounds": args.rounds, "seconds": args.seconds}
    try:
        steps = [("ingest", lambda: ingest_and_latency(emulator, facts, args.rounds, args.seconds)),
                 ("isolation", lambda: isolation(emulator, facts, args.rounds, args.seconds)),
                 ("e2e", lambda: end_to_end(emulator, facts)),
                 ("burst", lambda: rate_limit_burst(emulator, facts)),
                 ("import_s", import_time)]
        only = set(args.only.split(",")) if args.only else None
        for name, step in steps:
            if only is None or name in only:
                print(f"measuring {name}...", flush=True)
                results[name] = step()
        if only is not None:
            print(json.dumps(results, indent=2))
            return 0
    finally:
        emulator.stop()
        facts.stop()
    rows = table(results)
    block = render(rows, results)
    print("\n" + block)
    (WORK / "results.json").write_text(json.dumps(results, indent=2))
    if not args.no_write:
        write_doc(block)
        print("\nwritten to docs/performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
