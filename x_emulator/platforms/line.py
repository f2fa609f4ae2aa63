"""LINE, as the bot sees it: the Messaging API routes it calls (reply, push, the webhook
endpoint's set, get and test), and simulated users whose events the emulator delivers to the
bot's webhook, signed as LINE signs them.

What is LINE's behaviour (developers.line.biz Messaging API reference, line/line-openapi):

- ``X-Line-Signature`` is ``base64(HMAC-SHA256(channel secret, raw body))``; the body is UTF-8
  JSON ``{"destination": <bot user id>, "events": [...]}``; the test call sends
  ``{"destination": ..., "events": []}`` and reports ``success, timestamp, statusCode, reason,
  detail``;
- event shapes (``webhookEventId`` a ULID, ``deliveryContext.isRedelivery``, ``mode``,
  ``source``, ``replyToken``; none on ``unfollow``, ``leave``, ``unsend``), as in the SDK's
  published samples (line-bot-sdk-python tests/v3/text/webhook.json);
- a reply token works once, within a minute (:attr:`State.token_ttl`), else 400 ``Invalid reply
  token``; the API takes ``Authorization: Bearer <channel access token>`` (else 401); error
  bodies are ``{"message": ..., "details": [...]}``; 429 ``The API rate limit has been
  exceeded. Try again later.`` (no header says when); a push counts against the monthly quota
  (429 ``You have reached your monthly limit.``); a push's ``X-Line-Retry-Key`` (a UUID) seen
  before answers 409 with ``X-Line-Accepted-Request-Id``; a push to a user id that cannot be
  reached answers 400 ``Failed to send messages``.

What is the emulator's choice (LINE does not document it, or it does not matter offline):

- ids: a caller names users as it likes (``"3000000042"``); the emulator gives each a LINE-shaped
  id (``U`` + 32 hex, :meth:`State.line_id`) and records replies under the caller's name;
- a user who unfollowed (blocked the bot) cannot be pushed to (400, as an unknown user);
- the wording of the 400s for a bad body, a bad endpoint URL and a missing endpoint; an http://
  endpoint is accepted for loopback hosts (LINE wants https); the test reports a refused
  connection as ``statusCode`` -1, ``reason`` ``could_not_connect`` (the names of LINE's webhook
  error statistics);
- the send rate limit: :attr:`State.limit` calls per :attr:`State.window` seconds (LINE: 2,000
  a second), and :class:`LineFaults` (latency, 5xx, 429, the 5xx after the send, unreachable
  users); deliveries wait up to 10 s for the bot (LINE gives up after 2 s).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import requests
from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from x_emulator.area import emulator
from x_emulator.records import SentDM

if TYPE_CHECKING:
    from x_emulator.server import XEmulator

NAME = "line"
BOT_USER_ID = "U5a1e0c47ca7f0c75bd1e2e45c1a7b0e1"  # the bot's user id: every delivery's destination
DEMO_SETTINGS = {  # made up; the demo gives them to the bot and to /_emulator/line/setup
    "LINE_CHANNEL_SECRET": "d3m0c4f3d3m0c4f3d3m0c4f3d3m0c4f3",
    "LINE_CHANNEL_ACCESS_TOKEN": "demo-line-channel-access-token-not-a-real-one-0001",
    "LINE_PUSH_FALLBACK": "true",
}
MAX_TEXT = 5000
RATE_LIMITED = "The API rate limit has been exceeded. Try again later."
MONTHLY_LIMIT = "You have reached your monthly limit."
INVALID_REPLY_TOKEN = "Invalid reply token"
UNREACHABLE = "Failed to send messages"
UNAUTHORIZED = "Authentication failed. Confirm that the access token in the authorization header is valid."
LINE_ID = re.compile(r"U[0-9a-f]{32}")
MESSAGE_TYPES = ("text", "sticker", "image")
OTHER_EVENTS = ("postback", "join", "leave", "memberJoined", "memberLeft", "unsend", "videoPlayComplete", "beacon",
                "accountLink")
NO_REPLY_TOKEN = {"unfollow", "leave", "memberLeft", "unsend"}
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

bp = Blueprint(NAME, __name__)


@dataclass
class LineFaults:
    latency: float = 0.0  # seconds added before a reply or push is handled
    errors_5xx: int = 0  # the next N replies or pushes answer 500, sending nothing
    errors_5xx_after: int = 0  # the next N replies or pushes are sent, then answer 500 (the answer lost)
    burst_429: int = 0  # the next N replies or pushes answer 429
    unreachable: set[str] = field(default_factory=set)  # users (callers' names) a push cannot reach


@dataclass
class ReplyToken:
    user: str  # LINE id
    issued_at: float
    used: bool = False


def sign(secret: str, body: bytes) -> str:
    """``X-Line-Signature`` as LINE computes it."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def ulid() -> str:
    """A ULID (48-bit milliseconds, 80 random bits, Crockford base32), as ``webhookEventId`` is."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


class State:
    """What LINE remembers for one channel, guarded by ``XEmulator.lock``."""

    def __init__(self, em: XEmulator) -> None:
        self.em = em
        self.secret = ""
        self.access_token = ""
        self.bot_user_id = BOT_USER_ID
        self.endpoint = ""
        self.active = True  # "Use webhook" in the console
        self.strict_urls = False  # True: only https:// endpoints, as LINE
        self.token_ttl = 60.0
        self.limit, self.window = 2000, 1.0
        self.window_start, self.window_count = time.time(), 0
        self.push_quota: int | None = None  # messages left this month; None: no limit
        self.faults = LineFaults()
        self.tokens: dict[str, ReplyToken] = {}
        self.retry_keys: dict[str, tuple[str, list[dict[str, str]]]] = {}  # key -> (request id, sent)
        self.callers: dict[str, str] = {}  # LINE id -> the caller's name for the user
        self.blocked: set[str] = set()  # LINE ids of users who unfollowed
        self.delivered: dict[str, bytes] = {}  # webhookEventId -> the body that carried it
        self.replies = self.pushes = self.rejected = self.tests = 0  # calls received (pushes: accepted)
        self._http = requests.Session()
        self._http.trust_env = False

    # -- set-up --------------------------------------------------------------------------------
    def configure(self, webhook_url: str | None, settings: dict[str, str]) -> None:
        """Where the bot listens, and the channel's secrets (the console's values)."""
        with self.em.lock:
            self.secret = settings.get("LINE_CHANNEL_SECRET", self.secret)
            self.access_token = settings.get("LINE_CHANNEL_ACCESS_TOKEN", self.access_token)
            if webhook_url:
                self.endpoint = webhook_url

    def line_id(self, user: str) -> str:
        """The LINE user id of a simulated user named ``user`` (kept as it is if it is one)."""
        line_id = user if LINE_ID.fullmatch(user) else "U" + hashlib.md5(user.encode()).hexdigest()
        with self.em.lock:
            self.callers.setdefault(line_id, user)
        return line_id

    # -- events ----------------------------------------------------------------------------------
    def event(self, event_type: str, user: str, *, source: str = "user", mode: str = "active",
              **fields: Any) -> dict[str, Any]:
        """One webhook event of ``user`` (a caller's name), with a reply token when LINE gives one."""
        line_id = self.line_id(user)
        where: dict[str, Any] = {"type": source, "userId": line_id}
        if source in ("group", "room"):
            where = {"type": source, f"{source}Id": source[0].upper() + hashlib.md5(user.encode()).hexdigest(),
                     "userId": line_id}
        event: dict[str, Any] = {"type": event_type, "mode": mode, "timestamp": int(time.time() * 1000),
                                 "source": where, "webhookEventId": ulid(), "deliveryContext": {"isRedelivery": False}}
        if event_type not in NO_REPLY_TOKEN:
            token = secrets.token_hex(16)
            with self.em.lock:
                self.tokens[token] = ReplyToken(line_id, time.time())
            event["replyToken"] = token
        return {**event, **fields}

    def message(self, user: str, text: str = "", message_type: str = "text", **options: Any) -> dict[str, Any]:
        """A ``message`` event: text, a sticker or an image (LINE's sample fields)."""
        content: dict[str, Any] = {"id": str(self.em.next_id()), "type": message_type,
                                   "quoteToken": secrets.token_urlsafe(24)}
        if message_type == "text":
            content["text"] = text
        elif message_type == "sticker":
            content.update(packageId="446", stickerId="1988", stickerResourceType="STATIC", keywords=["cat"])
        elif message_type == "image":
            content["contentProvider"] = {"type": "line"}
        else:
            raise ValueError(f"message_type is one of {MESSAGE_TYPES}, not {message_type!r}")
        return self.event("message", user, message=content, **options)

    def other_event(self, event_type: str, user: str) -> dict[str, Any]:
        """An event of a type the bot does not answer (LINE's sample fields); follow and
        unfollow change whether the user can be pushed to."""
        members = {"members": [{"type": "user", "userId": self.line_id(user)}]}
        extra: dict[str, Any] = {
            "postback": {"postback": {"data": "action=buy&itemid=111"}},
            "join": {"source": "group"}, "leave": {"source": "group"},
            "memberJoined": {"source": "group", "joined": members}, "memberLeft": {"source": "group", "left": members},
            "unsend": {"unsend": {"messageId": str(self.em.next_id())}},
            "videoPlayComplete": {"videoPlayComplete": {"trackingId": "track-id"}},
            "beacon": {"beacon": {"hwid": "d41d8cd98f", "type": "enter"}},
            "accountLink": {"link": {"result": "ok", "nonce": secrets.token_urlsafe(16)}},
        }.get(event_type, {})
        line_id = self.line_id(user)
        if event_type == "follow":
            with self.em.lock:
                extra = {"follow": {"isUnblocked": line_id in self.blocked}}
                self.blocked.discard(line_id)
        elif event_type == "unfollow":
            with self.em.lock:
                self.blocked.add(line_id)
        elif event_type not in OTHER_EVENTS:
            raise ValueError(f"unknown event type {event_type!r}")
        source = extra.pop("source", "user")
        return self.event(event_type, user, source=source, **extra)

    # -- deliveries ------------------------------------------------------------------------------
    def body(self, events: list[dict[str, Any]]) -> bytes:
        """A delivery's body as LINE writes it (UTF-8, not ASCII-escaped)."""
        return json.dumps({"destination": self.bot_user_id, "events": events}, ensure_ascii=False).encode()

    def post(self, body: bytes, url: str | None = None, signature: str | None = None,
             timeout: float = 10.0) -> requests.Response:
        """POST ``body`` to the webhook, signed with the channel secret unless ``signature`` says
        otherwise (``""``: no signature header at all)."""
        url = url or self.endpoint
        if not url:
            raise RuntimeError("LINE has no webhook URL: POST /_emulator/line/setup (or set-endpoint) first")
        signature = sign(self.secret, body) if signature is None else signature
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "LineBotWebhook/2.0"}
        if signature:
            headers["X-Line-Signature"] = signature
        return self._http.post(url, data=body, headers=headers, timeout=timeout)

    def deliver_events(self, events: list[dict[str, Any]], url: str | None = None) -> requests.Response:
        """One delivery of ``events``; each is kept for :meth:`redeliver`."""
        body = self.body(events)
        with self.em.lock:
            for event in events:
                self.delivered[event["webhookEventId"]] = body
        return self.post(body, url)

    def deliver(self, user: str, text: str = "", *, message_type: str = "text", url: str | None = None,
                **options: Any) -> tuple[str, requests.Response]:
        """A message from ``user``; (its webhookEventId, the webhook's answer)."""
        event = self.message(user, text, message_type, **options)
        return event["webhookEventId"], self.deliver_events([event], url)

    def deliver_other(self, event_type: str, user: str, url: str | None = None) -> tuple[str, requests.Response]:
        """A follow, unfollow or an event the bot does not answer; (its id, the webhook's answer)."""
        event = self.other_event(event_type, user)
        return event["webhookEventId"], self.deliver_events([event], url)

    def redeliver(self, event_id: str, url: str | None = None, *, as_redelivery: bool = False) -> requests.Response:
        """The delivery that carried ``event_id`` again: byte for byte (a retry of the same
        POST), or with ``as_redelivery`` as LINE's webhook redelivery makes it (the same
        ``webhookEventId``, ``deliveryContext.isRedelivery`` true)."""
        with self.em.lock:
            body = self.delivered[event_id]
        if as_redelivery:
            delivery = json.loads(body)
            delivery["events"] = [{**e, "deliveryContext": {"isRedelivery": True}} for e in delivery["events"]
                                  if e["webhookEventId"] == event_id]
            body = json.dumps(delivery, ensure_ascii=False).encode()
        return self.post(body, url)

    # -- the API's side ----------------------------------------------------------------------------
    def sent(self, line_id: str, texts: list[str]) -> list[dict[str, str]]:
        """Record the messages as received by the user. Lock held."""
        sent = []
        for text in texts:
            message_id = str(self.em.next_id())
            self.em.record_sent(SentDM(self.callers.get(line_id, line_id), text, message_id, time.time(), channel=NAME))
            sent.append({"id": message_id, "quoteToken": secrets.token_urlsafe(24)})
        return sent

    def refusal(self) -> tuple[int, str] | None:
        """An injected fault or the rate limit, counted; None when the call may go on. Lock held."""
        now = time.time()
        if now >= self.window_start + self.window:
            self.window_start, self.window_count = now, 0
        self.window_count += 1
        if self.faults.errors_5xx > 0:
            self.faults.errors_5xx -= 1
            return 500, "An internal server error occurred"
        if self.faults.burst_429 > 0 or self.window_count > self.limit:
            self.faults.burst_429 = max(0, self.faults.burst_429 - 1)
            return 429, RATE_LIMITED
        return None

    def answer_lost(self) -> bool:
        """An injected 5xx after the send. Lock held."""
        if self.faults.errors_5xx_after > 0:
            self.faults.errors_5xx_after -= 1
            return True
        return False


