"""X Chat under attack, and with an unlucky operator: what a hostile sender, a hostile or odd
relay (X frames every event; end-to-end encryption is there so that X need not be trusted) and
an odd answer from X's public-keys endpoint can do to the bot's encrypted-DM path.

Each ``test_*`` in the first part reproduces one problem an adversarial review found (each
failed against the first X Chat commit, 85e38bf); ``test_held_*`` at the end are attacks that
were tried and held, kept as regressions. Kept apart from legacy DMs by design (opt-out, cap,
budget window name): docs/architecture.md, "X Chat".
In-process like tests/test_xchat.py: the emulator's users, real Chat XDK crypto, signed HTTP
deliveries, the reply job run in this thread.
"""
from __future__ import annotations

import base64
import json
import logging
from types import SimpleNamespace

import pytest
import requests

from catbot.replies import MAX_TEXT
from catbot.web import create_app
from catbot.xchat import Refused, canonical
from helpers import BOT_ID, ServerThread, captured, drain, runtime_of, xchat_keys
from x_emulator import activity
from x_emulator import chat as xchat_emulator

ALICE = "3000000711"
CAROL = "3000000713"  # a user who also writes to the bot: her keys are in every worker's cache
MALLORY = "3000000714"


# -- harness ---------------------------------------------------------------------------------------
def make_bot(emulator, settings, **changes):
    blob, version, public = xchat_keys()
    emulator.set_public_keys(BOT_ID, public)
    chat_settings = settings.replace(xchat_private_keys=blob, xchat_key_version=version, **changes)
    app = create_app(chat_settings)
    server = ServerThread(app)
    return SimpleNamespace(app=app, url=server.url + "/webhook/twitter", blob=blob, settings=chat_settings,
                           server=server)


@pytest.fixture
def bot(emulator, settings):
    b = make_bot(emulator, settings)
    yield b
    b.server.stop()


@pytest.fixture
def refusals():
    with captured("catbot.xchat") as handler:
        yield handler.records


def say(emulator, bot, text: str, user: str = ALICE, fault: str | None = None) -> str:
    message_id, answer = emulator.deliver_chat(user, text, fault=fault, url=bot.url)
    assert answer.status_code == 200
    return message_id


def craft(emulator, user: str, text: str) -> dict:
    """The ``chat.received`` payload X would deliver for this user's message (not yet delivered),
    so that a test can change it as a hostile relay would."""
    with emulator.lock:
        return xchat_emulator._payload(emulator, user, text, None)[1]


def post(emulator, bot, payload: dict) -> None:
    answer = emulator.post_delivery(activity.envelope("chat.received", payload, BOT_ID, "catfacts-bot"), bot.url)
    assert answer.status_code == 200


def replies(emulator, user: str = ALICE) -> list[str]:
    return [m.text for m in emulator.sent_to(user) if m.channel == "xchat"]


def dm_replies(emulator, user: str = ALICE) -> list[str]:
    return [m.text for m in emulator.sent_to(user) if m.channel != "xchat"]


def identity_of(app):
    return runtime_of(app).replier.senders["x_chat"].identity


