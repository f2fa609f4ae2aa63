"""``make demo``: the whole bot, offline, in one command.

Starts the X emulator and the bot exactly as production runs it (``gunicorn app:app``,
configured only through settings), registers the webhook and subscription with
``register_webhook.py setup`` (so the CRC check and subscription really run: through the X
Activity API, or the Account Activity API with ``--api aaa``), then opens a chat:
each line you type goes to the bot as a signed DM delivery from a simulated user, and the
bot's reply is printed when it reaches the emulator. Standard input that is not a terminal is
read one message per line. Every process started here is stopped on exit, Ctrl-C included.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as scripts/demo.py
from localrun.processes import ROOT, Process, free_port  # noqa: E402
from x_emulator.platforms import platform_modules  # noqa: E402

WORK = ROOT / ".demo"
BIN = Path(sys.executable).parent
USER_ID = "3000000042"
REPLY_WAIT = 6.0  # seconds to wait for a reply before saying "(no reply)"
DEMO_CREDENTIALS = {  # fake keys shared by the bot and the emulator; nothing here reaches X
    "CONSUMER_KEY": "demo-consumer-key-000000001",
    "CONSUMER_SECRET": "demo-consumer-secret-not-a-real-one",
    "ACCESS_TOKEN": "2000000001-demoaccesstoken000000001",
    "ACCESS_TOKEN_SECRET": "demo-access-token-secret-not-real",
}


def start(started: list[Process], name: str, args: list[str], env: dict[str, str], ready: str) -> Process:
    """Start a process of the demo, with its log in .demo/, and wait until ``ready`` answers."""
    log = WORK / f"{name}.log"
    log.unlink(missing_ok=True)
    proc = Process(args, env, log, stdin=subprocess.DEVNULL)
    started.append(proc)
    try:
        proc.wait_http(ready, timeout=30)
    except RuntimeError:
        raise SystemExit(f"{name} did not start; see {log}") from None
    return proc


class Chat:
    """The user's side: deliver a line as a message on the current route, print the replies."""

    def __init__(self, emulator_url: str, channel: str) -> None:
        self.emulator_url = emulator_url
        self.http = requests.Session()
        self.http.trust_env = False
        self.seen = 0
        self.channel = channel  # "dm" or "xchat" (X), or another platform's name
        self.base_channel = channel

    def new_replies(self) -> list[str]:
        data = self.http.get(f"{self.emulator_url}/_emulator/sent", params={"after": self.seen}, timeout=5).json()
        self.seen = data["total"]
        return [item["text"] for item in data["sent"]
                if item["participant_id"] == USER_ID and item.get("channel", "dm") == self.channel]

    def switch(self, line: str) -> bool:
        """``/xchat`` and ``/dm`` move the conversation between X Chat and legacy DMs (X only)."""
        word = line.strip().lower()
        if word not in ("/xchat", "/dm") or self.base_channel not in ("dm", "xchat"):
            return False
        self.channel = word[1:]
        print(f"  (now writing as {'an X Chat message, end-to-end encrypted' if word == '/xchat' else 'a legacy DM'})",
              flush=True)
        return True

    def say(self, text: str) -> None:
        route = {"dm": "deliver", "xchat": "chat/deliver"}.get(self.channel, f"{self.channel}/deliver")
        answer = self.http.post(f"{self.emulator_url}/_emulator/{route}", json={"sender_id": USER_ID, "text": text},
                                timeout=15).json()
        if answer.get("webhook_status") != 200:
            print(f"  (the webhook answered {answer.get('webhook_status') or answer.get('error')})")
        deadline = time.monotonic() + REPLY_WAIT
        while time.monotonic() < deadline:
            replies = self.new_replies()
            if replies:
                for reply in replies:
                    show(reply)
                return
            time.sleep(0.1)
        print("bot> (no reply)\n", flush=True)

    def late_replies(self) -> None:
        for reply in self.new_replies():
            show(reply)


def prompt(channel: str) -> str:
    return {"dm": "you> ", "xchat": "you (X Chat)> "}.get(channel, f"you ({channel})> ")


def show(reply: str) -> None:
    lines = reply.splitlines() or [""]
    print("bot> " + lines[0])
    for line in lines[1:]:
        print(("     " + line).rstrip())
    print(flush=True)


def delivery_route(emulator_url: str) -> str:
    """How the emulator will deliver the bot's DMs, from the subscriptions setup made."""
    state = requests.get(f"{emulator_url}/_emulator/state", timeout=5).json()
    routes = [f"as {s['event_type']} events of the X Activity API (subscription {s['subscription_id']}, "
              f"tag {s.get('tag', '-')})" for s in state["activity_subscriptions"]]
    routes += ["in the Account Activity API's envelope" for users in state["subscriptions"].values() if users]
    return "X delivers the bot's DMs " + (" and ".join(routes) or "nowhere: no subscription")


