"""A local stand-in for the parts of X this bot touches (see ../shared/docs/x-api-facts.md).

:class:`XEmulator` holds the state (what X remembers), its Python API (deliveries from simulated
users, redelivery, waiting for sent DMs) and the HTTP server. The routes live in one module per
X product area, each a Blueprint listed in :data:`AREAS`:

- :mod:`~x_emulator.auth`: ``POST /oauth2/token`` and the credential check every route makes;
- :mod:`~x_emulator.dms`: the DM send, its rate limit and injected faults;
- :mod:`~x_emulator.webhooks`: ``/2/webhooks`` (create, list, re-check, delete), with a real CRC;
- :mod:`~x_emulator.subscriptions`: the Account Activity subscriptions;
- :mod:`~x_emulator.activity`: the X Activity API subscriptions and the envelope it delivers in;
- :mod:`~x_emulator.replay`: ``POST /2/webhooks/replay``;
- :mod:`~x_emulator.chat`: X Chat (encrypted DMs): public keys, the bot's sends, simulated users;
- :mod:`~x_emulator.control`: the emulator's own control API under ``/_emulator/``.
"""
from __future__ import annotations

import itertools
import json
import queue
import secrets
import threading
import time
from typing import Any

import requests
from flask import Blueprint, Flask
from werkzeug.serving import make_server

from catbot.security import crc_response_token, sign
from x_emulator import activity, auth, chat, control, dms, replay, subscriptions, webhooks
from x_emulator.area import EXTENSION
from x_emulator.platforms import platform_modules
from x_emulator.records import APIS, ActivitySubscription, Credentials, Faults, SentDM, Webhook, now_iso

__all__ = ["AREAS", "Credentials", "Faults", "SentDM", "Webhook", "XEmulator"]

# One Blueprint per X product area: a new area is a new module and one line here.
AREAS: tuple[Blueprint, ...] = (
    auth.bp,
    dms.bp,
    webhooks.bp,
    subscriptions.bp,
    activity.bp,
    replay.bp,
    chat.bp,
    control.bp,
)


