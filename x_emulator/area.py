"""What every product area is written with: the emulator serving the request and X's error bodies.

A product area (DMs, webhooks, ...) is a module holding one Flask Blueprint ``bp``; its views find
the emulator's state through :func:`emulator`, so one module-level blueprint serves every
:class:`~x_emulator.server.XEmulator` a test starts. ``server.AREAS`` lists the areas.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from flask import Response, current_app, jsonify

if TYPE_CHECKING:
    from x_emulator.server import XEmulator

EXTENSION = "x_emulator"  # the key the emulator is kept under in ``app.extensions``


def emulator() -> XEmulator:
    """The emulator whose app is answering: the state every route reads and changes."""
    return current_app.extensions[EXTENSION]


PROBLEMS = "https://api.twitter.com/2/problems/"


def problem(status: int, title: str, detail: str, reason: str | None = None, kind: str | None = None,
            fields: dict[str, Any] | None = None) -> tuple[Response, int]:
    """X's error body: an RFC 7807-style problem, and with ``reason`` the v2 ``errors`` form that
    names it (``CrcValidationFailed: ...``), which is what clients match on. ``kind`` is the
    problem type X names (``client-forbidden``, ...), ``fields`` its own extra members."""
    body: dict[str, Any] = {"title": title, "detail": detail, "type": "about:blank", "status": status}
    if kind:
        body = {"title": title, "detail": detail, **(fields or {}), "type": PROBLEMS + kind, "status": status}
    if reason:
        body = {"errors": [{"message": f"{reason}: {detail}"}], "title": title, "detail": detail,
                "type": PROBLEMS + "invalid-request"}
    return jsonify(body), status


def invalid_request(detail: str, reason: str | None = None) -> tuple[Response, int]:
    """X's 400, the answer to every request it understands but will not carry out."""
    return problem(400, "Invalid Request", detail, reason)


def unknown_webhook() -> tuple[Response, int]:
    return invalid_request("Webhook id is not valid.", "WebhookIdInvalid")


def invalid_parameter(name: str, value: Any, message: str) -> tuple[Response, int]:
    """X's 400 for a parameter it cannot take, naming the parameter and the value given."""
    body = {"errors": [{"parameters": {name: [value if isinstance(value, str) else json.dumps(value)]},
                        "message": message}],
            "title": "Invalid Request", "detail": "One or more parameters to your request was invalid.",
            "type": PROBLEMS + "invalid-request"}
    return jsonify(body), 400
