"""The HTTP face of the bot: CRC challenge, signed deliveries, health.

The POST view is verify -> parse -> persist -> 200. Nothing slow happens in a request: facts
and DMs are the reply job's business (``catbot.replier``), so X's deadline is never at risk.
"""
from __future__ import annotations

import json
import logging

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from catbot import logs
from catbot.channels import Answer, Channel, enabled_channels
from catbot.events import X_CHAT, parse_delivery
from catbot.logs import event
from catbot.runtime import Runtime, build_runtime
from catbot.security import Verdict, crc_response_token, is_plausible_crc_token, verify_signature
from catbot.settings import Settings
from catbot.store import StoreUnavailable

MAX_BODY = 1024 * 1024  # 1 MiB: far above any real delivery, small enough to refuse floods
SIGNATURE_HEADER = "x-twitter-webhooks-signature"
SIGNATURE_ENVIRON = "HTTP_" + SIGNATURE_HEADER.upper().replace("-", "_")  # the header as WSGI passes it

log = logging.getLogger("catbot.web")


def _accepted() -> Response:
    """The constant 200 answer, built without the JSON encoder (it is on every delivery)."""
    return Response(b'{"status":"ok"}', status=200, mimetype="application/json")
webhook = Blueprint("webhook", __name__)


def _raw_body() -> bytes:
    """The body exactly as sent (the signature covers these bytes), at most ``MAX_BODY``.

    Read straight from the server's stream: werkzeug's wrapper costs a sixth of the webhook's
    own time, and it cuts a chunked body at the limit silently, so an oversized delivery
    would be refused as a bad signature instead of as too large."""
    environ = request.environ
    length = environ.get("CONTENT_LENGTH", "")
    if length.isascii() and length.isdigit():
        if int(length) > MAX_BODY:
            raise RequestEntityTooLarge()
        return environ["wsgi.input"].read(int(length))
    if environ.get("wsgi.input_terminated"):  # chunked, and the server (gunicorn) ends the stream
        body = environ["wsgi.input"].read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            raise RequestEntityTooLarge()
        return body
    return b""  # no length, and a server that would not end the stream: read nothing (PEP 3333)


def _runtime() -> Runtime:
    return current_app.extensions["catbot"]


def _error(message: str, status: int):
    return jsonify(error=message), status


@webhook.before_request
def _x_is_on():
    """With only other channels configured, X's routes do not exist (no secret to check with)."""
    if request.endpoint in ("webhook.crc_challenge", "webhook.receive_delivery") and \
            not _runtime().settings.x_enabled:
        return _error("not found", 404)
    return None


@webhook.get("/webhook/twitter")
def crc_challenge():
    """Answer X's CRC: prove we hold the consumer secret. No I/O on this path.

    The answer is a valid delivery signature for the token as a body, so only a token X could
    have sent (one, token-shaped: ``is_plausible_crc_token``) is answered; anything else is a
    signing request from someone else and gets 400. The token is never logged."""
    tokens = request.args.getlist("crc_token")
    if not any(tokens):
        event(log, "crc.rejected", logging.WARNING, reason="missing crc_token")
        return _error("missing crc_token", 400)
    if len(tokens) != 1 or not is_plausible_crc_token(tokens[0]):
        event(log, "crc.rejected", logging.WARNING, reason="invalid crc_token", tokens=len(tokens),
              chars=sum(map(len, tokens)), remote=request.remote_addr)
        return _error("invalid crc_token", 400)
    secret = _runtime().settings.consumer_secret
    return jsonify(response_token=crc_response_token(secret, tokens[0]))


