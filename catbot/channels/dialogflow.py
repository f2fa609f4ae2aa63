"""Dialogflow fulfillment (ES and CX): the agent calls the bot's webhook and shows its answer itself.

Dialogflow is not a messenger: it owns the conversation, and when an intent (ES) or a route's
fulfillment (CX) has the webhook on, it POSTs the turn to ``/webhook/dialogflow`` and waits for
the answer: 5 s in ES, the webhook's timeout in CX (5 s by default, 30 s at most). So this
channel answers *in the response* (``Channel.respond``): nothing is recorded, queued or sent
later, and there is no API to send with (the sender refuses, see :class:`NothingToSend`).

At the door (https://cloud.google.com/dialogflow/es/docs/fulfillment-webhook, "Authentication"):
the console's login and password arrive as ``Authorization: Basic base64(login:password)``,
compared whole in constant time before the body is read. No header, another scheme, or one that
does not decode to ``login:password``: 401 with ``WWW-Authenticate``; decoded but wrong: 403
(the X webhook's split: a refusal the caller could not have avoided asks it to authenticate,
one it could have is forbidden).

The turn is read from either request shape (CX has ``detectIntentResponseId`` and
``sessionInfo``, ES ``responseId``, ``session`` and ``queryResult``); its words (ES
``queryText``; CX ``text``, or ``transcript`` for speech) are classified once with
``classify`` and then dropped: neither stored nor logged. A turn without words (started by an
event such as a welcome or no-input, by an intent, or by DTMF) is Dialogflow's own, and gets an
empty answer, so the agent's own responses play. ``DIALOGFLOW_FACT_INTENTS`` (display names
or CX fulfillment tags, comma-separated; empty: all) limits which turns get facts; help, stop
and start work in any.

State lives where the conversation lives: in the Dialogflow session. The bot keeps one small
object, ``catfacts_bot`` (opted out or not, the times of its answers this past hour, where the
user is in the bundled facts), as an ES output context or a CX session parameter, and
Dialogflow hands it back with the session's next turn. So ``stop`` lasts as long as the session
(ES forgets contexts after 20 minutes without a query; a CX session ends after 30), the
per-user cap (``REPLIES_PER_USER_PER_HOUR``) counts per session, and a request Dialogflow or its
caller sends again carries the same state and gets the same decision: nothing is counted twice,
with no store to de-duplicate in. An opted-out or capped turn gets no text (the agent's own
response for the intent plays), as X's DMs get none.

A fact never waits on the facts API longer than :data:`FACT_WAIT` (less with a shorter
``CATFACTS_TIMEOUT``): the runtime's facts client is asked from a small thread pool, and when it
has not answered in time the user's next bundled fact is used.
"""
from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import logging
import math
import re
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FactTimeout
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import catfacts
from catbot.channels import Answer, Channel, Parsed, json_object, same_secret
from catbot.logs import event
from catbot.outbound import Outcome, Sender, SendResult
from catbot.replies import Intent, Plan, classify, compose, plan
from catbot.store import Batch, Inbound, Store

if TYPE_CHECKING:
    from catbot.runtime import Runtime

KIND = "dialogflow"
USERNAME, PASSWORD, FACT_INTENTS = "DIALOGFLOW_USERNAME", "DIALOGFLOW_PASSWORD", "DIALOGFLOW_FACT_INTENTS"
REALM = 'Basic realm="catfacts-bot", charset="UTF-8"'
STATE_NAME = "catfacts_bot"  # the ES context / CX session parameter holding the bot's state
LIFESPAN = 50  # ES turns the state context outlives a turn without this webhook (refreshed at each one)
FACT_WAIT = 1.5  # seconds: inside ES's fixed 5 s with room for the network both ways
FACT_WORKERS = 4  # facts calls at once per process; more wait their turn (and their bound)
HOUR = 3600
MAX_AUTH_HEADER = 1024
MIN_PASSWORD = 16  # the webhook is on the internet, and basic auth is all that guards it
MAX_ID = 512  # a session name, a response id: far above Dialogflow's, small enough to log and echo
_SESSION = re.compile(r"projects/[^/\s]+/(?:[^\s]+/)?sessions/[^/\s]+")
_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # what an id may be in a record (catbot.journal)

log = logging.getLogger("catbot.dialogflow")


# -- the door ---------------------------------------------------------------------------------------
class Auth(enum.Enum):
    """Why a request's credentials were accepted or not; each failure has its own value."""

    OK = "ok"
    MISSING = "missing credentials"
    MALFORMED = "malformed credentials"
    WRONG = "invalid credentials"


