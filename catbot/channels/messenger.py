"""Facebook Messenger: a Facebook Page's conversations, through Meta's Messenger Platform.

The door (``/webhook/messenger``):

- ``GET``: Meta's verification request (``hub.mode=subscribe``, ``hub.verify_token``,
  ``hub.challenge``), made when the webhook is saved in the App Dashboard. The challenge is
  echoed only for the right token (compared in constant time), and only when it is short and
  token-shaped: Meta sends an integer, and an echo of anything else would let whoever holds the
  token make the bot's domain serve text of their choosing.
- ``POST``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed with the app
  secret>`` is checked before anything else; the legacy SHA-1 ``X-Hub-Signature`` is not
  accepted. Then ``{"object": "page", "entry": [{"id": <page>, "messaging": [...]}]}``: messages
  (text, attachments) and postbacks (a tapped button, e.g. *Get Started*: answered as the
  button's title, since that is what the user "said") become records; the Page's own echoes,
  deliveries, reads, reactions, edits and events in the ``standby`` channel (a thread another
  app controls) are acknowledged and not answered. Meta wants ``200 EVENT_RECEIVED``.

The far end: the Send API (``POST {base}/{version}/me/messages``, ``messaging_type: RESPONSE``)
with the Page access token, and only inside the 24-hour window after the user's last message:
a reply that could not go out in time is dropped, never sent late (:class:`MessengerSender`).

Set-up: ``register_webhook.py messenger subscribe-page|status``. Meta lets only the App
Dashboard set the callback URL and verify token; the command prints what to paste where.

Spec: developers.facebook.com/documentation/business-messaging/messenger-platform/webhooks
(verification, signature, webhook events), .../send-messages, .../error-codes, and the Graph API
rate-limiting page (``X-Business-Use-Case-Usage``, codes 4, 17, 32, 613, 80006).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import requests

from catbot.channels import Answer, Channel, Parsed, PlatformRefused, json_object, same_secret
from catbot.logs import event
from catbot.outbound import Outcome, Sender, SendResult
from catbot.replies import classify
from catbot.security import Verdict
from catbot.store import Batch, Inbound, Store
from catbot.xclient import is_loopback

if TYPE_CHECKING:
    from catbot.settings import Settings

KIND = "messenger"
DEFAULT_API_BASE_URL = "https://graph.facebook.com"
DEFAULT_GRAPH_VERSION = "v26.0"  # Graph API's newest (July 2026; v25.0 is served until July 2028)
SIGNATURE_HEADER = "X-Hub-Signature-256"
LEGACY_SIGNATURE_HEADER = "X-Hub-Signature"  # SHA-1: refused, said so in the log
SUBSCRIBED_FIELDS = ("messages", "messaging_postbacks")
WINDOW = 24 * 3600.0  # Meta's standard messaging window after the user's last message
WINDOW_MARGIN = 60.0  # a reply this close to the window's end is dropped, not risked
MAX_TEXT = 2000  # Messenger's limit for a message's text (cut before anything reads it)
SEND_TIMEOUT = (2.0, 3.0)  # (connect, read) seconds: a send ends within a lease; see MessengerSender
DEFAULT_RETRY_AFTER = 60.0  # a rate limit without a usable hint: a minute
MAX_RETRY_AFTER = WINDOW  # beyond that the reply is dropped anyway

_PREFIX = "sha256="
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_CHALLENGE = re.compile(r"[A-Za-z0-9._-]{1,128}")  # Meta sends an int; token-shaped is generous
_ID = re.compile(r"[1-9][0-9]{0,24}")  # Page ids and PSIDs: positive decimal strings, one spelling
_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,200}")  # what a journal line takes as an event id
_NAME = re.compile(r"[A-Za-z_]{1,40}")  # an event type we only name in the log
_VERSION = re.compile(r"v?([0-9]{1,3}\.[0-9]{1,2})")

RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80006})  # app, user, page, custom, Messenger BUC
TRANSIENT_CODES = frozenset({1, 2, 1200})  # unknown, "retry later", temporary send failure
UNREACHABLE = {  # (code, subcode) -> why the user cannot get this reply; never retried
    (551, None): "user unavailable",
    (10, 2018278): "outside the 24-hour window",
    (10, 2018065): "outside the 24-hour window",
    (200, 2018108): "user not receiving messages from the Page",
    (100, 2018001): "no matching user",
}

log = logging.getLogger("catbot.messenger")


# -- the door: pure functions over what the request carries -----------------------------------------
def sign(app_secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256`` as Meta computes it for ``body`` (the emulator signs with this)."""
    return _PREFIX + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_verdict(app_secret: str, body: bytes, header: str | None) -> Verdict:
    """Check ``X-Hub-Signature-256`` against the raw body: the whole expected digest first,
    then one constant-time comparison of bytes."""
    if not app_secret:
        return Verdict.MISMATCH  # an empty key is a forgeable key
    if header is None or not header.strip():
        return Verdict.MISSING
    header = header.strip()
    if not header.startswith(_PREFIX) or not _HEX_DIGEST.fullmatch(header[len(_PREFIX):]):
        return Verdict.MALFORMED
    expected = sign(app_secret, body).encode()
    return Verdict.OK if hmac.compare_digest(expected, header.lower().encode()) else Verdict.MISMATCH


