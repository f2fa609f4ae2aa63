"""Run the X emulator: ``python -m x_emulator [--port 8081]``.

Credentials come from the same settings as the bot (CONSUMER_KEY, CONSUMER_SECRET,
ACCESS_TOKEN, ACCESS_TOKEN_SECRET, from the environment), so the bot and the emulator agree.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from x_emulator.server import Credentials, XEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m x_emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--dm-limit", type=int, default=15, help="DMs per window (X: 15)")
    parser.add_argument("--dm-window", type=float, default=900.0, help="window in seconds (X: 900)")
    parser.add_argument("--strict-urls", action="store_true", help="refuse non-https webhook URLs, as X does")
    parser.add_argument("--no-echo", action="store_true", help="do not deliver the bot's own DMs back to it")
    parser.add_argument("--api", choices=("xaa", "aaa"), default="xaa",
                        help="the API POST /_emulator/register subscribes through, and the envelope of "
                             "/_emulator/deliver to an explicit url (default: xaa, what X offers new apps); "
                             "other deliveries follow the subscriptions made")
    args = parser.parse_args(argv)
    names = ("CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_TOKEN", "ACCESS_TOKEN_SECRET")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        parser.error("set " + ", ".join(missing) + " in the environment (the bot's settings)")
    creds = Credentials(*(os.environ[n] for n in names), bearer_token=os.environ.get("BEARER_TOKEN") or
                        Credentials.__dataclass_fields__["bearer_token"].default_factory())
    emulator = XEmulator(creds, dm_limit=args.dm_limit, dm_window=args.dm_window,
                         strict_urls=args.strict_urls, echo_outgoing=not args.no_echo, api=args.api)
    emulator.start(args.host, args.port)
    print(f"X emulator listening on {emulator.url} (bot user {creds.bot_user_id})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
