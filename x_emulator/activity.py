"""X's Activity API (XAA): subscriptions (``/2/activity/subscriptions``) and the envelope events
are delivered in.

Credentials per OpenAPI 2.167: create and list take a user context (OAuth 1.0a as the bot here;
OAuth 2.0 user tokens are not emulated) or the app's bearer token; update and delete only the
bearer token. The docs' prose adds that private events (``dm.*``, ``chat.*``, likes, ...) need the
user context of the monitored account: the bearer token gets 403, and the bot's signature covers
the bot's own events only. ``XEmulator.activity_access`` plays an app X refuses: ``"forbidden"``
(no X Activity API access: every route answers 403 client-forbidden) or ``"oauth2"`` (X insists
on OAuth 2.0 user context for private events and refuses OAuth 1.0a).

Payloads follow X's published samples (x-api/activity/event-payloads.mdx). X publishes none for
``dm.read`` and ``dm.indicate_typing``: those carry the Account Activity objects for read
receipts and typing, in the ``dm.received`` payload's layout.
"""
from __future__ import annotations

import base64
import re
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from x_emulator.area import emulator, invalid_parameter, invalid_request, problem, unknown_webhook
from x_emulator.auth import bearer_used, requires
from x_emulator.records import ActivitySubscription, now_iso

if TYPE_CHECKING:
    from x_emulator.server import XEmulator

SUBSCRIPTIONS = "/2/activity/subscriptions"
EVENT_TYPES = frozenset("""
    profile.update.bio profile.update.profile_picture profile.update.banner_picture profile.update.screenname
    profile.update.geo profile.update.url profile.update.verified_badge profile.update.affiliate_badge
    profile.update.handle news.new follow.follow follow.unfollow spaces.start spaces.end broadcast.start
    broadcast.end broadcast.chat chat.received chat.sent chat.conversation.join chat.conversation.member_added
    chat.conversation.member_removed chat.conversation.admin_added chat.conversation.admin_removed
    chat.update.group_name chat.update.restrictions dm.sent dm.received dm.indicate_typing dm.read post.create
    post.delete post.mention.create post.reply.create post.quote.create post.repost.create like.create mute.mute
    mute.unmute block.block block.unblock""".split())  # the OpenAPI's enum
ALIASES = {"chat.conversation_join": "chat.conversation.join"}  # deprecated; answers use the canonical name
PRIVATE = re.compile(r"(dm|chat|mute|block)\.|like\.create|post\.(mention|reply|quote|repost)\.|broadcast\.chat")
NO_USER_FILTER = frozenset({"news.new", "oauth.revoke"})  # news: keyword; oauth.revoke: no filter at all
ID = re.compile(r"[0-9]{1,19}")
PAGE_SIZE = 100

bp = Blueprint("activity", __name__)


# -- routes ---------------------------------------------------------------------------------------
@bp.post(SUBSCRIPTIONS)
@requires(bearer=True, user=True)
def create_subscription() -> ResponseReturnValue:
    em = emulator()
    if refused := _access_refused(em):
        return refused
    body = request.get_json(silent=True)
    if refused := _invalid_body(body, ("event_type", "filter", "tag", "webhook_id")):
        return refused
    event_type = ALIASES.get(body.get("event_type"), body.get("event_type"))
    if event_type not in EVENT_TYPES:
        return invalid_parameter("event_type", body.get("event_type"),
                                 f"The `event_type` value [{body.get('event_type')}] is not one of the event types.")
    filt = body.get("filter")
    if refused := _invalid_filter(event_type, filt):
        return refused
    if refused := _authorisation_refused(em, event_type, filt.get("user_id")):
        return refused
    with em.lock:
        if body.get("webhook_id") is not None and body["webhook_id"] not in em.webhooks:
            return unknown_webhook()
        if any((s.event_type, s.filter, s.webhook_id) == (event_type, filt, body.get("webhook_id"))
               for s in em.activity_subscriptions.values()):
            return invalid_request("A subscription for this event type, filter and webhook already exists.",
                                   "DuplicateSubscriptionFailed")
        if len(em.activity_subscriptions) >= em.activity_subscription_limit:
            return invalid_request(f"This app has {em.activity_subscription_limit} subscriptions, its limit.",
                                   "SubscriptionLimitExceeded")
        sub = em.subscribe_activity(event_type, body.get("webhook_id"), filt, body.get("tag"))
    return jsonify(data={"subscription": sub.as_json()})


