"""Telegram: the bot answers private messages through the Bot API (https://core.telegram.org/bots/api).

At the door: Telegram sends each update as a POST whose ``X-Telegram-Bot-Api-Secret-Token``
header carries the ``secret_token`` given to ``setWebhook`` (``TELEGRAM_SECRET_TOKEN``); it is
compared in constant time before the body is read (missing: 401, wrong: 403). An update holds
one thing: only a ``message`` in a private chat from a person is answered, de-duplicated on the
``update_id`` (per bot). Other update types (``edited_message``, ``callback_query``,
``my_chat_member``...), messages in groups and channels, and messages from bots are
acknowledged and ignored; a message with no text (a photo, a voice note) asks for a fact like a
DM with media. ``/start``, ``/help`` and ``/stop`` (also ``/help@SomeBot``) are the commands;
``/start``, which Telegram sends when a user first opens the bot, is ``start``: a fact for a
new user, "welcome back" for one who had stopped.

A verified update that cannot be read is acknowledged (200) and counted as malformed: Telegram
repeats every update not answered 2xx, so a 400 would only bring the same bytes back.

At the far end: ``sendMessage`` to the user's chat (in a private chat its id is the user's).
A 429 carries ``parameters.retry_after``: the reply waits that long; 403 (the user blocked the
bot) and 400 (chat not found) are final; 5xx and network failures are retried. The bot token is
in the path of every call, so no URL is ever logged or put in an error.
"""
from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping
from urllib.parse import urlsplit

import requests

from catbot.channels import Answer, Channel, Parsed, PlatformRefused, json_object, same_secret
from catbot.outbound import Outcome, SendResult
from catbot.replies import Intent, classify
from catbot.store import Batch, Inbound, Store
from catbot.xclient import DEFAULT_RETRY_AFTER, is_loopback

if TYPE_CHECKING:
    from catbot.settings import Settings

KIND = "telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
DEFAULT_API_BASE_URL = "https://api.telegram.org"
TIMEOUT = 10.0  # seconds per Bot API call: X_TIMEOUT's default (a sender is built without Settings)
MAX_TEXT = 4096  # Telegram's own message length limit; longer text is cut before any regex sees it
ALLOWED_UPDATES = ("message",)  # what set-webhook asks Telegram for: nothing else is ever answered
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")  # setWebhook's rule for secret_token
_TOKEN = re.compile(r"([1-9][0-9]{0,19}):[A-Za-z0-9_-]{20,100}")  # <bot id>:<secret part>, as @BotFather gives it
_COMMAND = re.compile(r"/([A-Za-z0-9_]{1,32})(?:@[A-Za-z0-9_]{1,64})?")  # /help or /help@SomeBot
COMMANDS = {"start": Intent.START, "help": Intent.HELP, "stop": Intent.STOP}
# What a person can send in a message (Message's content fields). A message with none of them is
# a service message (a pinned message, an auto-delete timer...): acknowledged, never answered.
CONTENT = frozenset({"text", "photo", "sticker", "animation", "audio", "document", "video", "video_note", "voice",
                     "contact", "location", "venue", "poll", "dice", "game", "story", "paid_media", "checklist"})
MAX_ID = 2**53  # Telegram's ids fit in 52 bits (a double), whatever the client language


# -- settings -----------------------------------------------------------------------------------------
def setting_problems(values: Mapping[str, str]) -> list[str]:
    """What is wrong with the settings, in words that never quote a secret."""
    problems = []
    if not _TOKEN.fullmatch(values.get("TELEGRAM_BOT_TOKEN", "")):
        problems.append("TELEGRAM_BOT_TOKEN must be the token @BotFather gave: the bot's id, a colon, then "
                        "letters, digits, _ and -")
    if not _SECRET.fullmatch(values.get("TELEGRAM_SECRET_TOKEN", "")):
        problems.append("TELEGRAM_SECRET_TOKEN must be 1-256 characters, each A-Z, a-z, 0-9, _ or - "
                        "(Telegram's rule for setWebhook's secret_token)")
    base = values.get("TELEGRAM_API_BASE_URL", DEFAULT_API_BASE_URL)
    if not re.match(r"^https?://[^/\s]+", base):
        problems.append("TELEGRAM_API_BASE_URL must be an http(s) URL")
    return problems


def bot_id_of(token: str) -> str:
    """The bot's own user id: the number before the colon of its token."""
    return token.split(":", 1)[0]


