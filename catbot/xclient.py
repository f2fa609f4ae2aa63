"""Talking to X: the tweepy client, its transport, and what X's answers mean for a reply.

tweepy 4.17 hard-codes ``https://api.twitter.com`` and passes no timeout to requests, so the
client's session gets a transport adapter that adds a default timeout and, when
``X_API_BASE_URL`` points elsewhere (the local emulator, a proxy), rewrites the URL after
signing: the OAuth 1.0a signature still covers the canonical URL, as X expects.
"""
from __future__ import annotations

import ipaddress
import logging
import time
from urllib.parse import urlsplit

import requests
import tweepy
from requests.adapters import HTTPAdapter

from catbot.budget import RateWindow
from catbot.outbound import Outcome, SendResult
from catbot.settings import Settings
from catbot.store import Batch

CANONICAL_HOSTS = ("https://api.twitter.com", "https://api.x.com")
DEFAULT_RETRY_AFTER = 60.0  # a 429 without a usable reset header: wait a minute, never spin

log = logging.getLogger("catbot.x")


class XTransport(HTTPAdapter):
    """Adds a default timeout to every request and sends X's URLs to ``base_url``."""

    def __init__(self, base_url: str, timeout: float, **kwargs: object) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        super().__init__(**kwargs)

    def send(self, request, **kwargs):  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        for host in CANONICAL_HOSTS:
            if request.url.startswith(host + "/") and self.base_url != host:
                request.url = self.base_url + request.url[len(host):]
                break
        return super().send(request, **kwargs)


def is_loopback(url: str) -> bool:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # not a URL at all ("http://[::1"): not loopback; calls with it fail as they should
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_session(settings: Settings, session: requests.Session | None = None) -> requests.Session:
    """A requests session for X: timeouts always, and ``X_API_BASE_URL`` honoured."""
    session = session or requests.Session()
    transport = XTransport(settings.x_api_base_url, settings.x_timeout, pool_maxsize=16)
    for host in CANONICAL_HOSTS:
        session.mount(host + "/", transport)
    if is_loopback(settings.x_api_base_url):
        session.trust_env = False  # no proxy between us and a local emulator
    return session


def build_tweepy_client(settings: Settings) -> tweepy.Client:
    """User-context client for sending DMs. ``wait_on_rate_limit`` stays off: it sleeps inside
    the call and spins when the reset header is missing; the reply job schedules retries."""
    client = tweepy.Client(
        bearer_token=settings.bearer_token or None,
        consumer_key=settings.consumer_key,
        consumer_secret=settings.consumer_secret,
        access_token=settings.access_token,
        access_token_secret=settings.access_token_secret,
        return_type=requests.Response,
        wait_on_rate_limit=False,
    )
    build_session(settings, client.session)
    return client


# -- what an attempt to send came to ------------------------------------------------------------
def rate_windows(headers: object, now: float, family: str = "dm") -> tuple[RateWindow, ...]:
    """The rate windows X reported: the 15-minute one and, when present, the 24-hour ones.
    ``family`` names them: the DM endpoint's are ``dm``, ``user_24h`` and ``app_24h``."""
    names = ("dm", "user_24h", "app_24h") if family == "dm" else (family, f"{family}_user_24h", f"{family}_app_24h")
    windows = []
    for name, prefix in zip(names, ("x-rate-limit", "x-user-limit-24hour", "x-app-limit-24hour")):
        try:
            remaining = int(headers.get(f"{prefix}-remaining"))  # type: ignore[attr-defined]
            reset = float(headers.get(f"{prefix}-reset"))  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            continue
        try:
            limit = int(headers.get(f"{prefix}-limit"))  # type: ignore[attr-defined]
        except (TypeError, ValueError):
            limit = None
        if reset > now - 1:
            windows.append(RateWindow(name, max(0, remaining), reset, limit))
    return tuple(windows)


def rate_limited(headers: object, now: float, detail: str, family: str = "dm") -> SendResult:
    """A 429: retry at the window's reset (a minute when X gave none), and the window spent."""
    windows = rate_windows(headers, now, family)
    try:
        reset = float(headers.get("x-rate-limit-reset"))  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        reset = 0.0
    retry_at = reset if reset > now else now + DEFAULT_RETRY_AFTER
    limit = next((w.limit for w in windows if w.name == family), None)
    windows = tuple(w for w in windows if w.name != family) + (RateWindow(family, 0, retry_at, limit),)
    return SendResult(Outcome.RATE_LIMITED, 429, detail, retry_at, windows)


def _x_message(exc: tweepy.HTTPException) -> str:
    messages = list(exc.api_messages) or [exc.response.reason or ""]
    return "; ".join(str(m) for m in messages)[:300]


class XDMSender:
    """Sends a reply as an X DM with tweepy and classifies the answer; never raises for X's or
    the network's failures."""

    def __init__(self, client: tweepy.Client, clock=time.time) -> None:
        self.client = client
        self.clock = clock

    def send(self, batch: Batch, text: str) -> SendResult:
        now = self.clock()
        try:
            response = self.client.create_direct_message(participant_id=batch.user_id, text=text)
        except tweepy.TooManyRequests as exc:
            return rate_limited(exc.response.headers, now, _x_message(exc))
        except tweepy.TwitterServerError as exc:
            return SendResult(Outcome.RETRY, exc.response.status_code, _x_message(exc))
        except tweepy.HTTPException as exc:  # 400, 401, 403, 404 and other 4xx: retrying won't help
            return SendResult(Outcome.REJECTED, exc.response.status_code, _x_message(exc))
        except requests.RequestException as exc:
            return SendResult(Outcome.RETRY, None, type(exc).__name__)
        windows = rate_windows(response.headers, now)
        try:
            event_id = str(response.json()["data"]["dm_event_id"])
        except (ValueError, KeyError, TypeError):
            event_id = None
        return SendResult(Outcome.SENT, response.status_code, windows=windows, message_id=event_id)