def check_basic_auth(header: str | None, username: str, password: str) -> Auth:
    """The ``Authorization`` header Dialogflow sends (RFC 7617) against the configured login.

    The decoded ``login:password`` is compared whole, as bytes, in constant time
    (``same_secret``), so timing says nothing about which half differs, or where."""
    if header is None or not header.strip():
        return Auth.MISSING
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or len(header) > MAX_AUTH_HEADER:
        return Auth.MALFORMED
    try:
        given = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return Auth.MALFORMED
    if b":" not in given:
        return Auth.MALFORMED
    expected = f"{username}:{password}".encode("utf-8")
    return Auth.OK if same_secret(given, expected) else Auth.WRONG


def basic_authorization(username: str, password: str) -> str:
    """The header value Dialogflow sends for a login and password (the emulator and tests use it)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode("utf-8")).decode("ascii")


def _ask_for_credentials() -> None:
    """Put the challenge on this request's 401 (``Answer`` carries no headers, so it goes on
    the response Flask is about to send)."""
    from flask import after_this_request, has_request_context

    if has_request_context():
        @after_this_request
        def challenge(response):
            response.headers["WWW-Authenticate"] = REALM
            return response


# -- reading a turn -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Turn:
    """One fulfillment request, as much of it as the bot uses. ``words`` is the user's text,
    to classify and drop; None when no words started the turn (an event, an intent, DTMF)."""

    cx: bool
    event_id: str
    session: str
    words: str | None
    names: tuple[str, ...]  # the matched intent's display name, and a CX fulfillment's tag
    state: Any  # the bot's state as the session holds it (JSON, unchecked)
    trigger: str = ""  # what started a turn without words (CX ``triggerEvent``...), for the log

    @property
    def flavour(self) -> str:
        return "cx" if self.cx else "es"

    def answer(self, text: str, state: "SessionState") -> dict[str, Any]:
        """The WebhookResponse: ``text`` (if any) for the user, ``state`` kept in the session."""
        if self.cx:
            body: dict[str, Any] = {"fulfillmentResponse": {"messages": [{"text": {"text": [text]}}]}} if text else {}
            body["sessionInfo"] = {"parameters": {STATE_NAME: state.as_json()}}
            return body
        body = {"fulfillmentText": text, "fulfillmentMessages": [{"text": {"text": [text]}}]} if text else {}
        body["outputContexts"] = [{"name": f"{self.session}/contexts/{STATE_NAME}", "lifespanCount": LIFESPAN,
                                   "parameters": state.as_json()}]
        return body


def _text(value: Any, limit: int = MAX_ID) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= limit else None


def _words(value: Any) -> str | None:
    """A user's words, however long (``classify`` reads what it needs); empty: no words."""
    return value if isinstance(value, str) and value else None


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else None


def _cx_turn(request: dict[str, Any]) -> tuple[str | None, str | None, str | None, tuple, Any, str]:
    """CX's WebhookRequest: the turn's words are ``text`` or, for speech, ``transcript``."""
    info = request.get("sessionInfo")
    words = _words(request.get("text")) or _words(request.get("transcript"))
    names = (_get(request.get("intentInfo"), "displayName"), _get(request.get("fulfillmentInfo"), "tag"))
    trigger = next((k for k in ("triggerEvent", "triggerIntent", "dtmfDigits") if k in request), "no_text")
    return (_text(request.get("detectIntentResponseId")), _text(_get(info, "session")), words, names,
            _get(_get(info, "parameters"), STATE_NAME), trigger)


def _es_turn(request: dict[str, Any]) -> tuple[str | None, str | None, str | None, tuple, Any, str]:
    """ES's WebhookRequest: ``queryText`` is not set when an event started the turn."""
    result = request.get("queryResult")
    contexts = _get(result, "outputContexts")
    state = next((_get(c, "parameters") for c in (contexts if isinstance(contexts, list) else [])
                  if str(_get(c, "name")).endswith("/contexts/" + STATE_NAME)), None)
    session = _text(request.get("session")) if isinstance(result, dict) else None
    return (_text(request.get("responseId")), session, _words(_get(result, "queryText")),
            (_get(_get(result, "intent"), "displayName"),), state, "event")


def read_turn(request: dict[str, Any] | None) -> Turn | None:
    """The turn a request holds, from whichever shape it has (CX's ``detectIntentResponseId``
    and ``sessionInfo``, or ES's); None when it lacks the ids every Dialogflow request has.
    Never raises."""
    if request is None:
        return None
    cx = "detectIntentResponseId" in request or "sessionInfo" in request
    event_id, session, words, names, state, trigger = (_cx_turn if cx else _es_turn)(request)
    if event_id is None or session is None or not _SESSION.fullmatch(session):
        return None
    return Turn(cx, event_id, session, words, tuple(n for n in names if isinstance(n, str)), state,
                "" if words is not None else trigger)


