"""Telegram's Bot API, played for the bot: the calls it makes (``/bot<token>/<method>``), its
webhook, and simulated users who write to it.

What is Telegram's behaviour (https://core.telegram.org/bots/api, /bots/webhooks, /bots/faq):

- every call is ``/bot<token>/<method>`` (method names case-insensitive), with parameters in the
  query string, a form or a JSON body; the answer is ``{"ok": true, "result": ...}`` or
  ``{"ok": false, "error_code", "description"[, "parameters"]}`` with the same HTTP status;
  an unknown token gets 401 ``Unauthorized``, an unknown method 404 ``Not Found``;
- ``sendMessage`` (``chat_id``, ``text`` of 1-4096 characters) answers the sent Message; a user
  who blocked the bot gets 403 ``Forbidden: bot was blocked by the user``; a chat the bot has
  never seen, 400 ``Bad Request: chat not found``; too many messages, 429 with
  ``parameters.retry_after`` (about one message per second per chat, 30 per second overall);
- ``setWebhook`` (``url``, ``secret_token`` of 1-256 ``A-Za-z0-9_-``, ``allowed_updates``,
  ``drop_pending_updates``), ``deleteWebhook``, ``getWebhookInfo`` (``url``,
  ``has_custom_certificate``, ``pending_update_count``, and when set ``last_error_date``,
  ``last_error_message``, ``max_connections``, ``allowed_updates``); ``setWebhook`` does not
  call the URL; each delivery carries ``X-Telegram-Bot-Api-Secret-Token``; only the update
  types in ``allowed_updates`` are delivered; an update not answered 2xx stays pending;
- an update is the shape of Telegram's published samples (/bots/webhooks, "Testing your bot
  with updates"), with ``is_bot`` in ``from`` as the current API sends it; ``update_id`` grows
  by one per update.

What is the emulator's choice:

- ``http://`` webhook URLs and any port are accepted on loopback hosts only (Telegram: https on
  443, 80, 88 or 8443); refusal wordings are the emulator's where Telegram's are not published;
- a failed delivery is not retried by itself: it counts as pending until a test redelivers it;
- the rate limits: :attr:`State.per_chat` messages per chat and :attr:`State.overall` in all in
  any one second (bursts Telegram tolerates in private chats); ``Faults.rate_limited`` forces
  429s; ``Faults.errors_5xx`` answers 502 with an nginx HTML page, as Telegram's front does.
"""
from __future__ import annotations

import itertools
import json
import secrets
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from catbot.channels.telegram import SECRET_HEADER
from catbot.xclient import is_loopback
from x_emulator.area import emulator
from x_emulator.records import SentDM

if TYPE_CHECKING:
    from x_emulator.server import XEmulator

NAME = "telegram"
DEMO_SETTINGS = {"TELEGRAM_BOT_TOKEN": "7000000001:AAEdemoTokenNotReal-0123456789abcdefg",
                 "TELEGRAM_SECRET_TOKEN": "demo-telegram-secret-not-real-0001"}
BOT_NAME, BOT_USERNAME = "Cat Facts", "catfacts_bot"
WEBHOOK_PORTS = (443, 80, 88, 8443)
MAX_TEXT = 4096
NGINX_502 = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway" \
            "</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n</body>\r\n</html>\r\n"
# Update types a test can deliver besides a user's message (see State.event).
EVENTS = ("edited_message", "channel_post", "callback_query", "my_chat_member", "bot_message", "group_message",
          "own_message", "service_message")

bp = Blueprint(NAME, __name__)


@dataclass
class Faults:
    latency: float = 0.0  # seconds added before answering a sendMessage
    errors_5xx: int = 0  # the next N sends answer 502
    rate_limited: int = 0  # the next N sends answer 429 with ``retry_after``
    retry_after: int = 3
    blocked: set[str] = field(default_factory=set)  # users who blocked the bot (403)


