"""Meta's Messenger Platform, played for the bot: a Facebook Page, its users, and the Graph API
calls the bot makes (see ``catbot/channels/messenger.py``).

What is Meta's behaviour (its Messenger Platform and Graph API docs and samples):

- the webhook's verification request (``hub.mode``, ``hub.challenge`` an int, ``hub.verify_token``),
  made when the dashboard saves a callback URL, which it refuses to save unless it is answered;
- deliveries ``{"object": "page", "entry": [{"id", "time", "messaging": [...]}]}`` in the shape of
  the webhook event reference's samples, as escaped-unicode JSON (``\\u00e9``, ``\\/``), signed
  ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body, keyed with the app secret>``;
- the Send API (``POST /{version}/me/messages``): the Page token as a bearer header or an
  ``access_token`` parameter, a checked ``appsecret_proof``, ``{"recipient_id", "message_id"}``;
  and its refusals: 190 (bad token), 100 (bad request; 2018001 no such user), 551 (unavailable),
  10/2018278 (outside the 24-hour window), 613 (rate limit, with ``X-Business-Use-Case-Usage``),
  2 (``is_transient``, on a 500);
- ``/{version}/me``, ``/{version}/app`` and ``/{version}/me/subscribed_apps`` (GET, POST with
  ``subscribed_fields``), the Page-level half of a webhook subscription.

What is the emulator's choice:

- one Page (:data:`PAGE_ID`) and one app; users are PSIDs a test names; a user can be messaged
  once they have written to the Page, within 24 hours of their last message;
- ``POST /_emulator/messenger/setup`` plays the dashboard step (callback URL, verify token, app
  secret) and, unless ``"page_subscribed": false``, the Page's subscription too; deliveries of
  messages need the Page subscribed to ``messages`` (postbacks: ``messaging_postbacks``);
  echoes and system events are delivered when a test asks, as if subscribed;
- faults (:class:`MessengerFaults`): latency, 500s, rate limits (429 by default; Meta mostly
  answers 400 with code 613, which ``rate_limit_status`` plays), unreachable users (551).
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import requests
from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from catbot.channels.messenger import sign
from catbot.channels import same_secret
from x_emulator.area import emulator
from x_emulator.records import SentDM

if TYPE_CHECKING:
    from x_emulator.server import XEmulator

NAME = "messenger"
PAGE_ID = "104000000000001"
PAGE_NAME = "Cat Facts"
APP_ID = "900000000000001"
APP_NAME = "Cat Facts Bot"
WINDOW = 24 * 3600.0
FIELDS = frozenset({"messages", "messaging_postbacks", "message_deliveries", "message_reads", "message_reactions",
                    "message_echoes", "message_edits", "messaging_optins", "messaging_referrals",
                    "messaging_handovers", "standby"})
SYSTEM_EVENTS = ("delivery", "read", "reaction", "standby", "message_edit")
DEMO_SETTINGS = {
    "MESSENGER_APP_SECRET": "demo-messenger-app-secret-not-real-0001",
    "MESSENGER_VERIFY_TOKEN": "demo-messenger-verify-token-0001",
    "MESSENGER_PAGE_ACCESS_TOKEN": "EAADemoPageAccessTokenNotARealOne0000000001",
}

bp = Blueprint(NAME, __name__)


@dataclass
class MessengerFaults:
    latency: float = 0.0  # seconds before a Send API answer
    errors_5xx: int = 0  # the next N sends answer 500 (code 2, is_transient)
    rate_limited: int = 0  # the next N sends answer a rate limit (code 613)
    rate_limit_status: int = 429  # the HTTP status of that answer (Meta mostly uses 400)
    regain_minutes: int = 1  # its estimated_time_to_regain_access
    unreachable: set[str] = field(default_factory=set)  # PSIDs that answer 551


class State:
    """The Page, its webhook, its users' windows, and what the bot sent; under ``em.lock``."""

    def __init__(self, em: XEmulator) -> None:
        self.em = em
        self.page_id = PAGE_ID
        self.webhook_url: str | None = None
        self.settings: dict[str, str] = {}  # what the bot and Meta share: app secret, verify token, Page token
        self.subscribed_fields: list[str] = []  # the Page's subscription of the app
        self.faults = MessengerFaults()
        self.send_attempts = 0
        self.verifications = 0
        self.last_written: dict[str, float] = {}  # PSID -> when they last wrote to the Page
        self.delivered: list[tuple[list[str], bytes]] = []  # (mids, body as posted), for redelivery
        self._http = requests.Session()
        self._http.trust_env = False

    # -- the dashboard ----------------------------------------------------------------------------------
    def setup(self, webhook_url: str, settings: dict[str, str], page_subscribed: bool = True) -> None:
        """Save the callback URL and verify token as the dashboard does (after its verification
        request; RuntimeError says why it failed), and subscribe the Page unless told not to."""
        with self.em.lock:
            self.settings = {k: str(v) for k, v in settings.items()}
        problem = self.verify_webhook(webhook_url)
        if problem:
            raise RuntimeError(problem)
        with self.em.lock:
            self.webhook_url = webhook_url
            if page_subscribed:
                self.subscribed_fields = sorted(set(self.subscribed_fields) | {"messages", "messaging_postbacks"})

    def verify_webhook(self, url: str) -> str | None:
        """Meta's verification request; None when answered right, else why not."""
        challenge = str(secrets.randbelow(10**10))
        with self.em.lock:
            self.verifications += 1
            token = self.settings.get("MESSENGER_VERIFY_TOKEN", "")
        try:
            answer = self._http.get(url, params={"hub.mode": "subscribe", "hub.challenge": challenge,
                                                 "hub.verify_token": token}, timeout=10, allow_redirects=False)
        except requests.RequestException as exc:
            return f"The callback URL could not be reached ({type(exc).__name__})."
        if answer.status_code != 200 or answer.text != challenge:
            return f"The URL couldn't be validated: HTTP {answer.status_code}, challenge not echoed."
        return None

    # -- users write to the Page ------------------------------------------------------------------------
    def envelope(self, events: list[dict[str, Any]], page_id: str | None = None) -> dict[str, Any]:
        """Events in Meta's delivery envelope, one entry."""
        now_ms = int(time.time() * 1000)
        return {"object": "page", "entry": [{"id": page_id or self.page_id, "time": now_ms, "messaging": events}]}

    def message_event(self, sender_id: str, text: str | None = "hi", *, mid: str | None = None,
                      attachment: bool = False) -> dict[str, Any]:
        """A ``messages`` event as the webhook reference's samples show it."""
        message: dict[str, Any] = {"mid": mid or new_mid()}
        if text is not None:
            message["text"] = text
        if attachment:
            message["attachments"] = [{"type": "image", "payload": {"url": "https://scontent.example/cat.jpg"}}]
        return {"sender": {"id": sender_id}, "recipient": {"id": self.page_id},
                "timestamp": int(time.time() * 1000), "message": message}

    def post(self, payload: dict[str, Any] | bytes, url: str | None = None,
             headers: dict[str, str] | None = None) -> requests.Response:
        """POST a delivery to the webhook, signed as Meta signs it (``headers`` replace that)."""
        body = payload if isinstance(payload, bytes) else encode(payload)
        with self.em.lock:
            url = url or self.webhook_url
            secret = self.settings.get("MESSENGER_APP_SECRET", "")
            self.delivered.append((mids(payload) if isinstance(payload, dict) else [], body))
        if not url or not secret:
            raise RuntimeError("no Messenger webhook is set up: POST /_emulator/messenger/setup first")
        sent = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(secret, body)}
        return self._http.post(url, data=body, headers=headers if headers is not None else sent, timeout=10)

    def deliver(self, sender_id: str, text: str | None = "hi", *, mid: str | None = None, attachment: bool = False,
                url: str | None = None) -> tuple[str, requests.Response]:
        """A message from a user to the Page; (its mid, the webhook's answer)."""
        return self._deliver_user(sender_id, self.message_event(sender_id, text, mid=mid, attachment=attachment),
                                  "messages", url)

    def deliver_postback(self, sender_id: str, title: str = "Get Started", payload: str = "GET_STARTED",
                         url: str | None = None) -> tuple[str, requests.Response]:
        """A tapped button (Get Started, a persistent menu item); (its mid, the webhook's answer)."""
        ev = {"sender": {"id": sender_id}, "recipient": {"id": self.page_id}, "timestamp": int(time.time() * 1000),
              "postback": {"mid": new_mid(), "title": title, "payload": payload}}
        return self._deliver_user(sender_id, ev, "messaging_postbacks", url)

    def _deliver_user(self, sender_id: str, ev: dict[str, Any], needs: str,
                      url: str | None) -> tuple[str, requests.Response]:
        with self.em.lock:
            if not url and needs not in self.subscribed_fields:
                raise RuntimeError(f"the Page is not subscribed to {needs}: run register_webhook.py messenger "
                                   "subscribe-page")
            self.last_written[sender_id] = time.time()
        answer = self.post(self.envelope([ev]), url)
        return (ev.get("message") or ev["postback"])["mid"], answer

    def deliver_echo(self, recipient_id: str, text: str = "an echo", url: str | None = None) -> requests.Response:
        """The Page's own message delivered back (``message_echoes``)."""
        ev = {"sender": {"id": self.page_id}, "recipient": {"id": recipient_id}, "timestamp": int(time.time() * 1000),
              "message": {"is_echo": True, "app_id": int(APP_ID), "mid": new_mid(), "text": text}}
        return self.post(self.envelope([ev]), url)

    def deliver_system(self, kind: str, sender_id: str, url: str | None = None) -> requests.Response:
        """A delivery receipt, read receipt, reaction, edit, or a message in the standby channel."""
        now_ms = int(time.time() * 1000)
        base = {"sender": {"id": sender_id}, "recipient": {"id": self.page_id}, "timestamp": now_ms}
        if kind == "standby":
            envelope = self.envelope([])
            del envelope["entry"][0]["messaging"]
            envelope["entry"][0]["standby"] = [self.message_event(sender_id, "to the other app")]
            return self.post(envelope, url)
        bodies = {"delivery": {"mids": [new_mid()], "watermark": now_ms}, "read": {"watermark": now_ms},
                  "reaction": {"reaction": "love", "emoji": "\u2764\ufe0f", "action": "react", "mid": new_mid()},
                  "message_edit": {"mid": new_mid(), "text": "edited", "num_edit": 1}}
        if kind not in bodies:
            raise ValueError(f"kind is one of {SYSTEM_EVENTS}, not {kind!r}")
        return self.post(self.envelope([{**base, kind: bodies[kind]}]), url)

    def redeliver(self, mid: str, url: str | None = None) -> requests.Response:
        """Deliver again, byte for byte, the delivery that carried ``mid`` (Meta retries)."""
        with self.em.lock:
            body = next((body for found, body in reversed(self.delivered) if mid in found), None)
        if body is None:
            raise KeyError(mid)
        return self.post(body, url)

    def replies(self, psid: str) -> list[str]:
        """The texts the bot sent this user."""
        return [dm.text for dm in self.em.sent_to(psid) if dm.channel == NAME]