def verification_answer(args: Mapping[str, str], verify_token: str) -> Answer:
    """Meta's verification request: the challenge as text/plain for the right token, else 403
    (wrong mode or token) or 400 (a parameter missing or given twice; a challenge that is not
    token-shaped, checked only after the token so that it tells a stranger nothing)."""
    getlist = getattr(args, "getlist", lambda key: [args[key]] if key in args else [])
    values = {key: getlist(f"hub.{key}") for key in ("mode", "verify_token", "challenge")}
    if any(len(given) != 1 for given in values.values()):
        return Answer.refused(400, "missing or repeated hub.mode, hub.verify_token or hub.challenge")
    mode, token, challenge = (given[0] for given in values.values())
    if mode != "subscribe":
        return Answer.refused(403, "hub.mode is not subscribe")
    if not same_secret(token, verify_token):
        return Answer.refused(403, "wrong verify token")
    if not _CHALLENGE.fullmatch(challenge):
        return Answer.refused(400, "hub.challenge is not token-shaped")
    return Answer(200, challenge, content_type="text/plain")


# -- what a delivery holds ------------------------------------------------------------------------------
@dataclass
class MessengerParsed(Parsed):
    unreadable: bool = False  # the (signed) body was not a JSON object at all


def account(page_id: str) -> str:
    """The store's account for a Page: apart from every other platform's ids."""
    return f"{KIND}:{page_id}"


def event_key(mid: str) -> str:
    """The de-duplication key of a message id. Meta's ids are mostly token-shaped (``m_...``),
    but older ones hold ``$`` (``mid.$cAAJ...``): those are kept as a digest."""
    return mid if _TOKEN.fullmatch(mid) else "sha256:" + hashlib.sha256(mid.encode()).hexdigest()[:40]


