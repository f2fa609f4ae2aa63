"""Dialogflow (ES and CX) plays the agent whose fulfillment is the bot: a user's turn becomes a
WebhookRequest POSTed to the bot with HTTP basic auth, and the text of the WebhookResponse is
what the user sees (recorded as a ``SentDM`` with ``channel="dialogflow"``).

What is Dialogflow's behaviour (its docs and published samples):

- the request shapes: ES as in the sample of "Webhook service"
  (https://cloud.google.com/dialogflow/es/docs/fulfillment-webhook), CX as in Google's
  ``googleapis/python-dialogflow-cx`` ``samples/snippets/webhook_test.py``; ES leaves
  ``queryText`` out when an event started the turn, CX says ``triggerEvent`` instead of ``text``;
- ``Authorization: Basic base64(login:password)`` from the fulfillment's (ES) or webhook
  resource's (CX) login and password;
- the deadline: 5 s in ES, the webhook's timeout in CX (5 s by default); a response over
  64 KiB, not JSON, or not 2xx is a failed call, and the user sees the agent's own response;
- session state: ES output contexts (a lifespan in turns, decremented each turn; gone 20 minutes
  after the session's last query; a webhook's ``outputContexts`` set or, with lifespan 0,
  remove the ones they name and leave the others), CX session parameters (a webhook's
  ``sessionInfo.parameters`` merged in, null removing one; the session ends 30 minutes after
  its last turn).

What is the emulator's choice: one agent of each kind (ES :data:`PROJECT`, CX :data:`CX_AGENT`);
a user's session id is their ``sender_id``; the matched intent is whatever the test names (it
is also the CX fulfillment's tag); the agent's own static response is never shown (nothing is
recorded when the bot gives no text). Dialogflow documents no retry of a fulfillment call;
:meth:`State.redeliver` sends a request again byte for byte, as a caller re-sending a
``detectIntent`` might, and the user still sees one answer.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import requests
from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from catbot.channels.dialogflow import PASSWORD, STATE_NAME, USERNAME, basic_authorization
from x_emulator.area import emulator
from x_emulator.records import SentDM

if TYPE_CHECKING:
    from x_emulator.server import XEmulator

NAME = "dialogflow"
ES, CX = "es", "cx"
PROJECT = "catfacts-demo-agent"
CX_AGENT = f"projects/{PROJECT}/locations/global/agents/0078f973-e212-4c69-a707-a6e66e3270ce"
DEADLINE = 5.0  # ES's webhook deadline, and CX's default timeout
MAX_RESPONSE = 64 * 1024
CONTEXT_TTL = 20 * 60  # ES: contexts expire 20 minutes after the session's last query
SESSION_TTL = 30 * 60  # CX: a session ends 30 minutes after its last turn
STATIC_RESPONSE = "Response configured for matched intent"  # what the sample request carries
DEMO_SETTINGS = {USERNAME: "catfacts-demo", PASSWORD: "demo-password-not-a-real-one-0001"}

bp = Blueprint(NAME, __name__, url_prefix=f"/_emulator/{NAME}")


@dataclass
class Session:
    """What the agent remembers of one user's conversation."""

    contexts: dict[str, list[Any]] = field(default_factory=dict)  # ES: name -> [lifespan, parameters]
    parameters: dict[str, Any] = field(default_factory=dict)  # CX session parameters
    last_turn: float = 0.0


@dataclass
class Delivery:
    """One call of the fulfillment and what came of it."""

    event_id: str
    webhook_status: int | None  # None: no answer in time, or none at all
    text: str | None = None  # what the user saw from the bot (None: the agent's own response)
    error: str | None = None  # why the call failed, as Dialogflow reports it
    answer: dict[str, Any] | None = None  # the WebhookResponse


@dataclass
class Sent:
    """A request as it went out, to send again byte for byte."""

    flavour: str
    sender_id: str
    body: bytes
    answered: bool = False