def new_mid() -> str:
    """A message id in Meta's current form (``m_`` and URL-safe base64)."""
    return "m_" + secrets.token_urlsafe(64)


def encode(payload: dict[str, Any]) -> bytes:
    """JSON as Meta sends it: compact, escaped unicode with lowercase hex, and ``\\/``."""
    return json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()


def mids(payload: dict[str, Any]) -> list[str]:
    """The message and postback ids a delivery carries."""
    found = []
    for entry in payload.get("entry") or []:
        for ev in (entry.get("messaging") or []) + (entry.get("standby") or []):
            inner = ev.get("message") or ev.get("postback") or {}
            if isinstance(inner, dict) and inner.get("mid"):
                found.append(inner["mid"])
    return found


# -- the Graph API --------------------------------------------------------------------------------------------
def graph_error(status: int, code: int, message: str, subcode: int | None = None, transient: bool = False,
                headers: dict[str, str] | None = None) -> ResponseReturnValue:
    """Meta's error body, as every Graph API refusal carries it."""
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if subcode:
        error["error_subcode"] = subcode
    if transient:
        error["is_transient"] = True
    error["fbtrace_id"] = "A" + secrets.token_urlsafe(16)
    response = jsonify(error=error)
    response.headers.update(headers or {})
    return response, status


