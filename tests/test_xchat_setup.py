"""The one-time X Chat set-up of register_webhook.py, run as a user runs it (a subprocess), against
the X emulator: ``xchat-keys`` makes and registers the bot's key pair without ever showing its
private keys anywhere but the file (or a terminal), ``setup`` subscribes chat.received when X
Chat is on, and ``status`` says whether X holds the key the bot has."""
import json
import os
import pty
import subprocess
import time
from pathlib import Path

import pytest

from helpers import BOT_ID
from processes import ROOT, VENV_BIN, bot_env, free_port
from catbot.xchat import load_identity

pytestmark = pytest.mark.processes  # every test runs the script in a subprocess
SCRIPT = [str(VENV_BIN / "python"), "register_webhook.py"]


@pytest.fixture
def cli(settings):
    """Run the script; no blob written by any earlier run of this test may reach stderr."""
    blobs: list[str] = []

    def run(*args, **env):
        result = subprocess.run([*SCRIPT, *args], cwd=ROOT, env=bot_env(settings, **env), capture_output=True,
                                text=True, timeout=60)
        assert "Traceback" not in result.stderr, result.stderr
        for blob in blobs:
            assert blob not in result.stderr
        return result
    run.blobs = blobs
    return run


@pytest.fixture
def out(tmp_path) -> Path:
    """Where xchat-keys is told to save the private keys."""
    return tmp_path / "xchat.key"


def keys(cli, out: Path, *args, **env):
    """xchat-keys --out; the blob it saved is then watched for in every later run's stderr."""
    result = cli("xchat-keys", "--out", str(out), *args, **env)
    if out.exists():
        cli.blobs.append(out.read_text().strip())
    return result


def registered(emulator) -> list[dict]:
    with emulator.lock:
        return [dict(k) for k in emulator.chat.public_keys.get(BOT_ID, [])]


def saved_registration(out: Path) -> dict:
    return json.loads(Path(f"{out}.pub.json").read_text())["registration"]


def settings_line(stdout: str, name: str) -> str:
    return next(line.split("=", 1)[1] for line in stdout.splitlines() if line.strip().startswith(name + "="))


def test_xchat_keys_saves_the_private_keys_mode_600_and_registers_the_public_half(cli, out, emulator):
    result = keys(cli, out)
    assert result.returncode == 0, result.stderr
    assert os.stat(out).st_mode & 0o777 == 0o600
    blob = out.read_text().strip()
    assert blob not in result.stdout and blob not in result.stderr
    [key] = registered(emulator)
    sent = saved_registration(out)
    assert {f: key[f] for f in ("public_key", "signing_public_key", "identity_public_key_signature")} == {
        f: sent["public_key"][f] for f in ("public_key", "signing_public_key", "identity_public_key_signature")}
    version = settings_line(result.stdout, "XCHAT_KEY_VERSION")
    assert version == key["public_key_version"]  # X's answer, not the version the SDK proposed
    assert f'XCHAT_PRIVATE_KEYS="$(cat {out})"' in result.stdout
    chat = load_identity(blob, version, BOT_ID)  # what the bot will load from the settings
    assert chat.matches_registered_key(key["public_key"])


