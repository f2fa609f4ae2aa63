"""A local stand-in for the parts of X this bot touches (see ../shared/docs/x-api-facts.md).

- ``POST /2/dm_conversations/with/:id/messages``: OAuth 1.0a checked, recorded, 201 with X's
  shape and ``x-rate-limit-*`` headers; a fixed-window DM rate limit answers 429 past it.
- ``POST /oauth2/token``, ``/2/webhooks`` (create, list, re-check, delete), the subscription
  endpoints and ``/2/webhooks/replay``; creating or re-checking a webhook performs a real CRC
  GET against its URL.
- Deliveries: a simulated user's DM, signed with the consumer secret, posted to the subscribed
  webhook; redelivery of an event; the bot's own DMs echoed back as X does; other activity.
- Faults for tests and benchmarks: latency, 5xx, 403 for chosen recipients, 429 bursts.
- A control API under ``/_emulator/`` and the Python API of :class:`XEmulator`.
"""
from __future__ import annotations

import base64
import itertools
import json
import queue
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from catbot.security import crc_response_token, sign
from x_emulator.oauth import verify_oauth1

DM_PATH = "/2/dm_conversations/with/<participant_id>/messages"


@dataclass(frozen=True)
class Credentials:
    consumer_key: str
    consumer_secret: str
    access_token: str
    access_token_secret: str
    bot_user_id: str = ""
    bearer_token: str = field(default_factory=lambda: "AAAA" + secrets.token_urlsafe(24))

    def __post_init__(self) -> None:
        if not self.bot_user_id:
            object.__setattr__(self, "bot_user_id", self.access_token.split("-", 1)[0])


@dataclass
class Faults:
    latency: float = 0.0  # seconds added before answering a DM send
    errors_5xx: int = 0  # the next N DM sends answer 503
    burst_429: int = 0  # the next N DM sends answer 429 (reset: end of the current window)
    forbidden: set[str] = field(default_factory=set)  # recipients that cannot be messaged (403)


@dataclass
class SentDM:
    participant_id: str
    text: str
    dm_event_id: str
    at: float


@dataclass
class Webhook:
    id: str
    url: str
    valid: bool
    created_at: str


def _unknown_webhook():
    return _problem(400, "Invalid Request", "Webhook id is not valid.", "WebhookIdInvalid")


def _problem(status: int, title: str, detail: str, reason: str | None = None):
    body: dict[str, Any] = {"title": title, "detail": detail, "type": "about:blank", "status": status}
    if reason:
        body = {"errors": [{"message": f"{reason}: {detail}"}], "title": title, "detail": detail,
                "type": "https://api.twitter.com/2/problems/invalid-request"}
    return jsonify(body), status


