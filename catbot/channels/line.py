"""LINE: a LINE Official Account's 1:1 chats, through the Messaging API (``line-bot-sdk`` v3).

The door (``POST /webhook/line``):

- ``X-Line-Signature: base64(HMAC-SHA256(channel secret, raw body))`` is checked before
  anything else, by the SDK's own :class:`~linebot.v3.webhook.SignatureValidator` (missing or
  not shaped like a SHA-256 signature: 401; not matching: 403). The console's *Verify* request
  (a signed ``{"destination": ..., "events": []}``) is answered 200 like any delivery.
- ``{"destination": <the bot's user id>, "events": [...]}``: ``message`` events (text; a
  sticker, image or any other kind asks for a fact like a media-only DM), ``follow`` (start) and
  ``unfollow`` (stop) from a user in a 1:1 chat become records, de-duplicated on
  ``webhookEventId`` (a redelivery, ``deliveryContext.isRedelivery``, carries the same id).
  Events in groups and rooms, ``mode: standby`` events (another channel answers this chat), and
  every other type (postback, join, leave, memberJoined, unsend, beacon, accountLink ...) are
  acknowledged and not answered. LINE sends no echo of the bot's own messages.

  The events are read here, field by field, not through the SDK's models: those refuse a whole
  event when a field the bot does not need is absent or new (a text without ``quoteToken``, a
  sticker whose ``stickerResourceType`` LINE added last month, a new message type), and an
  event refused there would be a user's message never answered. LINE's own guidelines ask bots
  to expect new fields and values.

The far end: the reply API (``POST /v2/bot/message/reply``) with the reply token of the user's
newest event. LINE guarantees a reply token for one minute after the webhook, once; a reply that
cannot go out in time (the token too old by the clock, or LINE answers "Invalid reply token") is
pushed (``POST /v2/bot/message/push``, counted against the monthly message quota) only with
``LINE_PUSH_FALLBACK``, else dropped with a log line (:class:`LineSender`). An ``unfollow`` can
get no reply at all: it only records the stop (:meth:`LineSender.open`).

Set-up: ``register_webhook.py line set-endpoint URL | test | info`` (:meth:`LineChannel.run_setup`).

Spec: developers.line.biz/en/reference/messaging-api/ ("Signature validation", "Webhook event
objects", "Send reply message", "Send push message", "Retry a failed API request", "Error
responses", "Set webhook endpoint URL", "Test webhook endpoint"), docs/messaging-api/
development-guidelines/, and line/line-openapi (messaging-api.yml, webhook.yml).
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

import urllib3

from catbot.channels import Answer, Channel, Parsed, PlatformRefused, json_object
from catbot.logs import event
from catbot.outbound import Outcome, SendResult
from catbot.replies import Intent, classify
from catbot.security import Verdict
from catbot.settings import parse_bool
from catbot.store import Batch, Inbound, Store

if TYPE_CHECKING:
    from linebot.v3.messaging import ApiException, MessagingApi
    from linebot.v3.webhook import SignatureValidator

KIND = "line"
DEFAULT_API_BASE_URL = "https://api.line.me"
SIGNATURE_HEADER = "X-Line-Signature"
REPLY_TOKEN_SECONDS = 60.0  # LINE: "use the reply token within one minute"; later use is not guaranteed
SEND_TIMEOUT = (3.05, 4.0)  # (connect, read) seconds for one API call
MAX_TEXT = 5000  # LINE's limit for a text message; longer text is cut before any regex sees it
DEFAULT_RETRY_AFTER = 10.0  # LINE's 429 says no when; its limits are per second, not per window
INVALID_REPLY_TOKEN = "Invalid reply token"  # LINE's message for a used or expired reply token
MONTHLY_LIMIT = "You have reached your monthly limit."  # LINE's 429 when the push quota is spent
RETRY_KEYS = uuid.UUID("6b1f0c52-6a4e-4f0e-9a55-7c1e1ad1c0f1")  # namespace of the push retry keys

_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{43}=")  # base64 of a 32-byte SHA-256 digest
_USER_ID = re.compile(r"U[0-9a-f]{32}")  # LINE's documented form of user ids (and of destination)
_EVENT_ID = re.compile(r"[0-9A-Za-z]{1,64}")  # webhookEventId: a ULID; generous, and a journal token
_REPLY_TOKEN = re.compile(r"[0-9A-Za-z_-]{1,256}")
_NAME = re.compile(r"[A-Za-z_]{1,40}")  # an event type we only name in the log

log = logging.getLogger("catbot.line")


# -- the door: pure functions over what the request carries -------------------------------------------
def signature_verdict(validator: SignatureValidator, body: bytes, header: str | None) -> Verdict:
    """Check ``X-Line-Signature`` against the raw body with the SDK's validator (the whole
    expected digest, then ``hmac.compare_digest``). A body that is not UTF-8 cannot be LINE's
    (it sends JSON), and the SDK validates text, so it is a mismatch."""
    if not validator.channel_secret:  # an empty key is a forgeable key
        return Verdict.MISMATCH
    if header is None or not header.strip():
        return Verdict.MISSING
    header = header.strip()
    if not _SIGNATURE.fullmatch(header):
        return Verdict.MALFORMED
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Verdict.MISMATCH
    return Verdict.OK if validator.validate(text, header) else Verdict.MISMATCH


def is_own_message(destination: str, user_id: str) -> bool:
    """True for an event whose sender is the bot itself. LINE sends no such echoes today; a
    bot that answered one would talk to itself, so the check costs nothing to keep."""
    return user_id == destination


@dataclass(frozen=True)
class Token:
    """What a record keeps for its reply (its payload): never the text. ``token`` is None for an
    ``unfollow``, which has none: nothing can be sent to a user who blocked the bot."""

    at_ms: int  # the event's timestamp (LINE's clock): the token's age is measured from it
    token: str | None = None
    unfollow: bool = False

    def dumps(self) -> str:
        fields: dict[str, Any] = {"at": self.at_ms}
        if self.token is not None:
            fields["reply_token"] = self.token
        if self.unfollow:
            fields["unfollow"] = True
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def loads(cls, payload: str | None) -> "Token | None":
        """The payload as written by :meth:`dumps`; None for anything else (never raises)."""
        try:
            data = json.loads(payload or "")
            at, token = data["at"], data.get("reply_token")
        except (ValueError, TypeError, KeyError):
            return None
        if not isinstance(at, int) or not (token is None or isinstance(token, str)):
            return None
        return cls(at, token, data.get("unfollow") is True)


@dataclass
class LineParsed(Parsed):
    """:class:`Parsed`, and whether the body was no LINE delivery at all (answered 400)."""

    unreadable: str = ""


def _timestamp(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**16:
        return value
    raise ValueError("event without a usable timestamp")


def _record(ev: dict[str, Any], account: str, user_id: str, trigger: re.Pattern[str] | None) -> Inbound:
    """A message, follow or unfollow from a user in a 1:1 chat, as its record; raises
    ValueError when a field the reply needs is missing or mistyped."""
    kind, event_id = ev["type"], ev.get("webhookEventId")
    if not (isinstance(event_id, str) and _EVENT_ID.fullmatch(event_id)):
        raise ValueError("event without a usable webhookEventId")
    at_ms = _timestamp(ev.get("timestamp"))
    if kind == "unfollow":
        return Inbound(KIND, account, user_id, event_id, Intent.STOP, at_ms, Token(at_ms, unfollow=True).dumps())
    token = ev.get("replyToken")
    if not (isinstance(token, str) and _REPLY_TOKEN.fullmatch(token)):
        raise ValueError(f"{kind} event without a usable replyToken")
    payload = Token(at_ms, token).dumps()
    if kind == "follow":  # added as a friend, or unblocked: cat facts (again)
        return Inbound(KIND, account, user_id, event_id, Intent.START, at_ms, payload)
    message = ev.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ValueError("message event without a message")
    text = message.get("text") if message["type"] == "text" else ""  # stickers, images...: a fact
    if not isinstance(text, str):
        raise ValueError("text message without text")
    return Inbound(KIND, account, user_id, event_id, classify(text[:MAX_TEXT], trigger), at_ms, payload)


def parse_delivery(body: bytes, trigger: re.Pattern[str] | None) -> LineParsed:
    """The records a verified delivery holds. An event with a missing or mistyped field is
    skipped and counted, so one bad event cannot hide the good ones beside it."""
    delivery = json_object(body)
    events = delivery.get("events") if delivery else None
    destination = delivery.get("destination") if delivery else None
    if not isinstance(events, list):
        return LineParsed(malformed=1, unreadable="body is not a LINE delivery (an object with events)")
    if events and not (isinstance(destination, str) and _USER_ID.fullmatch(destination)):
        return LineParsed(malformed=1, unreadable="delivery without a usable destination")
    parsed, account = LineParsed(), f"{KIND}:{destination}"
    for ev in events:
        kind = ev.get("type") if isinstance(ev, dict) else None
        if not isinstance(kind, str):
            parsed.malformed += 1
            continue
        source = ev.get("source")
        source_type = source.get("type") if isinstance(source, dict) else None
        name = kind if _NAME.fullmatch(kind) else "unnamed"
        if kind not in ("message", "follow", "unfollow"):
            parsed.other.append(name)
        elif ev.get("mode", "active") != "active":  # standby: another channel has this chat
            parsed.other.append(f"{name}:standby")
        elif source_type != "user":  # groups and rooms: the bot answers 1:1 chats only
            where = source_type if isinstance(source_type, str) and _NAME.fullmatch(source_type) else "unknown"
            parsed.other.append(f"{name}:{where}")
        elif not (isinstance(source.get("userId"), str) and _USER_ID.fullmatch(source["userId"])):
            parsed.malformed += 1
        elif is_own_message(destination, source["userId"]):
            parsed.own += 1
        else:
            try:
                parsed.messages.append(_record(ev, account, source["userId"], trigger))
            except ValueError:
                parsed.malformed += 1
    return parsed


# -- the far end -------------------------------------------------------------------------------
def messaging_api(base_url: str, access_token: str) -> MessagingApi:
    """The SDK's Messaging API client, pointed at ``base_url`` (``LINE_API_BASE_URL``: LINE, or
    the emulator). urllib3's own retries are off: the reply job decides when to try again, and a
    retried push must carry its retry key, which only the sender knows."""
    sdk = _messaging()
    configuration = sdk.Configuration(host=base_url.rstrip("/"), access_token=access_token)
    configuration.retries = False
    return sdk.MessagingApi(sdk.ApiClient(configuration))


def _messaging():
    """The SDK's Messaging API package, imported on first use: its hundreds of models take
    seconds to import, which no process of a bot with LINE off should pay (every channel
    module is imported to find the channels)."""
    import linebot.v3.messaging

    return linebot.v3.messaging


def _error_message(exc: ApiException) -> str:
    """LINE's ``message`` from an error answer (``{"message": ..., "details": [...]}``)."""
    try:
        body = json.loads(exc.body or "")
        message = str(body.get("message") or "")
        details = [str(d.get("message", "")) for d in body.get("details") or [] if isinstance(d, dict)]
    except (ValueError, AttributeError, TypeError):
        return (exc.reason or "")[:300]
    return "; ".join([message, *details])[:300]


