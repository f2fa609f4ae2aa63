"""CRC answers and webhook signature checks: pure functions over bytes, no Flask.

Spec: Account Activity API "Securing webhooks" (X docs; known-answer vectors in
../shared/docs/x-api-facts.md). The same primitive serves both uses:
``"sha256=" + base64(HMAC-SHA256(key=consumer secret, msg))``. So a CRC answer for an arbitrary
token would be a valid delivery signature for that token as a body: only tokens that pass
:func:`is_plausible_crc_token` may ever be answered.
"""
from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import hmac
import re

PREFIX = "sha256="
_DIGEST_SIZE = hashlib.sha256().digest_size
# X's CRC tokens are short base64 strings (48 characters in 2026; our own pre-flight sends 32).
# The alphabet is what closes the signing oracle: no JSON object (it needs `{` and `"`) can be
# written in it. The length bound only keeps work and logs small; it is generous (5x what X
# sends) because refusing a genuine token would mark the webhook invalid and leave the bot deaf.
MAX_CRC_TOKEN = 256
_CRC_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{1,%d}" % MAX_CRC_TOKEN)  # ASCII only; used with fullmatch


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> "hmac.HMAC":
    """An HMAC primed with ``key`` and never updated, to be copied: OpenSSL then skips looking
    up SHA-256 and hashing the key on every delivery, which costs more than the HMAC itself."""
    return hmac.new(key, digestmod=hashlib.sha256)


def _digest(key: bytes, message: bytes) -> bytes:
    mac = _keyed(key).copy()
    mac.update(message)
    return mac.digest()


def sign(key: bytes, message: bytes) -> str:
    """The ``sha256=<base64>`` value X computes for ``message`` with ``key``."""
    return PREFIX + base64.b64encode(_digest(key, message)).decode("ascii")


def is_plausible_crc_token(token: object) -> bool:
    """True when ``token`` could have come from X: letters, digits and ``+ / = - _`` (standard
    and URL-safe base64), 1 to ``MAX_CRC_TOKEN`` characters.

    The CRC answer is the same HMAC as a delivery signature, so answering anything else would
    let anyone obtain a valid ``x-twitter-webhooks-signature`` for a body of their choice."""
    return isinstance(token, str) and _CRC_TOKEN.fullmatch(token) is not None


def crc_response_token(consumer_secret: str, crc_token: str) -> str:
    """The ``response_token`` that answers X's CRC challenge.

    This is the bare primitive (the emulator also uses it to check body signatures): a caller
    answering strangers must refuse tokens that fail :func:`is_plausible_crc_token` first."""
    return sign(consumer_secret.encode("utf-8"), crc_token.encode("utf-8"))


class Verdict(enum.Enum):
    """Why a delivery's signature was accepted or not; each failure has its own value."""

    OK = "ok"
    MISSING = "missing signature"
    MALFORMED = "malformed signature"
    MISMATCH = "invalid signature"

    @property
    def ok(self) -> bool:
        return self is Verdict.OK


def verify_signature(consumer_secret: str, body: bytes, header: str | None) -> Verdict:
    """Check ``x-twitter-webhooks-signature`` against the raw body, in constant time.

    The whole expected digest is computed first and compared as bytes with
    ``hmac.compare_digest`` (comparing ``str`` raises on non-ASCII input).
    """
    if not consumer_secret:
        # Never accept anything when the secret is unset: an empty key is a forgeable key.
        return Verdict.MISMATCH
    if header is None or not header.strip():
        return Verdict.MISSING
    header = header.strip()
    if not header.startswith(PREFIX):
        return Verdict.MALFORMED
    try:
        given = base64.b64decode(header[len(PREFIX):].encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return Verdict.MALFORMED
    if len(given) != _DIGEST_SIZE:
        return Verdict.MALFORMED
    expected = _digest(consumer_secret.encode("utf-8"), body)
    return Verdict.OK if hmac.compare_digest(expected, given) else Verdict.MISMATCH