@bp.get(SUBSCRIPTIONS)
@requires(bearer=True, user=True)
def list_subscriptions() -> ResponseReturnValue:
    em = emulator()
    if refused := _access_refused(em):
        return refused
    size = request.args.get("max_results", default=PAGE_SIZE, type=int)
    if not 1 <= size <= 1000:
        return invalid_parameter("max_results", request.args.get("max_results"),
                                 "The `max_results` query parameter value is not between 1 and 1000.")
    token = request.args.get("pagination_token")
    start = _offset(token) if token else 0
    if start is None:
        return invalid_parameter("pagination_token", token, "The `pagination_token` query parameter is not valid.")
    with em.lock:
        subs = list(em.activity_subscriptions.values())
    page = [s.as_json() for s in subs[start:start + size]]
    meta: dict[str, Any] = {"total_subscriptions": len(subs), "result_count": len(page)}
    if start + size < len(subs):
        meta["next_token"] = _token(start + size)
    return jsonify(data=page, meta=meta)


@bp.put(SUBSCRIPTIONS + "/<subscription_id>")
@requires(bearer=True)
def update_subscription(subscription_id: str) -> ResponseReturnValue:
    """Only ``tag`` and ``webhook_id`` change; a new event type or filter is a new subscription."""
    em = emulator()
    if refused := _access_refused(em) or _invalid_id(subscription_id):
        return refused
    body = request.get_json(silent=True)
    if refused := _invalid_body(body, ("tag", "webhook_id")):
        return refused
    with em.lock:
        sub = em.activity_subscriptions.get(subscription_id)
        if sub is None:
            return _not_found(subscription_id)
        if body.get("webhook_id") is not None and body["webhook_id"] not in em.webhooks:
            return unknown_webhook()
        sub.tag = body.get("tag", sub.tag)
        sub.webhook_id = body.get("webhook_id", sub.webhook_id)
        sub.updated_at = now_iso()
        total = len(em.activity_subscriptions)
    return jsonify(data={"subscription": sub.as_json(), "total_subscriptions": total})


@bp.delete(SUBSCRIPTIONS + "/<subscription_id>")
@requires(bearer=True)
def delete_subscription(subscription_id: str) -> ResponseReturnValue:
    em = emulator()
    if refused := _access_refused(em) or _invalid_id(subscription_id):
        return refused
    with em.lock:
        if em.activity_subscriptions.pop(subscription_id, None) is None:
            return _not_found(subscription_id)
        total = len(em.activity_subscriptions)
    return jsonify(data={"deleted": True}, meta={"total_subscriptions": total})


@bp.delete(SUBSCRIPTIONS)
@requires(bearer=True)
def delete_subscriptions() -> ResponseReturnValue:
    """``?ids=a,b``: each id deleted or named in ``errors``; the others go on regardless."""
    em = emulator()
    if refused := _access_refused(em):
        return refused
    ids = [i for i in request.args.get("ids", "").split(",") if i]
    if not 1 <= len(ids) <= 100 or not all(ID.fullmatch(i) for i in ids):
        return invalid_parameter("ids", request.args.get("ids", ""), "`ids` takes 1 to 100 subscription ids.")
    deleted, errors = [], []
    with em.lock:
        for sub_id in ids:
            if em.activity_subscriptions.pop(sub_id, None) is None:
                errors.append({"subscription_id": sub_id, "reason": "SubscriptionNotFound",
                               "message": f"Could not find subscription with id: [{sub_id}]."})
            else:
                deleted.append({"subscription_id": sub_id, "deleted": True})
        total = len(em.activity_subscriptions)
    answer: dict[str, Any] = {"data": deleted, "meta": {"total_subscriptions": total}}
    if errors:
        answer["errors"] = errors
    return jsonify(answer)


