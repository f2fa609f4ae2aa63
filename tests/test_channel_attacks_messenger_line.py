"""Attacks on, and bad luck for, the Messenger and LINE channels (a security review).

Each test here reproduces a way a requirement of the channels did not hold, found by an
adversarial review (an attacker's input, or an odd answer of the platform); each failed before
its fix. Found and left as documented (a timeout after the platform accepted is retried, as for
X; a crash after LINE took a reply is the one duplicate window): docs/architecture.md. They drive
the bot in-process as tests/test_channel_messenger.py and tests/test_channel_line.py do: the
emulator plays Meta and LINE on loopback, the bot is served on a loopback port, its reply job is
run in the test's thread (``drain``) and its clock can run ahead (``bot.later``).
"""
import json
import logging
import time
from types import SimpleNamespace

import pytest

from catbot.channels import PlatformRefused
from catbot.channels.line import REPLY_TOKEN_SECONDS
from catbot.channels.messenger import DEFAULT_GRAPH_VERSION, GraphAPI, MessengerChannel, MessengerSender, sign
from catbot.outbound import Outcome
from catbot.replies import Intent
from catbot.store import Batch
from helpers import captured, drain, runtime_of
from register_webhook import Report
from x_emulator.platforms.messenger import DEMO_SETTINGS as MESSENGER_CONSOLE, encode

M_USER = "5000000000000001"
M_TOKEN = MESSENGER_CONSOLE["MESSENGER_PAGE_ACCESS_TOKEN"]
M_SECRET = MESSENGER_CONSOLE["MESSENGER_APP_SECRET"]
L_USER = "3000000901"
L_SECRET = "0123456789abcdef0123456789abcdef"
L_TOKEN = "test-line-channel-access-token-0001"
LINE_CONSOLE = {"LINE_CHANNEL_SECRET": L_SECRET, "LINE_CHANNEL_ACCESS_TOKEN": L_TOKEN}


def messenger_values(emulator, **more: str) -> dict[str, str]:
    return {**MESSENGER_CONSOLE, "MESSENGER_API_BASE_URL": emulator.url,
            "MESSENGER_GRAPH_VERSION": DEFAULT_GRAPH_VERSION, **more}


def line_values(emulator, **more: str) -> dict[str, str]:
    return {**LINE_CONSOLE, "LINE_API_BASE_URL": emulator.url, "LINE_PUSH_FALLBACK": "false", **more}


@pytest.fixture
def make_bot(emulator, settings, serve):
    """The bot with the channels given on, served on loopback, the emulator's platforms set up
    to deliver to it. ``senders(clock)``, if given, builds the runtime's senders."""
    def make(channels: dict, senders=None):
        bot = serve(settings.replace(channels=channels), senders)
        bot.messenger, bot.line = emulator.platform("messenger"), emulator.platform("line")
        if "messenger" in channels:
            bot.messenger.setup(bot.url + "/webhook/messenger", MESSENGER_CONSOLE)
        if "line" in channels:
            bot.line.configure(bot.url + "/webhook/line", LINE_CONSOLE)
        return bot
    return make


def line_replies(emulator, user: str = L_USER) -> list[str]:
    return [m.text for m in emulator.sent_to(user) if m.channel == "line"]


def line_say(bot, text: str, user: str = L_USER) -> str:
    event_id, answer = bot.line.deliver(user, text)
    assert answer.status_code == 200
    return event_id


def post_messenger(bot, delivery: dict):
    body = encode(delivery)
    return bot.client.post("/webhook/messenger", data=body,
                           headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(M_SECRET, body)})


class ProcessKilled(BaseException):
    """The process dies (SIGKILL, an OOM kill, a dyno restart) right after the platform took the reply."""