def _state() -> State:
    return emulator().platform(NAME)


def _refusal(version: str) -> ResponseReturnValue | None:
    """Meta's answer to a call it will not serve: an unknown version, no or a wrong token, a
    wrong ``appsecret_proof`` (the bot always sends one; Meta checks it when given)."""
    if not (version.startswith("v") and version[1:].replace(".", "", 1).isdigit() and "." in version):
        return graph_error(400, 2500, f"Unknown path components: /{version}")
    state = _state()
    with state.em.lock:
        token, secret = state.settings.get("MESSENGER_PAGE_ACCESS_TOKEN", ""), state.settings.get(
            "MESSENGER_APP_SECRET", "")
    auth = request.headers.get("Authorization", "")
    given = auth[len("Bearer "):] if auth.startswith("Bearer ") else request.args.get("access_token")
    if not given:
        return graph_error(400, 2500, "An active access token must be used to query information about the current user.")
    if not same_secret(given, token):
        return graph_error(400, 190, "Invalid OAuth access token - Cannot parse access token")
    proof = request.args.get("appsecret_proof")
    if proof is not None and not same_secret(proof, sign(secret, token.encode())[len("sha256="):]):
        return graph_error(400, 100, "Invalid appsecret_proof provided in the API argument")
    return None


@bp.post("/<version>/me/messages")
def send_message(version: str) -> ResponseReturnValue:
    state = _state()
    with state.em.lock:
        state.send_attempts += 1
    if refused := _refusal(version):
        return _rejected(state, "", refused)
    body = request.get_json(silent=True)
    recipient = (body.get("recipient") or {}).get("id") if isinstance(body, dict) else None
    text = (body.get("message") or {}).get("text") if isinstance(body, dict) else None
    if not isinstance(recipient, str) or not isinstance(text, str) or not 0 < len(text) <= 2000 or \
            body.get("messaging_type") not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
        return _rejected(state, str(recipient), graph_error(400, 100, "(#100) Invalid parameter"))
    if state.faults.latency:
        time.sleep(state.faults.latency)
    with state.em.lock:
        if refused := _fault_or_rule(state, recipient):
            return _rejected(state, recipient, refused)
        mid = new_mid()
        state.em.record_sent(SentDM(recipient, text, mid, time.time(), channel=NAME))
    return jsonify(recipient_id=recipient, message_id=mid)