# -- refusals -------------------------------------------------------------------------------------
def _access_refused(em: XEmulator) -> ResponseReturnValue | None:
    if em.activity_access != "forbidden":
        return None
    return problem(403, "Client Forbidden", "This request must be made using an approved developer account that "
                   "is enrolled in the requested endpoint. Learn more by visiting our documentation.",
                   kind="client-forbidden", fields={"reason": "client-not-enrolled",
                                                    "required_enrollment": "X Activity API",
                                                    "registration_url": "https://developer.x.com/en/portal/products"})


def _authorisation_refused(em: XEmulator, event_type: str, user_id: str | None) -> ResponseReturnValue | None:
    """Private events need the monitored account's own user context."""
    if not PRIVATE.match(event_type):
        return None
    if bearer_used() or em.activity_access == "oauth2":
        given = "OAuth 2.0 Application-Only" if bearer_used() else "OAuth 1.0a User Context"
        accepted = "OAuth 2.0 User Context" if em.activity_access == "oauth2" else \
            "OAuth 1.0a User Context, OAuth 2.0 User Context"
        return problem(403, "Unsupported Authentication", f"Authenticating with {given} is forbidden for "
                       f"{event_type} subscriptions. Supported authentication types are [{accepted}].",
                       kind="unsupported-authentication")
    if user_id != em.creds.bot_user_id:
        return problem(403, "Forbidden", "Private events can only be subscribed to for users who authorised your "
                       "app.", kind="not-authorized-for-resource",
                       fields={"resource_type": "user", "resource_id": user_id})
    return None


def _invalid_body(body: Any, allowed: tuple[str, ...]) -> ResponseReturnValue | None:
    """Why X would refuse this body (not an object, a field it does not take, a bad tag or
    webhook id), or None."""
    if not isinstance(body, dict):
        return invalid_request("The request body must be a JSON object.")
    for key, value in body.items():
        if key not in allowed:
            return invalid_parameter(key, value, f"[{key}] is not a field this request takes "
                                     f"({', '.join(allowed)}); to change event_type or filter, delete and re-create.")
    tag = body.get("tag")
    if "tag" in body and not (isinstance(tag, str) and 1 <= len(tag) <= 200):
        return invalid_parameter("tag", tag, "`tag` must be 1 to 200 characters.")
    webhook_id = body.get("webhook_id")
    if "webhook_id" in body and not (isinstance(webhook_id, str) and ID.fullmatch(webhook_id)):
        return invalid_parameter("webhook_id", webhook_id, "`webhook_id` must be a numeric id.")
    return None


def _invalid_filter(event_type: str, filt: Any) -> ResponseReturnValue | None:
    if not isinstance(filt, dict):
        return invalid_parameter("filter", filt, "`filter` is required: an object with `user_id`.")
    for key, value in filt.items():
        if key not in ("user_id", "keyword", "direction") or not isinstance(value, str):
            return invalid_parameter(f"filter.{key}", value, f"[{key}] is not a filter X takes.")
    if event_type not in NO_USER_FILTER and not ID.fullmatch(filt.get("user_id", "")):
        return invalid_parameter("filter.user_id", filt.get("user_id", ""),
                                 f"{event_type} needs `filter.user_id`, a numeric user id.")
    if filt.get("direction") not in (None, "inbound", "outbound"):
        return invalid_parameter("filter.direction", filt["direction"], "`direction` is inbound or outbound.")
    return None


def _invalid_id(subscription_id: str) -> ResponseReturnValue | None:
    if ID.fullmatch(subscription_id):
        return None
    return invalid_parameter("subscription_id", subscription_id, "`subscription_id` must be a numeric id.")


def _not_found(subscription_id: str) -> ResponseReturnValue:
    return problem(404, "Not Found Error", f"Could not find subscription with id: [{subscription_id}].",
                   kind="resource-not-found", fields={"resource_type": "subscription", "resource_id": subscription_id,
                                                      "parameter": "subscription_id", "value": subscription_id})


def _token(offset: int) -> str:
    """A pagination token, base32hex as X's are (at least 16 characters)."""
    return base64.b32hexencode(f"{offset:010d}".encode()).decode()


