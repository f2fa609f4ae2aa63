"""Every platform at once through real gunicorn (issue 14's "Done when"): one deployment with
X and all four channels on, the emulator playing each platform. Each verification failure mode
is refused (401/403) by the real server and nothing is sent; the platforms' own echoes and
system events are never answered; then a real message on each platform gets its fact, which
shows the silence before was the bot's choice and not a broken set-up. (Each platform's
conversation, redelivery and SIGKILL tests are in tests/test_channel_<name>_processes.py.)"""
import json
import time

import pytest
import requests

from catbot.replies import FACT_OPENERS
from helpers import wait_until
from processes import Deployment
from x_emulator.platforms import platform_modules

CHANNELS = ("telegram", "line", "messenger", "dialogflow")


@pytest.fixture
def everywhere(settings, emulator, tmp_path):
    """gunicorn with X and every channel on (the demo's made-up settings), set up at the emulator."""
    env = {}
    for name in CHANNELS:
        env.update(platform_modules()[name].DEMO_SETTINGS, **{f"{name.upper()}_API_BASE_URL": emulator.url})
    deployment = Deployment(settings, emulator, tmp_path, REPLAY_ON_START="false", **env)
    web = deployment.web(embedded=True)
    for name in CHANNELS:
        requests.post(f"{emulator.url}/_emulator/{name}/setup", timeout=10, json={
            "webhook_url": f"{web.url}/webhook/{name}", "settings": platform_modules()[name].DEMO_SETTINGS,
        }).raise_for_status()
    yield web
    deployment.stop()


def _refusals(emulator, web) -> dict[str, list[int]]:
    """Each platform's deliveries with a missing or wrong proof of origin, as the server answers them."""
    telegram, line = emulator.platform("telegram"), emulator.platform("line")
    messenger, dialogflow = emulator.platform("messenger"), emulator.platform("dialogflow")
    update = telegram.update("message", telegram.message("3000000901", "hi"))
    line_body = line.body([line.message("3000000902", "hi")])
    meta = messenger.envelope([messenger.message_event("5000000000000903", "hi")])
    turn = json.dumps(dialogflow.request_body("3000000904", "es", {"text": "hi"}, "cat.fact", "r-1")).encode()
    to_dialogflow = f"{web.url}/webhook/dialogflow"
    return {
        "telegram": [telegram.post(update, secret="").status_code, telegram.post(update, secret="wrong").status_code],
        "line": [line.post(line_body, signature="").status_code,
                 line.post(line_body, signature="not base64!").status_code,
                 line.post(line_body, signature="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").status_code],
        "messenger": [messenger.post(meta, headers={"Content-Type": "application/json"}).status_code,
                      messenger.post(meta, headers={"X-Hub-Signature-256": "md5=abc"}).status_code,
                      messenger.post(meta, headers={"X-Hub-Signature-256": "sha256=" + "0" * 64}).status_code,
                      requests.get(f"{web.url}/webhook/messenger", timeout=10, params={
                          "hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "123"}).status_code],
        "dialogflow": [requests.post(to_dialogflow, data=turn, timeout=10).status_code,
                       requests.post(to_dialogflow, data=turn, timeout=10, auth=("catfacts-demo", "wrong")).status_code],
    }


def test_each_verification_failure_is_refused_by_the_real_server_and_nothing_is_sent(everywhere, emulator):
    assert _refusals(emulator, everywhere) == {"telegram": [401, 403], "line": [401, 401, 403],
                                               "messenger": [401, 401, 403, 403], "dialogflow": [401, 403]}
    time.sleep(2)  # a consumer runs in each gunicorn worker: a reply would be out by now
    assert emulator.sent == []


def test_echoes_and_system_events_are_never_answered_and_real_messages_are(everywhere, emulator):
    telegram, line = emulator.platform("telegram"), emulator.platform("line")
    messenger, dialogflow = emulator.platform("messenger"), emulator.platform("dialogflow")
    for kind in ("own_message", "bot_message", "group_message", "edited_message", "my_chat_member"):
        # to the URL itself: Telegram would not even send the last two (allowed_updates)
        assert telegram.post(telegram.event(kind), url=f"{everywhere.url}/webhook/telegram").status_code == 200
    for kind in ("join", "postback", "unsend"):
        assert line.deliver_other(kind, "3000000912")[1].status_code == 200
    assert messenger.deliver_echo("5000000000000913").status_code == 200
    for kind in ("delivery", "read", "reaction", "standby"):
        assert messenger.deliver_system(kind, "5000000000000913").status_code == 200
    welcome = dialogflow.deliver_event("3000000914")
    assert welcome.webhook_status == 200 and welcome.text is None  # the agent's own response plays
    time.sleep(2)
    assert emulator.sent == []
    for name in CHANNELS:  # the same set-up answers a user's message on each platform
        answer = requests.post(f"{emulator.url}/_emulator/{name}/deliver", timeout=15,
                               json={"sender_id": "3000000920", "text": "hello"}).json()
        assert answer["webhook_status"] == 200, (name, answer)
    assert wait_until(lambda: {m.channel for m in emulator.sent} == set(CHANNELS), 20), emulator.sent
    assert all(m.text.split("\n", 1)[0] in FACT_OPENERS for m in emulator.sent)