def test_xchat_keys_json_carries_the_version_and_never_the_blob(cli, out, emulator):
    result = keys(cli, out, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["changed"] is True
    assert data["result"]["xchat"]["key_version"] == registered(emulator)[0]["public_key_version"]
    assert out.read_text().strip() not in result.stdout


@pytest.mark.parametrize("args", [(), ("--json",)], ids=["plain", "json"])
def test_without_out_and_no_terminal_it_refuses_before_making_anything(cli, emulator, args):
    result = cli("xchat-keys", *args)
    assert result.returncode == 2
    assert "--out FILE" in (result.stderr if not args else json.loads(result.stdout)["error"]["detail"])
    assert registered(emulator) == [] and "XCHAT_PRIVATE_KEYS=" not in result.stdout


def test_on_a_terminal_without_out_the_blob_is_printed_once_to_it_and_nowhere_else(settings, emulator):
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([*SCRIPT, "xchat-keys"], cwd=ROOT, env=bot_env(settings), stdout=terminal,
                            stderr=subprocess.PIPE, text=True)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the script is done
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, stderr
    lines = shown.decode().splitlines()
    [blob] = [line.split("=", 1)[1] for line in lines if line.startswith("XCHAT_PRIVATE_KEYS=")]
    assert blob not in stderr and shown.decode().count(blob) == 1
    chat = load_identity(blob, settings_line(shown.decode(), "XCHAT_KEY_VERSION"), BOT_ID)
    assert chat.matches_registered_key(registered(emulator)[0]["public_key"])


def test_a_429_keeps_the_key_pair_and_a_retry_with_the_same_file_registers_the_same_key(cli, out, emulator):
    with emulator.lock:  # three registrations today already: X's limit
        emulator.chat.registrations[BOT_ID] = [time.time()] * 3
    refused = keys(cli, out)
    assert refused.returncode == 1
    assert "X refused: 429" in refused.stderr
    advice = next(line for line in refused.stderr.splitlines() if line.startswith("next step:"))
    assert "only a few X Chat keys" in advice and f"--out {out}" in advice and " UTC" in advice
    assert registered(emulator) == []
    blob = out.read_text().strip()
    assert blob not in refused.stdout
    with emulator.lock:  # a day later
        emulator.chat.registrations[BOT_ID] = []
    retry = keys(cli, out)
    assert retry.returncode == 0, retry.stderr
    assert "reusing" in retry.stdout and blob not in retry.stdout
    assert out.read_text().strip() == blob
    [key] = registered(emulator)
    assert key["public_key"] == saved_registration(out)["public_key"]["public_key"]
    assert load_identity(blob, key["public_key_version"], BOT_ID).matches_registered_key(key["public_key"])


def test_a_second_run_with_the_same_file_does_not_register_again(cli, out, emulator):
    first = keys(cli, out)
    out.chmod(0o640)
    again = keys(cli, out)
    assert again.returncode == 0, again.stderr
    assert "already holds this key" in again.stdout
    assert f"chmod 600 {out}" in again.stderr  # a saved key pair others may read is named
    assert len(emulator.chat.registrations[BOT_ID]) == 1
    assert settings_line(again.stdout, "XCHAT_KEY_VERSION") == settings_line(first.stdout, "XCHAT_KEY_VERSION")


@pytest.mark.parametrize("pub_json", [False, True], ids=["no-pub-json", "pub-json"])
def test_a_file_that_is_not_a_saved_key_pair_is_never_overwritten(cli, out, emulator, pub_json):
    out.write_text("my notes\n")
    if pub_json:
        Path(f"{out}.pub.json").write_text("{}")
    result = keys(cli, out)
    assert result.returncode == 2 and "never overwrites" in result.stderr
    assert out.read_text() == "my notes\n" and "my notes" not in result.stderr
    assert registered(emulator) == []


# -- setup and status with X Chat on ---------------------------------------------------------------
@pytest.fixture
def xchat_on(cli, out) -> dict[str, str]:
    """The settings xchat-keys told to set, as environment variables for the script."""
    result = keys(cli, out)
    assert result.returncode == 0, result.stderr
    return {"XCHAT_PRIVATE_KEYS": out.read_text().strip(),
            "XCHAT_KEY_VERSION": settings_line(result.stdout, "XCHAT_KEY_VERSION")}


def chat_subscriptions(emulator) -> list[dict]:
    return [s.as_json() for s in emulator.activity_subscriptions.values() if s.event_type == "chat.received"]


def test_setup_with_xchat_on_subscribes_chat_received_once(cli, bot_url, emulator, xchat_on):
    first = cli("setup", bot_url, **xchat_on)
    assert first.returncode == 0, first.stderr
    assert "to chat.received through the X Activity API" in first.stdout
    [hook] = emulator.webhooks.values()
    [sub] = chat_subscriptions(emulator)
    assert {k: sub.get(k) for k in ("filter", "tag", "webhook_id")} == {
        "filter": {"user_id": BOT_ID}, "tag": "catfacts-bot", "webhook_id": hook.id}
    second = cli("setup", bot_url, **xchat_on)
    assert second.returncode == 0 and "nothing to change" in second.stdout
    assert chat_subscriptions(emulator) == [sub]
    assert xchat_on["XCHAT_PRIVATE_KEYS"] not in first.stdout + second.stdout


def test_setup_with_xchat_off_subscribes_no_chat(cli, bot_url, emulator):
    result = cli("setup", bot_url)
    assert result.returncode == 0, result.stderr
    assert "chat" not in result.stdout and chat_subscriptions(emulator) == []


def test_status_says_xchat_is_on_subscribed_and_the_registered_key_matches(cli, bot_url, emulator, xchat_on):
    assert cli("setup", bot_url, **xchat_on).returncode == 0
    result = cli("status", **xchat_on)
    assert result.returncode == 0, result.stderr
    [sub] = chat_subscriptions(emulator)
    assert f"X Chat: on (XCHAT_KEY_VERSION={xchat_on['XCHAT_KEY_VERSION']}" in result.stdout
    assert f"subscribed to chat.received (X Activity API subscription {sub['subscription_id']})" in result.stdout
    assert "it matches XCHAT_PRIVATE_KEYS" in result.stdout
    assert xchat_on["XCHAT_PRIVATE_KEYS"] not in result.stdout
    data = json.loads(cli("--json", "status", **xchat_on).stdout)["result"]["xchat"]
    assert data["key_matches"] is True and data["version_matches"] is True
    assert xchat_on["XCHAT_PRIVATE_KEYS"] not in json.dumps(data)


def test_status_says_when_x_holds_another_key(cli, bot_url, tmp_path, emulator, xchat_on):
    assert keys(cli, tmp_path / "newer.key").returncode == 0  # a newer key registered since
    result = cli("status", **xchat_on)
    assert result.returncode == 0, result.stderr
    assert "does NOT match" in result.stdout
    assert json.loads(cli("--json", "status", **xchat_on).stdout)["result"]["xchat"]["key_matches"] is False


def test_status_with_xchat_off_says_how_to_turn_it_on(cli, emulator):
    result = cli("status")
    assert result.returncode == 0 and "X Chat: off" in result.stdout and "xchat-keys" in result.stdout


def test_xchat_keys_has_help(cli):
    result = cli("xchat-keys", "--help")
    assert result.returncode == 0 and "--out FILE" in result.stdout


def test_unreachable_x_keeps_the_key_pair_and_says_how_to_retry(cli, out):
    result = keys(cli, out, X_API_BASE_URL=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1 and out.exists()
    assert f"--out {out}" in result.stderr and "could not reach X" in result.stderr