def token(value: str) -> str:
    """``value`` if it may stand in a record as an id, else a digest of it (a session id may
    be anything its caller chose, an e-mail address even: Google asks for hashed ones)."""
    return value if _TOKEN.fullmatch(value) else "h." + hashlib.sha256(value.encode()).hexdigest()[:32]


def account(session: str) -> str:
    """The agent a session belongs to: its CX agent id, or its ES project (one agent each)."""
    agent = re.search(r"(?:^|/)agents/([^/]+)/", session)  # CX: .../agents/<id>/sessions/...
    found = agent.group(1) if agent else (session.split("/") + ["", ""])[1]  # ES: projects/<id>/...
    return f"{KIND}:{token(found)}"


def fact_intents(value: str) -> frozenset[str]:
    """``DIALOGFLOW_FACT_INTENTS``: comma-separated display names (or CX tags); empty: every one."""
    return frozenset(name.strip() for name in value.split(",") if name.strip())


# -- the session's state ------------------------------------------------------------------------------
def _int(value: Any, low: int, high: int) -> int | None:
    """A JSON number within [low, high) as an int (Dialogflow may hand integers back as floats)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value) if low <= value < high else None


@dataclass(frozen=True)
class SessionState:
    """What the bot remembers of a session, kept by Dialogflow in the session itself."""

    stopped: bool
    sent: tuple[int, ...]  # when the bot answered, this past hour (seconds), for the per-user cap
    seed: int  # the session's place in the shuffled bundled facts (catfacts.bundled_fact)
    pos: int

    @classmethod
    def read(cls, raw: Any, session: str, now: float, cap: int) -> "SessionState":
        """The state a request carries, checked field by field (the caller could send anything);
        a field that is missing or wrong is the new session's."""
        raw = raw if isinstance(raw, dict) else {}
        times = raw.get("sent") if isinstance(raw.get("sent"), list) else []
        sent = tuple(t for t in (_int(v, int(now) - HOUR + 1, int(now) + 1) for v in times[-cap:]) if t is not None)
        seed = _int(raw.get("seed"), 0, 2**31)
        pos = _int(raw.get("pos"), 0, len(catfacts.BUNDLED_FACTS))
        return cls(raw.get("stopped") is True, sent,
                   seed if seed is not None else zlib.crc32(session.encode()) & 0x7FFFFFFF, pos or 0)

    def as_json(self) -> dict[str, Any]:
        return {"stopped": self.stopped, "sent": list(self.sent), "seed": self.seed, "pos": self.pos}


# -- facts in time ------------------------------------------------------------------------------------
class BoundedFacts:
    """A fact from the facts client within ``wait`` seconds, or None. The client's own timeout
    bounds each socket read, not the call; this bounds the call. A call that ran out of time
    finishes in the background (a failure there sets the client's cooldown), and the API is
    left alone for the cooldown here too, so a slow API costs one wait, not one per turn."""

    def __init__(self, workers: int = FACT_WORKERS, clock: Callable[[], float] = time.monotonic) -> None:
        self.workers = workers
        self.clock = clock
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._skip_until = 0.0

    def fetch(self, client: catfacts.CatFactsAPI, wait: float) -> str | None:
        if self.clock() < self._skip_until:
            return None
        with self._lock:  # made on first use: in the process that answers, after any fork
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="dialogflow-facts")
            future = self._pool.submit(client.fetch)
        try:
            return future.result(timeout=wait)
        except FactTimeout:
            future.cancel()  # still queued behind slow calls: never started
            self._skip_until = self.clock() + catfacts.FAILURE_COOLDOWN
            event(log, "facts.too_slow", logging.WARNING, waited_s=wait, retry_in=int(catfacts.FAILURE_COOLDOWN))
            return None


# -- the far end --------------------------------------------------------------------------------------
class NothingToSend:
    """The sender the runtime registers for this kind. Dialogflow has no API to message a user:
    every answer goes back in the webhook's response, so no batch of this kind is ever queued.
    One that was (by a bug) is closed, not retried."""

    def send(self, batch: Batch, text: str) -> SendResult:
        return SendResult(Outcome.REJECTED, None, "dialogflow answers in the webhook response; nothing is sent later")