class DiesOnceAfterSending:
    """A sender whose process is killed once, right after its send reached the platform: the
    store never hears that the reply went out."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.died = False

    def open(self, batch):
        return self.inner.open(batch)

    def send(self, batch, text):
        result = self.inner.send(batch, text)
        if not self.died:
            self.died = True
            raise ProcessKilled()
        return result


# -- LINE: the push fallback sends twice ----------------------------------------------------------
def test_line_a_reply_whose_answer_was_lost_is_not_pushed_again_once_the_token_is_old(make_bot, emulator):
    """LINE sent the reply and answered 500 (or the read timed out). The retry comes after the
    token's minute by the bot's clock (the first try was late in the minute under a backlog, the
    back-off took it past 53 s): the sender pushes the same reply a second time, because only the
    "Invalid reply token" path looks at ``batch.attempts``, not the "expired" one."""
    bot = make_bot({"line": line_values(emulator, LINE_PUSH_FALLBACK="true")})
    bot.line.faults.errors_5xx_after = 1
    line_say(bot, "hi")
    drain(bot.app)
    assert len(line_replies(emulator)) == 1  # LINE took the reply; the bot heard a 500
    bot.later[0] = REPLY_TOKEN_SECONDS
    drain(bot.app)
    assert len(line_replies(emulator)) == 1 and bot.line.pushes == 0, line_replies(emulator)


# -- LINE: a send that never reached LINE is counted as sent ---------------------------------------
def test_line_a_reply_that_never_reached_line_is_not_counted_as_sent(make_bot, emulator):
    """An access token pasted with an invisible character (U+200B) cannot go into a header:
    http.client raises UnicodeEncodeError (a ValueError) before anything is sent. ``_call``
    takes every ValueError for "a 2xx whose body the SDK refuses" and says SENT: the message is
    closed as answered, ``reply.sent`` is logged, and the operator never learns the token is bad."""
    bot = make_bot({"line": line_values(emulator, LINE_CHANNEL_ACCESS_TOKEN=L_TOKEN + "\u200b")})
    with captured("catbot.replier") as logs:
        line_say(bot, "hi")
        drain(bot.app)
    assert bot.line.replies == 0 and line_replies(emulator) == []  # nothing reached LINE
    assert not [line for line in logs.lines if "event=reply.sent" in line], logs.lines


# -- Messenger: a reply Meta took is sent again ----------------------------------------------------
# -- Messenger: the Page token in the log ------------------------------------------------------------
ECHOED = {"error": {"message": f"Malformed access token {M_TOKEN}", "type": "OAuthException", "code": 190,
                    "fbtrace_id": "AbCdEf0123"}}


def test_messenger_a_page_token_meta_echoes_in_its_error_is_never_logged(make_bot, emulator, monkeypatch):
    """Meta repeats a malformed token in its 190 error ("Malformed access token EAA..."), e.g.
    one pasted cut short. ``classify_answer`` puts Meta's message in the detail, and the reply job
    logs it: the Page token is in the log."""
    bot = make_bot({"messenger": messenger_values(emulator)})
    monkeypatch.setattr(GraphAPI, "call", lambda self, *args, **kwargs: (400, ECHOED, {}))
    with captured("catbot", logging.DEBUG) as logs:
        bot.messenger.deliver(M_USER, "hi")
        drain(bot.app)
    assert any("reply.rejected" in line for line in logs.lines)
    assert not [line for line in logs.lines if M_TOKEN in line], [l for l in logs.lines if "reply." in l]


def test_messenger_set_up_never_repeats_a_page_token_meta_echoes(emulator, monkeypatch):
    """The same echo in ``register_webhook.py messenger status``: PlatformRefused's detail,
    which the command prints (and ``--json`` returns), holds the token."""
    monkeypatch.setattr(GraphAPI, "call", lambda self, *args, **kwargs: (400, ECHOED, {}))
    with pytest.raises(PlatformRefused) as refused:
        MessengerChannel(messenger_values(emulator)).run_setup("status", SimpleNamespace(), Report(as_json=True))
    shown = " ".join([str(refused.value), refused.value.detail, refused.value.advice])
    assert M_TOKEN not in shown, shown


# -- Messenger: the Page's own rate limit stops every channel -------------------------------------------
def test_a_messenger_rate_limit_does_not_hold_up_another_channels_reply(make_bot, emulator):
    """Meta's pause is the Page's alone (the sender says so), but the sender reports it as
    RATE_LIMITED, which the reply job takes for the shared budget: the pass stops with
    ``budget_until`` set to Meta's pause (an hour here), and in the embedded default the consumer
    imports no new journal line until then (only the minute sweep does). A LINE user waiting
    behind a Messenger user is not answered in the pass; their reply token lasts a minute."""
    bot = make_bot({"messenger": messenger_values(emulator), "line": line_values(emulator)})
    bot.messenger.faults.rate_limited, bot.messenger.faults.regain_minutes = 1, 60
    bot.messenger.deliver(M_USER, "hi")
    line_say(bot, "hi")
    result = runtime_of(bot.app).replier.run_pass()
    assert len(line_replies(emulator)) == 1, (result, line_replies(emulator))


# -- Messenger: the sender raises ------------------------------------------------------------------------
def test_messenger_sender_never_raises_for_a_token_it_cannot_send(emulator):
    """A Page token pasted with an invisible character: requests raises UnicodeEncodeError,
    which is no RequestException, out of ``send`` (whose contract is never to raise): the pass
    dies with the claim held, and the batch comes back every lease until the window closes."""
    api = GraphAPI(messenger_values(emulator, MESSENGER_PAGE_ACCESS_TOKEN=M_TOKEN + "\u200b"))
    at = int(time.time() * 1000)
    batch = Batch("messenger", "messenger:104000000000001", M_USER, "t", (1,), (Intent.FACT,),
                  (json.dumps({"at": at}),), False, 0, 0, 0)
    result = MessengerSender(api).send(batch, "a fact")
    assert result.outcome is not Outcome.SENT


# -- Messenger: cross-account confusion -------------------------------------------------------------------
# -- a stop that is not honoured ----------------------------------------------------------------------