def _retry_after(headers: Any, now: float) -> float:
    """When to try again after a 429: a ``Retry-After`` if LINE ever sends one, else soon."""
    try:
        seconds = float((headers or {}).get("Retry-After"))
    except (TypeError, ValueError):
        seconds = DEFAULT_RETRY_AFTER
    return now + min(max(seconds, 1.0), 3600.0)


def classify_error(exc: ApiException, now: float) -> SendResult:
    """What a refused reply or push comes to. 409 is not here: only a push can get it."""
    status, message = exc.status, _error_message(exc)
    if status == 429 and message != MONTHLY_LIMIT:
        return SendResult(Outcome.RATE_LIMITED, 429, message, _retry_after(exc.headers, now))
    if status == 0 or status >= 500:  # 0: the SDK's TLS failure
        return SendResult(Outcome.RETRY, status or None, message)
    return SendResult(Outcome.REJECTED, status, message)  # 400, 401, 403, the monthly quota...


def retry_key(batch: Batch, at_ms: int) -> str:
    """The push's ``X-Line-Retry-Key``: the same for every attempt to answer the same newest
    message (LINE keeps a key for 24 hours), different for any other."""
    return str(uuid.uuid5(RETRY_KEYS, f"{batch.for_user_id}/{batch.user_id}/{batch.seqs[-1]}/{at_ms}"))