def message_time_ms(value: Any, now_ms: int) -> int:
    """When the user wrote, for the 24-hour window: Meta's ``timestamp`` (milliseconds; a sample
    in the postback reference has seconds, as a string), never later than now, so that a wrong
    clock can only shorten the window; ``now_ms`` when it is unusable."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 16:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        return now_ms
    if value < 10**11:  # seconds
        value *= 1000
    return min(value, now_ms)


def _id(value: Any) -> str | None:
    return value.get("id") if isinstance(value, dict) and isinstance(value.get("id"), str) \
        and _ID.fullmatch(value["id"]) else None


def _named(key: Any) -> str:
    return key if isinstance(key, str) and _NAME.fullmatch(key) else "unknown"


def _record(page_id: str, ev: dict[str, Any], trigger: re.Pattern[str] | None, now_ms: int) -> Inbound | str:
    """One ``messaging`` event: the record of a message or postback from a user, or the name of
    what it is instead (``own``, another event type). Raises ValueError when it is malformed."""
    if "message" not in ev and "postback" not in ev:  # delivery, read, reaction, message_edit, referral...
        return _named(next((k for k in ev if k not in ("sender", "recipient", "timestamp")), None))
    message, postback = ev.get("message"), ev.get("postback")
    if not isinstance(message if "message" in ev else postback, dict):
        raise ValueError("message or postback is not an object")
    if isinstance(message, dict) and message.get("is_echo") is True:
        return "own"
    sender, recipient = _id(ev.get("sender")), _id(ev.get("recipient"))
    if sender is None and isinstance(ev.get("sender"), dict) and "user_ref" in ev["sender"]:
        return "user_ref"  # a plugin's guest, not a Messenger user the Page can answer by id
    if sender is None or recipient != page_id:
        raise ValueError("event without a usable sender, or not to the entry's Page")
    if sender == page_id:
        return "own"
    created = message_time_ms(ev.get("timestamp"), now_ms)
    if isinstance(message, dict):  # text, or attachments only (a photo, a sticker): a fact
        mid, text = message.get("mid"), message.get("text") or ""
    else:  # a tapped button; older postbacks have no mid: their sender and time name them
        stamp = ev.get("timestamp")
        mid = postback.get("mid") or (f"postback:{sender}:{stamp}" if str(stamp).isdigit() else None)
        text = postback.get("title") or ""
    if not (isinstance(mid, str) and 0 < len(mid) <= 1000) or not isinstance(text, str):
        raise ValueError("message without a usable mid or text")
    return Inbound(KIND, account(page_id), sender, event_key(mid), classify(text[:MAX_TEXT], trigger), created,
                   json.dumps({"at": created}))


def parse_delivery(delivery: dict[str, Any] | None, trigger: re.Pattern[str] | None, now_ms: int) -> MessengerParsed:
    """Every message and postback in a delivery; what else it held, counted. Never raises: an
    entry or event with a missing or mistyped field is skipped and counted as malformed."""
    parsed = MessengerParsed()
    if delivery is None:
        parsed.malformed, parsed.unreadable = 1, True
        return parsed
    if delivery.get("object") != "page":
        parsed.other.append("object_" + _named(delivery.get("object")))
        return parsed
    entries = delivery.get("entry")
    for entry in entries if isinstance(entries, list) else [None]:
        page_id = _id(entry)
        if page_id is None or not isinstance(entry.get("messaging", []), list):
            parsed.malformed += 1
            continue
        parsed.other += [_named(k) for k in entry if k not in ("id", "time", "messaging")]  # standby, changes
        for ev in entry.get("messaging", []):
            try:
                found = _record(page_id, ev, trigger, now_ms) if isinstance(ev, dict) else None
            except ValueError:
                found = None
            if found is None:
                parsed.malformed += 1
            elif found == "own":
                parsed.own += 1
            elif isinstance(found, str):
                parsed.other.append(found)
            else:
                parsed.messages.append(found)
    return parsed


# -- the far end ------------------------------------------------------------------------------------------
_ACCESS_TOKEN = re.compile(r"EA[A-Za-z0-9_-]{6,}")  # Meta's access tokens start "EAA"


def _graph_error(body: Any) -> tuple[int | None, int | None, str, bool]:
    """(code, subcode, message, is_transient) of a Graph error body; Nones when there is none."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, "", False
    code, subcode = error.get("code"), error.get("error_subcode")
    message = _ACCESS_TOKEN.sub("EA…(a token, not shown)", str(error.get("message", "")))  # Meta quotes a
    # malformed token back ("Malformed access token EAA..."): never into a log line or an error
    return (code if isinstance(code, int) else None, subcode if isinstance(subcode, int) else None,
            message[:200], error.get("is_transient") is True)


def regain_seconds(headers: Mapping[str, str]) -> float:
    """How long Meta says to pause: ``Retry-After`` (seconds), else the longest
    ``estimated_time_to_regain_access`` (minutes) in the usage headers, else a minute."""
    try:
        after = float(headers.get("Retry-After", ""))
        if after > 0:
            return min(after, MAX_RETRY_AFTER)
    except ValueError:
        pass
    minutes = []
    for name in ("X-Business-Use-Case-Usage", "X-Page-Usage", "X-App-Usage"):
        try:
            usage = json.loads(headers.get(name) or "null")
        except ValueError:
            continue
        found = [usage] if isinstance(usage, dict) else []
        if isinstance(usage, dict):  # BUC: {business id: [{type, call_count, ..., estimated_time_...}]}
            found += [item for items in usage.values() if isinstance(items, list) for item in items]
        minutes += [item.get("estimated_time_to_regain_access") for item in found if isinstance(item, dict)]
    waits = [m * 60.0 for m in minutes if isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0]
    return min(max(waits), MAX_RETRY_AFTER) if waits else DEFAULT_RETRY_AFTER


