"""What tests share besides fixtures: the test credentials, X's payloads, one builder for a DM
delivery and one for its signature, and small waits. Fixtures stay in conftest.py."""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from werkzeug.serving import make_server

from catbot.security import sign
from x_emulator import Credentials

PAYLOADS = Path(__file__).parent / "payloads"
BOT_ID = "2000000001"
CREDS = Credentials(
    consumer_key="test-consumer-key-0000001",
    consumer_secret="test-consumer-secret-not-a-real-one-000000001",
    access_token=f"{BOT_ID}-testaccesstoken00000000000001",
    access_token_secret="test-access-token-secret-not-real-00001",
)


def payload(name: str) -> dict:
    """A delivery as X publishes it (tests/payloads/, ids substituted)."""
    return json.loads((PAYLOADS / name).read_text())


def dm_event(sender: str = "3000000002", text: str | None = "hi", event_id: str = "1800000000000000001", *,
             recipient: str = BOT_ID, created_ms: int = 1763800000000, **message_data: Any) -> dict:
    """One ``message_create`` event, as both of X's webhook APIs carry it."""
    return {"type": "message_create", "id": event_id, "created_timestamp": str(created_ms),
            "message_create": {"target": {"recipient_id": recipient}, "sender_id": sender,
                               "message_data": {"text": text, **message_data}}}


def dm_delivery(sender: str = "3000000002", text: str | None = "hi", event_id: str = "1800000000000000001", *,
                for_user_id: str = BOT_ID, **event: Any) -> dict:
    """The one builder of a DM delivery (Account Activity envelope) for tests and benchmarks."""
    return {"for_user_id": for_user_id, "direct_message_events": [dm_event(sender, text, event_id, **event)]}


def signed_headers(body: bytes, secret: str = CREDS.consumer_secret) -> dict[str, str]:
    """The one helper that builds a valid delivery signature for tests."""
    return {"Content-Type": "application/json", "x-twitter-webhooks-signature": sign(secret.encode(), body)}


def post_delivery(client, delivery: dict | bytes, secret: str = CREDS.consumer_secret):
    """POST a delivery, signed as X signs it, to a Flask test client."""
    body = delivery if isinstance(delivery, bytes) else json.dumps(delivery).encode()
    return client.post("/webhook/twitter", data=body, headers=signed_headers(body, secret))


def runtime_of(app):
    return app.extensions["catbot"]


def drain(app, passes: int = 20) -> None:
    """Run the reply job in this thread until nothing is due now (what a consumer would do)."""
    replier = runtime_of(app).replier
    for _ in range(passes):
        if not replier.run_pass().more_now:
            return


def wait_until(condition: Callable[[], object], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


def counts(emulator) -> dict[str, int]:
    """Replies the emulator accepted, per user."""
    result: dict[str, int] = {}
    for dm in emulator.sent:
        result[dm.participant_id] = result.get(dm.participant_id, 0) + 1
    return result


class ServerThread:
    """A WSGI app served on a loopback port in a background thread."""

    def __init__(self, app) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LogRecords(logging.Handler):
    """Collects the records of one logger: the bot's loggers do not propagate to pytest's."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def lines(self) -> list[str]:
        return [record.getMessage() for record in self.records]


@contextlib.contextmanager
def captured(logger_name: str, level: int | None = None) -> Iterator[LogRecords]:
    """What ``logger_name`` logs meanwhile (at ``level`` and above, if given)."""
    logger, handler = logging.getLogger(logger_name), LogRecords()
    old_level = logger.level
    logger.addHandler(handler)
    if level is not None:
        logger.setLevel(level)
    try:
        yield handler
    finally:
        logger.setLevel(old_level)
        logger.removeHandler(handler)


def xchat_keys(user_id: str = BOT_ID) -> tuple[str, str, dict[str, str]]:
    """A new X Chat key pair, as ``register_webhook.py xchat-keys`` makes the bot's: the private
    blob (base64, what XCHAT_PRIVATE_KEYS holds), its version, and the public keys X serves."""
    import base64

    from chat_xdk import Chat

    chat = Chat()
    registration = chat.generate_keypairs()
    public = registration.public_key
    return (base64.b64encode(bytes(chat.export_keys())).decode(), registration.version,
            {"public_key": public.public_key, "public_key_version": registration.version,
             "signing_public_key": public.signing_public_key,
             "identity_public_key_signature": public.identity_public_key_signature})
