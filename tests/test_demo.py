"""`make demo` as issue 3 states it: piped input, facts, help, stop, silence, start; exit 0; nothing left running.
Since issue 12 it subscribes through the X Activity API, as X's current docs do."""
import os
import subprocess
import sys
import uuid

import pytest

import catfacts
from catbot.replies import HELP_TEXT, START_TEXT, STOP_TEXT
from processes import ROOT


def _started_by(marker: str) -> set[str]:
    """Processes whose environment carries ``marker``: this demo's, and nobody else's (other
    tests and tools on the machine run gunicorn and emulators too)."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker.encode() in f.read():
                    found.add(pid)
        except OSError:
            continue
    return found


def test_demo_chat_from_piped_input():
    marker = f"CATBOT_DEMO_TEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k != "CATFACTS_API_URL"}
    env.update([marker.split("=", 1)])
    env["CATFACTS_API_URL"] = ""  # tests never reach the internet; the demo itself tries catfact.ninja first
    result = subprocess.run([sys.executable, "scripts/demo.py"], cwd=ROOT, env=env, timeout=120,
                            input="hello\nhelp\nstop\nhi\nstart\nanother one\n", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    facts = [fact for fact in catfacts.BUNDLED_FACTS if fact in out]
    assert len(facts) >= 2  # two different facts
    assert HELP_TEXT.splitlines()[0] in out and STOP_TEXT in out and START_TEXT in out
    after_hi = out.split("you> hi\n", 1)[1]
    assert after_hi.startswith("bot> (no reply)")
    assert "registered webhook" in out and "subscribed the bot account" in out
    assert "X delivers the bot's DMs as dm.received events of the X Activity API" in out  # make demo's default
    assert _started_by(marker) == set()  # nothing left running


def test_demo_chats_over_x_chat_end_to_end_encrypted_after_making_the_keys():
    """``/xchat`` switches the conversation to X Chat: the demo made and registered the bot's
    keys with ``register_webhook.py xchat-keys``, and the emulator decrypted each reply as the user."""
    env = {k: v for k, v in os.environ.items() if k != "CATFACTS_API_URL"}
    env["CATFACTS_API_URL"] = ""
    result = subprocess.run([sys.executable, "scripts/demo.py"], cwd=ROOT, env=env, timeout=120,
                            input="/xchat\nhelp\nstop\nhi\nstart\n/dm\nhelp\n", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "register_webhook.py xchat-keys" in out and "to chat.received through the X Activity API" in out
    over_chat = out.split("(now writing as an X Chat message", 1)[1].split("(now writing as a legacy DM", 1)[0]
    assert HELP_TEXT.splitlines()[0] in over_chat and STOP_TEXT in over_chat and START_TEXT in over_chat
    assert over_chat.split("you> hi\n", 1)[1].startswith("bot> (no reply)")
    assert HELP_TEXT.splitlines()[0] in out.split("(now writing as a legacy DM", 1)[1]  # DMs still answered


@pytest.mark.parametrize("channel", ["telegram", "line", "messenger", "dialogflow"])
def test_demo_chats_on_another_platform(channel):
    """``make demo CHANNEL=<platform>``: the bot with only that platform's settings (X's keys
    left out), the emulator playing the platform; the same words work everywhere."""
    marker = f"CATBOT_DEMO_TEST={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items() if k != "CATFACTS_API_URL"}
    env.update([marker.split("=", 1)], CATFACTS_API_URL="")
    result = subprocess.run([sys.executable, "scripts/demo.py", "--channel", channel], cwd=ROOT, env=env,
                            timeout=120, input="hello\nhelp\nstop\nhi\nstart\n", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert any(fact in out for fact in catfacts.BUNDLED_FACTS)
    assert HELP_TEXT.splitlines()[0] in out and STOP_TEXT in out and START_TEXT in out
    assert out.split("you> hi\n", 1)[1].startswith("bot> (no reply)")
    assert _started_by(marker) == set()