class LineSender:
    """Replies with the newest reply token of a batch; pushes only when that cannot work and
    ``LINE_PUSH_FALLBACK`` is on. Never raises for LINE's or the network's failures.

    A reply token works once: a reply that LINE accepted but the store did not hear about (the
    process died, a timeout on the answer) cannot go out twice through it. A push can, so it
    carries an ``X-Line-Retry-Key`` derived from the batch's newest message: LINE answers 409 to
    the same key, which counts as sent."""

    def __init__(self, api: MessagingApi, push_fallback: bool, clock: Callable[[], float] = time.time,
                 timeout: float | tuple[float, float] = SEND_TIMEOUT) -> None:
        self.api = api
        self.push_fallback = push_fallback
        self.clock = clock
        self.timeout = timeout
        self._lock = threading.Lock()
        self._tried: dict[str, None] = {}  # reply tokens this process replied with

    def open(self, batch: Batch) -> Batch:
        """An ``unfollow`` (the user blocked the bot) can get no reply: what came before it is
        void and the user is opted out, without the "no more cat facts" reply that ``stop``
        gets. A ``follow`` after it (unblocked) then welcomes them back as ``start`` does."""
        tokens = [Token.loads(p) for p in batch.payloads]
        last = max((i for i, t in enumerate(tokens) if t is not None and t.unfollow), default=None)
        if last is None:
            return batch
        intents = (Intent.IGNORE,) * (last + 1) + batch.intents[last + 1:]
        return replace(batch, intents=intents, opted_out=True)

    def send(self, batch: Batch, text: str) -> SendResult:
        now = self.clock()
        sdk = _messaging()
        messages = [sdk.TextMessage(text=text)]
        tokens = [t for t in map(Token.loads, batch.payloads) if t is not None and t.token]
        newest = max(tokens, key=lambda t: t.at_ms, default=None)
        if newest is None:
            why = "no reply token"
        elif now - newest.at_ms / 1000 > REPLY_TOKEN_SECONDS - self._worst_case():
            why = "the reply token expired"
        else:
            reply = sdk.ReplyMessageRequest(reply_token=newest.token, messages=messages)
            self._remember(newest.token)
            result = self._call(lambda: self.api.reply_message_with_http_info(reply, _request_timeout=self.timeout),
                                now)
            if not (result.outcome is Outcome.REJECTED and result.detail == INVALID_REPLY_TOKEN):
                return result
            why = "LINE refused the reply token"
        if batch.attempts and newest is not None and newest.token in self._tried:
            # this process replied with that token before, and the attempt failed on the way (5xx,
            # a timeout): LINE may have taken it. A push now could say it twice; an earlier push is
            # safe to repeat (its retry key), so only a tried reply stops the fallback.
            return SendResult(Outcome.REJECTED, 400, f"{why}, and an earlier reply with it failed on the way "
                              "(LINE may have taken it): not pushed, to send no duplicate")
        if not self.push_fallback:
            return SendResult(Outcome.REJECTED, None, f"{why}; not pushed (LINE_PUSH_FALLBACK is off)")
        push = sdk.PushMessageRequest(to=batch.user_id, messages=messages)
        key = retry_key(batch, newest.at_ms if newest else 0)
        event(log, "line.pushing", reason=why, user=batch.user_id)  # pushes spend the monthly quota: say so
        return self._call(lambda: self.api.push_message_with_http_info(push, x_line_retry_key=key,
                                                                      _request_timeout=self.timeout), now, pushed=True)

    def _remember(self, token: str) -> None:
        """Reply tokens this process used (bounded, oldest out): see the push fallback in send."""
        with self._lock:
            self._tried[token] = None
            while len(self._tried) > 10_000:
                self._tried.pop(next(iter(self._tried)))

    def _worst_case(self) -> float:
        """Seconds one call can take: a reply must reach LINE within the token's minute."""
        return sum(self.timeout) if isinstance(self.timeout, tuple) else float(self.timeout)

    def _call(self, request: Callable[[], Any], now: float, pushed: bool = False) -> SendResult:
        try:
            answer = request()
        except _messaging().ApiException as exc:
            if pushed and exc.status == 409:  # this retry key was accepted before: sent, once
                accepted = (exc.headers or {}).get("X-Line-Accepted-Request-Id")
                return SendResult(Outcome.SENT, 409, "accepted before (retry key)", message_id=accepted)
            return classify_error(exc, now)
        except urllib3.exceptions.HTTPError as exc:  # refused, reset, timed out: try again
            return SendResult(Outcome.RETRY, None, type(exc).__name__)
        except UnicodeError:  # the request could not even be written (a token with a pasted invisible
            # character): nothing reached LINE
            return SendResult(Outcome.REJECTED, None, "LINE_CHANNEL_ACCESS_TOKEN holds characters HTTP cannot carry")
        except ValueError:  # the request was built beforehand, so this is a 2xx whose body the SDK's
            # models refuse (a field gone or renamed): LINE took the message
            return SendResult(Outcome.SENT, 200, "unreadable answer")
        sent = getattr(answer.data, "sent_messages", None) or []
        return SendResult(Outcome.SENT, answer.status_code, "pushed" if pushed else "",
                          message_id=sent[0].id if sent else None)


