"""Shared fixtures: the X emulator and a fake facts API on loopback, settings, the app, Redis.
What tests share besides fixtures is in helpers.py.

Everything talks real HTTP on 127.0.0.1; nothing here reaches the internet.
"""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Callable

import pytest
from flask import Flask

from catbot.runtime import build_runtime
from catbot.settings import Settings
from catbot.web import create_app
from helpers import CREDS, ServerThread
from x_emulator import XEmulator
from x_emulator.facts import FactsAPIStub


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


@pytest.fixture
def bot_url(settings):
    """The bot's X webhook URL, served on loopback (what register_webhook.py registers)."""
    server = ServerThread(create_app(settings))
    yield server.url + "/webhook/twitter"
    server.stop()


@pytest.fixture
def serve():
    """``serve(settings)``: the bot built from ``settings``, served on loopback for this test,
    with a clock that runs ``later[0]`` seconds ahead (to pass a wait without waiting) and,
    given ``senders(clock)``, those senders. Every server is stopped after the test."""
    servers: list[ServerThread] = []

    def start(bot_settings: Settings, senders: Callable | None = None) -> SimpleNamespace:
        later = [0.0]

        def clock() -> float:
            return time.time() + later[0]

        runtime = build_runtime(bot_settings, clock=clock, senders=senders(clock) if senders else None)
        app = create_app(bot_settings, runtime)
        servers.append(ServerThread(app))
        return SimpleNamespace(app=app, client=app.test_client(), url=servers[-1].url, later=later, clock=clock,
                               runtime=runtime, settings=bot_settings)

    yield start
    for server in servers:
        server.stop()


# The fast tier (`make test-fast`, `pytest -m "not processes"`) is every test that needs no
# process or server of its own; the emulator and the facts API stub run in threads.
PROCESS_MODULES = {"test_gunicorn", "test_scale", "test_faults", "test_load", "test_demo", "test_slow_clients",
                   "test_register_webhook", "test_xchat_processes", "test_xchat_setup",
                   "test_channels_gunicorn",
                   *(f"test_channel_{name}_processes" for name in ("messenger", "line", "telegram", "dialogflow"))}
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
