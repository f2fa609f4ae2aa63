"""Slow clients cannot take the bot offline (issue 10, item 4).

Real ``gunicorn app:app`` started the way the Procfile starts it (only ``gunicorn.conf.py``, no
flags), raw sockets that send their requests a line or a byte at a time, and meanwhile X's CRC
checks and signed deliveries, each of which must be answered within a second.
"""
from __future__ import annotations

import json
import secrets
import socket
import threading
import time

import pytest
import requests
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser

from helpers import CREDS, dm_delivery, signed_headers
from catbot.security import crc_response_token
from catbot.server import (BODY_LIMIT, CHUNKED_READ_AHEAD, REQUEST_TIMEOUT, BufferedThreadWorker, Framing, Limits,
                           RequestScanner)
from catbot.settings import Settings
from processes import Gunicorn, bot_env
from x_emulator import XEmulator
from x_emulator.facts import FactsAPIStub

HOLD_SECONDS = 36  # longer than gunicorn's `timeout` (30 s): long enough for a stuck worker to be killed
PROMPT = 1.0  # X's CRC and deliveries must be answered within this, slow clients or not


def procfile_env(settings) -> dict[str, str]:
    """The bot's environment with nothing that changes gunicorn's settings from outside the file."""
    env = bot_env(settings)
    env.pop("WEB_CONCURRENCY", None)
    env.pop("GUNICORN_CMD_ARGS", None)
    return env