class State:
    """What Telegram remembers of the bot, guarded by ``XEmulator.lock``."""

    def __init__(self, em: XEmulator) -> None:
        self.em = em
        self.token = ""  # the bot's token: calls with another get 401
        self.webhook_url = ""
        self.secret_token = ""
        self.allowed_updates: list[str] = []  # empty: every type but a few Telegram leaves out
        self.last_error: tuple[int, str] | None = None
        self.pending: dict[int, bytes] = {}  # updates whose delivery failed, by id
        self.delivered: dict[int, bytes] = {}  # every update posted, as posted (for redelivery)
        self.chats: set[str] = set()  # users who have written to the bot: the chats it may write to
        self.faults = Faults()
        self.send_attempts = 0  # sendMessage calls with the right token, counted before any refusal
        self.per_chat, self.overall = 5, 30  # messages per second (see the module docstring)
        self._sends: deque[tuple[float, str]] = deque()
        self._update_ids = itertools.count(700_000_001 + secrets.randbelow(10**8))
        self._message_ids = itertools.count(1)
        self._http = requests.Session()
        self._http.trust_env = False

    # -- set-up -----------------------------------------------------------------------------------------
    @property
    def bot_id(self) -> int:
        return int(self.token.split(":", 1)[0]) if self.token else 0

    def setup(self, webhook_url: str | None = None, settings: Mapping[str, str] | None = None) -> None:
        """Know the bot (its token) and, with ``webhook_url``, set its webhook as
        ``register_webhook.py telegram set-webhook`` would (secret, messages only)."""
        settings = settings or DEMO_SETTINGS
        with self.em.lock:
            self.token = settings["TELEGRAM_BOT_TOKEN"]
            if webhook_url:
                self.webhook_url, self.secret_token = webhook_url, settings["TELEGRAM_SECRET_TOKEN"]
                self.allowed_updates = ["message"]

    def webhook_info(self) -> dict[str, Any]:
        """``getWebhookInfo``'s result."""
        with self.em.lock:
            info: dict[str, Any] = {"url": self.webhook_url, "has_custom_certificate": False,
                                    "pending_update_count": len(self.pending) if self.webhook_url else 0}
            if self.webhook_url:
                info["max_connections"] = 40
                if self.last_error:
                    info["last_error_date"], info["last_error_message"] = self.last_error
                if self.allowed_updates:
                    info["allowed_updates"] = list(self.allowed_updates)
            return info

    # -- simulated users write ----------------------------------------------------------------------------
    def _user(self, user_id: int, is_bot: bool = False) -> dict[str, Any]:
        return {"id": user_id, "is_bot": is_bot, "first_name": "Test Firstname", "last_name": "Test Lastname",
                "username": f"user{user_id}"}

    def message(self, sender_id: str | int, text: str | None = "hi", *, media: bool = False,
                chat: dict[str, Any] | None = None, sender: dict[str, Any] | None = None) -> dict[str, Any]:
        """A Message in the shape of Telegram's published "Message with text" sample."""
        user = sender or self._user(int(sender_id))
        body: dict[str, Any] = {
            "message_id": next(self._message_ids), "from": user,
            "chat": chat or {"id": user["id"], "first_name": user["first_name"], "last_name": user["last_name"],
                             "username": user["username"], "type": "private"},
            "date": int(time.time())}
        if media:
            body["photo"] = [{"file_id": "AgACAgQAAxkBAAM" + secrets.token_urlsafe(16), "file_unique_id":
                              secrets.token_urlsafe(8), "width": 90, "height": 90, "file_size": 1234}]
            if text:
                body["caption"] = text
        elif text is not None:
            body["text"] = text
            if text.startswith("/"):
                body["entities"] = [{"offset": 0, "length": len(text.split()[0]), "type": "bot_command"}]
        return body

    def update(self, kind: str, content: dict[str, Any]) -> dict[str, Any]:
        return {"update_id": next(self._update_ids), kind: content}

    def event(self, kind: str, sender_id: str | int = 3000000002) -> dict[str, Any]:
        """An update of another kind (:data:`EVENTS`): what Telegram sends beside users' messages,
        and what the bot must acknowledge and leave unanswered."""
        uid = int(sender_id)
        if kind == "edited_message":
            return self.update(kind, {**self.message(uid, "edited"), "edit_date": int(time.time())})
        if kind == "channel_post":
            chat = {"id": -1001000000001, "title": "Cat channel", "type": "channel"}
            post = {"message_id": next(self._message_ids), "sender_chat": chat, "chat": chat,
                    "date": int(time.time()), "text": "a channel post"}
            return self.update(kind, post)
        if kind == "callback_query":
            return self.update(kind, {"id": str(uid) + "0001", "from": self._user(uid), "chat_instance": "-1",
                                      "data": "button", "message": self.message(self.bot_id, "buttons",
                                                                                sender=self._user(self.bot_id, True))})
        if kind == "my_chat_member":
            me = self._user(self.bot_id, True)
            return self.update(kind, {"chat": self.message(uid)["chat"], "from": self._user(uid),
                                      "date": int(time.time()), "old_chat_member": {"user": me, "status": "member"},
                                      "new_chat_member": {"user": me, "status": "kicked", "until_date": 0}})
        if kind == "bot_message":
            return self.update("message", self.message(uid, "beep", sender=self._user(uid, is_bot=True)))
        if kind == "own_message":
            me = self._user(self.bot_id, True)
            return self.update("message", self.message(uid, "my own", sender=me, chat=self.message(uid)["chat"]))
        if kind == "group_message":
            group = {"id": -1001000000002, "title": "Cat lovers", "type": "supergroup"}
            return self.update("message", self.message(uid, "/help@" + BOT_USERNAME, chat=group))
        if kind == "service_message":
            service = self.message(uid, None)
            service["message_auto_delete_timer_changed"] = {"message_auto_delete_time": 86400}
            return self.update("message", service)
        raise ValueError(f"event is one of {EVENTS}, not {kind!r}")

    def deliver(self, sender_id: str | int, text: str | None = "hi", *, media: bool = False,
                url: str | None = None) -> tuple[str, requests.Response | None]:
        """A private message from a simulated user; (its update id, the webhook's answer). Without
        ``url``, to the webhook set (None: Telegram would not deliver it: no webhook)."""
        update = self.update("message", self.message(sender_id, text, media=media))
        with self.em.lock:
            self.chats.add(str(int(sender_id)))
        return str(update["update_id"]), self.post(update, url)

    def post(self, update: dict[str, Any] | bytes, url: str | None = None,
             secret: str | None = None) -> requests.Response | None:
        """Post an update as Telegram does: to ``url``, or to the webhook when its
        ``allowed_updates`` let the type through (else None, nothing sent); with the secret
        header (``secret``: another value, "" for none). Non-2xx answers leave it pending."""
        body = update if isinstance(update, bytes) else json.dumps(update).encode()
        update_id = update.get("update_id") if isinstance(update, dict) else _update_id(body)
        with self.em.lock:
            to = url or self.webhook_url
            allowed = set(self.allowed_updates)
            if not to or (not url and allowed and isinstance(update, dict) and not update.keys() & allowed):
                return None
            self.delivered[update_id] = body
            secret = self.secret_token if secret is None else secret
        headers = {"Content-Type": "application/json", **({SECRET_HEADER: secret} if secret else {})}
        try:
            answer = self._http.post(to, data=body, headers=headers, timeout=10)
        except requests.RequestException as exc:
            self._failed(update_id, body, type(exc).__name__)
            raise
        if 200 <= answer.status_code < 300:
            with self.em.lock:
                self.pending.pop(update_id, None)
        else:
            self._failed(update_id, body, f"Wrong response from the webhook: {answer.status_code} {answer.reason}")
        return answer

    def _failed(self, update_id: Any, body: bytes, why: str) -> None:
        with self.em.lock:
            self.last_error = (int(time.time()), why)
            self.pending[update_id] = body

    def redeliver(self, update_id: str | int, url: str | None = None) -> requests.Response | None:
        """Deliver an update again, byte for byte (Telegram repeats what was not answered 2xx)."""
        with self.em.lock:
            body = self.delivered[int(update_id)]
        return self.post(body, url)

    def replies(self, user_id: str | int) -> list[str]:
        return [dm.text for dm in self.em.sent_to(str(user_id)) if dm.channel == NAME]

    # -- the bot sends ------------------------------------------------------------------------------------
    def send_message(self, params: Mapping[str, Any]) -> tuple[int, dict[str, Any] | str]:
        """``sendMessage``: (status, answer). The token was checked."""
        with self.em.lock:
            self.send_attempts += 1
            latency = self.faults.latency
        if latency:
            time.sleep(latency)
        chat_id, text = str(params.get("chat_id") or ""), params.get("text")
        with self.em.lock:
            if self.faults.errors_5xx > 0:
                self.faults.errors_5xx -= 1
                return self._refuse(chat_id, 502, "injected", NGINX_502)
            if not chat_id:
                return self._refuse(chat_id, 400, "Bad Request: chat_id is empty")
            if not isinstance(text, str) or not text.strip():
                return self._refuse(chat_id, 400, "Bad Request: message text is empty")
            if len(text) > MAX_TEXT:
                return self._refuse(chat_id, 400, "Bad Request: message is too long")
            if chat_id not in self.chats:
                return self._refuse(chat_id, 400, "Bad Request: chat not found")
            if chat_id in self.faults.blocked:
                return self._refuse(chat_id, 403, "Forbidden: bot was blocked by the user")
            now = time.time()
            wait = self._limited(chat_id, now)
            if wait:
                return self._refuse(chat_id, 429, f"Too Many Requests: retry after {wait}",
                                    parameters={"retry_after": wait})
            self._sends.append((now, chat_id))
            message_id = next(self._message_ids)
            self.em.record_sent(SentDM(chat_id, text, str(message_id), now, channel=NAME))
        me = self._user(self.bot_id, True)
        del me["last_name"]
        return 200, {"message_id": message_id, "from": {**me, "first_name": BOT_NAME, "username": BOT_USERNAME},
                     "chat": {"id": int(chat_id), "first_name": "Test Firstname", "type": "private"},
                     "date": int(now), "text": text}

    def _limited(self, chat_id: str, now: float) -> int:
        """Seconds to wait when this send would break a limit (or a 429 is forced), else 0."""
        if self.faults.rate_limited > 0:
            self.faults.rate_limited -= 1
            return self.faults.retry_after
        while self._sends and self._sends[0][0] <= now - 1:
            self._sends.popleft()
        if len(self._sends) >= self.overall or sum(c == chat_id for _, c in self._sends) >= self.per_chat:
            return 1
        return 0

    def _refuse(self, chat_id: str, status: int, description: str, body: str | None = None,
                parameters: dict[str, Any] | None = None) -> tuple[int, dict[str, Any] | str]:
        self.em.rejected.append({"participant_id": chat_id, "status": status, "reason": description,
                                 "at": time.time(), "channel": NAME})
        if body is not None:
            return status, body
        return status, error(status, description, parameters)