def classify_answer(status: int, body: Any, headers: Mapping[str, str], now: float) -> SendResult:
    """What a Send API answer means for the reply: rate limits (429, or codes 4, 17, 32, 613,
    80006, which Meta mostly answers with 400) wait; 5xx and transient errors are retried; any
    other refusal (the user cannot be reached, a bad token) is final."""
    code, subcode, message, transient = _graph_error(body)
    if 200 <= status < 300 and code is None:
        mid = body.get("message_id") if isinstance(body, dict) else None
        return SendResult(Outcome.SENT, status, message_id=mid if isinstance(mid, str) else None)
    detail = f"({code}{f'/{subcode}' if subcode else ''}) {message}" if code is not None else f"HTTP {status}"
    if status == 429 or code in RATE_LIMIT_CODES:
        return SendResult(Outcome.RATE_LIMITED, status, detail, now + regain_seconds(headers))
    if status >= 500 or code in TRANSIENT_CODES or transient:
        return SendResult(Outcome.RETRY, status, detail)
    reason = UNREACHABLE.get((code, subcode)) or UNREACHABLE.get((code, None))
    return SendResult(Outcome.REJECTED, status, f"{reason} {detail}" if reason else detail)


def newest_message_at(batch: Batch) -> float | None:
    """When the batch's newest message was written (seconds), from its records' payloads."""
    times = []
    for payload in batch.payloads:
        try:
            at = json.loads(payload or "null").get("at")
        except (ValueError, AttributeError):
            continue
        if isinstance(at, int) and not isinstance(at, bool):
            times.append(at / 1000.0)
    return max(times) if times else None


class GraphAPI:
    """The few Graph API calls the bot makes, as the Page (its access token, as a bearer header:
    never in a URL, which requests would put into its exceptions' messages). Every call also
    carries ``appsecret_proof``, so the app may require it (App settings > Advanced)."""

    def __init__(self, values: Mapping[str, str], session: requests.Session | None = None) -> None:
        self.base = values.get("MESSENGER_API_BASE_URL", DEFAULT_API_BASE_URL).rstrip("/") or DEFAULT_API_BASE_URL
        match = _VERSION.fullmatch(values.get("MESSENGER_GRAPH_VERSION", "").strip())
        self.version = f"v{match.group(1)}" if match else DEFAULT_GRAPH_VERSION
        token = values["MESSENGER_PAGE_ACCESS_TOKEN"]
        self._headers = {"Authorization": f"Bearer {token}"}
        self._proof = hmac.new(values["MESSENGER_APP_SECRET"].encode(), token.encode(), hashlib.sha256).hexdigest()
        self.session = session or requests.Session()
        if is_loopback(self.base):
            self.session.trust_env = False  # no proxy between the bot and a local emulator

    def call(self, method: str, path: str, params: Mapping[str, str] | None = None,
             json_body: Any = None, timeout: Any = SEND_TIMEOUT) -> tuple[int, Any, Mapping[str, str]]:
        """(status, JSON body or None, headers). Raises ``requests.RequestException``."""
        answer = self.session.request(method, f"{self.base}/{self.version}/{path}", headers=self._headers,
                                      params={**(params or {}), "appsecret_proof": self._proof},
                                      json=json_body, timeout=timeout)
        try:
            body = answer.json()
        except ValueError:
            body = None
        return answer.status_code, body, answer.headers


