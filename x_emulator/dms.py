"""X's DM send (``POST /2/dm_conversations/with/:id/messages``): OAuth 1.0a as the bot, X's
answer shape and ``x-rate-limit-*`` headers, a fixed-window rate limit, and the faults a test
injects. Every refused attempt is recorded in ``XEmulator.rejected`` with its reason."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from x_emulator.area import emulator, invalid_request, problem
from x_emulator.auth import unauthorized, user_auth_error
from x_emulator.records import SentDM

if TYPE_CHECKING:
    from x_emulator.server import XEmulator

DM_PATH = "/2/dm_conversations/with/<participant_id>/messages"
MAX_TEXT = 10_000

bp = Blueprint("dms", __name__)


@bp.post(DM_PATH)
def create_dm(participant_id: str) -> ResponseReturnValue:
    """Refusals come in X's order: signature, then the body, then faults and limits. An attempt
    counts before any of them, so a test sees a client that retries when it should not."""
    em = emulator()
    with em.lock:
        em.dm_attempts += 1
    if reason := user_auth_error():  # not ``requires``: this refusal is counted and recorded
        return _refuse(em, participant_id, 401, reason, unauthorized(reason))
    if em.faults.latency:
        time.sleep(em.faults.latency)
    text = _text(request.get_json(silent=True))
    if text is None:
        return _refuse(em, participant_id, 400, "text",
                       invalid_request(f"The `text` field is required (1 to {MAX_TEXT} characters)."))
    with em.lock:
        now = time.time()
        reset = _roll_window(em, now)
        if refused := _injected_fault_or_limit(em, participant_id, reset):
            return refused
        em.dm_window_count += 1  # a forbidden recipient uses up a request too
        remaining = max(0, em.dm_limit - em.dm_window_count)
        if participant_id in em.faults.forbidden:
            return _refuse(em, participant_id, 403, "forbidden", problem(
                403, "Forbidden", "You are not permitted to send Direct Messages to this user."))
        dm = _send(em, participant_id, text, now)
    a, b = sorted([participant_id, em.creds.bot_user_id], key=int)
    response = jsonify(data={"dm_conversation_id": f"{a}-{b}", "dm_event_id": dm.dm_event_id})
    response.headers.update(_rate_headers(em, remaining, reset))
    return response, 201


def _text(body: Any) -> str | None:
    text = body.get("text") if isinstance(body, dict) else None
    return text if isinstance(text, str) and 0 < len(text) <= MAX_TEXT else None


def _roll_window(em: XEmulator, now: float) -> int:
    """Start a new rate window when the current one is over; the unix second it resets at."""
    if now >= em.dm_window_start + em.dm_window:
        em.dm_window_start, em.dm_window_count = now, 0
    return int(em.dm_window_start + em.dm_window) + 1


def _injected_fault_or_limit(em: XEmulator, participant_id: str, reset: int) -> ResponseReturnValue | None:
    """An injected 503, an injected 429 burst, or the real limit; None when the send may go on."""
    if em.faults.errors_5xx > 0:
        em.faults.errors_5xx -= 1
        return _refuse(em, participant_id, 503, "injected", problem(503, "Service Unavailable", "Service Unavailable"))
    if em.faults.burst_429 > 0 or em.dm_window_count >= em.dm_limit:
        em.faults.burst_429 = max(0, em.faults.burst_429 - 1)
        response, status = problem(429, "Too Many Requests", "Too Many Requests")
        response.headers.update(_rate_headers(em, 0, reset))
        return _refuse(em, participant_id, 429, "rate limit", (response, status))
    return None


def _send(em: XEmulator, participant_id: str, text: str, now: float) -> SentDM:
    """Keep the DM, and deliver it back in the background as X does with a bot's own DMs: to an
    Account Activity subscription always, through the X Activity API only as ``dm.sent``."""
    dm = SentDM(participant_id, text, em.next_id(), now)
    em.record_sent(dm)
    if em.echo_outgoing:
        event = em.dm_event(em.creds.bot_user_id, text, dm.dm_event_id, recipient_id=participant_id)
        for url, payload in em.dm_deliveries("dm.sent", event):
            em.deliver_later(url, payload)
    return dm


def _refuse(em: XEmulator, participant_id: str, status: int, reason: str,
            answer: ResponseReturnValue) -> ResponseReturnValue:
    with em.lock:
        em.rejected.append({"participant_id": participant_id, "status": status, "reason": reason,
                            "at": time.time()})
    return answer


def _rate_headers(em: XEmulator, remaining: int, reset: int) -> dict[str, str]:
    return {"x-rate-limit-limit": str(em.dm_limit), "x-rate-limit-remaining": str(remaining),
            "x-rate-limit-reset": str(reset)}