def _fault_or_rule(state: State, recipient: str) -> ResponseReturnValue | None:
    """An injected fault, or what Meta refuses to this user. Lock held."""
    faults = state.faults
    if faults.errors_5xx > 0:
        faults.errors_5xx -= 1
        return graph_error(500, 2, "An unexpected error has occurred. Please retry your request later.",
                           transient=True)
    if faults.rate_limited > 0:
        faults.rate_limited -= 1
        usage = {state.page_id: [{"type": "messenger", "call_count": 100, "total_cputime": 1, "total_time": 1,
                                  "estimated_time_to_regain_access": faults.regain_minutes}]}
        return graph_error(faults.rate_limit_status, 613, "(#613) Calls to this api have exceeded the rate limit.",
                           headers={"X-Business-Use-Case-Usage": json.dumps(usage)})
    if recipient in faults.unreachable:
        return graph_error(400, 551, "(#551) This person isn't available right now.", 1545041)
    written = state.last_written.get(recipient)
    if written is None:
        return graph_error(400, 100, "(#100) No matching user found", 2018001)
    if time.time() > written + WINDOW:
        return graph_error(400, 10, "(#10) This message is sent outside of allowed window.", 2018278)
    return None


def _rejected(state: State, recipient: str, answer: ResponseReturnValue) -> ResponseReturnValue:
    with state.em.lock:
        state.em.rejected.append({"participant_id": recipient, "status": answer[1], "at": time.time(),
                                  "reason": answer[0].get_json()["error"]["message"], "channel": NAME})
    return answer