class XEmulator:
    """The emulator's state and its HTTP app. Thread-safe; one instance per server."""

    def __init__(self, credentials: Credentials, dm_limit: int = 15, dm_window: float = 900.0,
                 strict_urls: bool = False, echo_outgoing: bool = True, webhook_limit: int = 1) -> None:
        self.creds = credentials
        self.dm_limit = dm_limit
        self.dm_window = dm_window
        self.strict_urls = strict_urls
        self.echo_outgoing = echo_outgoing
        self.webhook_limit = webhook_limit
        self.faults = Faults()
        self.sent: list[SentDM] = []
        self.rejected: list[dict[str, Any]] = []  # DM attempts answered with an error, and why
        self.webhooks: dict[str, Webhook] = {}
        self.subscriptions: dict[str, set[str]] = {}
        self.delivered: list[tuple[float, dict[str, Any]]] = []  # for replay
        self.crc_checks = 0
        self.dm_attempts = 0  # DM sends received, counted before any latency or refusal
        self._window_start = time.time()
        self._window_count = 0
        self._ids = itertools.count(1_800_000_000_000_000_001 + secrets.randbelow(10**12))
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._outbox: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._http = requests.Session()
        self._http.trust_env = False
        self._server = None
        self._threads: list[threading.Thread] = []
        self.app = self._build_app()

    # -- Python API -------------------------------------------------------------------------------
    def next_id(self) -> str:
        return str(next(self._ids))

    def set_rate_limit(self, limit: int, window: float) -> None:
        with self._lock:
            self.dm_limit, self.dm_window = limit, window
            self._window_start, self._window_count = time.time(), 0

    def wait_for_sent(self, count: int, timeout: float = 10.0) -> list[SentDM]:
        """Block until at least ``count`` DMs were sent (or the timeout passes); return them all."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.sent) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return list(self.sent)

    def sent_to(self, participant_id: str) -> list[SentDM]:
        with self._lock:
            return [dm for dm in self.sent if dm.participant_id == participant_id]

    def webhook_url(self) -> str | None:
        """The URL deliveries go to: the webhook the bot account is subscribed through."""
        with self._lock:
            for webhook_id, users in self.subscriptions.items():
                if self.creds.bot_user_id in users and webhook_id in self.webhooks:
                    return self.webhooks[webhook_id].url
        return None

    def register(self, url: str) -> Webhook:
        """Register ``url`` (after a real CRC check) and subscribe the bot account, in one go;
        what ``register_webhook.py setup`` does over HTTP."""
        problem = self._crc(url)
        if problem:
            raise RuntimeError(problem)
        webhook = Webhook(self.next_id(), url, True, _now_iso())
        with self._lock:
            self.webhooks[webhook.id] = webhook
            self.subscriptions[webhook.id] = {self.creds.bot_user_id}
        return webhook

    def dm_event(self, sender_id: str, text: str, event_id: str | None = None,
                 recipient_id: str | None = None, media: bool = False) -> dict[str, Any]:
        """A ``message_create`` event in the Account Activity shape."""
        data: dict[str, Any] = {"text": text, "entities": {"hashtags": [], "symbols": [], "user_mentions": [],
                                                           "urls": []}}
        if media:
            data["attachment"] = {"type": "media", "media": {"id_str": self.next_id(), "type": "photo"}}
        return {
            "type": "message_create",
            "id": event_id or self.next_id(),
            "created_timestamp": str(int(time.time() * 1000)),
            "message_create": {"target": {"recipient_id": recipient_id or self.creds.bot_user_id},
                               "sender_id": sender_id, "message_data": data},
        }

    def envelope(self, events: list[dict[str, Any]], key: str = "direct_message_events") -> dict[str, Any]:
        users = {}
        for ev in events:
            sender = ev.get("message_create", {}).get("sender_id")
            if sender:
                users[sender] = {"id": sender, "name": f"User {sender}", "screen_name": f"user{sender}"}
        bot = self.creds.bot_user_id
        users[bot] = {"id": bot, "name": "Cat Facts", "screen_name": "catfacts_bot"}
        return {"for_user_id": bot, key: events, "users": users}

    def post_delivery(self, payload: dict[str, Any] | bytes, url: str | None = None,
                      timeout: float = 10.0) -> requests.Response:
        """POST a signed delivery to the webhook, as X does."""
        url = url or self.webhook_url()
        if not url:
            raise RuntimeError("no webhook is subscribed for the bot account; run register_webhook.py setup")
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        with self._lock:
            if not isinstance(payload, bytes):
                self.delivered.append((time.time(), payload))
        headers = {"Content-Type": "application/json",
                   "x-twitter-webhooks-signature": sign(self.creds.consumer_secret.encode(), body)}
        return self._http.post(url, data=body, headers=headers, timeout=timeout)

    def deliver_dm(self, sender_id: str, text: str, event_id: str | None = None, url: str | None = None,
                   media: bool = False) -> tuple[str, requests.Response]:
        """A DM from a simulated user to the bot; returns (event id, the webhook's answer)."""
        event = self.dm_event(sender_id, text, event_id, media=media)
        return event["id"], self.post_delivery(self.envelope([event]), url)

    def redeliver(self, event_id: str, url: str | None = None) -> requests.Response:
        """Deliver an already-delivered event again, byte-for-byte the same envelope."""
        with self._lock:
            for _, payload in reversed(self.delivered):
                if any(ev.get("id") == event_id for ev in payload.get("direct_message_events", [])):
                    break
            else:
                raise KeyError(event_id)
        return self.post_delivery(payload, url)

    # -- HTTP server ------------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> "XEmulator":
        self._server = make_server(host, port, self.app, threaded=True)
        serve = lambda: self._server.serve_forever(poll_interval=0.05)  # noqa: E731 - quick shutdown
        for name, target in (("http", serve), ("outbox", self._deliver_outbox)):
            thread = threading.Thread(target=target, daemon=True, name=f"x-emulator-{name}")
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._outbox.put(None)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _deliver_outbox(self) -> None:
        """Echo the bot's own DMs back to its webhook in the background, as X does."""
        while (item := self._outbox.get()) is not None:
            url, payload = item
            try:
                self.post_delivery(payload, url, timeout=5)
            except requests.RequestException:
                pass

    # -- auth ---------------------------------------------------------------------------------------
    def _user_auth_error(self) -> str | None:
        form = request.get_data(as_text=True) if request.mimetype == "application/x-www-form-urlencoded" else None
        return verify_oauth1(request.method, request.url, dict(request.headers), form,
                             self.creds.consumer_key, self.creds.consumer_secret,
                             self.creds.access_token, self.creds.access_token_secret)

    def _refuse_unless_user(self):
        """None when the request is signed as the bot account (OAuth 1.0a), else X's 401."""
        reason = self._user_auth_error()
        return _problem(401, "Unauthorized", f"Unauthorized ({reason})") if reason else None

    def _authorized(self, *, bearer: bool, user: bool) -> bool:
        header = request.headers.get("Authorization", "")
        if bearer and header == f"Bearer {self.creds.bearer_token}":
            return True
        return user and header.startswith("OAuth ") and self._user_auth_error() is None

    # -- the app ------------------------------------------------------------------------------------
    def _build_app(self) -> Flask:  # noqa: C901 - one route table, read top to bottom
        app = Flask("x_emulator")
        app.json.sort_keys = False
        em = self

        @app.post(DM_PATH)
        def create_dm(participant_id: str):
            with em._lock:
                em.dm_attempts += 1
            reason = em._user_auth_error()
            if reason:
                em._note_rejected(participant_id, 401, reason)
                return _problem(401, "Unauthorized", f"Unauthorized ({reason})")
            if em.faults.latency:
                time.sleep(em.faults.latency)
            body = request.get_json(silent=True)
            text = body.get("text") if isinstance(body, dict) else None
            if not isinstance(text, str) or not text or len(text) > 10_000:
                em._note_rejected(participant_id, 400, "text")
                return _problem(400, "Invalid Request", "The `text` field is required (1 to 10000 characters).")
            with em._lock:
                now = time.time()
                if now >= em._window_start + em.dm_window:
                    em._window_start, em._window_count = now, 0
                reset = int(em._window_start + em.dm_window) + 1
                if em.faults.errors_5xx > 0:
                    em.faults.errors_5xx -= 1
                    em._note_rejected(participant_id, 503, "injected")
                    return _problem(503, "Service Unavailable", "Service Unavailable")
                if em.faults.burst_429 > 0 or em._window_count >= em.dm_limit:
                    em.faults.burst_429 = max(0, em.faults.burst_429 - 1)
                    em._note_rejected(participant_id, 429, "rate limit")
                    response, status = _problem(429, "Too Many Requests", "Too Many Requests")
                    response.headers.update(em._rate_headers(0, reset))
                    return response, status
                em._window_count += 1
                remaining = max(0, em.dm_limit - em._window_count)
                if participant_id in em.faults.forbidden:
                    em._note_rejected(participant_id, 403, "forbidden")
                    return _problem(403, "Forbidden", "You are not permitted to send Direct Messages to this user.")
                dm = SentDM(participant_id, text, em.next_id(), now)
                em.sent.append(dm)
                em._changed.notify_all()
                bot = em.creds.bot_user_id
                url = em.webhook_url()
                if em.echo_outgoing and url:
                    event = em.dm_event(bot, text, dm.dm_event_id, recipient_id=participant_id)
                    em._outbox.put((url, em.envelope([event])))
            a, b = sorted([participant_id, bot], key=int)
            response = jsonify(data={"dm_conversation_id": f"{a}-{b}", "dm_event_id": dm.dm_event_id})
            response.headers.update(em._rate_headers(remaining, reset))
            return response, 201

        @app.post("/oauth2/token")
        def oauth2_token():
            expected = base64.b64encode(f"{em.creds.consumer_key}:{em.creds.consumer_secret}".encode()).decode()
            if request.headers.get("Authorization", "") != f"Basic {expected}":
                return jsonify(errors=[{"code": 99, "message": "Unable to verify your credentials",
                                        "label": "authenticity_token_error"}]), 403
            if request.form.get("grant_type") != "client_credentials":
                return jsonify(errors=[{"code": 170, "message": "Missing required parameter: grant_type"}]), 403
            return jsonify(token_type="bearer", access_token=em.creds.bearer_token)

        @app.post("/2/webhooks")
        def create_webhook():
            if not em._authorized(bearer=True, user=True):
                return _problem(401, "Unauthorized", "Unauthorized")
            url = (request.get_json(silent=True) or {}).get("url")
            problem = em._check_url(url)
            if problem:
                return _problem(400, "Invalid Request", problem, "UrlValidationFailed")
            with em._lock:
                if any(w.url == url for w in em.webhooks.values()):
                    return _problem(400, "Invalid Request", "A webhook with this URL already exists.",
                                    "DuplicateUrlFailed")
                if len(em.webhooks) >= em.webhook_limit:
                    return _problem(400, "Invalid Request", "Too many webhooks registered for this app.",
                                    "WebhookLimitExceeded")
            crc_problem = em._crc(url)
            if crc_problem:
                return _problem(400, "Invalid Request", crc_problem, "CrcValidationFailed")
            webhook = Webhook(em.next_id(), url, True, _now_iso())
            with em._lock:
                em.webhooks[webhook.id] = webhook
            return jsonify(data=asdict(webhook))

        @app.get("/2/webhooks")
        def list_webhooks():
            if not em._authorized(bearer=True, user=False):
                return _problem(401, "Unauthorized", "Unauthorized")
            with em._lock:
                data = [asdict(w) for w in em.webhooks.values()]
            return jsonify(data=data, meta={"result_count": len(data)})

        @app.put("/2/webhooks/<webhook_id>")
        def recheck_webhook(webhook_id: str):
            if not em._authorized(bearer=True, user=True):
                return _problem(401, "Unauthorized", "Unauthorized")
            webhook = em.webhooks.get(webhook_id)
            if webhook is None:
                return _unknown_webhook()
            crc_problem = em._crc(webhook.url)
            webhook.valid = crc_problem is None
            if crc_problem:
                return _problem(400, "Invalid Request", crc_problem, "CrcValidationFailed")
            return jsonify(data={"valid": True})

        @app.delete("/2/webhooks/<webhook_id>")
        def delete_webhook(webhook_id: str):
            if not em._authorized(bearer=True, user=True):
                return _problem(401, "Unauthorized", "Unauthorized")
            with em._lock:
                if em.webhooks.pop(webhook_id, None) is None:
                    return _unknown_webhook()
                em.subscriptions.pop(webhook_id, None)
            return jsonify(data={"deleted": True})

        subs = "/2/account_activity/webhooks/<webhook_id>/subscriptions"

        @app.post(subs + "/all")
        def subscribe(webhook_id: str):
            if refused := em._refuse_unless_user():
                return refused
            with em._lock:
                if webhook_id not in em.webhooks:
                    return _unknown_webhook()
                users = em.subscriptions.setdefault(webhook_id, set())
                if em.creds.bot_user_id in users:
                    return _problem(400, "Invalid Request", "This user is already subscribed.",
                                    "DuplicateSubscriptionFailed")
                users.add(em.creds.bot_user_id)
            return jsonify(data={"subscribed": True})

        @app.get(subs + "/all")
        def check_subscription(webhook_id: str):
            if refused := em._refuse_unless_user():
                return refused
            with em._lock:
                if webhook_id not in em.webhooks:
                    return _unknown_webhook()
                subscribed = em.creds.bot_user_id in em.subscriptions.get(webhook_id, set())
            return jsonify(data={"subscribed": subscribed})

        @app.get(subs + "/all/list")
        def list_subscriptions(webhook_id: str):
            if not em._authorized(bearer=True, user=False):
                return _problem(401, "Unauthorized", "Unauthorized")
            with em._lock:
                webhook = em.webhooks.get(webhook_id)
                if webhook is None:
                    return _unknown_webhook()
                users = sorted(em.subscriptions.get(webhook_id, set()))
            return jsonify(data={"webhook_id": webhook_id, "webhook_url": webhook.url, "application_id": "1",
                                 "subscriptions": [{"user_id": u} for u in users]})

        @app.get("/2/account_activity/subscriptions/count")
        def count_subscriptions():
            if not em._authorized(bearer=True, user=False):
                return _problem(401, "Unauthorized", "Unauthorized")
            with em._lock:
                total = sum(len(u) for u in em.subscriptions.values())
            return jsonify(data={"account_name": "catfacts", "provisioned_count": "3",
                                 "subscriptions_count_all": str(total), "subscriptions_count_direct_messages": "0"})

        @app.delete("/2/account_activity/webhooks/<webhook_id>/subscriptions/<user_id>/all")
        def unsubscribe(webhook_id: str, user_id: str):
            if not em._authorized(bearer=True, user=False):
                return _problem(401, "Unauthorized", "Unauthorized")
            with em._lock:
                users = em.subscriptions.get(webhook_id, set())
                if user_id not in users:
                    return _problem(400, "Invalid Request", "No subscription for this user.", "SubscriptionNotFound")
                users.discard(user_id)
            return jsonify(data={"subscribed": False})

        @app.post("/2/webhooks/replay")
        def replay():
            if not em._authorized(bearer=True, user=False):
                return _problem(401, "Unauthorized", "Unauthorized")
            body = request.get_json(silent=True) or {}
            webhook = em.webhooks.get(str(body.get("webhook_id")))
            if webhook is None:
                return _unknown_webhook()
            try:
                start, end = (_parse_replay_date(body.get(k)) for k in ("from_date", "to_date"))
            except ValueError as exc:
                return _problem(400, "Invalid Request", str(exc))
            if end <= start or start < time.time() - 24 * 3600 - 60:
                return _problem(400, "Invalid Request", "from_date must be within the last 24 hours, before to_date.")
            job_id = em.next_id()
            with em._lock:
                payloads = [p for at, p in em.delivered if start <= at < end + 60]
            for payload in payloads:
                em._outbox.put((webhook.url, payload))
            em._outbox.put((webhook.url, {"replay_job_status": {"job_id": job_id, "job_state": "Complete",
                                                                "job_state_description": "Job completed"}}))
            return jsonify(data={"job_id": job_id, "created_at": _now_iso()})

        # -- control API ----------------------------------------------------------------------------
        @app.get("/_emulator/sent")
        def control_sent():
            after = request.args.get("after", default=0, type=int)
            with em._lock:
                items = [asdict(dm) for dm in em.sent[after:]]
            return jsonify(sent=items, total=after + len(items))

        @app.post("/_emulator/faults")
        def control_faults():
            body = request.get_json(force=True)
            with em._lock:
                em.faults = Faults(latency=float(body.get("latency", 0)), errors_5xx=int(body.get("errors_5xx", 0)),
                                   burst_429=int(body.get("burst_429", 0)), forbidden=set(body.get("forbidden", [])))
            return jsonify(faults={**asdict(em.faults), "forbidden": sorted(em.faults.forbidden)})

        @app.post("/_emulator/rate_limit")
        def control_rate_limit():
            body = request.get_json(force=True)
            em.set_rate_limit(int(body["limit"]), float(body["window"]))
            return jsonify(limit=em.dm_limit, window=em.dm_window)

        @app.post("/_emulator/deliver")
        def control_deliver():
            body = request.get_json(force=True)
            try:
                event_id, answer = em.deliver_dm(str(body["sender_id"]), str(body.get("text", "")),
                                                 body.get("event_id"), media=bool(body.get("media")))
            except (RuntimeError, requests.RequestException) as exc:
                return jsonify(error=str(exc)), 409
            return jsonify(event_id=event_id, webhook_status=answer.status_code)

        @app.get("/_emulator/state")
        def control_state():
            with em._lock:
                return jsonify(webhooks=[asdict(w) for w in em.webhooks.values()],
                               subscriptions={k: sorted(v) for k, v in em.subscriptions.items()},
                               sent=len(em.sent), rejected=len(em.rejected), crc_checks=em.crc_checks)

        return app

    # -- helpers ------------------------------------------------------------------------------------
    def _note_rejected(self, participant_id: str, status: int, reason: str) -> None:
        with self._lock:
            self.rejected.append({"participant_id": participant_id, "status": status, "reason": reason,
                                  "at": time.time()})

    def _rate_headers(self, remaining: int, reset: int) -> dict[str, str]:
        return {"x-rate-limit-limit": str(self.dm_limit), "x-rate-limit-remaining": str(remaining),
                "x-rate-limit-reset": str(reset)}

    def _check_url(self, url: Any) -> str | None:
        if not isinstance(url, str) or not url:
            return "url is required"
        parts = urlsplit(url)
        if len(url) > 200:
            return "The URL is longer than 200 characters."
        if self.strict_urls and (parts.scheme != "https" or parts.port):
            return "The URL must use https and no port."
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "The URL is not a valid http(s) URL."
        return None

    def _crc(self, url: str) -> str | None:
        """Perform X's CRC check against ``url``; None when it passes."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.crc_checks += 1
        try:
            answer = self._http.get(url, params={"crc_token": token}, timeout=10, allow_redirects=False)
        except requests.RequestException as exc:
            return f"The webhook did not answer the CRC request ({type(exc).__name__})."
        if answer.status_code != 200:
            return f"The CRC request returned HTTP {answer.status_code}."
        try:
            given = answer.json().get("response_token")
        except (ValueError, AttributeError):
            given = None
        if given != crc_response_token(self.creds.consumer_secret, token):
            return "The CRC response token did not match."
        return None


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parse_replay_date(value: Any) -> float:
    if not isinstance(value, str):
        raise ValueError("from_date and to_date are required (yyyymmddhhmm)")
    try:
        return datetime.strptime(value, "%Y%m%d%H%M").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise ValueError(f"{value!r} is not a date in the form yyyymmddhhmm") from None