@webhook.post("/webhook/twitter")
def receive_delivery():
    runtime = _runtime()
    body = _raw_body()
    verdict = verify_signature(runtime.settings.consumer_secret, body, request.environ.get(SIGNATURE_ENVIRON))
    if not verdict.ok:
        event(log, "delivery.rejected", logging.WARNING, reason=verdict.value, bytes=len(body),
              remote=request.remote_addr)
        return _error(verdict.value, 401 if verdict in (Verdict.MISSING, Verdict.MALFORMED) else 403)
    try:
        delivery = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, absurd nesting
        event(log, "delivery.rejected", logging.WARNING, reason="undecodable json", bytes=len(body))
        return _error("body is not valid JSON", 400)
    if not isinstance(delivery, dict):
        event(log, "delivery.rejected", logging.WARNING, reason="json is not an object", bytes=len(body))
        return _error("body is not a JSON object", 400)
    parsed = parse_delivery(delivery)
    bot_id = runtime.settings.bot_user_id
    trigger = runtime.settings.trigger_regex
    ours = [m for m in parsed.messages if not bot_id or m.for_user_id == bot_id]
    # X Chat messages while X Chat is off (no keys set): nobody here could read them; the
    # delivery is acknowledged like any activity the bot does not act on, and the log says so.
    unreadable = 0 if runtime.settings.xchat_enabled else sum(m.kind == X_CHAT for m in ours)
    messages = [m.inbound(trigger) for m in ours if runtime.settings.xchat_enabled or m.kind != X_CHAT]
    try:
        recorded = runtime.accept(messages)
    except StoreUnavailable as exc:
        event(log, "delivery.unrecorded", logging.ERROR, error=str(exc)[:200], messages=len(messages))
        return _error("temporarily unavailable, retry", 503)
    # Each message gets one INFO line where the store records it: here on Redis; in the embedded
    # default at journal import (``delivery.recorded``), so this line is DEBUG there unless
    # something was malformed. At thousands of deliveries a second, a line each costs about a
    # tenth of the webhook's CPU (docs/performance.md). A delivery with no message for the bot
    # (an event type it does not act on) gets its INFO line here: its type is all there is to say.
    quiet = runtime.journal is not None and not parsed.malformed and not unreadable and \
        (messages or not parsed.other_activity)
    level = logging.DEBUG if quiet else logging.INFO
    if log.isEnabledFor(level):
        event(log, "delivery.accepted", level, **recorded, own=parsed.own_messages or None,
              malformed=parsed.malformed or None, other_account=(len(parsed.messages) - len(ours)) or None,
              xchat_off=unreadable or None,
              activity=",".join(k[:40] for k in parsed.other_activity) or None)
    return _accepted()


def _channel(name: str) -> Channel:
    channel = current_app.extensions["catbot.channels"].get(name)
    if channel is None:
        abort(404)
    return channel


def _answer(answer: Answer) -> Response:
    if answer.content_type != "application/json":
        return Response(answer.body or b"", status=answer.status, content_type=answer.content_type)
    body = answer.body if answer.body is not None else ({"status": "ok"} if answer.status == 200 else
                                                        {"error": answer.reason})
    return Response(json.dumps(body), status=answer.status, mimetype="application/json")


@webhook.get("/webhook/<name>")
def channel_handshake(name: str):
    """A platform's subscription check (Messenger's ``hub.challenge``), where it has one."""
    answer = _channel(name).handshake(request.args)
    if answer.status != 200:
        event(log, "handshake.rejected", logging.WARNING, channel=name, reason=answer.reason)
    return _answer(answer)


@webhook.post("/webhook/<name>")
def channel_delivery(name: str):
    """The same view as X's: verify -> parse -> persist -> 200, for the channel ``name``."""
    channel, runtime = _channel(name), _runtime()
    body = _raw_body()
    refused = channel.verify(request.headers, body)
    if refused is not None:
        event(log, "delivery.rejected", logging.WARNING, channel=name, reason=refused.reason, bytes=len(body),
              remote=request.remote_addr)
        return _answer(refused)
    direct = channel.respond(runtime, body)
    if direct is not None:
        return _answer(direct)
    parsed = channel.parse(body, runtime.settings)
    try:
        recorded = runtime.accept(parsed.messages)
    except StoreUnavailable as exc:
        event(log, "delivery.unrecorded", logging.ERROR, channel=name, error=str(exc)[:200],
              messages=len(parsed.messages))
        return _error("temporarily unavailable, retry", 503)
    event(log, "delivery.accepted", logging.INFO, channel=name, **recorded, own=parsed.own or None,
          malformed=parsed.malformed or None, activity=",".join(k[:40] for k in parsed.other[:20]) or None)
    return _answer(channel.accepted(parsed))


@webhook.get("/healthz")
def healthz():
    runtime = _runtime()
    try:
        store = runtime.backlog()
        today = runtime.today()
    except StoreUnavailable as exc:
        return jsonify(status="unavailable", store={"ok": False, "error": str(exc)[:200]}), 503
    return jsonify(status="ok", store={"ok": True, **store}, backlog=store["pending_messages"], today=today)


def _http_error(exc: HTTPException):
    return _error(exc.description if exc.code == 413 else (exc.name or "error").lower(), exc.code or 500)


def create_app(settings: Settings, runtime: Runtime | None = None) -> Flask:
    """The bot's WSGI app. Tests pass their own settings and runtime; ``app.py`` passes the
    environment's. Starting the consumer is the server's job (``gunicorn.conf.py``)."""
    logs.configure(settings.log_level)
    app = Flask("catbot")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False
    app.extensions["catbot"] = runtime or build_runtime(settings)
    app.extensions["catbot.channels"] = enabled_channels(settings)
    app.register_blueprint(webhook)
    app.register_error_handler(HTTPException, _http_error)
    return app