def _state() -> State:
    return emulator().platform(NAME)


def _error(status: int, message: str, details: list[dict[str, str]] | None = None) -> ResponseReturnValue:
    body: dict[str, Any] = {"message": message}
    if details:
        body["details"] = details
    return jsonify(body), status


def _authorized(st: State) -> bool:
    given = request.headers.get("Authorization", "")
    return bool(st.access_token) and hmac.compare_digest(given.encode(), f"Bearer {st.access_token}".encode())


def _texts(body: Any) -> tuple[list[str] | None, list[dict[str, str]]]:
    """The texts of a request's ``messages`` (1 to 5 text messages), or why not."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not 1 <= len(messages) <= 5:
        return None, [{"message": "Size must be between 1 and 5", "property": "messages"}]
    texts = []
    for i, message in enumerate(messages):
        text = message.get("text") if isinstance(message, dict) and message.get("type") == "text" else None
        if not isinstance(text, str) or not 0 < len(text) <= MAX_TEXT:
            return None, [{"message": f"Length must be between 1 and {MAX_TEXT}", "property": f"messages[{i}].text"}]
        texts.append(text)
    return texts, []


def _sending(st: State) -> tuple[Any, ResponseReturnValue | None]:
    """The checks a reply and a push share, in LINE's order: the token, the body, latency."""
    if not _authorized(st):
        return None, _error(401, UNAUTHORIZED)
    body = request.get_json(silent=True)
    texts, details = _texts(body)
    if texts is None:
        return None, _error(400, f"The request body has {len(details)} error(s)", details)
    if st.faults.latency:
        time.sleep(st.faults.latency)
    return (body, texts), None