def setup_step(env: dict[str, str], args: list[str], what: str, bot: Process | None = None) -> str | None:
    """``python register_webhook.py ARGS`` as a newcomer runs it, its output shown and returned;
    None when it failed (with why, and the bot's own words when the bot has stopped)."""
    command = ["register_webhook.py", *args]
    print(f"$ python {' '.join(command)}", flush=True)
    done = subprocess.run([str(BIN / "python"), *command], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    for line in done.stdout.splitlines():
        print("  " + line)
    if done.returncode == 0:
        return done.stdout
    print(f"{what} failed:\n{done.stderr}", file=sys.stderr)
    if bot is not None and bot.proc.poll() is not None:  # the likelier cause: say so, with the bot's words
        print(f"the bot has stopped (exit code {bot.proc.returncode}); the end of {bot.log_path}:\n"
              f"{bot.log()[-3000:]}", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", choices=("xaa", "aaa"), default="xaa",
                        help="subscribe through the X Activity API (default) or the Account Activity API")
    parser.add_argument("--channel", default=os.environ.get("CHANNEL") or "x", choices=("x", *platform_modules()),
                        help="the platform to chat on (default x; also the CHANNEL variable: make demo CHANNEL=line)")
    options = parser.parse_args(argv)
    api, channel = options.api, options.channel
    WORK.mkdir(exist_ok=True)
    for old in [*WORK.glob("catbot.sqlite3*"), *WORK.glob("xchat.key*")]:  # the database, its WAL files and
        # journal folder, the X Chat keys of the last run
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    emulator_port, bot_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("X_API_BASE_URL", "REDIS_URL", "SQLITE_PATH", "TRIGGER_PATTERN", "BEARER_TOKEN")}
    env.update(DEMO_CREDENTIALS, X_API_BASE_URL=f"http://127.0.0.1:{emulator_port}",
               SQLITE_PATH=str(WORK / "catbot.sqlite3"), REPLIES_PER_USER_PER_HOUR="60",
               CATBOT_ENV_DIR=str(WORK), PYTHONUNBUFFERED="1")
    started: list[Process] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        print("starting the X emulator (15 DMs per 15 s) and the bot (gunicorn app:app)...", flush=True)
        start(started, "emulator", [str(BIN / "python"), "-m", "x_emulator", "--port", str(emulator_port),
                                    "--dm-limit", "15", "--dm-window", "15"], env,
              f"http://127.0.0.1:{emulator_port}/_emulator/state")
        emulator_url = f"http://127.0.0.1:{emulator_port}"
        if channel == "x":  # X Chat too: the bot's keys made and registered as a newcomer would
            said = setup_step(env, ["xchat-keys", "--out", str(WORK / "xchat.key")], "the X Chat key pair")
            version = re.search(r"XCHAT_KEY_VERSION=(\d+)", said or "")
            if version is None:
                return 1
            env.update(XCHAT_PRIVATE_KEYS=(WORK / "xchat.key").read_text().strip(), XCHAT_KEY_VERSION=version[1])
        else:  # another platform: its settings instead of X's, and the emulator plays it
            for name in DEMO_CREDENTIALS:
                env.pop(name)
            env.update(platform_modules()[channel].DEMO_SETTINGS)
            env.update({f"{channel.upper()}_API_BASE_URL": emulator_url})
        bot = start(started, "bot", [str(BIN / "gunicorn"), "app:app", "-b", f"127.0.0.1:{bot_port}"], env,
                    f"http://127.0.0.1:{bot_port}/healthz")
        if channel == "x":
            webhook = f"http://127.0.0.1:{bot_port}/webhook/twitter"
            if setup_step(env, [*(["--api", "aaa"] if api == "aaa" else []), "setup", webhook], "the set-up",
                          bot) is None:
                return 1
            print(delivery_route(emulator_url), flush=True)
        else:
            requests.post(f"{emulator_url}/_emulator/{channel}/setup", timeout=10,
                          json={"webhook_url": f"http://127.0.0.1:{bot_port}/webhook/{channel}",
                                "settings": platform_modules()[channel].DEMO_SETTINGS}).raise_for_status()
            print(f"the emulator plays {channel} and delivers to http://127.0.0.1:{bot_port}/webhook/{channel}")
        interactive = sys.stdin.isatty()
        where = "a DM to the bot" if channel == "x" else f"a {channel} message to the bot"
        print(f"\nchat as user {USER_ID}: every line is {where} "
              f"(try: hello, help, stop, start{'; /xchat and /dm switch between X Chat and DMs' if channel == 'x' else ''})"
              f"{'; Ctrl-D or Ctrl-C to quit' if interactive else ''}.")
        print(f"bot and emulator logs: {WORK}/bot.log, {WORK}/emulator.log\n", flush=True)
        chat = Chat(emulator_url, "dm" if channel == "x" else channel)
        while True:
            if interactive:
                chat.late_replies()
            try:
                line = input(prompt(chat.channel) if interactive else "")
            except EOFError:
                break
            if not line.strip():
                continue
            if not interactive:
                print(f"you> {line}", flush=True)
            if not chat.switch(line):
                chat.say(line)
        return 0
    except KeyboardInterrupt:
        print()
        return 0
    finally:
        try:
            print("stopping the bot and the emulator...", flush=True)
        except OSError:  # standard output is gone (a closed pipe): stop them all the same
            pass
        for proc in started:
            proc.stop()


if __name__ == "__main__":
    sys.exit(main())