class State:
    """The agents, their sessions and the fulfillment they call (``XEmulator.platform``)."""

    def __init__(self, em: XEmulator) -> None:
        self.em = em
        self.webhook_url: str | None = None
        self.username = self.password = ""
        self.cx_timeout = DEADLINE  # the CX webhook resource's timeout
        self.sessions: dict[tuple[str, str], Session] = {}
        self.requests: dict[str, Sent] = {}
        self.calls = 0
        self.lock = threading.Lock()
        self.http = requests.Session()
        self.http.trust_env = False  # loopback only

    # -- set-up -----------------------------------------------------------------------------------------
    def setup(self, webhook_url: str, settings: Mapping[str, str]) -> None:
        """What the console's fulfillment page (ES) or webhook resource (CX) holds."""
        with self.lock:
            self.webhook_url = webhook_url
            self.username, self.password = settings.get(USERNAME, ""), settings.get(PASSWORD, "")

    def authorization(self) -> str:
        return basic_authorization(self.username, self.password)

    # -- a user's turn ----------------------------------------------------------------------------------
    def deliver(self, sender_id: str, text: str, *, flavour: str = ES, intent: str = "cat.fact",
                event_id: str | None = None) -> Delivery:
        """The user says ``text``; the agent matched ``intent`` and calls the fulfillment."""
        return self._turn(sender_id, flavour, {"text": text}, intent, event_id)

    def deliver_event(self, sender_id: str, name: str = "WELCOME", *, flavour: str = ES,
                      intent: str = "Default Welcome Intent") -> Delivery:
        """A turn started by an event (a welcome, a no-input), not by the user's words."""
        return self._turn(sender_id, flavour, {"event": name}, intent, None)

    def redeliver(self, event_id: str) -> Delivery:
        """Call the fulfillment again with exactly the bytes of an earlier request."""
        with self.lock:
            sent = self.requests[event_id]
        return self._call(event_id, sent)

    def kept(self, sender_id: str, flavour: str = ES) -> dict[str, Any] | None:
        """What the bot asked this user's session to keep, as the agent holds it now."""
        with self.lock:
            session = self.sessions.get((flavour, sender_id), Session())
            if flavour == CX:
                return session.parameters.get(STATE_NAME)
            found = session.contexts.get(f"{self.session_name(sender_id, flavour)}/contexts/{STATE_NAME}")
            return found[1] if found else None

    def session_name(self, sender_id: str, flavour: str) -> str:
        return f"{CX_AGENT}/sessions/{sender_id}" if flavour == CX else f"projects/{PROJECT}/agent/sessions/{sender_id}"

    def request_body(self, sender_id: str, flavour: str, query: Mapping[str, str], intent: str,
                     event_id: str) -> dict[str, Any]:
        """The WebhookRequest of a turn, the session's state in it."""
        session_name = self.session_name(sender_id, flavour)
        with self.lock:
            session = self._aged(flavour, sender_id)
            if flavour == CX:
                body: dict[str, Any] = {"detectIntentResponseId": event_id}
                if "text" in query:
                    body["intentInfo"] = {"lastMatchedIntent": f"{CX_AGENT}/intents/{uuid.uuid4()}",
                                          "displayName": intent, "confidence": 1.0}
                body["pageInfo"] = {"currentPage": f"{CX_AGENT}/flows/00000000-0000-0000-0000-000000000000"
                                                   "/pages/START_PAGE"}
                body["sessionInfo"] = {"session": session_name, **({"parameters": dict(session.parameters)}
                                                                   if session.parameters else {})}
                body["fulfillmentInfo"] = {"tag": intent}
                body["text" if "text" in query else "triggerEvent"] = query.get("text", query.get("event"))
                body["languageCode"] = "en"
                return body
            result: dict[str, Any] = {"queryText": query["text"]} if "text" in query else {}
            result.update(parameters={}, allRequiredParamsPresent=True, fulfillmentText=STATIC_RESPONSE,
                          fulfillmentMessages=[{"text": {"text": [STATIC_RESPONSE]}}],
                          outputContexts=[{"name": name, "lifespanCount": life, "parameters": params}
                                          for name, (life, params) in session.contexts.items()],
                          intent={"name": f"projects/{PROJECT}/agent/intents/{uuid.uuid4()}", "displayName": intent},
                          intentDetectionConfidence=1, languageCode="en")
            return {"responseId": event_id, "session": session_name, "queryResult": result,
                    "originalDetectIntentRequest": {}}

    def _turn(self, sender_id: str, flavour: str, query: Mapping[str, str], intent: str,
              event_id: str | None) -> Delivery:
        if flavour not in (ES, CX):
            raise ValueError(f"flavour is {ES!r} or {CX!r}, not {flavour!r}")
        if not self.webhook_url:
            raise RuntimeError("no fulfillment webhook is set up; POST /_emulator/dialogflow/setup")
        event_id = event_id or f"{uuid.uuid4()}-{uuid.uuid4().hex[:8]}"
        body = json.dumps(self.request_body(sender_id, flavour, query, intent, event_id)).encode()
        sent = Sent(flavour, sender_id, body)
        with self.lock:
            self.requests[event_id] = sent
        return self._call(event_id, sent)

    def _aged(self, flavour: str, sender_id: str) -> Session:
        """The session as a new turn finds it: ES contexts one turn older (and all gone after 20
        idle minutes), a CX session new after 30. Called with the lock held."""
        now = time.time()
        session = self.sessions.setdefault((flavour, sender_id), Session())
        if now - session.last_turn > (SESSION_TTL if flavour == CX else CONTEXT_TTL):
            session.contexts.clear()
            session.parameters.clear()
        session.contexts = {name: [life - 1, params] for name, (life, params) in session.contexts.items() if life > 1}
        session.last_turn = now
        return session

    # -- the call ---------------------------------------------------------------------------------------
    def _call(self, event_id: str, sent: Sent) -> Delivery:
        deadline = self.cx_timeout if sent.flavour == CX else DEADLINE
        with self.lock:
            self.calls += 1
        headers = {"Content-Type": "application/json", "Authorization": self.authorization()}
        started = time.monotonic()
        try:
            response = self.http.post(self.webhook_url, data=sent.body, headers=headers, timeout=(deadline, deadline))
        except requests.Timeout:
            return Delivery(event_id, None, error="DEADLINE_EXCEEDED")
        except requests.RequestException as exc:
            return Delivery(event_id, None, error=f"UNAVAILABLE ({type(exc).__name__})")
        if time.monotonic() - started > deadline:
            return Delivery(event_id, response.status_code, error="DEADLINE_EXCEEDED")
        answer, problem = _answer_of(response)
        if problem:
            return Delivery(event_id, response.status_code, error=problem)
        text = _text_of(answer, sent.flavour)
        self._keep_state(sent, answer)
        with self.lock:
            first, sent.answered = not sent.answered, True
        if text and first:  # a turn shows one answer, however often its request was sent
            self.em.record_sent(SentDM(sent.sender_id, text, event_id, time.time(), channel=NAME))
        return Delivery(event_id, response.status_code, text, answer=answer)

    def _keep_state(self, sent: Sent, answer: dict[str, Any]) -> None:
        """What the answer asks the session to remember, as Dialogflow applies it."""
        with self.lock:
            session = self.sessions.setdefault((sent.flavour, sent.sender_id), Session())
            if sent.flavour == CX:
                for key, value in ((answer.get("sessionInfo") or {}).get("parameters") or {}).items():
                    if value is None:
                        session.parameters.pop(key, None)
                    else:
                        session.parameters[key] = value
                return
            for context in answer.get("outputContexts") or []:
                life = int(context.get("lifespanCount", 0))
                if life <= 0:
                    session.contexts.pop(context["name"], None)
                else:
                    session.contexts[context["name"]] = [life, context.get("parameters") or {}]