@bp.post("/v2/bot/message/reply")
def reply() -> ResponseReturnValue:
    em, st = emulator(), _state()
    with em.lock:
        st.replies += 1
    checked, refused = _sending(st)
    if refused:
        return refused
    body, texts = checked
    with em.lock:
        if (fault := st.refusal()) is not None:
            return _error(*fault)
        token = st.tokens.get(body.get("replyToken")) if isinstance(body.get("replyToken"), str) else None
        if token is None or token.used or time.time() - token.issued_at > st.token_ttl:
            st.rejected += 1
            return _error(400, INVALID_REPLY_TOKEN)
        token.used = True
        sent = st.sent(token.user, texts)
        if st.answer_lost():
            return _error(500, "An internal server error occurred")
    return jsonify(sentMessages=sent)


@bp.post("/v2/bot/message/push")
def push() -> ResponseReturnValue:
    em, st = emulator(), _state()
    checked, refused = _sending(st)
    if refused:
        return refused
    body, texts = checked
    key = request.headers.get("X-Line-Retry-Key")
    try:
        key = None if key is None else str(uuid.UUID(key))
    except ValueError:
        return _error(400, "The value of the X-Line-Retry-Key header is invalid")
    with em.lock:
        if key in st.retry_keys:
            request_id, sent = st.retry_keys[key]
            response = jsonify(message="The retry key is already accepted", sentMessages=sent)
            response.headers["X-Line-Accepted-Request-Id"] = request_id
            return response, 409
        if (fault := st.refusal()) is not None:
            return _error(*fault)
        to = body.get("to") if isinstance(body.get("to"), str) else ""
        if st.push_quota is not None and st.push_quota < len(texts):
            return _error(429, MONTHLY_LIMIT)
        if to not in st.callers or to in st.blocked or st.callers[to] in st.faults.unreachable:
            st.rejected += 1
            return _error(400, UNREACHABLE)
        sent = st.sent(to, texts)
        st.pushes += 1
        if st.push_quota is not None:
            st.push_quota -= len(texts)
        request_id = str(uuid.uuid4())
        if key:
            st.retry_keys[key] = (request_id, sent)
        if st.answer_lost():
            return _error(500, "An internal server error occurred")
    response = jsonify(sentMessages=sent)
    response.headers["X-Line-Request-Id"] = request_id
    return response


