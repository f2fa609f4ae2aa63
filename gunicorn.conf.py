"""gunicorn reads this file from the working directory, so ``gunicorn app:app`` (the Procfile's
web line) gets the bot's process model without flags.

Each worker runs an embedded queue consumer that sends the replies; SIGTERM (Heroku's daily
restart) lets the task in hand finish before the worker exits.
"""
import os

# Heroku sets PORT (gunicorn binds 0.0.0.0:$PORT by itself) and WEB_CONCURRENCY by dyno size.
# Without it: 2 workers, what make bench measured as best on a 2-core machine (4 was over the
# memory target; docs/performance.md).
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))

# Each worker receives every request whole in its main loop, without blocking, and only then runs
# it in one of its threads, so slow or stalled clients cannot hold a worker (catbot/server.py;
# with sync workers two of them took the bot offline). A request must arrive within 10 s.
worker_class = "catbot.server.BufferedThreadWorker"
# Threads only ever run whole requests, so they wait on nothing but the app itself (SQLite, the
# journal, Redis). 2 and 4 measured alike in throughput; 2 had the lower ack p99 in 4 of 5 runs
# (more threads interleave CPU-bound requests on the GIL; docs/performance.md).
threads = 2
worker_connections = 250  # per worker; when full, the connection waiting longest for its request goes
keepalive = 2  # seconds an idle connection is kept for its next request (gunicorn's default)
graceful_timeout = 25  # inside Heroku's 30 s between SIGTERM and SIGKILL
timeout = 30


def on_starting(server):
    """Check settings once in the master: with one missing, stop now with one clear message
    instead of letting workers fail to boot over and over."""
    import sys

    from api_config import SettingsError, load_settings

    if getattr(server.app, "app_uri", "app:app") != "app:app":  # another app under this config
        return
    try:
        load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr, flush=True)
        sys.exit(1)


def _runtime(worker):
    """The bot's runtime, or None for another app under this config (the benchmark baseline)."""
    return getattr(getattr(worker, "wsgi", None), "extensions", {}).get("catbot")


def post_worker_init(worker):
    runtime = _runtime(worker)
    if runtime is not None and runtime.settings.embedded_consumer:
        runtime.queue.start_consumer()


def worker_exit(server, worker):
    runtime = _runtime(worker)
    if runtime is not None:
        runtime.queue.stop_consumer()
