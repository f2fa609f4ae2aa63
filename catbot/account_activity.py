"""X's Account Activity API v2: webhooks, subscriptions, replay; plus our own CRC pre-flight and
the bot's X Chat public keys.

Used once at set-up and for day-two operations by ``register_webhook.py`` (and for a replay after
downtime), never on the delivery path. Webhooks and replay serve the X Activity API too, whose
subscriptions are in :mod:`catbot.activity_api`.

Endpoints and auth per ../shared/docs/x-api-facts.md: app-only bearer for webhook management,
OAuth 1.0a as the bot account for subscribing. URLs are written against https://api.x.com and
sent through the same session factory as the bot's DMs, so ``X_API_BASE_URL`` and timeouts
apply here too.
"""
from __future__ import annotations

import math
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from requests_oauthlib import OAuth1

from catbot.security import crc_response_token
from catbot.settings import Settings
from catbot.xclient import build_session, is_loopback

API = "https://api.x.com"
PUBLIC_KEY_FIELDS = "public_key,public_key_version,signing_public_key,identity_public_key_signature"
X_DEADLINE = 10.0  # seconds X waits for a webhook's answer (X's current webhook docs; legacy pages said 3)
ADVICE = {
    "CrcValidationFailed": "X's CRC check of the URL failed. Check that the bot is running at that URL over https, "
                           f"answers GET /webhook/twitter?crc_token=... within {X_DEADLINE:.0f} s, and uses the same "
                           "CONSUMER_SECRET as this app (a different secret gives a wrong response_token).",
    "UrlValidationFailed": "X refused the URL: it must be https, have no port, and be at most 200 characters.",
    "DuplicateUrlFailed": "A webhook with this URL exists already; `status` shows it, `check` re-validates it.",
    "WebhookLimitExceeded": "The app's webhook limit is taken. Use `register URL --replace` to replace the old "
                            "webhook, or `delete ID` first.",
    "WebhookIdInvalid": "No webhook has that id; `status` lists the app's webhooks.",
    "DuplicateSubscriptionFailed": "The account is already subscribed.",
    "SubscriptionLimitExceeded": "The app's subscription limit is reached; remove one with `unsubscribe` or raise "
                                 "your access tier.",
    "SubscriptionNotFound": "The account is not subscribed to this webhook.",
    "QueryParamInvalid": "X refused the replay window: from_date must lie within the last 24 hours and before "
                         "to_date, neither in the future. Ask for a shorter --since, or check this machine's clock.",
    "ReplayConflictError": "A replay job is already running for this webhook; X takes one at a time. Wait until it "
                           "finishes (the bot logs its replay_job_status) and ask again.",
    401: "X did not accept the credentials. Check CONSUMER_KEY/CONSUMER_SECRET and, for subscribing, "
         "ACCESS_TOKEN/ACCESS_TOKEN_SECRET of the bot account.",
    403: "X refused the request. Webhooks and the Account Activity API need the pay-per-use or enterprise tier "
         "and an app with 'Read, Write and Direct Messages' permission; access tokens made before that permission "
         "was set must be regenerated in the developer portal.",
    429: "X's rate limit for webhook management was reached (450 requests / 15 min); try again later.",
}


class XRefused(Exception):
    """X answered with an error; ``reason`` is X's reason code or the HTTP status. ``said`` is all
    the text of X's answer, for callers that recognise a refusal by its words; ``advice``, when
    given, replaces the advice looked up by reason and status."""

    reset_at: int | None = None  # a 429's x-rate-limit-reset (unix seconds), when X sent one

    def __init__(self, status: int | None, reason: str | int, detail: str, said: str = "",
                 advice: str | None = None) -> None:
        self.status, self.reason, self.detail, self.said = status, reason, detail, said or detail
        self._advice = advice
        super().__init__(f"{reason}: {detail}")

    @property
    def advice(self) -> str:
        if self._advice is not None:
            return self._advice
        return ADVICE.get(self.reason) or ADVICE.get(self.status or 0) or ""


class XUnreachable(XRefused):
    """X was never asked, or what answered was not X's API: a local condition (network, proxy,
    ``X_API_BASE_URL``), so the advice is local too, never X's reasons or permissions.

    A subclass of :class:`XRefused` so that code for which any failed call is the same
    (``Runtime.replay_missed``) keeps one ``except``; ``register_webhook.py`` tells them apart."""

    def __init__(self, base_url: str, problem: str) -> None:
        super().__init__(None, "unreachable", f"could not reach X at {base_url}: {problem}")

    def __str__(self) -> str:
        return self.detail

    @property
    def advice(self) -> str:
        return "check X_API_BASE_URL and your network"


_REASON = re.compile(r"\b(" + "|".join(k for k in ADVICE if isinstance(k, str)) + r")\b")