def _acceptable(st: State, url: Any) -> bool:
    if not isinstance(url, str) or len(url) > 500:
        return False
    if url.startswith("https://"):
        return True
    host = re.match(r"http://([^/:]+)", url)
    return not st.strict_urls and host is not None and host.group(1) in ("127.0.0.1", "localhost")


@bp.get("/v2/bot/channel/webhook/endpoint")
def get_endpoint() -> ResponseReturnValue:
    st = _state()
    if not _authorized(st):
        return _error(401, UNAUTHORIZED)
    return jsonify(endpoint=st.endpoint, active=st.active)


@bp.put("/v2/bot/channel/webhook/endpoint")
def set_endpoint() -> ResponseReturnValue:
    em, st = emulator(), _state()
    if not _authorized(st):
        return _error(401, UNAUTHORIZED)
    body = request.get_json(silent=True)
    url = body.get("endpoint") if isinstance(body, dict) else None
    if not _acceptable(st, url):
        return _error(400, "Invalid webhook endpoint URL (an https:// URL of at most 500 characters)")
    with em.lock:
        st.endpoint = url
    return jsonify({})


@bp.post("/v2/bot/channel/webhook/test")
def test_endpoint() -> ResponseReturnValue:
    """LINE's verify request to the endpoint (or the one given), signed, and what came back."""
    em, st = emulator(), _state()
    if not _authorized(st):
        return _error(401, UNAUTHORIZED)
    body = request.get_json(silent=True) or {}
    url = body.get("endpoint") if isinstance(body, dict) and body.get("endpoint") else st.endpoint
    if not url:
        return _error(400, "The webhook endpoint URL is not set")
    if not _acceptable(st, url):
        return _error(400, "Invalid webhook endpoint URL (an https:// URL of at most 500 characters)")
    with em.lock:
        st.tests += 1
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    try:
        answer = st.post(st.body([]), url)
    except requests.Timeout:
        return jsonify(success=False, timestamp=when, statusCode=-1, reason="request_timeout", detail="Request timeout")
    except requests.RequestException:
        return jsonify(success=False, timestamp=when, statusCode=-1, reason="could_not_connect",
                       detail="Connection failed")
    ok = 200 <= answer.status_code < 300
    return jsonify(success=ok, timestamp=when, statusCode=answer.status_code,
                   reason="OK" if ok else (answer.reason or "error_status_code"), detail=str(answer.status_code))


