"""`make demo` as issue 3 states it: piped input, facts, help, stop, silence, start; exit 0; nothing left running.
Since issue 12 it subscribes through the X Activity API, as X's current docs do."""
import os
import subprocess
import sys

import catfacts
from catbot.replies import HELP_TEXT, START_TEXT, STOP_TEXT
from processes import ROOT


def _running(pids_before: set[str]) -> set[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines()[1:]
            if ("gunicorn app:app" in line or "x_emulator" in line) and line.split()[0] not in pids_before}


def test_demo_chat_from_piped_input():
    before = _running(set())
    env = {k: v for k, v in os.environ.items() if k != "CATFACTS_API_URL"}
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
    assert _running(before) == set()