class DialogflowChannel(Channel):
    """Dialogflow ES and CX fulfillment: basic auth at the door, the answer in the response."""

    name = KIND
    kind = KIND
    required = (USERNAME, PASSWORD)
    optional: ClassVar[Mapping[str, str]] = {FACT_INTENTS: ""}
    secrets = frozenset({PASSWORD})

    def __init__(self, values: Mapping[str, str]) -> None:
        super().__init__(values)
        self.fact_intents = fact_intents(self.values.get(FACT_INTENTS, ""))
        self.facts = BoundedFacts()

    @classmethod
    def problems(cls, values: Mapping[str, str]) -> list[str]:
        found = []
        login = values.get(USERNAME, "")
        if ":" in login or not login.isprintable():
            found.append(f"{USERNAME} must have no colon or control character (HTTP basic auth's rule)")
        if len(values.get(PASSWORD, "")) < MIN_PASSWORD:
            found.append(f"{PASSWORD} must be at least {MIN_PASSWORD} characters (python -c \"import secrets; "
                         "print(secrets.token_urlsafe(32))\" makes one)")
        return found

    def verify(self, headers: Mapping[str, str], body: bytes) -> Answer | None:
        verdict = check_basic_auth(headers.get("Authorization"), self.setting(USERNAME), self.setting(PASSWORD))
        if verdict is Auth.OK:
            return None
        if verdict is Auth.WRONG:
            return Answer.refused(403, verdict.value)
        _ask_for_credentials()
        return Answer.refused(401, verdict.value)

    def intent_of(self, turn: Turn, trigger: re.Pattern[str] | None) -> Intent:
        """help, stop and start in any turn; a fact only where ``DIALOGFLOW_FACT_INTENTS`` allows."""
        intent = classify(turn.words or "", trigger)
        if intent is Intent.FACT and self.fact_intents and not self.fact_intents & set(turn.names):
            return Intent.IGNORE
        return intent

    def record_of(self, turn: Turn, trigger: re.Pattern[str] | None, now: float) -> Inbound:
        """The turn as the pipeline's other channels record a message (kept nowhere: answered now)."""
        return Inbound(KIND, account(turn.session), token(turn.session.rsplit("/", 1)[1]), token(turn.event_id),
                       self.intent_of(turn, trigger), int(now * 1000))

    def parse(self, body: bytes, settings: Any) -> Parsed:
        turn = read_turn(json_object(body))
        if turn is None:
            return Parsed(malformed=1)
        if turn.words is None:
            return Parsed(other=[turn.trigger[:40]])
        return Parsed(messages=[self.record_of(turn, settings.trigger_regex, time.time())])

    def respond(self, runtime: "Runtime", body: bytes) -> Answer:
        started = time.monotonic()
        request = json_object(body)
        turn = read_turn(request)
        if turn is None:
            reason = "body is not a JSON object" if request is None else "not a Dialogflow webhook request"
            event(log, "fulfillment.rejected", logging.WARNING, reason=reason, bytes=len(body))
            return Answer.refused(400, reason)
        if turn.words is None:  # Dialogflow's own turn: its own responses play
            event(log, "reply.skipped", reason="no_words", trigger=turn.trigger[:40], flavour=turn.flavour)
            return Answer(200, {})
        settings, now = runtime.settings, runtime.clock()
        record = self.record_of(turn, settings.trigger_regex, now)
        state = SessionState.read(turn.state, turn.session, now, settings.replies_per_user_per_hour)
        p = plan([record.intent], state.stopped)
        text, state, outcome = self._reply(runtime, p, turn, state, now)
        event(log, outcome.pop("event"), user=record.user_id, intent=record.intent.value, flavour=turn.flavour,
              **outcome, ms=round((time.monotonic() - started) * 1000))
        return Answer(200, turn.answer(text, replace(state, stopped=p.opted_out)))

    def _reply(self, runtime: "Runtime", p: Plan, turn: Turn, state: SessionState,
               now: float) -> tuple[str, SessionState, dict[str, Any]]:
        """The text a turn gets (empty: none, as X's DMs get none when opted out or capped), the
        session's state after it, and the log line's fields."""
        cap = runtime.settings.replies_per_user_per_hour
        if not p.sends_anything:
            return "", state, {"event": "reply.skipped", "reason": "opted_out" if p.opted_out else "nothing_to_say"}
        if len(state.sent) >= cap:
            return "", state, {"event": "reply.capped", "limit_per_hour": cap}
        fact, source = None, "text"
        if p.fact:
            fact = self.facts.fetch(runtime.replier.facts, min(FACT_WAIT, runtime.settings.catfacts_timeout))
            source = "api" if fact else "bundled"
            if fact is None:
                fact = catfacts.bundled_fact(state.seed, state.pos)
                seed, pos = catfacts.next_rotation(state.seed, state.pos)
                state = replace(state, seed=seed, pos=pos)
        text = compose(p, fact, opener_seed=zlib.crc32(turn.event_id.encode()))
        return text, replace(state, sent=(*state.sent, int(now))[-cap:]), {"event": "reply.sent", "source": source}

    def sender(self, store: Store, clock: Callable[[], float]) -> Sender:
        return NothingToSend()


CHANNEL = DialogflowChannel