# -- the emulator's own control routes ---------------------------------------------------------------
@bp.post("/_emulator/line/setup")
def control_setup() -> ResponseReturnValue:
    """``{"webhook_url", "settings"}``: where the bot listens and the channel's secrets."""
    body = request.get_json(force=True)
    st = _state()
    st.configure(body.get("webhook_url"), dict(body.get("settings") or {}))
    return jsonify(endpoint=st.endpoint, bot_user_id=st.bot_user_id)


@bp.post("/_emulator/line/deliver")
def control_deliver() -> ResponseReturnValue:
    """``{"sender_id", "text"}``, or ``"message_type"`` (sticker, image) or ``"event_type"``
    (follow, unfollow, postback, join ...) instead of a text; 400 for an unknown type, 409 when
    it cannot be delivered (no webhook URL, the bot unreachable)."""
    body = request.get_json(force=True)
    st, user = _state(), str(body["sender_id"])
    try:
        if body.get("event_type"):
            event_id, answer = st.deliver_other(str(body["event_type"]), user, url=body.get("url"))
        else:
            event_id, answer = st.deliver(user, str(body.get("text", "")),
                                          message_type=str(body.get("message_type", "text")), url=body.get("url"))
    except ValueError as exc:
        return jsonify(error=str(exc)), 400
    except (RuntimeError, requests.RequestException) as exc:
        return jsonify(error=str(exc)), 409
    return jsonify(event_id=event_id, webhook_status=answer.status_code)


@bp.post("/_emulator/line/faults")
def control_faults() -> ResponseReturnValue:
    """Replace every injected fault at once (a field left out is cleared); ``push_quota`` too."""
    body = request.get_json(force=True)
    em, st = emulator(), _state()
    with em.lock:
        st.faults = LineFaults(latency=float(body.get("latency", 0)), errors_5xx=int(body.get("errors_5xx", 0)),
                               errors_5xx_after=int(body.get("errors_5xx_after", 0)),
                               burst_429=int(body.get("burst_429", 0)), unreachable=set(body.get("unreachable", [])))
        quota = body.get("push_quota")
        st.push_quota = None if quota is None else int(quota)
    return jsonify(faults={**asdict(st.faults), "unreachable": sorted(st.faults.unreachable)}, push_quota=st.push_quota)


@bp.get("/_emulator/line/state")
def control_state() -> ResponseReturnValue:
    em, st = emulator(), _state()
    with em.lock:
        return jsonify(endpoint=st.endpoint, active=st.active, bot_user_id=st.bot_user_id, replies=st.replies,
                       pushes=st.pushes, rejected=st.rejected, tests=st.tests, push_quota=st.push_quota)
