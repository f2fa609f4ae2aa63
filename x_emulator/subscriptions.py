"""X's Account Activity subscriptions (``/2/account_activity/...``): which accounts' activity a
webhook receives. The emulator knows one account, the bot, so subscribing means subscribing it."""
from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from x_emulator.area import emulator, invalid_request, unknown_webhook
from x_emulator.auth import requires

SUBSCRIPTIONS = "/2/account_activity/webhooks/<webhook_id>/subscriptions"

bp = Blueprint("subscriptions", __name__)


@bp.post(SUBSCRIPTIONS + "/all")
@requires(user=True)
def subscribe(webhook_id: str) -> ResponseReturnValue:
    em = emulator()
    with em.lock:
        if webhook_id not in em.webhooks:
            return unknown_webhook()
        users = em.subscriptions.setdefault(webhook_id, set())
        if em.creds.bot_user_id in users:
            return invalid_request("This user is already subscribed.", "DuplicateSubscriptionFailed")
        users.add(em.creds.bot_user_id)
    return jsonify(data={"subscribed": True})


@bp.get(SUBSCRIPTIONS + "/all")
@requires(user=True)
def check_subscription(webhook_id: str) -> ResponseReturnValue:
    em = emulator()
    with em.lock:
        if webhook_id not in em.webhooks:
            return unknown_webhook()
        subscribed = em.creds.bot_user_id in em.subscriptions.get(webhook_id, set())
    return jsonify(data={"subscribed": subscribed})


@bp.get(SUBSCRIPTIONS + "/all/list")
@requires(bearer=True)
def list_subscriptions(webhook_id: str) -> ResponseReturnValue:
    em = emulator()
    with em.lock:
        webhook = em.webhooks.get(webhook_id)
        if webhook is None:
            return unknown_webhook()
        users = sorted(em.subscriptions.get(webhook_id, set()))
    return jsonify(data={"webhook_id": webhook_id, "webhook_url": webhook.url, "application_id": "1",
                         "subscriptions": [{"user_id": u} for u in users]})


@bp.get("/2/account_activity/subscriptions/count")
@requires(bearer=True)
def count_subscriptions() -> ResponseReturnValue:
    em = emulator()
    with em.lock:
        total = sum(len(u) for u in em.subscriptions.values())
    return jsonify(data={"account_name": "catfacts", "provisioned_count": "3",
                         "subscriptions_count_all": str(total), "subscriptions_count_direct_messages": "0"})


@bp.delete(SUBSCRIPTIONS + "/<user_id>/all")
@requires(bearer=True)
def unsubscribe(webhook_id: str, user_id: str) -> ResponseReturnValue:
    em = emulator()
    with em.lock:
        users = em.subscriptions.get(webhook_id, set())
        if user_id not in users:
            return invalid_request("No subscription for this user.", "SubscriptionNotFound")
        users.discard(user_id)
    return jsonify(data={"subscribed": False})
