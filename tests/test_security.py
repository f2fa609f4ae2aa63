"""Known-answer vectors from X's docs (../shared/docs/x-api-facts.md), the CRC token rule and the
signature checker."""
import base64
import secrets

import pytest

from catbot.security import MAX_CRC_TOKEN, Verdict, crc_response_token, is_plausible_crc_token, sign, verify_signature

VECTORS = [
    ("ss", "helloWorld", "sha256=YFpPr1o5UmzuIUDQn+BqYQ14kFOjWiWYc7oNiVymMgg="),
    ("bbbbbb", "html body", "sha256=P/M6xYi2AxkjB8C36xD3AfjT5XuOx3dWgw9EVXCYA2U="),
    ("test", "test=1&other_test=2", "sha256=25Cu3iwbbiqBTwQRzcKJZwisjf736V2Q8UaTlkfLSoc="),
    ("test", '{"test_number":1,"test_string":"two"}', "sha256=YWHphPn/JFq43jkF0y4/w8R/SelmLjvpunhVFY8JhlI="),
]


@pytest.mark.parametrize("key,message,expected", VECTORS)
def test_sign_known_answers(key, message, expected):
    assert sign(key.encode(), message.encode()) == expected


@pytest.mark.parametrize("key,message,expected", [v for v in VECTORS if is_plausible_crc_token(v[1])])
def test_crc_known_answers(key, message, expected):
    assert crc_response_token(key, message) == expected


def test_only_the_token_shaped_vector_is_a_plausible_crc_token():
    """The other vectors sign bodies (`=`/`&`, JSON, a space): the CRC route must never sign them."""
    assert [m for _, m, _ in VECTORS if is_plausible_crc_token(m)] == ["helloWorld"]


@pytest.mark.parametrize("token", [
    "M2RkODJkZmMtYjlkYi00NmQ4LTk0MGUtM2JjYzkwM2Q4MjQ0",  # a token X sent in 2026
    "MTc2OTUxODI5MjkxNA",  # and its nonce
    "helloWorld",
    "ab+/cd==",  # standard base64 alphabet with padding
    "a-b_c",  # URL-safe alphabet
    "x",
    "A" * MAX_CRC_TOKEN,
])
def test_plausible_crc_tokens(token):
    assert is_plausible_crc_token(token)


def test_our_own_preflight_tokens_are_plausible():
    """register_webhook.py and the emulator challenge the bot with ``secrets.token_urlsafe(24)``."""
    assert all(is_plausible_crc_token(secrets.token_urlsafe(24)) for _ in range(2000))


@pytest.mark.parametrize("token", [
    "",
    '{"for_user_id":"2000000001","direct_message_events":[]}',  # a delivery body: the oracle attack
    "{}",
    "test=1&other_test=2",
    "html body",
    "abc\n",  # a trailing newline must not slip past a `$` anchor
    "\nabc",
    "abc\x00",
    "tökén",  # non-ASCII letters
    "١٢٣",  # non-ASCII digits (str.isalnum would accept them)
    "ａｂｃ",  # full-width letters
    "a.b",
    "a%7Bb",  # still percent-encoded: the server decodes once; a second layer is not X's
    "A" * (MAX_CRC_TOKEN + 1),
    None,
    b"helloWorld",
])
def test_implausible_crc_tokens(token):
    assert not is_plausible_crc_token(token)


@pytest.mark.parametrize("key,message,expected", VECTORS)
def test_body_signature_known_answers(key, message, expected):
    assert verify_signature(key, message.encode(), expected) is Verdict.OK


def test_signature_of_other_bytes_is_a_mismatch():
    assert verify_signature("test", b'{"test_number":2}', VECTORS[3][2]) is Verdict.MISMATCH


def test_signature_with_other_secret_is_a_mismatch():
    body = b"html body"
    assert verify_signature("bbbbbc", body, sign(b"bbbbbb", body)) is Verdict.MISMATCH


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_signature(header):
    assert verify_signature("s", b"x", header) is Verdict.MISSING


@pytest.mark.parametrize("header", [
    "sha1=YFpPr1o5UmzuIUDQn+BqYQ14kFOjWiWYc7oNiVymMgg=",  # wrong algorithm
    "YFpPr1o5UmzuIUDQn+BqYQ14kFOjWiWYc7oNiVymMgg=",  # no prefix
    "sha256=not base64!!",
    "sha256=" + base64.b64encode(b"short").decode(),  # wrong digest length
    "sha256=ÿÿÿÿ",  # non-ASCII must not raise
])
def test_malformed_signature(header):
    assert verify_signature("ss", b"helloWorld", header) is Verdict.MALFORMED


def test_empty_secret_never_verifies():
    body = b"anything"
    assert verify_signature("", body, sign(b"", body)) is Verdict.MISMATCH
