"""X's webhook management (``/2/webhooks``): create, list, re-check, delete. Creating or
re-checking a webhook performs a real CRC GET against its URL, as X does."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from x_emulator.area import emulator, invalid_request, unknown_webhook
from x_emulator.auth import requires
from x_emulator.records import Webhook, now_iso

MAX_URL = 200

bp = Blueprint("webhooks", __name__)


@bp.post("/2/webhooks")
@requires(bearer=True, user=True)
def create_webhook() -> ResponseReturnValue:
    em = emulator()
    url = (request.get_json(silent=True) or {}).get("url")
    problem = url_problem(url, strict=em.strict_urls)
    if problem:
        return invalid_request(problem, "UrlValidationFailed")
    with em.lock:
        if any(w.url == url for w in em.webhooks.values()):
            return invalid_request("A webhook with this URL already exists.", "DuplicateUrlFailed")
        if len(em.webhooks) >= em.webhook_limit:
            return invalid_request("Too many webhooks registered for this app.", "WebhookLimitExceeded")
    crc_problem = em.crc_check(url)
    if crc_problem:
        return invalid_request(crc_problem, "CrcValidationFailed")
    webhook = Webhook(em.next_id(), url, True, now_iso())
    with em.lock:
        em.webhooks[webhook.id] = webhook
    return jsonify(data=asdict(webhook))


@bp.get("/2/webhooks")
@requires(bearer=True)
def list_webhooks() -> ResponseReturnValue:
    em = emulator()
    with em.lock:
        data = [asdict(w) for w in em.webhooks.values()]
    return jsonify(data=data, meta={"result_count": len(data)})


@bp.put("/2/webhooks/<webhook_id>")
@requires(bearer=True, user=True)
def recheck_webhook(webhook_id: str) -> ResponseReturnValue:
    """X's way back for a webhook marked invalid: a CRC that passes makes it valid again. As X's
    current docs say, 200 only means the check ran: ``valid`` is its verdict."""
    em = emulator()
    webhook = em.webhooks.get(webhook_id)
    if webhook is None:
        return unknown_webhook()
    webhook.valid = em.crc_check(webhook.url) is None
    return jsonify(data={"valid": webhook.valid})


@bp.delete("/2/webhooks/<webhook_id>")
@requires(bearer=True, user=True)
def delete_webhook(webhook_id: str) -> ResponseReturnValue:
    """Deleting a webhook ends its subscriptions too."""
    em = emulator()
    with em.lock:
        if em.webhooks.pop(webhook_id, None) is None:
            return unknown_webhook()
        em.subscriptions.pop(webhook_id, None)
    return jsonify(data={"deleted": True})


def url_problem(url: Any, *, strict: bool) -> str | None:
    """Why X would refuse this webhook URL, or None. Only ``strict`` insists on https without a
    port: tests and the demo serve their webhook over plain http on a loopback port."""
    if not isinstance(url, str) or not url:
        return "url is required"
    parts = urlsplit(url)
    if len(url) > MAX_URL:
        return f"The URL is longer than {MAX_URL} characters."
    if strict and (parts.scheme != "https" or parts.port):
        return "The URL must use https and no port."
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "The URL is not a valid http(s) URL."
    return None