def _texts(body: Any) -> list[str]:
    """Every text X may put a reason in: ``message``, ``title`` and ``detail`` of each entry of
    ``errors``, then the problem's own ``title``, ``detail`` and ``reason``."""
    if not isinstance(body, dict):
        return []
    errors = body.get("errors") if isinstance(body.get("errors"), list) else []
    fields = [e.get(k) for e in errors if isinstance(e, dict) for k in ("message", "title", "detail")]
    fields += [body.get(k) for k in ("title", "detail", "reason")]
    return [text for text in fields if isinstance(text, str) and text.strip()]


def _refusal(response: requests.Response) -> XRefused:
    """X's reason for an error answer, wherever in the problem X wrote it (``Reason: detail``
    in an ``errors[].message`` is the documented form; titles and details carry it too)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    texts = _texts(body)
    said = " | ".join(dict.fromkeys(texts))
    for text in texts:
        if match := _REASON.search(text):
            rest = text[match.end():].lstrip(" :-").strip()
            detail = rest or next((t for t in texts if not _REASON.search(t)), text)
            return XRefused(response.status_code, match.group(1), detail, said)
    detail = body.get("detail") if isinstance(body, dict) and isinstance(body.get("detail"), str) else ""
    refused = XRefused(response.status_code, response.status_code, detail or said or response.reason, said)
    reset = response.headers.get("x-rate-limit-reset", "")
    if response.status_code == 429 and reset.isdigit():
        refused.reset_at = int(reset)  # when a limit such as X Chat's few key registrations a day allows again
    return refused


@dataclass
class Preflight:
    """What our own checks found about a webhook URL before X is asked."""

    url: str
    problems: list[str] = field(default_factory=list)  # would make X refuse the URL
    crc_ok: bool | None = None
    seconds: float | None = None


class AccountActivity:
    """A small client for the webhook and subscription endpoints."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = build_session(settings, session)
        self.user_auth = OAuth1(settings.consumer_key, settings.consumer_secret,
                                settings.access_token, settings.access_token_secret)
        self._bearer = settings.bearer_token or None

    # -- plumbing -------------------------------------------------------------------------------
    def bearer(self) -> str:
        """The app-only bearer token: BEARER_TOKEN, or one fetched with the consumer key and secret.

        The fetch goes through :meth:`_request` like every other call, so an unreachable X is
        the same clean error with or without BEARER_TOKEN."""
        if self._bearer is None:
            response = self._request("POST", "/oauth2/token", data={"grant_type": "client_credentials"},
                                     auth=(quote(self.settings.consumer_key, safe=""),
                                           quote(self.settings.consumer_secret, safe="")))
            token = self._json(response).get("access_token")
            if not isinstance(token, str) or not token:
                raise XUnreachable(self.settings.x_api_base_url, "the token answer has no access_token")
            self._bearer = token
        return self._bearer

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The one place a request to X is made: a transport failure (refused connection, DNS,
        timeout, an unusable X_API_BASE_URL) becomes :class:`XUnreachable`, an error answer
        :class:`XRefused`."""
        try:
            response = self.session.request(method, API + path, **kwargs)
        except requests.RequestException as exc:
            raise XUnreachable(self.settings.x_api_base_url, type(exc).__name__) from exc
        if not 200 <= response.status_code < 300:
            raise _refusal(response)
        return response

    def _json(self, response: requests.Response) -> dict[str, Any]:
        """A success answer's JSON object; anything else came from something that is not X's API
        (a wrong X_API_BASE_URL, a captive portal), which is a local problem too."""
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise XUnreachable(self.settings.x_api_base_url,
                               f"HTTP {response.status_code} with a body that is not X's JSON")
        return body

    def call(self, method: str, path: str, *, user: bool = False, json: Any = None,
             params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One call to X, signed as the bot account (``user``) or with the app's bearer token;
        the answer's JSON object."""
        kwargs: dict[str, Any] = {"json": json, "params": params}
        if user:
            kwargs["auth"] = self.user_auth
        else:
            kwargs["headers"] = {"Authorization": f"Bearer {self.bearer()}"}
        return self._json(self._request(method, path, **kwargs))

    # -- webhooks ---------------------------------------------------------------------------------
    def webhooks(self) -> list[dict[str, Any]]:
        return self.call("GET", "/2/webhooks").get("data") or []

    def create_webhook(self, url: str) -> dict[str, Any]:
        return self.call("POST", "/2/webhooks", json={"url": url})["data"]

    def recheck(self, webhook_id: str) -> bool:
        """Make X run its CRC check now: True when it passed. X answers 200 whatever the verdict."""
        return (self.call("PUT", f"/2/webhooks/{webhook_id}").get("data") or {}).get("valid") is True

    def delete_webhook(self, webhook_id: str) -> None:
        self.call("DELETE", f"/2/webhooks/{webhook_id}")

    # -- subscriptions ----------------------------------------------------------------------------
    def is_subscribed(self, webhook_id: str) -> bool:
        path = f"/2/account_activity/webhooks/{webhook_id}/subscriptions/all"
        return bool(self.call("GET", path, user=True)["data"].get("subscribed"))

    def subscribe(self, webhook_id: str) -> None:
        self.call("POST", f"/2/account_activity/webhooks/{webhook_id}/subscriptions/all", user=True)

    def unsubscribe(self, webhook_id: str, user_id: str) -> None:
        self.call("DELETE", f"/2/account_activity/webhooks/{webhook_id}/subscriptions/{user_id}/all")

    def subscriptions(self, webhook_id: str) -> list[str]:
        data = self.call("GET", f"/2/account_activity/webhooks/{webhook_id}/subscriptions/all/list")["data"]
        return [s["user_id"] for s in data.get("subscriptions") or []]

    def subscription_count(self) -> dict[str, Any]:
        return self.call("GET", "/2/account_activity/subscriptions/count")["data"]

    def replay(self, webhook_id: str, start: float, end: float) -> dict[str, Any]:
        """Ask X to re-deliver ``start``..``end`` (unix seconds). The dates have minute precision
        and X refuses a from_date older than 24 hours by even a second, so both are rounded
        toward now's side of the window: from_date up, to_date down (never the future)."""
        first, last = math.ceil(start / 60) * 60, math.floor(end / 60) * 60
        first = min(first, last - 60)  # a window shorter than a minute still asks for one
        fmt = "%Y%m%d%H%M"
        body = {"webhook_id": webhook_id, "from_date": time.strftime(fmt, time.gmtime(first)),
                "to_date": time.strftime(fmt, time.gmtime(last))}
        return self.call("POST", "/2/webhooks/replay", json=body).get("data") or {}

    # -- X Chat public keys (the bot's own, registered once by `register_webhook.py xchat-keys`) -----
    def public_keys(self, user_id: str) -> list[dict[str, Any]]:
        """X's records of ``user_id``'s X Chat public keys; none is an empty list (X answers 200
        with ``errors`` for a user without keys)."""
        params = {"public_key.fields": PUBLIC_KEY_FIELDS}
        keys = self.call("GET", f"/2/users/{user_id}/public_keys", user=True, params=params).get("data")
        return [key for key in keys if isinstance(key, dict)] if isinstance(keys, list) else []

    def add_public_key(self, user_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Register an X Chat public key for ``user_id`` (the bot, signed as the bot): X's
        AddUserPublicKeyRequest; the answer's ``data`` (``public_key_version``)."""
        data = self.call("POST", f"/2/users/{user_id}/public_keys", user=True, json=body).get("data")
        return data if isinstance(data, dict) else {}

    # -- our own checks ---------------------------------------------------------------------------
    def preflight(self, url: str) -> Preflight:
        """X's URL rules, then a CRC round trip of our own against the URL."""
        result = Preflight(url)
        parts = urlsplit(url)
        if parts.scheme != "https":
            result.problems.append("the URL is not https (X requires https)")
        if parts.port is not None:
            result.problems.append("the URL has a port (X accepts none)")
        if len(url) > 200:
            result.problems.append(f"the URL has {len(url)} characters (X allows at most 200)")
        if not parts.path.rstrip("/").endswith("/webhook/twitter"):
            result.problems.append("the URL does not end in /webhook/twitter, where this bot answers")
        token = secrets.token_urlsafe(24)
        started = time.monotonic()
        try:
            with requests.Session() as http:
                http.trust_env = not is_loopback(url)  # no proxy between us and a local bot
                answer = http.get(url, params={"crc_token": token}, timeout=X_DEADLINE + 5, allow_redirects=False)
        except requests.RequestException as exc:
            result.problems.append(f"the URL is unreachable from here ({type(exc).__name__})")
            result.crc_ok = False
            return result
        result.seconds = time.monotonic() - started
        if answer.status_code != 200:
            result.problems.append(f"the CRC answer was HTTP {answer.status_code}, not 200"
                                   + (" (X treats redirects as failures)" if 300 <= answer.status_code < 400 else ""))
            result.crc_ok = False
            return result
        try:
            given = answer.json().get("response_token")
        except (ValueError, AttributeError):
            given = None
        result.crc_ok = given == crc_response_token(self.settings.consumer_secret, token)
        if given is None:
            result.problems.append("the CRC answer has no JSON response_token")
        elif not result.crc_ok:
            result.problems.append("the CRC answer has the wrong response_token: the bot at that URL uses a "
                                   "different CONSUMER_SECRET than these settings")
        if result.seconds > X_DEADLINE / 2:  # X's path to the bot is longer than ours: keep a margin
            result.problems.append(f"the CRC answer took {result.seconds:.1f} s (X gives up after {X_DEADLINE:g} s)")
        return result