def _offset(token: str) -> int | None:
    try:
        text = base64.b32hexdecode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return int(text) if len(token) >= 16 and text.isdigit() else None


# -- what XAA delivers ----------------------------------------------------------------------------
def envelope(event_type: str, payload: dict[str, Any], user_id: str | None, tag: str | None) -> dict[str, Any]:
    """Every XAA delivery: ``event_uuid`` (a signed 64-bit integer as a string in X's samples),
    the matched ``filter``, the type, the subscription's ``tag`` when it has one, the payload."""
    data: dict[str, Any] = {"event_uuid": str(secrets.randbits(64) - 2**63),
                            "filter": {"user_id": user_id} if user_id else {}, "event_type": event_type}
    if tag is not None:
        data["tag"] = tag
    data["payload"] = payload
    return {"data": data}


def user(user_id: str, name: str, username: str) -> dict[str, Any]:
    """A user as XAA payloads carry one, wrapped in ``data``, with the fields of X's samples."""
    metrics = {f"{k}_count{s}": (0 if not s else "0") for k in ("followers", "following", "tweet", "listed",
                                                                "like", "media") for s in ("", "_str")}
    return {"data": {"description": "", "profile_banner_url": "", "public_metrics": metrics, "protected": False,
                     "url": "", "is_identity_verified": False, "id": user_id,
                     "profile_image_url": "https://pbs.twimg.com/profile_images/0000000000000000001/example_normal.jpg",
                     "verified_type": "none", "created_at": "2026-01-01T00:00:00.000Z", "username": username,
                     "verified": False, "name": name}}


def users(em: XEmulator, *ids: str) -> dict[str, Any]:
    bot = em.creds.bot_user_id
    return {i: user(i, "Cat Facts", "catfacts_bot") if i == bot else user(i, f"User {i}", f"user{i}")
            for i in dict.fromkeys(ids)}


def dm_payload(em: XEmulator, events: list[dict[str, Any]]) -> dict[str, Any]:
    """``dm.received`` / ``dm.sent``: the Account Activity ``message_create`` events, and the users."""
    ids = [i for ev in events for i in (ev.get("message_create", {}).get("sender_id"),
                                        ev.get("message_create", {}).get("target", {}).get("recipient_id")) if i]
    return {"direct_message_events": events, "users": users(em, *ids)}


def activity_payload(em: XEmulator, event_type: str, other_id: str) -> dict[str, Any]:
    """A payload for the other event types tests emit, ``other_id`` being the other party."""
    bot, now_ms = em.creds.bot_user_id, str(int(time.time() * 1000))
    if event_type == "follow.follow":  # someone follows the bot
        return {"source": users(em, other_id)[other_id], "target": users(em, bot)[bot]}
    if event_type == "oauth.revoke":
        return {"date_time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), "user_id": bot,
                "app_id": "29820954"}
    if event_type in ("dm.read", "dm.indicate_typing"):
        entry: dict[str, Any] = {"created_timestamp": now_ms, "sender_id": other_id, "target": {"recipient_id": bot}}
        key = "direct_message_indicate_typing_events"
        if event_type == "dm.read":
            entry["last_read_event_id"], key = em.next_id(), "direct_message_mark_read_events"
        return {key: [entry], "users": users(em, other_id, bot)}
    if event_type in ("chat.sent", "chat.received"):
        sender = bot if event_type == "chat.sent" else other_id
        opaque = lambda n: base64.b64encode(secrets.token_bytes(n)).decode()  # noqa: E731 - ciphertext stand-in
        return {"conversation_token": opaque(48), "id": str(uuid.uuid4()), "created_at_msec": now_ms,
                "sender_id": sender, "conversation_id": f"{other_id}:{bot}", "conversation_key_version": now_ms,
                "encoded_event": opaque(96), "conversation_key_change_event": opaque(96),
                "message_event_signature": {"public_key_version": now_ms, "signature": opaque(64),
                                            "signature_version": "7", "signing_public_key": opaque(91)}}
    raise ValueError(f"the emulator builds no {event_type} payload")