class Tricklers:
    """Keeps ``count`` connections open that each send one more piece of a request per tick and
    never finish it; a connection the server closes is replaced at once, as an attacker would."""

    def __init__(self, port: int, count: int, head: bytes, piece: bytes, tick: float = 1.0) -> None:
        self.port, self.count, self.head, self.piece, self.tick = port, count, head, piece, tick
        self.opened = self.closed_by_server = 0
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Tricklers":
        for _ in range(self.count):
            self._socks.append(self._open())
        self._thread.start()
        return self

    def _open(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(self.head)
        sock.setblocking(False)
        self.opened += 1
        return sock

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            for n, sock in enumerate(self._socks):
                try:
                    if sock.recv(65536) == b"":  # the server gave up on it (an answer, then FIN, or just FIN)
                        raise ConnectionResetError
                except BlockingIOError:
                    pass
                except OSError:
                    sock.close()
                    self.closed_by_server += 1
                    try:
                        self._socks[n] = sock = self._open()
                    except OSError:
                        continue
                try:
                    sock.send(self.piece)
                except OSError:
                    pass  # noticed on the next tick

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for sock in self._socks:
            sock.close()


def header_tricklers(port: int, count: int) -> Tricklers:
    """A slowloris: the request line, then one more header line every second, forever."""
    return Tricklers(port, count, b"GET /healthz HTTP/1.1\r\nHost: bot\r\n", b"X-Slow: 1\r\n")


def body_tricklers(port: int, count: int) -> Tricklers:
    """Whole headers promising 1,000 bytes, then the body one byte a second."""
    head = (b"POST /webhook/twitter HTTP/1.1\r\nHost: bot\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    return Tricklers(port, count, head, b"x")


def timed(call):
    started = time.monotonic()
    try:
        result = call()
    except requests.RequestException as exc:
        result = exc
    return time.monotonic() - started, result


def test_slow_clients_do_not_delay_crc_or_deliveries_nor_kill_workers(settings, emulator, tmp_path):
    emulator.set_rate_limit(10**6, 900)
    bot = Gunicorn(procfile_env(settings), workers=None, log_path=tmp_path / "gunicorn.log")
    try:
        time.sleep(1)  # every worker booted
        workers = bot.worker_pids()
        assert len(workers) == 2  # gunicorn.conf.py's default
        emulator.register(bot.url + "/webhook/twitter")
        attackers = [header_tricklers(bot.port, 50).start(), body_tricklers(bot.port, 25).start()]
        crc_times, delivery_times, problems, users = [], [], [], []
        try:
            end = time.monotonic() + HOLD_SECONDS
            while time.monotonic() < end:
                token = secrets.token_urlsafe(24)
                took, answer = timed(lambda: requests.get(bot.url + "/webhook/twitter", params={"crc_token": token},
                                                          timeout=10))
                crc_times.append(took)
                if isinstance(answer, Exception) or answer.status_code != 200 or \
                        answer.json() != {"response_token": crc_response_token(settings.consumer_secret, token)}:
                    problems.append(f"CRC: {answer!r}")
                user = str(3000000100 + len(users))
                body = a_delivery(user)
                took, answer = timed(lambda: requests.post(bot.url + "/webhook/twitter", data=body,
                                                           headers=signed_headers(body), timeout=10))
                delivery_times.append(took)
                if isinstance(answer, Exception) or answer.status_code != 200:
                    problems.append(f"delivery: {answer!r}")
                else:
                    users.append(user)
                time.sleep(0.4)
            open_at_end = [sum(1 for s in t._socks if s.fileno() >= 0) for t in attackers]
        finally:
            for attacker in attackers:
                attacker.stop()
        emulator.wait_for_sent(len(users), timeout=20)
        answered = {dm.participant_id for dm in emulator.sent}
        log = bot.log()
        observed = {"failed checks": problems,
                    "slowest CRC (s)": round(max(crc_times), 2), "slowest delivery (s)": round(max(delivery_times), 2),
                    "unanswered deliveries": sorted(set(users) - answered),
                    "WORKER TIMEOUT": log.count("WORKER TIMEOUT"), "workers replaced": bot.worker_pids() != workers,
                    "attack connections open at the end": open_at_end}
        report = "\n".join(f"{what}: {value}" for what, value in observed.items())
        assert observed["slowest CRC (s)"] < PROMPT and observed["slowest delivery (s)"] < PROMPT, report
        assert {k: v for k, v in observed.items() if not k.startswith("slowest")} == {
            "failed checks": [], "unanswered deliveries": [], "WORKER TIMEOUT": 0, "workers replaced": False,
            "attack connections open at the end": [50, 25]}, report
    finally:
        bot.stop()


# -- the buffering worker's edge cases, through real sockets ----------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One ``gunicorn app:app`` with the Procfile's settings for the tests below, which each leave
    it as they found it."""
    emulator, facts = XEmulator(CREDS).start(), FactsAPIStub()
    tmp = tmp_path_factory.mktemp("slow-clients")
    settings = Settings(consumer_key=CREDS.consumer_key, consumer_secret=CREDS.consumer_secret,
                        access_token=CREDS.access_token, access_token_secret=CREDS.access_token_secret,
                        x_api_base_url=emulator.url, catfacts_api_url=facts.url,
                        sqlite_path=str(tmp / "catbot.sqlite3"), x_timeout=2.0, catfacts_timeout=1.0)
    bot = Gunicorn(procfile_env(settings), workers=None, log_path=tmp / "gunicorn.log")
    yield bot
    bot.stop()
    emulator.stop()
    facts.stop()


class Raw:
    """A client socket that sends exactly the bytes given and reads answers one by one."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> "Raw":
        self.sock.sendall(data)
        return self

    def answer(self, interim: bool = False) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers (lower-case names), body. 1xx are skipped unless
        ``interim``."""
        while True:
            status_line = self.file.readline()
            if not status_line:
                raise ConnectionError("closed by the server")
            status = int(status_line.split()[1])
            headers = {}
            for line in iter(self.file.readline, b"\r\n"):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if status >= 200 or interim:
                return status, headers, self.file.read(int(headers.get("content-length", 0)))

    def closed_by_server(self) -> bool:
        """Whether the server has closed (after anything it still had to say)."""
        try:
            return self.file.read() is not None
        except OSError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def crc_request(token: str, extra: str = "") -> bytes:
    return f"GET /webhook/twitter?crc_token={token} HTTP/1.1\r\nHost: bot\r\n{extra}\r\n".encode()


def delivery_head(body: bytes, framing: str) -> bytes:
    """A signed delivery's head; ``framing`` is its Content-Length or Transfer-Encoding line(s)."""
    fields = "".join(f"{name}: {value}\r\n" for name, value in signed_headers(body).items())
    return f"POST /webhook/twitter HTTP/1.1\r\nHost: bot\r\n{fields}{framing}\r\n".encode()


def delivery_request(body: bytes, extra: str = "") -> bytes:
    return delivery_head(body, f"Content-Length: {len(body)}\r\n{extra}") + body


def a_delivery(user: str = "3000000002") -> bytes:
    return json.dumps(dm_delivery(user, "hi", str(1800000000000000000 + secrets.randbelow(10**17)))).encode()


def assert_crc_prompt(bot: Gunicorn) -> None:
    token = secrets.token_urlsafe(24)
    took, answer = timed(lambda: requests.get(bot.url + "/webhook/twitter", params={"crc_token": token}, timeout=5))
    assert not isinstance(answer, Exception) and answer.status_code == 200, answer
    assert answer.json()["response_token"] == crc_response_token(CREDS.consumer_secret, token)
    assert took < PROMPT


def test_pipelined_requests_are_answered_in_order(server):
    body = a_delivery()
    client = Raw(server.port).send(b"GET /healthz HTTP/1.1\r\nHost: bot\r\n\r\n" + delivery_request(body)
                                   + crc_request("tok123"))
    try:
        assert client.answer()[0] == 200
        assert client.answer()[0:3:2] == (200, b'{"status":"ok"}')
        status, _, answer = client.answer()
        assert status == 200 and json.loads(answer) == {"response_token": crc_response_token(CREDS.consumer_secret,
                                                                                             "tok123")}
    finally:
        client.close()


def test_a_kept_alive_connection_serves_its_next_request_then_idles_out(server):
    client = Raw(server.port)
    try:
        status, headers, _ = client.send(crc_request("first")).answer()
        assert status == 200 and headers.get("connection", "keep-alive") != "close"
        time.sleep(0.5)
        assert client.send(delivery_request(a_delivery())).answer()[0] == 200
        started = time.monotonic()
        assert client.closed_by_server()  # idle past `keepalive` (2 s)
        assert time.monotonic() - started < 4
    finally:
        client.close()


def test_a_trickled_chunked_delivery_with_extensions_and_trailers_is_read_whole(server):
    body = a_delivery()
    pieces = [delivery_head(body, "Transfer-Encoding: chunked\r\n")]
    for start in range(0, len(body), 50):
        chunk = body[start:start + 50]
        pieces += [b"%x;piece=%d\r\n" % (len(chunk), start), chunk, b"\r\n"]
    pieces.append(b"0\r\nX-Trailer: yes\r\n\r\n")
    client = Raw(server.port)
    try:
        for piece in pieces:
            client.send(piece)
            time.sleep(0.01)
        assert client.answer()[0:3:2] == (200, b'{"status":"ok"}')  # a valid signature: every byte arrived
    finally:
        client.close()


def test_a_body_past_one_mebibyte_is_413_not_403(server):
    announced = Raw(server.port)  # only the head, announcing 2 MiB: refused at once, the body never read
    chunked = Raw(server.port)
    try:
        started = time.monotonic()
        status, headers, _ = announced.send(b"POST /webhook/twitter HTTP/1.1\r\nHost: bot\r\nContent-Type: "
                                            b"application/json\r\nContent-Length: 2097152\r\n\r\n").answer()
        assert (status, headers.get("connection")) == (413, "close")
        assert time.monotonic() - started < PROMPT
        assert announced.closed_by_server()
        body = b"x" * (1024 * 1024 + 1)
        chunked.send(delivery_head(body, "Transfer-Encoding: chunked\r\n"))
        for start in range(0, len(body), 65536):
            piece = body[start:start + 65536]
            chunked.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        chunked.send(b"%x\r\n%s\r\n" % (65536, b"y" * 65536))  # and more, with no end in sight
        assert chunked.answer()[0] == 413  # the terminating chunk never came: the limit alone decides
    finally:
        announced.close()
        chunked.close()


def test_clients_that_leave_mid_head_harm_nothing(server):
    for _ in range(20):
        Raw(server.port).send(b"GET /healthz HTTP/1.1\r\nHost: b").close()
    time.sleep(0.2)
    assert_crc_prompt(server)
    assert "Traceback" not in server.log()


def test_an_expect_100_continue_client_gets_its_interim_answer_before_sending(server):
    body = a_delivery()
    request = delivery_request(body, extra="Expect: 100-continue\r\n")
    client = Raw(server.port, timeout=PROMPT)
    try:
        assert client.send(request[:-len(body)]).answer(interim=True)[0] == 100
        assert client.send(body).answer()[0:3:2] == (200, b'{"status":"ok"}')
    finally:
        client.close()


def test_clients_that_never_close_do_not_stall_the_worker(server):
    """gunicorn's threaded worker waits up to 2 s in its main loop for each client to close after
    a ``Connection: close`` answer; thirty such clients would stall it for a minute."""
    clients = [Raw(server.port).send(b"GET /healthz HTTP/1.1\r\nHost: bot\r\nConnection: close\r\n\r\n")
               for _ in range(30)]
    try:
        for _ in range(6):
            assert_crc_prompt(server)
            time.sleep(0.25)
    finally:
        for client in clients:
            client.close()


def test_a_request_not_whole_within_the_deadline_is_dropped(server):
    head_only = Raw(server.port, timeout=20).send(b"GET /healthz HTTP/1.1\r\nHost: bot\r\n")
    half_body = Raw(server.port, timeout=20).send(b"POST /webhook/twitter HTTP/1.1\r\nHost: bot\r\n"
                                                  b"Content-Length: 1000\r\n\r\n" + b"x" * 500)
    silent = Raw(server.port, timeout=20)
    started = time.monotonic()
    try:
        assert_crc_prompt(server)
        assert head_only.answer()[0] == 408  # then the server closes
        assert half_body.answer()[0] == 408
        assert silent.closed_by_server()  # nothing sent, nothing to answer
        assert 9.5 < time.monotonic() - started < 12.5  # REQUEST_TIMEOUT (10 s), checked every 0.25 s
    finally:
        for client in (head_only, half_body, silent):
            client.close()


def test_a_full_worker_drops_the_longest_waiting_connection_and_keeps_answering(settings, tmp_path):
    bot = Gunicorn(procfile_env(settings), workers=1, log_path=tmp_path / "gunicorn.log",
                   extra_args=("--worker-connections", "20"))
    slow = [Raw(bot.port).send(b"GET /healthz HTTP/1.1\r\nHost: bot\r\n") for _ in range(40)]
    try:
        time.sleep(0.5)
        assert_crc_prompt(bot)
        assert all(client.closed_by_server() for client in slow[:20])  # the oldest made room
        assert "dropped to make room" in bot.log()
    finally:
        for client in slow:
            client.close()
        bot.stop()


def test_sigterm_with_requests_half_received_stops_within_the_grace(settings, tmp_path):
    bot = Gunicorn(procfile_env(settings), workers=None, log_path=tmp_path / "gunicorn.log")
    slow = [Raw(bot.port, timeout=30).send(b"POST /webhook/twitter HTTP/1.1\r\nHost: bot\r\nContent-Length: 9\r\n\r\n")
            for _ in range(10)]
    try:
        started = time.monotonic()
        assert bot.terminate(timeout=30) == 0
        assert time.monotonic() - started < REQUEST_TIMEOUT + 3  # gunicorn.conf.py: graceful_timeout = 25
        assert "WORKER TIMEOUT" not in bot.log()
    finally:
        for client in slow:
            client.close()
        bot.stop()


# -- the scanner, on bytes -----------------------------------------------------------------------------
LIMITS = Limits.from_config(Config())
GET = b"GET /healthz HTTP/1.1\r\nHost: bot\r\n\r\n"
POST = b"POST /webhook/twitter HTTP/1.1\r\nHost: bot\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED = (b"POST /webhook/twitter HTTP/1.1\r\nHost: bot\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n")


def scan(data: bytes, limits: Limits = LIMITS) -> tuple[Framing, RequestScanner]:
    scanner = RequestScanner(limits)
    return scanner.scan(data), scanner


def gunicorn_reads(data: bytes) -> tuple[bytes, bytes]:
    """What gunicorn's own parser makes of these bytes alone: the body, and what it left over."""
    parser = RequestParser(Config(), (), None)
    parser.unreader.unread(data)
    request = next(parser)
    return request.body.read(), parser.unreader.take_buffered()


@pytest.mark.parametrize("request_bytes, body", [(GET, b""), (POST, b"hello"), (CHUNKED, b"hello world"),
                                                 (b"\r\n" + GET, b""), (POST.replace(b"Content-Length", b"content-LENGTH"),
                                                                         b"hello")])
def test_scanner_ends_a_request_where_gunicorn_does(request_bytes, body):
    pipelined = request_bytes + GET[:10]
    verdict, scanner = scan(pipelined)
    assert verdict is Framing.COMPLETE and scanner.end == len(request_bytes)
    assert gunicorn_reads(pipelined) == (body, GET[:10])


@pytest.mark.parametrize("request_bytes", [GET, POST, CHUNKED])
def test_scanner_waits_until_the_last_byte_when_fed_one_at_a_time(request_bytes):
    scanner, buf = RequestScanner(LIMITS), bytearray()
    for n, byte in enumerate(request_bytes, 1):
        buf.append(byte)
        assert scanner.scan(buf) is (Framing.COMPLETE if n == len(request_bytes) else Framing.WAIT), n


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\nHost: bot\n",  # bare LF
    b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n",  # request line over limit_request_line
    b"GET /" + b"a" * 5000,  # the same, still unfinished
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",  # both framings
    b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nExpect: something\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n",  # past the body limit: the app says 413
    b"POST / HTTP/1.1\r\nContent-Length:\r\n 5\r\n\r\n",  # obsolete line folding
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # not a chunk size
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",  # no CRLF after the data
])
def test_scanner_hands_on_at_once_what_gunicorn_answers_from_these_bytes(request_bytes):
    assert scan(request_bytes)[0] is Framing.HAND_ON