def account(bot_id: str) -> str:
    """The store's account for this bot's messages, apart from X's (ids of the two could meet)."""
    return f"{KIND}:{bot_id}"


# -- reading an update ----------------------------------------------------------------------------------
def _id(value: Any) -> int | None:
    """A Telegram id or update id: a positive JSON integer (never a bool, a string or a float)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < MAX_ID else None


def is_own_message(sender: Mapping[str, Any], bot_id: str) -> bool:
    """True for a message the bot itself sent. Telegram does not echo a bot's messages to it
    today; if it ever does, answering them would make the bot talk to itself forever."""
    return str(sender.get("id")) == bot_id


def is_private(chat: Mapping[str, Any], sender_id: int) -> bool:
    """A one-to-one chat with the sender. A private chat's id is its user's id; Telegram's own
    oldest published sample has no ``type``, so its absence is read from the ids alone."""
    return chat.get("type", "private") == "private" and _id(chat.get("id")) == sender_id


def command_intent(text: str) -> Intent | None:
    """``/start``, ``/help`` or ``/stop`` as the message's first word (``/help@SomeBot`` too, and
    ``/start <deep-link payload>``), else None: the text is classified like any other."""
    words = text.split(maxsplit=1)
    match = _COMMAND.fullmatch(words[0]) if words else None
    return COMMANDS.get(match.group(1).lower()) if match else None


def intent_of(message: Mapping[str, Any], trigger: re.Pattern[str] | None) -> Intent:
    """A text's intent, or a caption's for media (media alone asks for a fact, like a DM with media)."""
    text = message.get("text") if "text" in message else message.get("caption")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise ValueError("message text is not a string")
    text = text[:MAX_TEXT]
    return command_intent(text) or classify(text, trigger)


def _message(update_id: int, message: Any, bot_id: str, trigger: re.Pattern[str] | None) -> Inbound | str:
    """The record of a message update, or why it is not answered (``own`` or an activity name).
    Raises ValueError for a message without a usable sender or chat."""
    if not isinstance(message, dict):
        raise ValueError("message is not an object")
    sender, chat = message.get("from"), message.get("chat")
    if not isinstance(sender, dict) or not isinstance(chat, dict):
        raise ValueError("message without from or chat")
    sender_id = _id(sender.get("id"))
    if sender_id is None:
        raise ValueError("message without a usable sender id")
    if is_own_message(sender, bot_id):
        return "own"
    if sender.get("is_bot") is True:
        return "bot_message"
    if not is_private(chat, sender_id):
        return "message_in_" + str(chat.get("type") or "other_chat")[:20]
    if not CONTENT & message.keys():
        return "service_message"
    date = message.get("date")
    created_ms = date * 1000 if _id(date) else 0
    return Inbound(KIND, account(bot_id), str(sender_id), str(update_id), intent_of(message, trigger), created_ms)


def parse_update(update: Any, bot_id: str, trigger: re.Pattern[str] | None) -> Parsed:
    """What one update holds for the bot: at most one message to answer. Never raises."""
    parsed = Parsed()
    update_id = _id(update.get("update_id")) if isinstance(update, dict) else None
    if update_id is None:
        parsed.malformed += 1
        return parsed
    if "message" not in update:
        kinds = sorted(k for k in update if isinstance(k, str) and k != "update_id")
        parsed.other.append(kinds[0][:40] if kinds else "unknown")
        return parsed
    try:
        found = _message(update_id, update["message"], bot_id, trigger)
    except ValueError:
        parsed.malformed += 1
        return parsed
    if isinstance(found, Inbound):
        parsed.messages.append(found)
    elif found == "own":
        parsed.own += 1
    else:
        parsed.other.append(found)
    return parsed


# -- the Bot API -------------------------------------------------------------------------------------
class BotAPI:
    """``POST {base}/bot<token>/<method>`` with a JSON body. The token is in every URL, so a
    failure is only ever described by its type, never by requests' message (which quotes it)."""

    def __init__(self, token: str, base_url: str, session: requests.Session | None = None,
                 timeout: float = TIMEOUT) -> None:
        self._prefix = f"{base_url.rstrip('/')}/bot{token}/"
        self.timeout = timeout
        self.http = session or requests.Session()
        if is_loopback(base_url):
            self.http.trust_env = False  # no proxy between the bot and a local emulator

    def call(self, method: str, params: Mapping[str, Any]) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """(HTTP status, the answer's JSON object or {}, headers). Raises requests.RequestException."""
        response = self.http.post(self._prefix + method, json=dict(params), timeout=self.timeout)
        return response.status_code, json_object(response.content) or {}, response.headers


