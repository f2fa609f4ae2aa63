"""X's Activity API (XAA) subscriptions: how ``register_webhook.py`` subscribes the bot's DMs.

X delivers DM events through XAA to the same webhooks as the Account Activity API (same CRC, same
signature); only the subscription calls and the envelope differ. Per OpenAPI 2.167 (see
../shared/docs/x-api-facts.md, "X Activity API"): ``POST /2/activity/subscriptions`` takes a user
context or the bearer token, and the docs' prose asks for the monitored account's own user
context for private events such as ``dm.received``, so the bot's subscription is signed with
OAuth 1.0a as the bot; listing, ``PUT`` (only ``tag`` and ``webhook_id`` change) and ``DELETE``
use the app's bearer token. Calls go through :class:`~catbot.account_activity.AccountActivity`'s
plumbing (``X_API_BASE_URL``, timeouts, one refusal type). A refusal saying that the app or token
may not use XAA carries advice that says so and what to do.
"""
from __future__ import annotations

import re
from typing import Any

from catbot.account_activity import ADVICE, AccountActivity, XRefused, XUnreachable

PATH = "/2/activity/subscriptions"
DMS = "dm.received"  # the bot's DMs: legacy DMs sent to it
CHATS = "chat.received"  # X Chat (encrypted) messages sent to it, subscribed when X Chat is on
TAG = "catfacts-bot"  # how this bot's subscriptions are recognised among the app's
PAGE = 1000  # X's largest max_results
MAX_PAGES = 100  # a pagination token that never ends is X's bug, not a reason to loop forever
INSTEAD = "or run this command with --api aaa to use the Account Activity API instead"
ACCESS_ADVICE = ("X says this app or its token may not use the X Activity API. In the developer portal, give the "
                 "app X Activity API access (the pay-per-use tier) and the 'Read, Write and Direct Messages' "
                 f"permission, then regenerate the bot's access token; {INSTEAD}.")
OAUTH2_ADVICE = ("X wants OAuth 2.0 user context for the bot's DM events (dm.received is a private event), and "
                 "this script signs as the bot with OAuth 1.0a. Authorise the bot account with OAuth 2.0 "
                 "(authorization code with PKCE, scope dm.read) and create the subscription with that token "
                 f"(POST {PATH} with event_type {DMS}, filter.user_id the bot, webhook_id, tag {TAG}); {INSTEAD}.")
CREDENTIALS_ADVICE = (f"{ADVICE[401]} If they are right, the app may lack X Activity API access in the developer "
                      f"portal; {INSTEAD}.")
_NEEDS_OAUTH2 = re.compile(r"OAuth 2\.0 User Context|unsupported.authentication", re.IGNORECASE)


def is_bot_dms(subscription: dict[str, Any], user_id: str) -> bool:
    """True for a subscription that sends the bot's received DMs: ``dm.received`` filtered on the
    bot's id and nothing else (a ``keyword`` or ``direction`` filter would drop some)."""
    return subscription.get("event_type") == DMS and subscription.get("filter") == {"user_id": user_id}


def is_bot_chats(subscription: dict[str, Any], user_id: str) -> bool:
    """True for a subscription that sends the bot's received X Chat messages, like :func:`is_bot_dms`."""
    return subscription.get("event_type") == CHATS and subscription.get("filter") == {"user_id": user_id}


def _with_access_advice(refused: XRefused) -> XRefused:
    """The refusal, with advice about XAA access when X's answer is about access."""
    if isinstance(refused, XUnreachable):
        return refused
    if _NEEDS_OAUTH2.search(refused.said):
        advice = OAUTH2_ADVICE
    elif refused.status == 401:
        advice = CREDENTIALS_ADVICE
    elif refused.status == 403:
        advice = ACCESS_ADVICE
    else:
        return refused
    return XRefused(refused.status, refused.reason, refused.detail, refused.said, advice)


def _subscription(body: dict[str, Any]) -> dict[str, Any]:
    """The subscription in a create or update answer: ``data.subscription`` in the OpenAPI,
    ``data`` itself in the quickstart's examples."""
    data = body.get("data")
    if isinstance(data, list):
        data = data[0] if data else {}
    if not isinstance(data, dict):
        return {}
    inner = data.get("subscription")
    return inner if isinstance(inner, dict) else data


class ActivityAPI:
    """A small client for ``/2/activity/subscriptions``, on an :class:`AccountActivity`'s plumbing."""

    def __init__(self, client: AccountActivity) -> None:
        self.client = client

    def _call(self, method: str, path: str, *, user: bool = False, json: Any = None,
              params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return self.client.call(method, path, user=user, json=json, params=params)
        except XRefused as refused:
            raise _with_access_advice(refused) from None

    def subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription of the app, all pages."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"max_results": PAGE}
        for _ in range(MAX_PAGES):
            body = self._call("GET", PATH, params=params)
            found += [s for s in body.get("data") or [] if isinstance(s, dict)]
            token = (body.get("meta") or {}).get("next_token")
            if not token:
                break
            params = {"max_results": PAGE, "pagination_token": token}
        return found

    def create(self, webhook_id: str, user_id: str, event_type: str = DMS, tag: str = TAG) -> dict[str, Any]:
        """Subscribe ``user_id``'s ``event_type`` to the webhook, signed as the bot account."""
        body = {"event_type": event_type, "filter": {"user_id": user_id}, "webhook_id": webhook_id, "tag": tag}
        return _subscription(self._call("POST", PATH, user=True, json=body))

    def move(self, subscription_id: str, webhook_id: str) -> dict[str, Any]:
        """Send an existing subscription's events to another webhook (the one change besides the tag)."""
        return _subscription(self._call("PUT", f"{PATH}/{subscription_id}", json={"webhook_id": webhook_id}))

    def delete(self, subscription_id: str) -> None:
        self._call("DELETE", f"{PATH}/{subscription_id}")