@bp.get("/<version>/me")
def me(version: str) -> ResponseReturnValue:
    if refused := _refusal(version):
        return refused
    return jsonify(name=PAGE_NAME, id=_state().page_id)


@bp.get("/<version>/app")
def app_of_token(version: str) -> ResponseReturnValue:
    if refused := _refusal(version):
        return refused
    return jsonify(link=f"https://www.facebook.com/games/?app_id={APP_ID}", name=APP_NAME, id=APP_ID)


@bp.route("/<version>/me/subscribed_apps", methods=["GET", "POST"])
def subscribed_apps(version: str) -> ResponseReturnValue:
    if refused := _refusal(version):
        return refused
    state = _state()
    if request.method == "POST":
        fields = [f for f in (request.args.get("subscribed_fields") or request.form.get("subscribed_fields")
                              or "").split(",") if f]
        if not fields or not set(fields) <= FIELDS:
            return graph_error(400, 100, "(#100) Param subscribed_fields must be one of the valid fields")
        with state.em.lock:
            state.subscribed_fields = sorted(set(fields))
        return jsonify(success=True)
    with state.em.lock:
        fields = list(state.subscribed_fields)
    apps = [{"category": "Business", "link": f"https://www.facebook.com/games/?app_id={APP_ID}", "name": APP_NAME,
             "id": APP_ID, "subscribed_fields": fields}] if fields else []
    return jsonify(data=apps)


# -- the emulator's control routes ----------------------------------------------------------------------------
@bp.post(f"/_emulator/{NAME}/setup")
def control_setup() -> ResponseReturnValue:
    """The dashboard step: ``{"webhook_url", "settings", "page_subscribed"?}``; 409 when the
    verification request fails."""
    body = request.get_json(force=True)
    try:
        _state().setup(str(body["webhook_url"]), dict(body.get("settings") or {}),
                       page_subscribed=body.get("page_subscribed", True) is not False)
    except RuntimeError as exc:
        return jsonify(error=str(exc)), 409
    return jsonify(page_id=PAGE_ID, app_id=APP_ID, webhook_url=body["webhook_url"])


@bp.post(f"/_emulator/{NAME}/deliver")
def control_deliver() -> ResponseReturnValue:
    """``{"sender_id", "text"?, "attachment"?, "postback"?: title, "url"?}`` from a user;
    409 when nothing can take it."""
    body = request.get_json(force=True)
    state, sender = _state(), str(body["sender_id"])
    try:
        if body.get("postback"):
            mid, answer = state.deliver_postback(sender, str(body["postback"]), url=body.get("url"))
        else:
            mid, answer = state.deliver(sender, body.get("text", ""), attachment=bool(body.get("attachment")),
                                        url=body.get("url"))
    except (RuntimeError, requests.RequestException) as exc:
        return jsonify(error=str(exc)), 409
    return jsonify(event_id=mid, webhook_status=answer.status_code)


@bp.post(f"/_emulator/{NAME}/faults")
def control_faults() -> ResponseReturnValue:
    """Replace every injected fault at once: a field left out is cleared."""
    body = request.get_json(force=True)
    state = _state()
    with state.em.lock:
        state.faults = MessengerFaults(
            latency=float(body.get("latency", 0)), errors_5xx=int(body.get("errors_5xx", 0)),
            rate_limited=int(body.get("rate_limited", 0)), rate_limit_status=int(body.get("rate_limit_status", 429)),
            regain_minutes=int(body.get("regain_minutes", 1)), unreachable=set(body.get("unreachable", [])))
        shown = {**asdict(state.faults), "unreachable": sorted(state.faults.unreachable)}
    return jsonify(faults=shown)
