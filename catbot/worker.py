"""``python -m catbot.worker``: a process that only sends replies (the Procfile's worker line).

For scaled-out deployments on Redis: web dynos set ``EMBEDDED_CONSUMER=false`` and answer X;
worker dynos run this. SIGTERM (Heroku's daily restart) lets tasks in hand finish, up to 20 s.
"""
from __future__ import annotations

import sys


def main() -> int:
    from api_config import SettingsError, create_x_client, load_settings  # an entry point, like app.py
    from catbot import logs
    from catbot.runtime import build_runtime

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 1
    logs.configure(settings.log_level)
    build_runtime(settings, x_client=create_x_client(settings)).queue.run_consumer(settings.worker_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