MAX_RETRY_AFTER = 3600.0  # seconds a 429 may hold one chat's reply at most


def retry_after(body: Mapping[str, Any], headers: Mapping[str, str]) -> float:
    """Seconds a 429 says to wait: ``parameters.retry_after`` (documented), else a Retry-After
    header, else a minute (never spin)."""
    parameters = body.get("parameters")
    for value in (parameters.get("retry_after") if isinstance(parameters, dict) else None,
                  headers.get("Retry-After")):
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if 0 < seconds:  # an odd answer of days must not park a user's reply (and their stop) for days
            return min(seconds, MAX_RETRY_AFTER)
    return DEFAULT_RETRY_AFTER


def send_result(status: int, body: Mapping[str, Any], headers: Mapping[str, str], now: float) -> SendResult:
    """What a ``sendMessage`` answer means for the reply. A 429 reports no rate window: the
    store's budget is shared with X, and a wait for one Telegram chat must not hold X's DMs."""
    detail = str(body.get("description") or "")[:300]
    if status == 429:
        return SendResult(Outcome.RATE_LIMITED, status, detail, now + retry_after(body, headers))
    if status >= 500:
        return SendResult(Outcome.RETRY, status, detail or f"HTTP {status}")
    if status >= 300 or body.get("ok") is False:  # 403 blocked by the user, 400 chat not found, 401 token
        return SendResult(Outcome.REJECTED, status, detail or f"HTTP {status}")
    result = body.get("result")
    message_id = result.get("message_id") if isinstance(result, dict) else None
    return SendResult(Outcome.SENT, status, message_id=None if message_id is None else str(message_id)[:40])