class XEmulator:
    """The emulator's state and its HTTP app. Thread-safe; one instance per server.

    ``api`` is what :meth:`register` subscribes the bot through, and the envelope
    :meth:`envelope` builds and :meth:`deliver_dm` posts to an explicit URL: ``"aaa"`` (the
    Account Activity API, the default, which most tests are written against) or ``"xaa"``.
    Deliveries without an explicit URL follow the subscriptions, whichever API made them.
    """

    def __init__(self, credentials: Credentials, dm_limit: int = 15, dm_window: float = 900.0,
                 strict_urls: bool = False, echo_outgoing: bool = True, webhook_limit: int = 1,
                 api: str = "aaa") -> None:
        self.creds = credentials
        self.api = checked_api(api)
        self.activity_access = "ok"  # one of ACCESS
        self.activity_subscription_limit = 1500  # X's self-serve limit
        self.dm_limit = dm_limit
        self.dm_window = dm_window
        self.strict_urls = strict_urls
        self.echo_outgoing = echo_outgoing
        self.webhook_limit = webhook_limit
        self.faults = Faults()
        self.sent: list[SentDM] = []
        self.rejected: list[dict[str, Any]] = []  # DM attempts answered with an error, and why
        self.webhooks: dict[str, Webhook] = {}
        self.subscriptions: dict[str, set[str]] = {}  # Account Activity: webhook id -> user ids
        self.activity_subscriptions: dict[str, ActivitySubscription] = {}  # X Activity API, by id
        self.delivered: list[tuple[float, dict[str, Any]]] = []  # for replay
        self.crc_checks = 0
        self.dm_attempts = 0  # DM sends received, counted before any latency or refusal
        self.dm_window_start = time.time()  # the DM rate limit's fixed window (see dms.py)
        self.dm_window_count = 0
        self.chat = chat.ChatState()  # X Chat: identities, public keys, conversations (see chat.py)
        self.public_key_fetches = 0  # GET /2/users/:id/public_keys calls, so tests see the bot's caching
        self.platforms: dict[str, object] = {}  # other platforms' state, by name (see platform())
        self.lock = threading.RLock()  # over all the state above; the product areas take it too
        self._changed = threading.Condition(self.lock)
        self._ids = itertools.count(1_800_000_000_000_000_001 + secrets.randbelow(10**12))
        self._outbox: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._http = requests.Session()
        self._http.trust_env = False
        self._server = None
        self._threads: list[threading.Thread] = []
        self.app = self._build_app()

    # -- Python API -------------------------------------------------------------------------------
    def platform(self, name: str):
        """The state of another platform the emulator plays (``x_emulator.platforms``)."""
        with self.lock:
            if name not in self.platforms:
                self.platforms[name] = platform_modules()[name].State(self)
            return self.platforms[name]

    def next_id(self) -> str:
        return str(next(self._ids))

    def set_rate_limit(self, limit: int, window: float) -> None:
        with self.lock:
            self.dm_limit, self.dm_window = limit, window
            self.dm_window_start, self.dm_window_count = time.time(), 0

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
        with self.lock:
            return [dm for dm in self.sent if dm.participant_id == participant_id]

    def _api(self, api: str | None) -> str:
        """``api``, or the switch's when None."""
        return checked_api(api or self.api)

    def webhook_url(self) -> str | None:
        """The URL deliveries go to: the first webhook the bot's DMs reach, through either API."""
        routes = self._routes("dm.received")
        return routes[0][0] if routes else None

    def register(self, url: str, api: str | None = None, chat: bool = False) -> Webhook:
        """Register ``url`` (after a real CRC check) and subscribe the bot account's DMs through
        ``api`` (default: :attr:`api`), in one go; what ``register_webhook.py setup`` does over HTTP.
        With ``chat``, also its X Chat messages (``chat.received``, X Activity API only)."""
        if chat and self._api(api) != "xaa":
            raise ValueError("X Chat events come only through the X Activity API (api='xaa')")
        problem = self.crc_check(url)
        if problem:
            raise RuntimeError(problem)
        webhook = Webhook(self.next_id(), url, True, now_iso())
        with self.lock:
            self.webhooks[webhook.id] = webhook
            if self._api(api) == "xaa":
                self.subscribe_activity("dm.received", webhook.id, tag="catfacts-bot")
                if chat:
                    self.subscribe_activity("chat.received", webhook.id, tag="catfacts-bot")
            else:
                self.subscriptions[webhook.id] = {self.creds.bot_user_id}
        return webhook

    def subscribe_activity(self, event_type: str, webhook_id: str | None, filter: dict[str, str] | None = None,
                           tag: str | None = None) -> ActivitySubscription:
        """An X Activity API subscription, as ``POST /2/activity/subscriptions`` makes one (without
        its checks): the bot's own events unless ``filter`` says otherwise."""
        if filter is None:
            filter = {} if event_type in activity.NO_USER_FILTER else {"user_id": self.creds.bot_user_id}
        now = now_iso()
        sub = ActivitySubscription(self.next_id(), event_type, filter, now, now, tag, webhook_id)
        with self.lock:
            self.activity_subscriptions[sub.subscription_id] = sub
        return sub

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

    def envelope(self, events: list[dict[str, Any]], key: str = "direct_message_events",
                 api: str | None = None) -> dict[str, Any]:
        """A delivery of these events in the envelope of ``api`` (default: :attr:`api`). The X
        Activity API carries DM events only (as ``dm.received``); ``key`` is for the Account
        Activity API's other activity (``follow_events``, ...)."""
        if self._api(api) == "xaa":
            if key != "direct_message_events":
                raise ValueError(f"the X Activity API has no {key}; see deliver_activity")
            return self.xaa_envelope(events)
        users = {}
        for ev in events:
            sender = ev.get("message_create", {}).get("sender_id")
            if sender:
                users[sender] = {"id": sender, "name": f"User {sender}", "screen_name": f"user{sender}"}
        bot = self.creds.bot_user_id
        users[bot] = {"id": bot, "name": "Cat Facts", "screen_name": "catfacts_bot"}
        return {"for_user_id": bot, key: events, "users": users}

    def xaa_envelope(self, events: list[dict[str, Any]], event_type: str = "dm.received",
                     tag: str | None = "catfacts-bot") -> dict[str, Any]:
        """DM events in the X Activity API's envelope, the shape of X's published samples."""
        return activity.envelope(event_type, activity.dm_payload(self, events), self.creds.bot_user_id, tag)

    def post_delivery(self, payload: dict[str, Any] | bytes, url: str | None = None,
                      timeout: float = 10.0) -> requests.Response:
        """POST a signed delivery to the webhook, as X does."""
        url = url or self.webhook_url()
        if not url:
            raise RuntimeError("no webhook is subscribed for the bot account; run register_webhook.py setup")
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        with self.lock:
            if not isinstance(payload, bytes):
                self.delivered.append((time.time(), payload))
        headers = {"Content-Type": "application/json",
                   "x-twitter-webhooks-signature": sign(self.creds.consumer_secret.encode(), body)}
        return self._http.post(url, data=body, headers=headers, timeout=timeout)

    def deliver_dm(self, sender_id: str, text: str, event_id: str | None = None, url: str | None = None,
                   media: bool = False, api: str | None = None) -> tuple[str, requests.Response]:
        """A DM from a simulated user to the bot; returns (event id, the webhook's answer).

        To ``url``, in the envelope of ``api`` (default: :attr:`api`). Without a URL, as X does:
        to every webhook a subscription sends the bot's DMs to, each in its API's envelope (during
        a move from one API to the other, the same DM twice); the answer is the first one."""
        event = self.dm_event(sender_id, text, event_id, media=media)
        if url:
            return event["id"], self.post_delivery(self.envelope([event], api=api), url)
        answers = [self.post_delivery(payload, to) for to, payload in self.dm_deliveries("dm.received", event)]
        if not answers:
            raise RuntimeError("no webhook is subscribed for the bot account; run register_webhook.py setup")
        return event["id"], answers[0]

    def set_public_keys(self, user_id: str, keys: dict[str, str] | list[dict[str, str]]) -> None:
        """Hold these as ``user_id``'s X Chat public keys (the fields ``GET .../public_keys``
        answers; a list newest first), as a registration through X would."""
        chat.set_public_keys(self, user_id, keys)

    def deliver_chat(self, sender_id: str, text: str, *, fault: str | None = None,
                     url: str | None = None) -> tuple[str, requests.Response]:
        """An X Chat message from a simulated user to the bot, encrypted for real; returns (message
        id, the first webhook's answer). ``fault``: one of ``chat.FAULTS`` (see chat.py)."""
        return chat.deliver(self, sender_id, text, fault, url)

    def deliver_activity(self, event_type: str, other_id: str = "3000000002") -> list[requests.Response]:
        """An X Activity API event of another type (``dm.read``, ``dm.indicate_typing``,
        ``chat.sent``, ``follow.follow``, ``oauth.revoke``...), ``other_id`` being the other
        party, to every webhook subscribed to it; the webhooks' answers."""
        payload = activity.activity_payload(self, event_type, other_id)
        return [self.post_delivery(activity.envelope(event_type, payload, user_id, tag), to)
                for to, api, tag, user_id in self._routes(event_type) if api == "xaa"]

    def dm_deliveries(self, event_type: str, event: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """(URL, payload) for each delivery X makes of a DM event: an X Activity API subscription
        to ``event_type`` gets its envelope and tag; an Account Activity subscription (which takes
        every activity of the account, the bot's own DMs included) the Account Activity one."""
        return [(to, self.xaa_envelope([event], event_type, tag) if api == "xaa" else self.envelope([event], api="aaa"))
                for to, api, tag, _ in self._routes(event_type)]

    def _routes(self, event_type: str) -> list[tuple[str, str, str | None, str | None]]:
        """(URL, API, tag, filtered user) of each subscription the bot's ``event_type`` reaches."""
        bot = self.creds.bot_user_id
        with self.lock:
            routes = [(self.webhooks[s.webhook_id].url, "xaa", s.tag, s.filter.get("user_id"))
                      for s in self.activity_subscriptions.values()
                      if s.event_type == event_type and s.webhook_id in self.webhooks
                      and s.filter.get("user_id") in (bot, None)]
            if event_type.startswith("dm."):
                routes += [(self.webhooks[w].url, "aaa", None, bot) for w, users in self.subscriptions.items()
                           if bot in users and w in self.webhooks]
        return routes

    def redeliver(self, event_id: str, url: str | None = None) -> requests.Response:
        """Deliver an already-delivered event (a DM event id, an X Chat message id) again,
        byte-for-byte the same envelope."""
        with self.lock:
            for _, payload in reversed(self.delivered):
                if event_id in event_ids(payload):
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

    def _build_app(self) -> Flask:
        app = Flask("x_emulator")
        app.json.sort_keys = False  # X's field order, as the bot's logs and the demo show it
        app.extensions[EXTENSION] = self
        for area in AREAS:
            app.register_blueprint(area)
        for module in platform_modules().values():  # Messenger, LINE, Telegram, Dialogflow
            app.register_blueprint(module.bp)
        return app

    def _deliver_outbox(self) -> None:
        """Post queued deliveries (the bot's own DMs, replays) in the background, as X does."""
        while (item := self._outbox.get()) is not None:
            url, payload = item
            try:
                self.post_delivery(payload, url, timeout=5)
            except requests.RequestException:
                pass

    # -- for the product areas --------------------------------------------------------------------
    def record_sent(self, dm: SentDM) -> None:
        """Keep a DM the bot sent, and wake :meth:`wait_for_sent`."""
        with self._changed:
            self.sent.append(dm)
            self._changed.notify_all()

    def deliver_later(self, url: str, payload: dict[str, Any]) -> None:
        """Queue a delivery for the background thread, so the route that caused it answers first."""
        self._outbox.put((url, payload))

    def crc_check(self, url: str) -> str | None:
        """Perform X's CRC check against ``url``; None when it passes, else why it failed."""
        token = secrets.token_urlsafe(24)
        with self.lock:
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



def event_ids(payload: dict[str, Any]) -> list[str]:
    """The ids of what a delivery carries: its DM events, or its X Chat message."""
    data = payload.get("data")
    inner = data.get("payload") if isinstance(data, dict) else None
    chat_id = [inner["id"]] if isinstance(inner, dict) and data.get("event_type") == "chat.received" else []
    return [ev.get("id") for ev in dm_events(payload)] + chat_id


def dm_events(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The DM events of a delivery in either envelope."""
    data = payload.get("data")
    inner = data.get("payload") if isinstance(data, dict) else None
    return (inner if isinstance(inner, dict) else payload).get("direct_message_events") or []


def checked_api(api: str) -> str:
    if api not in APIS:
        raise ValueError(f"api is one of {APIS}, not {api!r}")
    return api