def _update_id(body: bytes) -> Any:
    try:
        return json.loads(body).get("update_id")
    except (ValueError, AttributeError):
        return None


def error(status: int, description: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Bot API's error answer."""
    return {"ok": False, "error_code": status, "description": description, **({"parameters": parameters}
                                                                              if parameters else {})}


def state() -> State:
    return emulator().platform(NAME)


# -- routes: the Bot API --------------------------------------------------------------------------------
def _params() -> dict[str, Any]:
    """Parameters in any of the four ways the Bot API takes them; lists (``allowed_updates``)
    arrive JSON-serialized in a query or a form."""
    params: dict[str, Any] = dict(request.args.items())
    params.update(request.form.items())
    body = request.get_json(silent=True) if request.is_json else None
    if isinstance(body, dict):
        params.update(body)
    if isinstance(params.get("allowed_updates"), str):
        try:
            params["allowed_updates"] = json.loads(params["allowed_updates"])
        except ValueError:
            params["allowed_updates"] = None
    return params


def _answer(status: int, result: Any, description: str | None = None) -> ResponseReturnValue:
    if isinstance(result, str):  # a front-end page, not the Bot API's JSON
        return Response(result, status=status, content_type="text/html")
    if status != 200:
        return jsonify(result), status
    return jsonify({"ok": True, "result": result, **({"description": description} if description else {})})


@bp.route("/bot<token>/<method>", methods=["GET", "POST"])
def bot_api(token: str, method: str) -> ResponseReturnValue:
    st = state()
    with st.em.lock:
        known = bool(st.token) and secrets.compare_digest(token.encode(), st.token.encode())
    if not known:
        return jsonify(error(401, "Unauthorized")), 401
    params = _params()
    call = {"getme": lambda: (200, {"id": st.bot_id, "is_bot": True, "first_name": BOT_NAME, "username": BOT_USERNAME,
                                    "can_join_groups": True, "can_read_all_group_messages": False,
                                    "supports_inline_queries": False}),
            "sendmessage": lambda: st.send_message(params),
            "getwebhookinfo": lambda: (200, st.webhook_info()),
            "setwebhook": lambda: _set_webhook(st, params),
            "deletewebhook": lambda: _set_webhook(st, {**params, "url": ""})}.get(method.lower())
    if call is None:
        return jsonify(error(404, "Not Found")), 404
    status, result, *description = call()
    return _answer(status, result, *description)


def _set_webhook(st: State, params: Mapping[str, Any]) -> tuple[int, Any, str]:
    url, secret = str(params.get("url") or ""), params.get("secret_token")
    allowed = params.get("allowed_updates")
    if url:
        parts = urlsplit(url)
        loopback = is_loopback(url)
        if parts.scheme != "https" and not (loopback and parts.scheme == "http"):
            return 400, error(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"), ""
        if not loopback and (parts.port or 443) not in WEBHOOK_PORTS:
            return 400, error(400, "Bad Request: bad webhook: Webhook can be set up only on ports 80, 88, 443 "
                                   "or 8443"), ""
    if secret is not None and not (isinstance(secret, str) and 0 < len(secret) <= 256
                                   and all(c.isascii() and (c.isalnum() or c in "_-") for c in secret)):
        return 400, error(400, "Bad Request: secret token contains unallowed characters"), ""
    if allowed is not None and not (isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)):
        return 400, error(400, "Bad Request: can't parse allowed updates"), ""
    with st.em.lock:
        was = st.webhook_url
        if params.get("drop_pending_updates") in (True, "true", "True", "1"):
            st.pending.clear()
        if not url:
            st.webhook_url, st.secret_token, st.last_error = "", "", None
            return 200, True, "Webhook was deleted" if was else "Webhook is already deleted"
        st.webhook_url, st.secret_token = url, secret or ""
        if allowed is not None:
            st.allowed_updates = list(allowed)
        return 200, True, "Webhook is already set" if was == url else "Webhook was set"


# -- routes: the emulator's own control ------------------------------------------------------------------
@bp.post(f"/_emulator/{NAME}/setup")
def control_setup() -> ResponseReturnValue:
    """Know the bot by ``settings`` and, with ``webhook_url``, deliver there with its secret."""
    body = request.get_json(force=True)
    settings = body.get("settings") or DEMO_SETTINGS
    if not isinstance(settings, dict) or not settings.get("TELEGRAM_BOT_TOKEN"):
        return jsonify(error="settings need TELEGRAM_BOT_TOKEN (and TELEGRAM_SECRET_TOKEN with a webhook_url)"), 400
    state().setup(body.get("webhook_url"), settings)
    return jsonify(webhook=state().webhook_info(), bot_id=state().bot_id)


@bp.post(f"/_emulator/{NAME}/deliver")
def control_deliver() -> ResponseReturnValue:
    """A private message from a simulated user (``media``: a photo, ``text`` its caption), or
    with ``event`` one of :data:`EVENTS`; 409 when nothing takes it (no webhook, unreachable)."""
    body = request.get_json(force=True)
    try:
        if body.get("event"):
            update = state().event(str(body["event"]), str(body.get("sender_id") or 3000000002))
            event_id, answer = str(update["update_id"]), state().post(update, body.get("url"))
        else:
            event_id, answer = state().deliver(str(body["sender_id"]), body.get("text", ""),
                                               media=bool(body.get("media")), url=body.get("url"))
    except (KeyError, ValueError) as exc:
        return jsonify(error=str(exc)), 400
    except requests.RequestException as exc:
        return jsonify(error=type(exc).__name__), 409
    if answer is None:
        return jsonify(error="no webhook takes it: set one (POST /_emulator/telegram/setup) first"), 409
    return jsonify(event_id=event_id, webhook_status=answer.status_code)


@bp.post(f"/_emulator/{NAME}/redeliver")
def control_redeliver() -> ResponseReturnValue:
    """Deliver update ``event_id`` again, byte for byte."""
    body = request.get_json(force=True)
    try:
        answer = state().redeliver(body["event_id"], body.get("url"))
    except (KeyError, ValueError):
        return jsonify(error="no such update delivered"), 404
    except requests.RequestException as exc:
        return jsonify(error=type(exc).__name__), 409
    return jsonify(webhook_status=None if answer is None else answer.status_code)


@bp.post(f"/_emulator/{NAME}/faults")
def control_faults() -> ResponseReturnValue:
    """Replace every injected fault at once: a field left out is cleared."""
    body = request.get_json(force=True)
    st = state()
    with st.em.lock:
        st.faults = Faults(latency=float(body.get("latency", 0)), errors_5xx=int(body.get("errors_5xx", 0)),
                           rate_limited=int(body.get("rate_limited", 0)), retry_after=int(body.get("retry_after", 3)),
                           blocked={str(u) for u in body.get("blocked", [])})
        faults = {**asdict(st.faults), "blocked": sorted(st.faults.blocked)}
    return jsonify(faults=faults)