class TelegramSender:
    """Sends a reply with ``sendMessage``; never raises for Telegram's or the network's failures."""

    def __init__(self, api: BotAPI, clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.clock = clock

    def send(self, batch: Batch, text: str) -> SendResult:
        now = self.clock()
        try:
            status, body, headers = self.api.call("sendMessage", {"chat_id": batch.user_id, "text": text})
        except requests.RequestException as exc:
            return SendResult(Outcome.RETRY, None, type(exc).__name__)
        except (ValueError, UnicodeError) as exc:  # a URL requests cannot build (TELEGRAM_API_BASE_URL): final
            return SendResult(Outcome.REJECTED, None, f"cannot call the Bot API ({type(exc).__name__}); "
                              "check TELEGRAM_API_BASE_URL")
        return send_result(status, body, headers, now)


# -- the channel --------------------------------------------------------------------------------------
class TelegramChannel(Channel):
    name = KIND
    kind = KIND
    required = ("TELEGRAM_BOT_TOKEN", "TELEGRAM_SECRET_TOKEN")
    optional = {"TELEGRAM_API_BASE_URL": DEFAULT_API_BASE_URL}
    secrets = frozenset({"TELEGRAM_BOT_TOKEN", "TELEGRAM_SECRET_TOKEN"})
    setup_commands: ClassVar[Mapping[str, str]] = {
        "set-webhook": "point the bot's webhook at URL, with TELEGRAM_SECRET_TOKEN, for messages only",
        "info": "the webhook Telegram has: URL, updates waiting, the last delivery error",
        "delete-webhook": "stop Telegram's deliveries (updates wait at Telegram, up to 24 hours)",
    }

    @classmethod
    def problems(cls, values: Mapping[str, str]) -> list[str]:
        """Settings problems for ``api_config`` to name at start (see :func:`setting_problems`)."""
        return setting_problems(values)

    def __init__(self, values: Mapping[str, str]) -> None:
        values = {"TELEGRAM_API_BASE_URL": DEFAULT_API_BASE_URL, **values}
        problems = setting_problems(values)
        if problems:  # the seam's settings check does not know Telegram's rules: stop here, as clearly
            raise ValueError("telegram settings: " + "; ".join(problems))
        super().__init__(values)
        self.bot_id = bot_id_of(values["TELEGRAM_BOT_TOKEN"])

    def api(self) -> BotAPI:
        return BotAPI(self.setting("TELEGRAM_BOT_TOKEN"), self.setting("TELEGRAM_API_BASE_URL"))

    # -- the door -------------------------------------------------------------------------------------
    def verify(self, headers: Mapping[str, str], body: bytes) -> Answer | None:
        given = headers.get(SECRET_HEADER)
        if not given:
            return Answer.refused(401, "missing secret token")
        if not same_secret(given, self.setting("TELEGRAM_SECRET_TOKEN")):
            return Answer.refused(403, "invalid secret token")
        return None

    def parse(self, body: bytes, settings: "Settings") -> Parsed:
        return parse_update(json_object(body), self.bot_id, settings.trigger_regex)

    # -- the far end ----------------------------------------------------------------------------------
    def sender(self, store: Store, clock: Callable[[], float]) -> TelegramSender:
        return TelegramSender(self.api(), clock)

    # -- set-up ---------------------------------------------------------------------------------------
    @classmethod
    def add_setup_arguments(cls, command: str, parser: Any) -> None:
        if command == "set-webhook":
            parser.add_argument("url", metavar="URL", help="https://<app>.herokuapp.com/webhook/telegram")

    def run_setup(self, command: str, args: Any, report: Any) -> None:
        api = self.api()
        if command == "set-webhook":
            self._set_webhook(api, args.url, report)
        elif command == "info":
            self._info(api, report)
        elif command == "delete-webhook":
            before = _setup_call(api, "getWebhookInfo", {})
            _setup_call(api, "deleteWebhook", {"drop_pending_updates": False})
            report.changed = bool(before.get("url"))
            report.result = {"url": "", "was": before.get("url") or ""}
            report.say("webhook deleted" if report.changed else "no webhook was set")
        else:
            raise ValueError(f"unknown telegram set-up command {command!r}")

    def _set_webhook(self, api: BotAPI, url: str, report: Any) -> None:
        parts = urlsplit(url)
        if not parts.path.rstrip("/").endswith("/webhook/telegram"):
            report.warn(f"the bot listens at /webhook/telegram, and {parts.path or '/'} is not that")
        _setup_call(api, "setWebhook", {"url": url, "secret_token": self.setting("TELEGRAM_SECRET_TOKEN"),
                                        "allowed_updates": list(ALLOWED_UPDATES), "drop_pending_updates": False})
        report.changed = True  # Telegram never shows the secret back, so setting it again is the only check
        report.say(f"webhook set: {url} (messages only, with TELEGRAM_SECRET_TOKEN)")
        self._info(api, report)

    def _info(self, api: BotAPI, report: Any) -> None:
        me = _setup_call(api, "getMe", {})
        info = _setup_call(api, "getWebhookInfo", {})
        report.result = {"bot": {"id": me.get("id"), "username": me.get("username")},
                         **{key: info.get(key) for key in ("url", "pending_update_count", "allowed_updates",
                                                            "last_error_date", "last_error_message")}}
        report.say(f"bot: @{me.get('username')} (id {me.get('id')})")
        report.say(f"webhook: {info.get('url') or '(none)'}; updates waiting: {info.get('pending_update_count', 0)}")
        if not info.get("url"):
            report.warn("no webhook is set: run `register_webhook.py telegram set-webhook URL`")
        if info.get("last_error_message"):
            when = info.get("last_error_date")
            report.warn(f"Telegram's last delivery error{f' (at {when})' if when else ''}: "
                        f"{str(info['last_error_message'])[:200]}")
        allowed = info.get("allowed_updates")
        if info.get("url") and allowed and "message" not in allowed:
            report.warn("the webhook does not receive messages: run set-webhook again")


ADVICE = {
    401: "TELEGRAM_BOT_TOKEN is wrong or was revoked: @BotFather's /mybots -> your bot -> API Token",
    404: "TELEGRAM_BOT_TOKEN is not a bot token, or TELEGRAM_API_BASE_URL is not the Bot API",
    400: "the webhook URL must be https:// on port 443, 80, 88 or 8443 (e.g. https://<app>.herokuapp.com/webhook/telegram)",
    429: "Telegram asks to wait: try again in a minute",
}


def _setup_call(api: BotAPI, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """A set-up call's ``result`` (an object, or {} for a bare True); PlatformRefused otherwise."""
    try:
        status, body, _ = api.call(method, params)
    except requests.RequestException as exc:
        raise PlatformRefused(None, "unreachable", f"{method}: {type(exc).__name__}",
                              "check the network, or TELEGRAM_API_BASE_URL") from None
    if status == 200 and body.get("ok") is True:
        result = body.get("result")
        return result if isinstance(result, dict) else {}
    description = str(body.get("description") or f"HTTP {status}")[:300]
    advice = ADVICE.get(status, "try again later" if status >= 500 else "")
    raise PlatformRefused(status, method, description, advice)


CHANNEL = TelegramChannel