class MessengerSender:
    """Replies through the Send API; never raises for Meta's or the network's failures.

    Decides at send time what only it can: a reply whose window has closed (the newest message
    of the batch is 24 hours old, less a margin) is dropped, as Meta would refuse it and its policy
    forbids trying. After a rate limit it sends nothing until Meta's pause is over: the same
    answer (RATE_LIMITED, same time) without a call. The pause is this sender's and not the shared
    budget's windows, which hold every platform's sends: Meta's limits are the Page's alone.
    A send gives up after about five seconds (:data:`SEND_TIMEOUT`), well inside the reply
    lease the defaults allow (``sender()`` gets no Settings, so ``X_TIMEOUT`` cannot bound it:
    a call outliving its lease could be answered twice)."""

    def __init__(self, api: GraphAPI, clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.clock = clock
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def send(self, batch: Batch, text: str) -> SendResult:
        now = self.clock()
        written = newest_message_at(batch)
        if written is None or now > written + WINDOW - WINDOW_MARGIN:
            age = "unknown" if written is None else f"{(now - written) / 3600:.1f} h"
            return SendResult(Outcome.REJECTED, None, f"outside the 24-hour window (newest message: {age} ago): "
                                                      "dropped, never sent late")
        with self._lock:
            paused_until = self._paused_until
        if now < paused_until:
            return SendResult(Outcome.RATE_LIMITED, None, "paused after Meta's rate limit", paused_until)
        body = {"recipient": {"id": batch.user_id}, "messaging_type": "RESPONSE", "message": {"text": text[:MAX_TEXT]}}
        try:
            status, answer, headers = self.api.call("POST", "me/messages", json_body=body)
        except requests.RequestException as exc:
            return SendResult(Outcome.RETRY, None, type(exc).__name__)
        except (ValueError, UnicodeError) as exc:  # the request could not be written: final, nothing sent
            return SendResult(Outcome.REJECTED, None, f"cannot call the Send API ({type(exc).__name__}); check "
                              "MESSENGER_PAGE_ACCESS_TOKEN and MESSENGER_API_BASE_URL for stray characters")
        result = classify_answer(status, answer, headers, now)
        if result.outcome is Outcome.RATE_LIMITED and result.retry_at:
            with self._lock:
                self._paused_until = max(self._paused_until, result.retry_at)
            event(log, "messenger.paused", logging.WARNING, until=int(result.retry_at), error=result.detail)
        return result


# -- set-up -------------------------------------------------------------------------------------------------
ADVICE = {
    190: "the Page access token is invalid or expired: generate a new one (App Dashboard > Messenger API "
         "Settings > Generate access tokens) and set MESSENGER_PAGE_ACCESS_TOKEN",
    200: "the token lacks a permission: the Page token needs pages_messaging and pages_manage_metadata",
    10: "the token lacks a permission: the Page token needs pages_messaging and pages_manage_metadata",
    100: "MESSENGER_PAGE_ACCESS_TOKEN must be a Page access token (not a user or app token)",
}


def dashboard_steps(webhook_url: str | None) -> list[str]:
    """What only the App Dashboard can do, as lines to follow."""
    url = webhook_url or "https://<your app>.herokuapp.com/webhook/messenger"
    return [
        "Meta lets only the App Dashboard set the webhook. Once, at https://developers.facebook.com/apps/ > your app >",
        "Use cases > Engage with customers on Messenger from Meta > Customize > Messenger API Settings:",
        f"  1. Configure webhooks: Callback URL: {url}",
        "     Verify token: the value of MESSENGER_VERIFY_TOKEN (heroku config:get MESSENGER_VERIFY_TOKEN),",
        "     then 'Verify and save' (Meta calls the URL now: the bot must be deployed with these settings).",
        f"  2. Webhook fields: subscribe {' and '.join(SUBSCRIBED_FIELDS)} (the app's half; this command does the Page's).",
        "  3. The app secret (App settings > Basic > App secret) is MESSENGER_APP_SECRET.",
    ]


class MessengerChannel(Channel):
    name = "messenger"
    kind = KIND
    required = ("MESSENGER_APP_SECRET", "MESSENGER_VERIFY_TOKEN", "MESSENGER_PAGE_ACCESS_TOKEN")
    optional = {"MESSENGER_API_BASE_URL": DEFAULT_API_BASE_URL, "MESSENGER_GRAPH_VERSION": DEFAULT_GRAPH_VERSION}
    secrets = frozenset(required)
    setup_commands = {
        "subscribe-page": "subscribe the app to the Page's messages and postbacks; then what to set in the dashboard",
        "status": "the Page, the app, and the webhook fields the app gets from the Page",
    }

    def handshake(self, args: Mapping[str, str]) -> Answer:
        return verification_answer(args, self.setting("MESSENGER_VERIFY_TOKEN"))

    def verify(self, headers: Mapping[str, str], body: bytes) -> Answer | None:
        verdict = signature_verdict(self.setting("MESSENGER_APP_SECRET"), body, headers.get(SIGNATURE_HEADER))
        if verdict.ok:
            return None
        reason = verdict.value
        if verdict is Verdict.MISSING and headers.get(LEGACY_SIGNATURE_HEADER):
            reason += " (X-Hub-Signature, SHA-1, is not accepted)"
        return Answer(401 if verdict in (Verdict.MISSING, Verdict.MALFORMED) else 403, {"error": verdict.value}, reason)

    def parse(self, body: bytes, settings: "Settings") -> Parsed:
        return parse_delivery(json_object(body), settings.trigger_regex, int(time.time() * 1000))

    def accepted(self, parsed: Parsed) -> Answer:
        if isinstance(parsed, MessengerParsed) and parsed.unreadable:
            return Answer.refused(400, "body is not a JSON object")
        return Answer(200, "EVENT_RECEIVED", content_type="text/plain")

    def sender(self, store: Store, clock: Callable[[], float]) -> Sender:
        return MessengerSender(GraphAPI(self.values), clock)

    @classmethod
    def add_setup_arguments(cls, command: str, parser: Any) -> None:
        if command == "subscribe-page":
            parser.add_argument("--webhook-url", metavar="URL",
                                help="the bot's webhook, for the dashboard steps: https://<app>/webhook/messenger")

    def run_setup(self, command: str, args: Any, report: Any) -> None:
        api = GraphAPI(self.values)
        page, app = self._graph(api, "GET", "me", {"fields": "id,name"}), self._graph(api, "GET", "app")
        fields = self._subscribed_fields(api, str(app.get("id", "")))
        report.result = {"page": {"id": page.get("id"), "name": page.get("name")},
                         "app": {"id": app.get("id"), "name": app.get("name")}, "subscribed_fields": fields}
        report.say(f"Page {page.get('name')} ({page.get('id')}), app {app.get('name')} ({app.get('id')})")
        missing = [f for f in SUBSCRIBED_FIELDS if f not in fields]
        if command == "subscribe-page" and missing:
            fields = sorted(set(fields) | set(SUBSCRIBED_FIELDS))
            self._graph(api, "POST", "me/subscribed_apps", {"subscribed_fields": ",".join(fields)})
            report.changed, report.result["subscribed_fields"], missing = True, fields, []
            report.say(f"subscribed the app to the Page's {', '.join(SUBSCRIBED_FIELDS)}")
        elif not missing:
            report.say(f"the app gets the Page's {', '.join(fields)}")
        if missing:
            report.warn(f"the app does not get the Page's {', '.join(missing)}: run "
                        "register_webhook.py messenger subscribe-page")
        if command == "subscribe-page":
            for line in dashboard_steps(getattr(args, "webhook_url", None)):
                report.say(line)

    def _subscribed_fields(self, api: GraphAPI, app_id: str) -> list[str]:
        apps = self._graph(api, "GET", "me/subscribed_apps").get("data")
        ours = next((a for a in apps if isinstance(a, dict) and str(a.get("id")) == app_id), {}) \
            if isinstance(apps, list) else {}
        fields = ours.get("subscribed_fields")
        return [f for f in fields if isinstance(f, str)] if isinstance(fields, list) else []

    @staticmethod
    def _graph(api: GraphAPI, method: str, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A set-up call's answer; PlatformRefused with advice when Meta refuses it."""
        try:
            status, body, _ = api.call(method, path, params, timeout=(3.05, 20))
        except requests.RequestException as exc:
            raise PlatformRefused(None, "unreachable", f"{api.base}: {type(exc).__name__}",
                                  "check MESSENGER_API_BASE_URL and the network") from None
        code, subcode, message, _ = _graph_error(body)
        if status >= 300 or code is not None or not isinstance(body, dict):
            detail = f"{method} {path}: ({code}{f'/{subcode}' if subcode else ''}) {message}" if code \
                else f"{method} {path}: HTTP {status}"
            raise PlatformRefused(status, "graph_error", detail, ADVICE.get(code or 0, ""))
        return body


CHANNEL = MessengerChannel
