"""X's replay (``POST /2/webhooks/replay``): events delivered in the last 24 hours are delivered
again to the webhook, in the background, and a ``replay_job_status`` delivery closes the job."""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from x_emulator.area import emulator, invalid_request, unknown_webhook
from x_emulator.auth import requires
from x_emulator.records import now_iso

REPLAY_HORIZON = 24 * 3600  # seconds back X can replay
SLACK = 60  # seconds: the dates have minute precision

bp = Blueprint("replay", __name__)


@bp.post("/2/webhooks/replay")
@requires(bearer=True)
def replay() -> ResponseReturnValue:
    em = emulator()
    body = request.get_json(silent=True) or {}
    webhook = em.webhooks.get(str(body.get("webhook_id")))
    if webhook is None:
        return unknown_webhook()
    try:
        start, end = (parse_replay_date(body.get(k)) for k in ("from_date", "to_date"))
    except ValueError as exc:
        return invalid_request(str(exc))
    if end <= start or start < time.time() - REPLAY_HORIZON - SLACK:
        return invalid_request("from_date must be within the last 24 hours, before to_date.")
    job_id = em.next_id()
    with em.lock:
        payloads = [p for at, p in em.delivered if start <= at < end + SLACK]
    for payload in payloads:
        em.deliver_later(webhook.url, payload)
    em.deliver_later(webhook.url, {"replay_job_status": {"job_id": job_id, "job_state": "Complete",
                                                         "job_state_description": "Job completed"}})
    return jsonify(data={"job_id": job_id, "created_at": now_iso()})


def parse_replay_date(value: Any) -> float:
    """A replay bound, ``yyyymmddhhmm`` in UTC, as unix seconds; ValueError says what X expects."""
    if not isinstance(value, str):
        raise ValueError("from_date and to_date are required (yyyymmddhhmm)")
    try:
        return datetime.strptime(value, "%Y%m%d%H%M").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise ValueError(f"{value!r} is not a date in the form yyyymmddhhmm") from None