def _answer_of(response: requests.Response) -> tuple[dict[str, Any], str | None]:
    """The WebhookResponse, or why Dialogflow would not take it."""
    if not 200 <= response.status_code < 300:
        return {}, f"Webhook call failed. Error: {response.status_code}"
    if len(response.content) > MAX_RESPONSE:
        return {}, "Webhook response is larger than 64 KiB"
    try:
        answer = json.loads(response.content)
    except ValueError:
        return {}, "Webhook response is not JSON"
    return (answer, None) if isinstance(answer, dict) else ({}, "Webhook response is not a JSON object")


def _text_of(answer: dict[str, Any], flavour: str) -> str | None:
    """The text messages of a WebhookResponse, one per line; None when it gave none."""
    if flavour == CX:
        messages = (answer.get("fulfillmentResponse") or {}).get("messages") or []
    else:
        messages = answer.get("fulfillmentMessages") or []
    texts = [t for m in messages for t in ((m.get("text") or {}).get("text") or [])]
    if not texts and flavour == ES and answer.get("fulfillmentText"):
        texts = [answer["fulfillmentText"]]
    return "\n".join(texts) or None


# -- control routes (the demo, and tests with the emulator in another process) ------------------------
def _state() -> State:
    return emulator().platform(NAME)


@bp.post("/setup")
def setup() -> ResponseReturnValue:
    """``{"webhook_url", "settings": {DIALOGFLOW_USERNAME, DIALOGFLOW_PASSWORD}}``."""
    body = request.get_json(force=True)
    _state().setup(str(body["webhook_url"]), {k: str(v) for k, v in (body.get("settings") or {}).items()})
    return jsonify(webhook_url=_state().webhook_url)


@bp.post("/deliver")
def deliver() -> ResponseReturnValue:
    """``{"sender_id", "text", "flavour": "es"|"cx", "intent", "event_id"}`` (or ``"event"``
    instead of ``"text"``) -> ``{"event_id", "webhook_status", "text", "error"}``; 400 for an
    unknown flavour, 409 before set-up."""
    body = request.get_json(force=True)
    options = {"flavour": str(body.get("flavour", ES))}
    if body.get("intent"):
        options["intent"] = str(body["intent"])
    try:
        if "event" in body:
            done = _state().deliver_event(str(body["sender_id"]), str(body["event"]), **options)
        else:
            done = _state().deliver(str(body["sender_id"]), str(body.get("text", "")),
                                    event_id=body.get("event_id"), **options)
    except ValueError as exc:
        return jsonify(error=str(exc)), 400
    except RuntimeError as exc:
        return jsonify(error=str(exc)), 409
    shown = asdict(done)
    shown.pop("answer")
    return jsonify(shown)
