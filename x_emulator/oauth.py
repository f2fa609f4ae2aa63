"""OAuth 1.0a (HMAC-SHA1) request verification, as X does it, built on oauthlib's primitives.

Clients that reach the emulator through ``X_API_BASE_URL`` sign the canonical X URL
(``https://api.twitter.com/...`` or ``https://api.x.com/...``) and are then rerouted, so the
signature is checked against those as well as the URL the request actually arrived at.
"""
from __future__ import annotations

import hmac
import time
from types import SimpleNamespace
from urllib.parse import urlsplit

from oauthlib.oauth1.rfc5849 import signature, utils

CANONICAL_HOSTS = ("https://api.twitter.com", "https://api.x.com")
MAX_CLOCK_SKEW = 300


def verify_oauth1(method: str, url: str, headers: dict[str, str], form_body: str | None,
                  consumer_key: str, consumer_secret: str, token: str, token_secret: str,
                  now: float | None = None) -> str | None:
    """None when the request is signed by these credentials; otherwise the reason it is not."""
    auth = headers.get("Authorization") or headers.get("authorization") or ""
    if not auth.startswith("OAuth "):
        return "missing OAuth 1.0a Authorization header"
    try:
        oauth = {k: utils.unescape(v) for k, v in utils.parse_authorization_header(auth)}
    except (ValueError, TypeError):
        return "malformed Authorization header"
    if oauth.get("oauth_signature_method") != "HMAC-SHA1":
        return "unsupported signature method"
    if oauth.get("oauth_consumer_key") != consumer_key:
        return "unknown consumer key"
    if oauth.get("oauth_token") != token:
        return "unknown access token"
    try:
        skew = abs((now or time.time()) - int(oauth.get("oauth_timestamp", "")))
    except ValueError:
        return "bad timestamp"
    if skew > MAX_CLOCK_SKEW or not oauth.get("oauth_nonce"):
        return "stale timestamp or missing nonce"
    parts = urlsplit(url)
    params = signature.collect_parameters(uri_query=parts.query, body=form_body or None,
                                          headers={"Authorization": auth}, exclude_oauth_signature=True)
    normalized = signature.normalize_parameters(params)
    given = oauth.get("oauth_signature", "")
    secrets = SimpleNamespace(client_secret=consumer_secret, resource_owner_secret=token_secret)
    for base in (parts.scheme + "://" + parts.netloc,) + CANONICAL_HOSTS:
        base_uri = signature.base_string_uri(base + parts.path)
        expected = signature.sign_hmac_sha1_with_client(
            signature.signature_base_string(method.upper(), base_uri, normalized), secrets)
        if hmac.compare_digest(expected.encode(), given.encode()):
            return None
    return "signature does not match"
