"""Known-answer vectors from X's docs (../shared/docs/x-api-facts.md) and the signature checker."""
import base64

import pytest

from catbot.security import Verdict, crc_response_token, sign, verify_signature

VECTORS = [
    ("ss", "helloWorld", "sha256=YFpPr1o5UmzuIUDQn+BqYQ14kFOjWiWYc7oNiVymMgg="),
    ("bbbbbb", "html body", "sha256=P/M6xYi2AxkjB8C36xD3AfjT5XuOx3dWgw9EVXCYA2U="),
    ("test", "test=1&other_test=2", "sha256=25Cu3iwbbiqBTwQRzcKJZwisjf736V2Q8UaTlkfLSoc="),
    ("test", '{"test_number":1,"test_string":"two"}', "sha256=YWHphPn/JFq43jkF0y4/w8R/SelmLjvpunhVFY8JhlI="),
]


@pytest.mark.parametrize("key,message,expected", VECTORS)
def test_crc_known_answers(key, message, expected):
    assert crc_response_token(key, message) == expected


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
