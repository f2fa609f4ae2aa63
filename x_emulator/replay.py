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
SLACK = 60  # seconds: the dates have minute precision, so a window takes in its last minute whole

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
        return invalid_request(str(exc), "QueryParamInvalid")
    if problem := window_problem(start, end, time.time()):
        return invalid_request(problem, "QueryParamInvalid")
    job_id = em.next_id()
    with em.lock:
        payloads = [p for at, p in em.delivered if start <= at < end + SLACK]
    for payload in payloads:
        em.deliver_later(webhook.url, payload)
    em.deliver_later(webhook.url, {"replay_job_status": {"job_id": job_id, "job_state": "Complete",
                                                         "job_state_description": "Job completed"}})
    return jsonify(data={"job_id": job_id, "created_at": now_iso()})


def window_problem(start: float, end: float, now: float) -> str | None:
    """X's reasons for refusing replay dates (``QueryParamInvalid``), to the second: a
    ``from_date`` even one minute older than 24 hours is refused."""
    if start < now - REPLAY_HORIZON:
        return "from_date is older than 24 hours from the current time."
    if start > now or end > now:
        return "from_date and to_date may not be in the future."
    if end <= start:
        return "from_date must be before to_date."
    return None


def parse_replay_date(value: Any) -> float:
    """A replay bound, ``yyyymmddhhmm`` in UTC, as unix seconds; ValueError says what X expects."""
    if not isinstance(value, str):
        raise ValueError("from_date and to_date are required (yyyymmddhhmm)")
    try:
        return datetime.strptime(value, "%Y%m%d%H%M").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise ValueError(f"{value!r} is not a date in the form yyyymmddhhmm") from None
