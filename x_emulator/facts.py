"""A local stand-in for the cat facts API (catfact.ninja's ``GET /fact``), for tests and benchmarks.

``mode`` switches how it answers: ok, down (500), limited (429), slow (``slow_seconds``),
garbage (not JSON), wrong_shape (JSON without a fact). ``delay`` slows every answer.
"""
from __future__ import annotations

import threading
import time

from flask import Flask, jsonify, request
from werkzeug.serving import make_server


class FactsAPIStub:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.mode = "ok"
        self.delay = 0.0
        self.slow_seconds = 3.0
        self.calls: list[dict] = []
        self.counter = 0
        app = Flask("facts_stub")

        @app.get("/fact")
        def fact():
            self.calls.append(dict(request.args))
            if self.delay:
                time.sleep(self.delay)
            if self.mode == "down":
                return "oops", 500
            if self.mode == "limited":
                return jsonify(message="Too Many Attempts."), 429
            if self.mode == "slow":
                time.sleep(self.slow_seconds)
            if self.mode == "garbage":
                return "<html>not json</html>", 200
            if self.mode == "wrong_shape":
                return jsonify(data=["no fact here"])
            self.counter += 1
            text = f"API fact number {self.counter}: cats are great."
            return jsonify(fact=text, length=len(text))

        self._server = make_server(host, port, app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        self.url = "http://%s:%d/fact" % self._server.server_address[:2]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
