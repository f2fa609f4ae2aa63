"""Shared fixtures: fake credentials, the X emulator and a fake facts API on loopback, the app.

Everything talks real HTTP on 127.0.0.1; nothing here reaches the internet.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Callable

import pytest
from flask import Flask
from werkzeug.serving import make_server

from catbot.security import sign
from catbot.settings import Settings
from catbot.web import create_app
from x_emulator import Credentials, XEmulator
from x_emulator.facts import FactsAPIStub

PAYLOADS = Path(__file__).parent / "payloads"
BOT_ID = "2000000001"
CREDS = Credentials(
    consumer_key="test-consumer-key-0000001",
    consumer_secret="test-consumer-secret-not-a-real-one-000000001",
    access_token=f"{BOT_ID}-testaccesstoken00000000000001",
    access_token_secret="test-access-token-secret-not-real-00001",
)


def payload(name: str) -> dict:
    return json.loads((PAYLOADS / name).read_text())


def signed_headers(body: bytes, secret: str = CREDS.consumer_secret) -> dict[str, str]:
    """The one helper that builds a valid delivery signature for tests."""
    return {"Content-Type": "application/json", "x-twitter-webhooks-signature": sign(secret.encode(), body)}


def post_delivery(client, delivery: dict | bytes, secret: str = CREDS.consumer_secret):
    body = delivery if isinstance(delivery, bytes) else json.dumps(delivery).encode()
    return client.post("/webhook/twitter", data=body, headers=signed_headers(body, secret))


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


@pytest.fixture
def emulator():
    em = XEmulator(CREDS).start()
    yield em
    em.stop()


@pytest.fixture
def facts_api():
    api = FactsAPIStub()
    yield api
    api.stop()


@pytest.fixture
def settings(tmp_path, emulator, facts_api) -> Settings:
    return Settings(
        consumer_key=CREDS.consumer_key, consumer_secret=CREDS.consumer_secret,
        access_token=CREDS.access_token, access_token_secret=CREDS.access_token_secret,
        x_api_base_url=emulator.url, catfacts_api_url=facts_api.url,
        sqlite_path=str(tmp_path / "catbot.sqlite3"), x_timeout=2.0, catfacts_timeout=1.0,
    )


@pytest.fixture
def make_app(settings) -> Callable[..., Flask]:
    def make(**changes) -> Flask:
        return create_app(settings.replace(**changes) if changes else settings)
    return make


@pytest.fixture
def app(make_app) -> Flask:
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def runtime_of(app):
    return app.extensions["catbot"]


def drain(app, passes: int = 20) -> None:
    """Run the reply job in this thread until nothing is due now (what a consumer would do)."""
    replier = runtime_of(app).replier
    for _ in range(passes):
        result = replier.run_pass()
        if not result.more_now:
            return


# The fast tier (`make test-fast`, `pytest -m "not processes"`) is every test that needs no
# process or server of its own; the emulator and the facts API stub run in threads.
PROCESS_MODULES = {"test_gunicorn", "test_scale", "test_faults", "test_load", "test_demo", "test_slow_clients",
                   "test_register_webhook"}
PROCESS_FIXTURES = {"redis_server", "redis_url", "small_disk"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (item.module.__name__ in PROCESS_MODULES or PROCESS_FIXTURES & set(item.fixturenames)
                or "redis" in params.values()):
            item.add_marker(pytest.mark.processes)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    from redis_server import RedisServer
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """A clean database on the session's redis-server."""
    redis_server.flush()
    return redis_server.url
