"""Who may call what: the app-only bearer token X issues (``POST /oauth2/token``), and the
credential check every route makes, written once as :func:`requires`.

X's routes take the app-only bearer token, an OAuth 1.0a signature as the bot account, or either
(see ../shared/docs/x-api-facts.md); the signature is verified by :mod:`x_emulator.oauth`.
"""
from __future__ import annotations

import base64
import functools
from typing import Any, Callable

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from x_emulator.area import emulator, problem
from x_emulator.oauth import verify_oauth1

View = Callable[..., ResponseReturnValue]

bp = Blueprint("auth", __name__)


@bp.post("/oauth2/token")
def oauth2_token() -> ResponseReturnValue:
    """The app-only bearer token, for HTTP Basic ``consumer_key:consumer_secret``."""
    creds = emulator().creds
    expected = base64.b64encode(f"{creds.consumer_key}:{creds.consumer_secret}".encode()).decode()
    if request.headers.get("Authorization", "") != f"Basic {expected}":
        return jsonify(errors=[{"code": 99, "message": "Unable to verify your credentials",
                                "label": "authenticity_token_error"}]), 403
    if request.form.get("grant_type") != "client_credentials":
        return jsonify(errors=[{"code": 170, "message": "Missing required parameter: grant_type"}]), 403
    return jsonify(token_type="bearer", access_token=creds.bearer_token)


def requires(*, bearer: bool = False, user: bool = False) -> Callable[[View], View]:
    """Let a request reach the view only with a credential X accepts on that route: the app-only
    ``bearer`` token, or a ``user`` signature (OAuth 1.0a as the bot account); else X's 401."""
    def decorate(view: View) -> View:
        @functools.wraps(view)
        def guarded(**view_args: Any) -> ResponseReturnValue:
            refused = _refusal(bearer=bearer, user=user)
            return view(**view_args) if refused is None else refused
        return guarded
    return decorate


def bearer_used() -> bool:
    """True when the request carries the app-only bearer token (app context, no user)."""
    return request.headers.get("Authorization", "") == f"Bearer {emulator().creds.bearer_token}"


def _refusal(*, bearer: bool, user: bool) -> ResponseReturnValue | None:
    """None when the request carries an accepted credential. Where the bot's signature is the only
    way in, the 401 says what was wrong with it: that is the one a developer has to debug."""
    if bearer and bearer_used():
        return None
    if not user:
        return unauthorized()
    reason = user_auth_error()
    if reason is None:
        return None
    return unauthorized(None if bearer else reason)


def user_auth_error() -> str | None:
    """None when the request is signed as the bot account (OAuth 1.0a), else the reason it is not."""
    creds = emulator().creds
    form = request.get_data(as_text=True) if request.mimetype == "application/x-www-form-urlencoded" else None
    return verify_oauth1(request.method, request.url, dict(request.headers), form, creds.consumer_key,
                         creds.consumer_secret, creds.access_token, creds.access_token_secret)


def unauthorized(reason: str | None = None) -> ResponseReturnValue:
    return problem(401, "Unauthorized", f"Unauthorized ({reason})" if reason else "Unauthorized")
