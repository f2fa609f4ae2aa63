"""The emulator's own control API under ``/_emulator/`` (not X's): what the demo and tests that
run the emulator as a separate process use instead of the Python API of ``XEmulator``.
No authentication: it listens on loopback for the test that started it."""
from __future__ import annotations

from dataclasses import asdict

import requests
from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from x_emulator.area import emulator
from x_emulator.records import ACCESS, APIS, Faults

bp = Blueprint("control", __name__, url_prefix="/_emulator")


@bp.get("/sent")
def sent() -> ResponseReturnValue:
    """The DMs sent from index ``after`` on, so a poller reads each one once."""
    em = emulator()
    after = request.args.get("after", default=0, type=int)
    with em.lock:
        items = [asdict(dm) for dm in em.sent[after:]]
    return jsonify(sent=items, total=after + len(items))


@bp.post("/faults")
def faults() -> ResponseReturnValue:
    """Replace every injected fault at once: a field left out is cleared."""
    em = emulator()
    body = request.get_json(force=True)
    with em.lock:
        em.faults = Faults(latency=float(body.get("latency", 0)), errors_5xx=int(body.get("errors_5xx", 0)),
                           burst_429=int(body.get("burst_429", 0)), forbidden=set(body.get("forbidden", [])),
                           chat_429=int(body.get("chat_429", 0)))
    return jsonify(faults={**asdict(em.faults), "forbidden": sorted(em.faults.forbidden)})


@bp.post("/rate_limit")
def rate_limit() -> ResponseReturnValue:
    em = emulator()
    body = request.get_json(force=True)
    em.set_rate_limit(int(body["limit"]), float(body["window"]))
    return jsonify(limit=em.dm_limit, window=em.dm_window)


@bp.post("/deliver")
def deliver() -> ResponseReturnValue:
    """A DM from a simulated user, to each webhook a subscription sends the bot's DMs to (or to
    ``url``, in the envelope of ``api``); 409 when no webhook takes it (none subscribed, or
    unreachable)."""
    body = request.get_json(force=True)
    try:
        event_id, answer = emulator().deliver_dm(str(body["sender_id"]), str(body.get("text", "")),
                                                 body.get("event_id"), url=body.get("url"),
                                                 media=bool(body.get("media")), api=body.get("api"))
    except (RuntimeError, ValueError, requests.RequestException) as exc:
        return jsonify(error=str(exc)), 409
    return jsonify(event_id=event_id, webhook_status=answer.status_code)


@bp.post("/chat/deliver")
def deliver_chat() -> ResponseReturnValue:
    """An X Chat message from a simulated user (``fault``: see chat.py), to each webhook subscribed
    to the bot's ``chat.received`` (or to ``url``); 400 for an unknown fault, 409 when it cannot be
    delivered (nothing subscribed, the bot has no key registered, the webhook unreachable)."""
    body = request.get_json(force=True)
    try:
        message_id, answer = emulator().deliver_chat(str(body["sender_id"]), str(body.get("text", "")),
                                                     fault=body.get("fault"), url=body.get("url"))
    except ValueError as exc:
        return jsonify(error=str(exc)), 400
    except (RuntimeError, requests.RequestException) as exc:
        return jsonify(error=str(exc)), 409
    return jsonify(message_id=message_id, webhook_status=answer.status_code)


@bp.post("/register")
def register() -> ResponseReturnValue:
    """Register ``url`` and subscribe the bot's DMs through ``api`` (default: the switch), and with
    ``chat`` its X Chat messages too, in one go, without the set-up script; 409 when X's CRC check
    of the URL fails."""
    body = request.get_json(force=True)
    try:
        webhook = emulator().register(str(body["url"]), body.get("api"), chat=bool(body.get("chat")))
    except (RuntimeError, ValueError) as exc:
        return jsonify(error=str(exc)), 409
    return jsonify(webhook=asdict(webhook))


@bp.post("/activity")
def deliver_activity() -> ResponseReturnValue:
    """An X Activity API event of another type (``dm.read``, ``follow.follow``, ...) from a
    simulated user, to the webhooks subscribed to it; their answers' statuses."""
    body = request.get_json(force=True)
    try:
        answers = emulator().deliver_activity(str(body["event_type"]), str(body.get("sender_id", "3000000002")))
    except (ValueError, requests.RequestException) as exc:
        return jsonify(error=str(exc)), 409
    return jsonify(webhook_statuses=[answer.status_code for answer in answers])


@bp.post("/config")
def config() -> ResponseReturnValue:
    """The switches: ``api`` (what ``register`` subscribes and the helpers build) and
    ``activity_access`` (how X treats this app's X Activity API calls); a field left out stays."""
    em = emulator()
    body = request.get_json(force=True)
    if body.get("api", em.api) not in APIS or body.get("activity_access", em.activity_access) not in ACCESS:
        return jsonify(error=f"api is one of {APIS}, activity_access one of {ACCESS}"), 400
    with em.lock:
        em.api = body.get("api", em.api)
        em.activity_access = body.get("activity_access", em.activity_access)
    return jsonify(api=em.api, activity_access=em.activity_access)


@bp.get("/state")
def state() -> ResponseReturnValue:
    em = emulator()
    with em.lock:
        return jsonify(webhooks=[asdict(w) for w in em.webhooks.values()],
                       subscriptions={k: sorted(v) for k, v in em.subscriptions.items()},
                       activity_subscriptions=[s.as_json() for s in em.activity_subscriptions.values()],
                       api=em.api, sent=len(em.sent), rejected=len(em.rejected), crc_checks=em.crc_checks)