def fake_response(status: int, body, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.encoding = "utf-8"
    response.headers.update({"content-type": "application/json", **(headers or {})})
    return response


def answer_public_keys_with(monkeypatch, app, answer, only_user: str | None = None) -> None:
    """X's ``GET /2/users/:id/public_keys`` answers ``answer()`` (None: the emulator answers)."""
    http = identity_of(app)._http
    real_get = http.get

    def get(url, *args, **kwargs):
        if "/public_keys" in url and (only_user is None or f"/users/{only_user}/" in url):
            made = answer()
            if made is not None:
                return made
        return real_get(url, *args, **kwargs)

    monkeypatch.setattr(http, "get", get)


def drain_catching(app) -> list[str]:
    """``drain``, but an exception out of the reply job is returned (as its type and first words)
    instead of raised, so that a test can check the state it left before failing on it."""
    try:
        drain(app)
    except Exception as exc:  # noqa: BLE001 - what the test reports
        return [f"{type(exc).__name__}: {str(exc)[:120]}"]
    return []


class Clock:
    """The reply job's clock, moved by the test (X's backoffs and resets without waiting)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def key_change_frame(emulator, signer: str, for_conversation: str, participants: tuple[str, ...]) -> str:
    """A key change made and signed by ``signer`` for ``for_conversation``, wrapping a new key for
    ``participants``, framed as X frames it (sender: the signer, who really signed it)."""
    client = xchat_emulator.identity(emulator, signer)
    with emulator.lock:
        keys = [{"user_id": uid, "public_key": emulator.chat.public_keys[uid][0]["public_key"],
                 "key_version": emulator.chat.public_keys[uid][0]["public_key_version"]} for uid in participants]
        change = client.prepare_conversation_key_change(keys, conversation_id=for_conversation)
        action = change["action_signatures"][0]
        return xchat_emulator.frame(emulator.next_id(), action["message_id"], signer, for_conversation, 1,
                                    base64.b64decode(action["encoded_message_event_detail"]),
                                    xchat_emulator.key_change_signature(action))


# == problems ======================================================================================

@pytest.mark.parametrize("how", ["replayed_from_carols_conversation", "signed_by_carol_for_alices"])
def test_a_key_change_not_made_by_a_member_of_this_conversation_is_not_taken(bot, emulator, refusals, how):
    """A key change is verified against every signing key the worker has ever fetched, and the
    event's own sender and conversation are never compared with the delivery's. So a relay can
    attach Carol's key change (her own conversation's, replayed verbatim; or one Carol signed for
    Alice's conversation, which the SDK verifies although Carol is no member) to Alice's message:
    it is kept in the store as Alice's conversation key, it is the newest version, and the bot's
    replies to Alice are encrypted under a key that Carol (and the relay's accomplice) holds and
    Alice does not: Alice can no longer read the bot, and every worker inherits the poison."""
    say(emulator, bot, "hi", user=ALICE)
    say(emulator, bot, "hi", user=CAROL)  # the bot now holds Carol's signing keys
    drain(bot.app)
    assert len(replies(emulator, ALICE)) == 1 and len(replies(emulator, CAROL)) == 1
    alice_conversation = emulator.chat.conversations[ALICE].conversation_id
    if how == "replayed_from_carols_conversation":
        payloads = [d.get("data", {}).get("payload", {}) for _, d in emulator.delivered]
        foreign_change = [p for p in payloads if p.get("sender_id") == CAROL][0]["conversation_key_change_event"]
    else:
        foreign_change = key_change_frame(emulator, CAROL, alice_conversation, (BOT_ID, ALICE))

    payload = craft(emulator, ALICE, "a real message from alice")
    payload["conversation_key_change_event"] = foreign_change
    post(emulator, bot, payload)
    crashes = drain_catching(bot.app)
    say(emulator, bot, "and another one", user=ALICE)
    crashes += drain_catching(bot.app)

    # Every key change is kept as delivered (verified by whoever reads it): a fresh process that
    # reads the foreign one with Alice's must take nothing from it either.
    other = create_app(bot.settings)
    say(emulator, bot, "to a fresh process", user=ALICE)
    crashes += drain_catching(other)
    assert crashes == [], "the reply job crashed encrypting to the foreign key"
    assert [r for r in emulator.rejected if r["channel"] == "xchat"] == [], "the bot sent Alice what she cannot read"
    assert len(replies(emulator, ALICE)) >= 3


@pytest.mark.parametrize("odd", [
    pytest.param([], id="body_is_a_list"),
    pytest.param({"data": {"public_key": "AAAA", "public_key_version": "1"}}, id="data_is_an_object"),
    pytest.param({"data": ["AAAA"]}, id="data_holds_strings"),
])
def test_an_odd_answer_from_the_public_keys_endpoint_does_not_crash_the_reply_job(bot, emulator, monkeypatch, odd):
    """``answer.json().get("data")`` and ``k.get(...)`` assume X's shape: any other JSON raises
    AttributeError, which XChatSender.open does not catch. The reply pass dies with the batch
    claimed, no attempt counted, no refusal logged or counted: the same batch crashes the job
    again every lease, forever (a poison message in front of everyone else's)."""
    answer_public_keys_with(monkeypatch, bot.app, lambda: fake_response(200, odd), only_user=ALICE)
    say(emulator, bot, "hi")
    drain(bot.app)  # must not raise
    health = bot.app.test_client().get("/healthz")
    assert health.status_code == 200


def test_one_users_odd_public_key_does_not_silence_everyone_who_writes_after_them(bot, emulator):
    """X answers Mallory's keys with a null field (X's JSON, or whatever Mallory registered).
    The entry is cached *before* ``set_signing_keys`` rejects it (TypeError), so every later
    ``set_signing_keys`` call, made whenever any new user's keys are fetched, raises again for
    an hour, and each new user's message is refused ("unreadable record") and dropped for good."""
    xchat_emulator.identity(emulator, MALLORY)
    with emulator.lock:
        emulator.chat.public_keys[MALLORY][0]["identity_public_key_signature"] = None  # JSON null
    say(emulator, bot, "hi", user=MALLORY)
    drain(bot.app)
    say(emulator, bot, "hello, cat facts please", user=ALICE)  # Alice has nothing to do with Mallory
    drain(bot.app)
    assert len(replies(emulator, ALICE)) == 1


def test_a_conversation_survives_its_first_message_being_given_up(bot, emulator, monkeypatch):
    """The key change travels only with a conversation's first message, and is kept only when the
    reply job opens that message successfully. If X's public-keys endpoint is down for the few
    minutes SEND_MAX_ATTEMPTS lasts, that message is given up (fair enough), but its key change is
    lost with it: every later message of the conversation is refused as "unknown conversation key
    version", forever (the bot never asks X for the conversation's events)."""
    down = {"now": True}
    answer_public_keys_with(monkeypatch, bot.app, lambda: fake_response(503, {"title": "Service Unavailable"})
                            if down["now"] else None)
    clock = Clock(runtime_of(bot.app).replier.clock())
    runtime_of(bot.app).replier.clock = clock
    say(emulator, bot, "hi")
    for _ in range(bot.settings.send_max_attempts + 2):
        drain(bot.app)
        clock.now += 400
    assert runtime_of(bot.app).backlog()["pending_messages"] == 0  # given up, as designed

    down["now"] = False  # X is back
    say(emulator, bot, "hello again?")
    drain(bot.app)
    assert len(replies(emulator)) == 1, "the conversation is dead: its key change was dropped"


def test_a_429_from_the_public_keys_endpoint_waits_for_xs_reset_instead_of_giving_up(bot, emulator, monkeypatch):
    """A 429 on the send waits for X's reset without spending an attempt; a 429 on the key fetch
    is a plain RETRY with exponential backoff (2 s ... 128 s), so a 15-minute rate window drops
    the message after about four minutes (and, with the test above, its conversation)."""
    clock = Clock(runtime_of(bot.app).replier.clock())
    runtime_of(bot.app).replier.clock = clock
    reset = clock.now + 900
    answer_public_keys_with(monkeypatch, bot.app, lambda: fake_response(
        429, {"title": "Too Many Requests"}, {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(int(reset))})
        if clock.now < reset else None)
    say(emulator, bot, "hi")
    while clock.now < reset - 30:
        drain(bot.app)
        clock.now += 30
    assert runtime_of(bot.app).backlog()["pending_messages"] == 1, "given up before X's rate window reset"
    clock.now = reset + 1
    drain(bot.app)
    assert len(replies(emulator)) == 1


def test_a_restarted_worker_still_opens_a_conversation_after_the_user_registers_a_new_key(bot, emulator):
    """Only a user's newest registration is given to the SDK (``max(..., public_key_version)``),
    though X lists every one and ``set_signing_keys`` takes several per user. After Alice adds a
    device (a new key), the kept key change of her conversation, signed with her older key, no
    longer verifies: any worker that did not have the conversation key in memory (a restart, a
    deploy, another gunicorn worker) refuses all her messages, "unknown conversation key version"."""
    say(emulator, bot, "hi from my phone")
    drain(bot.app)
    from chat_xdk import Chat

    laptop = Chat()  # Alice's second device, registered with X; the conversation key is unchanged
    registration = laptop.generate_keypairs()
    laptop.set_identity(ALICE, str(registration.version))
    with emulator.lock:
        emulator.chat.public_keys[ALICE].insert(0, xchat_emulator.public_keys_of(registration))
        emulator.chat.identities[ALICE] = laptop
    restarted = create_app(bot.settings)  # same store, its own SDK instance and caches
    say(emulator, bot, "hi from my laptop")
    drain(restarted)
    assert len(replies(emulator)) == 2


def test_a_late_message_under_an_older_key_version_does_not_crash_the_reply_job(bot, emulator):
    """``seal_reply`` encrypts with the conversation's newest key and quotes the message replied
    to; when that message came under an older version (a second device that has not seen the
    rotation yet, or deliveries out of order: x_emulator keeps "every version the user made: a
    reply may come under an older one"), ``encrypt_reply`` raises ValueError ("no conversation key
    for version ... of the replied-to message; pass reply_to_ckces"). ``XChatSender.send`` catches
    only Refused and XUnavailable, so the reply job dies after reserving a send slot and renewing
    its claim to send; no attempt is counted, and the same batch kills the job again after every
    lease, forever."""
    say(emulator, bot, "first")
    drain(bot.app)
    say(emulator, bot, "rotated", fault="rotate")
    drain(bot.app)
    assert len(replies(emulator)) == 2
    conversation = emulator.chat.conversations[ALICE]
    newest = conversation.key_version
    with emulator.lock:
        conversation.key_version = min(conversation.keys, key=int)  # the other device, not rotated yet
    say(emulator, bot, "from my old device")
    with emulator.lock:
        conversation.key_version = newest
    clock = Clock(runtime_of(bot.app).replier.clock())
    runtime_of(bot.app).replier.clock = clock
    crashes = []
    for _ in range(3):
        crashes += drain_catching(bot.app)
        clock.now += bot.settings.reply_lease_seconds + 1
    assert crashes == []
    assert len(replies(emulator)) == 3


def test_a_long_x_chat_message_is_cut_before_the_trigger_pattern_sees_it_like_a_dm(emulator, settings):
    """A legacy DM is cut to MAX_TEXT (10,000) before any regex sees it; an X Chat message
    (up to ~190 kB of text fits the webhook's limits) is classified whole. Beyond the differing
    answer below, an operator's TRIGGER_PATTERN now runs on input ~19x longer than it was sized
    for: with a backtracking pattern (``.*cat.*fact``) the reply job stalls for minutes."""
    bot = make_bot(emulator, settings, trigger_pattern="cat")
    try:
        text = "x" * MAX_TEXT + " cat"
        emulator.deliver_dm(ALICE, text, url=bot.url)
        say(emulator, bot, text)
        drain(bot.app)
        assert dm_replies(emulator) == []  # the DM's "cat" was cut off
        assert replies(emulator) == [], "the X Chat message's trigger ran on text a DM never shows it"
    finally:
        bot.server.stop()


def test_a_conversation_id_spelled_with_a_dash_is_the_same_conversation(bot, emulator, refusals):
    """X's samples spell a 1:1 conversation ``a:b`` and ``a-b`` (x-api-facts). Keys are kept and
    looked up under the payload's spelling, not the signed conversation id, so the same (verified)
    conversation under the other spelling is refused as "unknown conversation key version"."""
    say(emulator, bot, "hi")
    drain(bot.app)
    payload = craft(emulator, ALICE, "still me")
    payload["conversation_id"] = payload["conversation_id"].replace(":", "-")
    post(emulator, bot, payload)
    drain(bot.app)
    assert [r.getMessage() for r in refusals if r.levelno >= logging.WARNING] == []
    assert len(replies(emulator)) == 2


def test_one_large_x_chat_message_does_not_jam_the_journal_for_everyone_after_it(bot, emulator):
    """The webhook accepts an ``encoded_event`` of up to 262,144 base64 characters (and a key
    change as long, and an 8 KiB token), and journals the sealed message as one line; the
    journal importer reads READ_LIMIT = 256 KiB past its offset and takes only whole lines. A
    line longer than that is never whole: the import of that journal stops there for good, and
    every message journaled after it by that web worker (each already acknowledged to X with a
    200, so never redelivered) waits forever. One user with a client that sends ~196,000
    characters in one X Chat message (or a relay) silences the bot on the embedded default."""
    _, answer = emulator.deliver_chat(ALICE, "x" * 196_000, url=bot.url)  # encoded_event: 261,808 chars
    assert answer.status_code == 200
    say(emulator, bot, "hi", user=CAROL)
    drain(bot.app)
    assert len(replies(emulator, CAROL)) == 1, "Carol's message is stuck behind Alice's in the journal"


def test_a_refused_event_is_logged_and_counted_once_when_its_batch_is_retried(bot, emulator, refusals):
    """A refusal lives only in the opened copy of the batch: when the reply to the rest of the
    batch is retried (a 503 from X here; also after each crash above), the refused event is
    opened, refused, logged and counted again, every attempt (up to SEND_MAX_ATTEMPTS), so the
    log and ``xchat_refused`` overstate what was refused."""
    say(emulator, bot, "first")
    drain(bot.app)
    say(emulator, bot, "tampered", fault="tamper")
    say(emulator, bot, "a good one after it")
    emulator.faults.errors_5xx = 1
    clock = Clock(runtime_of(bot.app).replier.clock())
    runtime_of(bot.app).replier.clock = clock
    for _ in range(3):
        drain(bot.app)
        clock.now += 10
    assert len(replies(emulator)) == 2
    assert len([r for r in refusals if r.levelno == logging.WARNING]) == 1
    assert bot.app.test_client().get("/healthz").get_json()["store"]["xchat_refused"] == 1


# == held: attacks that were tried and failed ======================================================

def test_held_a_valid_message_delivered_as_another_sender_or_conversation_is_refused(bot, emulator, refusals):
    say(emulator, bot, "hi", user=ALICE)
    say(emulator, bot, "hi", user=CAROL)
    drain(bot.app)
    before = len(replies(emulator, ALICE)) + len(replies(emulator, CAROL))
    carol_conversation = emulator.chat.conversations[CAROL].conversation_id
    as_carol = craft(emulator, ALICE, "alice's words, claimed as carol's")
    as_carol["sender_id"] = CAROL
    post(emulator, bot, as_carol)
    in_carols = craft(emulator, ALICE, "alice's words, in carol's conversation")
    in_carols.update(sender_id=CAROL, conversation_id=carol_conversation)
    post(emulator, bot, in_carols)
    group = craft(emulator, ALICE, "a group")
    group["conversation_id"] = "g1234567"
    post(emulator, bot, group)
    other_id = craft(emulator, ALICE, "another id")
    other_id["id"] = "00000000-0000-4000-8000-000000000000"
    post(emulator, bot, other_id)
    drain(bot.app)
    assert len(replies(emulator, ALICE)) + len(replies(emulator, CAROL)) == before
    lines = [r.getMessage() for r in refusals if r.levelno == logging.WARNING]
    assert len(lines) == 4 and not any("words" in line for line in lines)
    assert bot.app.test_client().get("/healthz").get_json()["store"]["xchat_refused"] == 4


def test_held_a_key_change_whose_signature_fails_yields_no_key_even_though_the_sdk_returns_one(bot, emulator):
    """The SDK returns ``conversation_keys`` alongside ``errors``; the bot reads ``errors`` first."""
    say(emulator, bot, "hi", user=CAROL)
    drain(bot.app)
    xchat_emulator.identity(emulator, ALICE)  # Alice's keys exist; her conversation does not yet
    # Carol signs, the frame claims Alice: the SDK reports an error and still returns the key
    change = key_change_frame(emulator, CAROL, f"{BOT_ID}:{ALICE}", (BOT_ID, ALICE))
    raw = bytearray(base64.b64decode(change))
    at = raw.index(CAROL.encode())
    raw[at:at + len(CAROL)] = ALICE.encode()
    payload = craft(emulator, ALICE, "first")
    payload["conversation_key_change_event"] = base64.b64encode(bytes(raw)).decode()
    post(emulator, bot, payload)
    drain(bot.app)
    assert replies(emulator, ALICE) == []
    # kept as delivered, it gives a fresh process no key either
    other = identity_of(create_app(bot.settings))
    with pytest.raises(Refused):
        other._key(canonical(payload["conversation_id"]), payload["conversation_key_version"], {BOT_ID, ALICE})


def test_held_nothing_secret_in_healthz_logs_or_files(bot, emulator, tmp_path):
    with captured("catbot", logging.DEBUG) as handler:
        for fault in (None, "tamper", "forged", "unknown_key"):
            say(emulator, bot, "purple walrus " + str(fault), fault=fault)
            drain(bot.app)
    health = bot.app.test_client().get("/healthz").get_data(as_text=True)
    for text in [health, *handler.lines]:
        assert bot.blob not in text and "walrus" not in text
    assert bot.blob not in repr(bot.settings)
    for path in tmp_path.rglob("*"):  # the SQLite file, its WAL, the journals
        if path.is_file():
            data = path.read_bytes()
            assert b"walrus" not in data and bot.blob.encode() not in data, path


def test_held_a_huge_or_garbled_chat_event_is_refused_without_a_crash(bot, emulator, refusals):
    say(emulator, bot, "hi")
    drain(bot.app)
    payload = craft(emulator, ALICE, "hi again")
    payload.update(encoded_event="A" * 100_000, conversation_key_change_event="QUFB" * 20_000,
                   conversation_token="t" * 8192)  # beyond what X can send: malformed at the door
    post(emulator, bot, payload)
    assert runtime_of(bot.app).backlog()["pending_messages"] == 0
    garbled = craft(emulator, ALICE, "and again")
    garbled["encoded_event"] = base64.b64encode(b"\x0c\x00\x07" * 15_000).decode()  # structs nested deep
    post(emulator, bot, garbled)
    drain(bot.app)
    assert len(replies(emulator)) == 1
    assert bot.app.test_client().get("/healthz").get_json()["store"]["xchat_refused"] == 1