# -- the channel --------------------------------------------------------------------------------
class LineChannel(Channel):
    name = KIND
    kind = KIND
    required = ("LINE_CHANNEL_SECRET", "LINE_CHANNEL_ACCESS_TOKEN")
    optional = {"LINE_API_BASE_URL": DEFAULT_API_BASE_URL, "LINE_PUSH_FALLBACK": "false"}
    secrets = frozenset(required)
    setup_commands = {
        "set-endpoint": "set the channel's webhook URL (LINE then calls it for every event)",
        "test": "have LINE send its verify request to the webhook URL and say what the bot answered",
        "info": "the channel's webhook URL and whether LINE uses it",
    }

    @classmethod
    def problems(cls, values: Mapping[str, str]) -> list[str]:
        found = []
        if not re.match(r"^https?://[^/\s]+", values.get("LINE_API_BASE_URL", DEFAULT_API_BASE_URL).strip()):
            found.append("LINE_API_BASE_URL must be an http(s) URL")
        try:
            parse_bool(values.get("LINE_PUSH_FALLBACK", "false"))
        except ValueError as exc:
            found.append(f"LINE_PUSH_FALLBACK: {exc}")
        return found

    def __init__(self, values: Mapping[str, str]) -> None:
        """``values`` as ``api_config`` checked them (:meth:`problems`)."""
        super().__init__(values)
        self.base_url = (self.values.get("LINE_API_BASE_URL") or DEFAULT_API_BASE_URL).strip().rstrip("/")
        self.push_fallback = parse_bool(self.values.get("LINE_PUSH_FALLBACK", "false"))
        from linebot.v3.webhook import SignatureValidator  # the SDK is loaded only when LINE is on

        self._validator = SignatureValidator(self.setting("LINE_CHANNEL_SECRET"))

    # -- the door -----------------------------------------------------------------------------------
    def verify(self, headers: Mapping[str, str], body: bytes) -> Answer | None:
        verdict = signature_verdict(self._validator, body, headers.get(SIGNATURE_HEADER))
        if verdict.ok:
            return None
        return Answer.refused(401 if verdict in (Verdict.MISSING, Verdict.MALFORMED) else 403, verdict.value)

    def parse(self, body: bytes, settings) -> Parsed:
        return parse_delivery(body, settings.trigger_regex)

    def accepted(self, parsed: Parsed) -> Answer:
        """200 for every delivery, an empty one (the console's Verify) included; 400 for a body
        that is no delivery at all (it was signed, so only a broken sender makes one)."""
        unreadable = getattr(parsed, "unreadable", "")
        return Answer.refused(400, unreadable) if unreadable else Answer(200)

    # -- the far end --------------------------------------------------------------------------------
    def api(self) -> MessagingApi:
        return messaging_api(self.base_url, self.setting("LINE_CHANNEL_ACCESS_TOKEN"))

    def sender(self, store: Store, clock: Callable[[], float]) -> LineSender:
        return LineSender(self.api(), self.push_fallback, clock)

    # -- set-up ----------------------------------------------------------------------------------------
    @classmethod
    def add_setup_arguments(cls, command: str, parser: Any) -> None:
        if command == "set-endpoint":
            parser.add_argument("url", metavar="URL", help="the bot's public HTTPS address + /webhook/line")
        elif command == "test":
            parser.add_argument("--url", help="test this URL instead of the one set (LINE does not save it)")

    def run_setup(self, command: str, args: Any, report: Any) -> None:
        api = self.api()
        if command == "info":
            current = self._setup_call(api.get_webhook_endpoint)
            report.result = {"endpoint": current.endpoint, "active": current.active}
            report.say(f"webhook URL: {current.endpoint or '(none)'}")
            report.say("LINE sends events to it" if current.active else
                       "\"Use webhook\" is off: LINE sends no events (turn it on in the console's Messaging API tab)")
        elif command == "set-endpoint":
            url = str(args.url).strip()
            current = self._setup_call(api.get_webhook_endpoint)
            if current.endpoint != url:
                request = _messaging().SetWebhookEndpointRequest(endpoint=url)
                self._setup_call(lambda: api.set_webhook_endpoint(request))
                report.changed = True
            report.result = {"endpoint": url, "active": current.active, "changed": report.changed}
            report.say(f"webhook URL {'set to' if report.changed else 'already'} {url}")
            report.say("next: `register_webhook.py line test` has LINE call it")
            if not current.active:
                report.warn("\"Use webhook\" is off in the console's Messaging API tab: LINE sends no events until "
                            "it is on")
        elif command == "test":
            url = getattr(args, "url", None)
            request = _messaging().TestWebhookEndpointRequest(endpoint=url) if url else None
            answer = self._setup_call(lambda: api.test_webhook_endpoint(request))
            report.result = {"success": bool(answer.success), "statusCode": answer.status_code,
                             "reason": answer.reason, "detail": answer.detail}
            if not answer.success:  # LINE answered; the bot did not (a status of 0 or less: no answer at all)
                raise PlatformRefused(answer.status_code if answer.status_code > 0 else None,
                                      f"the webhook test failed ({answer.reason})", answer.detail,
                                      _test_advice(answer.status_code))
            report.say(f"LINE called the webhook: HTTP {answer.status_code} {answer.reason}")
        else:
            raise ValueError(f"unknown command {command!r}")

    def _setup_call(self, call: Callable[[], Any]) -> Any:
        """``call()``, with LINE's refusals as :class:`PlatformRefused` and advice for each."""
        try:
            return call()
        except _messaging().ApiException as exc:
            message = _error_message(exc)
            raise PlatformRefused(exc.status or None, f"HTTP {exc.status}", message, _api_advice(exc.status)) from None
        except urllib3.exceptions.HTTPError as exc:
            raise PlatformRefused(None, "unreachable", f"{type(exc).__name__} calling {self.base_url}",
                                  "check LINE_API_BASE_URL (default https://api.line.me) and the network") from None
        except ValueError as exc:  # the SDK's own checks (a URL over 500 characters...)
            raise PlatformRefused(None, "invalid request", str(exc).splitlines()[0][:200]) from None


def _api_advice(status: int) -> str:
    if status == 401:
        return ("LINE_CHANNEL_ACCESS_TOKEN is not valid: issue a long-lived channel access token in the LINE "
                "Developers Console (your channel, Messaging API tab) and set it")
    if status == 400:
        return ("the webhook URL must be an https:// URL with a certificate from a trusted authority, at most "
                "500 characters")
    if status == 429:
        return "LINE's rate limit: try again in a minute"
    return "see LINE's status page and the Messaging API reference for this status"


def _test_advice(status: int) -> str:
    if status in (401, 403):
        return ("the bot refused LINE's signature: LINE_CHANNEL_SECRET must be the channel secret from the "
                "console's Basic settings tab of this channel")
    if status == 404:
        return ("the URL must end in /webhook/line, and the bot must have LINE's settings (it answers 404 when "
                "LINE is off)")
    if status <= 0:
        return ("LINE could not reach the URL: is the bot running, public, and served over HTTPS with a valid "
                "certificate?")
    return "the bot answered an error: see its log (event=delivery.rejected or delivery.unrecorded)"


CHANNEL = LineChannel