def test_scanner_hands_on_a_chunked_body_once_past_the_limit_is_here():
    head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    big = b"%x\r\n" % (2 * LIMITS.body)
    past = LIMITS.body + CHUNKED_READ_AHEAD + 1
    assert scan(head + big + b"x" * (past - 1))[0] is Framing.WAIT  # declared is not received
    verdict, _ = scan(head + big + b"x" * past)
    assert verdict is Framing.HAND_ON
    parser = RequestParser(Config(), (), None)  # and gunicorn reads what the app asks from these bytes alone
    parser.unreader.unread(head + big + b"x" * past)
    assert len(next(parser).body.read(LIMITS.body + 1)) == LIMITS.body + 1


def test_scanner_refuses_a_head_no_gunicorn_limit_allows():
    head = b"GET / HTTP/1.1\r\n" + b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" * (LIMITS.head // 40 + 1)
    assert scan(head[:LIMITS.head])[0] is Framing.WAIT
    assert scan(head)[0] is Framing.HEAD_TOO_LARGE


def test_scanner_notes_a_client_waiting_for_100_continue():
    assert scan(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n")[1].expects_continue
    assert not scan(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")[1].expects_continue


def test_the_server_buffers_exactly_what_the_app_accepts():
    from catbot.web import MAX_BODY
    assert BODY_LIMIT == MAX_BODY


@pytest.mark.parametrize("changes", [{"proxy_protocol": "v1"}, {"certfile": __file__, "keyfile": __file__},
                                     {"permit_obsolete_folding": True}])
def test_the_worker_refuses_settings_it_cannot_serve_at_startup(changes):
    config = Config()
    for name, value in changes.items():
        config.set(name, value)
    with pytest.raises(RuntimeError, match="plain HTTP/1.1 only"):
        BufferedThreadWorker.check_config(config, None)
