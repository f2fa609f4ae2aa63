"""The web server's worker: gunicorn's threaded worker, with every request read in full before
a thread sees it.

Why: gunicorn's sync worker, and its threaded worker too once the first byte has arrived, read a
request in the thread that will run it, blocking. A client that sends its headers one line at a
time, or a body one byte a second, holds that thread; with two workers two such clients stop
the CRC check and every delivery, and after ``timeout`` gunicorn kills the workers and the reply
consumers running in them (issue 10, item 4).

Here the worker's main loop reads every connection without blocking, into a buffer, until one
whole request is there (``RequestScanner`` decides when), and only then hands the connection to
the thread pool, its parser filled with those bytes and unable to read the socket; a further
request on a connection whose answers are not being read is not served. So a thread never
waits on a client, and a small pool suffices. A request must arrive whole within
``REQUEST_TIMEOUT`` of its first byte (X itself waits 10 s for an answer); a connection that
misses it is answered 408 and closed. Memory stays bounded: at most ``worker_connections``
connections and ``BUFFER_BUDGET`` buffered bytes per worker; to make room, the connection that
has waited longest for its request is dropped first (a real client finishes in milliseconds).

The main loop also closes connections without blocking: gunicorn's threaded worker lingers up
to 2 s in its main loop reading from a client after the last response, which a client that
keeps the connection open and silent turns into another stall.

HTTP/1.1 over plain TCP only (Heroku's router terminates TLS): ``check_config`` refuses TLS,
HTTP/2, the uwsgi and PROXY protocols and obsolete line folding. This module imports nothing
of the bot's, so the benchmark's bare Flask baseline runs under the same worker.
"""
from __future__ import annotations

import enum
import errno
import re
import select
import selectors
import socket
import time
from dataclasses import dataclass
from functools import partial

from gunicorn import http, util
from gunicorn.http.errors import LimitRequestHeaders
from gunicorn.http.message import DEFAULT_MAX_HEADERFIELD_SIZE, MAX_HEADERS, MAX_REQUEST_LINE
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

REQUEST_TIMEOUT = 10.0  # seconds from a request's first byte to its last; X waits 10 s for an answer
BODY_LIMIT = 1024 * 1024  # the app refuses more (catbot.web.MAX_BODY; a test keeps them equal)
BUFFER_BUDGET = 16 * 1024 * 1024  # bytes of unfinished requests held per worker
READ_SIZE = 64 * 1024
CHUNKED_READ_AHEAD = 64 * 1024  # a chunked body is handed on this far past the limit: the app reads one
# byte past it to know, and gunicorn's body reader asks for at least 1 KiB at a time
CLOSE_LINGER = 2.0  # after the last response, how long a client may take to close (gunicorn's own)
CLOSE_DRAIN = 64 * 1024  # and how much it may still send meanwhile
SWEEP_INTERVAL = 0.25  # how often deadlines are checked (and the loop wakes at least every second)
REPORT_INTERVAL = 60.0  # at most one INFO line a minute about dropped connections


class Framing(enum.Enum):
    """What the bytes received so far are, as far as where the request ends."""
    WAIT = "wait"  # more is needed
    COMPLETE = "complete"  # one whole request (perhaps followed by the start of the next)
    HAND_ON = "hand on"  # gunicorn's parser or the app can answer from these bytes (an error, or a
    # body past the limit): pass them on, and close the connection after the answer
    HEAD_TOO_LARGE = "head too large"  # longer than any head gunicorn accepts: 431
    BODY_TOO_LARGE = "body too large"  # chunked framing far past the body limit: 413


@dataclass(frozen=True)
class Limits:
    """Sizes the scanner enforces; the same as gunicorn's parser, so nothing it would accept is
    refused here (``from_config`` mirrors gunicorn.http.message and .body)."""
    request_line: int  # 0: unlimited
    head: int
    chunk_line: int
    trailers: int
    strip_header_spaces: bool = False  # "Content-Length : 5" is a header (gunicorn's option)
    body: int = BODY_LIMIT

    @classmethod
    def from_config(cls, cfg) -> "Limits":
        fields = cfg.limit_request_fields
        if fields <= 0 or fields > MAX_HEADERS:
            fields = MAX_HEADERS
        field_size = cfg.limit_request_field_size if cfg.limit_request_field_size > 0 else DEFAULT_MAX_HEADERFIELD_SIZE
        headers = fields * (field_size + 2) + 4  # gunicorn's max_buffer_headers
        line = cfg.limit_request_line
        line = MAX_REQUEST_LINE if line < 0 or line >= MAX_REQUEST_LINE else line
        return cls(request_line=line, head=2 + (line or 1024 * 1024) + 2 + headers, chunk_line=field_size,
                   trailers=headers, strip_header_spaces=bool(cfg.strip_header_spaces))


# The only fields framing depends on. Names are case-insensitive; a field the scanner skips
# (whitespace before the colon, unless strip_header_spaces) makes gunicorn refuse the head.
_FRAMING_FIELDS = re.compile(rb"\r\n(content-length|transfer-encoding|expect)([ \t]*):([^\r\n]*)", re.IGNORECASE)


class RequestScanner:
    """Finds where one HTTP/1.1 request ends in the bytes received so far.

    It reads only what framing needs (the blank line, Content-Length, Transfer-Encoding, chunk
    sizes, Expect); gunicorn's parser still parses every request in full. A request whose head
    gunicorn refuses on sight (a bare LF, an overlong request line, conflicting framing headers)
    is handed on at once, so its 400 is not delayed. Each call resumes where the last stopped,
    so a request trickled a byte at a time costs linear time, not quadratic."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._searched = 0  # head: bytes already searched for its end
        self._line_end = -1  # head: where the request line ends, once seen
        self._body_start = -1  # where the body starts, once the head is complete
        self._end = -1  # where the request ends, for a body of known length
        self._chunk: _ChunkState | None = None
        self.expects_continue = False  # the client waits for "100 Continue" before its body

    def scan(self, buf: bytes | bytearray) -> Framing:
        if self._body_start < 0:
            verdict = self._scan_head(buf)
            if verdict is not None:
                return verdict
        if self._chunk is not None:
            return self._chunk.scan(buf)
        return Framing.COMPLETE if len(buf) >= self._end else Framing.WAIT

    def _scan_head(self, buf: bytes | bytearray) -> Framing | None:
        start = self._searched
        end = buf.find(b"\r\n\r\n", max(0, start - 3))
        stop = len(buf) if end < 0 else end + 4
        if buf.count(b"\n", start, stop) != buf.count(b"\r\n", max(0, start - 1), stop):
            return Framing.HAND_ON  # a bare LF: gunicorn refuses it as soon as it sees one
        self._searched = stop
        line_start = 2 if buf[:2] == b"\r\n" else 0  # one empty line before the request is allowed
        if self._line_end < 0:
            self._line_end = buf.find(b"\r\n", max(line_start, start - 1))
            if self.limits.request_line:
                line_length = (self._line_end if self._line_end >= 0 else len(buf) - 2) - line_start
                if line_length > self.limits.request_line:
                    return Framing.HAND_ON  # gunicorn answers 414 from these bytes
        if end < 0:
            return Framing.HEAD_TOO_LARGE if len(buf) > self.limits.head else Framing.WAIT
        self._body_start = end + 4
        return self._framing(bytes(buf[line_start:end]))

    def _framing(self, head: bytes) -> Framing | None:
        """How the body is framed (RFC 9112 section 6), read as gunicorn reads it."""
        if b"\r\n " in head or b"\r\n\t" in head:
            return Framing.HAND_ON  # obsolete line folding: gunicorn refuses it (check_config keeps it so)
        http11 = not head.split(b"\r\n", 1)[0].endswith(b"HTTP/1.0")
        lengths, codings, expect = [], [], None
        for name, space, value in _FRAMING_FIELDS.findall(head):
            if space and not self.limits.strip_header_spaces:
                continue  # gunicorn refuses the head: nothing to wait for but its 400
            name, value = name.lower(), value.strip(b" \t")
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                codings += [coding.strip(b" \t").lower() for coding in value.split(b",")]
            else:
                expect = value.lower()
        if expect is not None and expect != b"100-continue":
            return Framing.HAND_ON  # 417
        self.expects_continue = expect is not None and http11
        if codings:
            if codings[-1] != b"chunked" or lengths or not http11:
                return Framing.HAND_ON  # 400 or 501, from the head alone
            self._chunk = _ChunkState(self.limits, self._body_start)
            return None
        if lengths:
            if len(lengths) > 1 or not lengths[0].isdigit():
                return Framing.HAND_ON  # 400
            if int(lengths[0]) > self.limits.body:
                return Framing.HAND_ON  # the app answers 413 without reading the body
            self._end = self._body_start + int(lengths[0])
            return None
        self._end = self._body_start  # no body
        return None

    @property
    def end(self) -> int:
        """Where a complete request ends in the buffer."""
        return self._chunk.end if self._chunk is not None else self._end


_HEX = frozenset(b"0123456789abcdefABCDEF")


class _ChunkState:
    """The chunked-body part of the scanner: chunk-size lines, data, the last chunk, trailers."""

    def __init__(self, limits: Limits, start: int) -> None:
        self.limits = limits
        self.start = start
        self.pos = start  # where the current chunk-size line (or the trailer section) starts
        self.searched = start
        self.data_start = self.data_end = -1  # of the current chunk, while reading its data
        self.decoded = 0  # payload bytes before the current chunk
        self.in_trailers = False
        self.end = -1

    def scan(self, buf: bytes | bytearray) -> Framing:
        while True:
            if self.in_trailers:
                return self._scan_trailers(buf)
            if self.data_start >= 0:
                available = min(len(buf), self.data_end) - self.data_start
                if self.decoded + available > self.limits.body + CHUNKED_READ_AHEAD:
                    return Framing.HAND_ON  # the app reads past its limit from these bytes: 413
                if len(buf) < self.data_end + 2:
                    too_large = len(buf) - self.start > 2 * self.limits.body
                    return Framing.BODY_TOO_LARGE if too_large else Framing.WAIT
                if buf[self.data_end:self.data_end + 2] != b"\r\n":
                    return Framing.HAND_ON  # gunicorn: missing chunk terminator
                self.decoded += self.data_end - self.data_start
                self.pos = self.searched = self.data_end + 2
                self.data_start = self.data_end = -1
                continue
            line_end = buf.find(b"\r\n", self.searched)
            if line_end < 0:
                if len(buf) - self.pos > self.limits.chunk_line:
                    return Framing.HAND_ON  # gunicorn: chunk-size line too long
                self.searched = max(self.pos, len(buf) - 1)
                return Framing.WAIT
            line = bytes(buf[self.pos:line_end])
            size, semicolon, _ = line.partition(b";")
            if semicolon:
                size = size.rstrip(b" \t")
            if not size or not _HEX.issuperset(size):
                return Framing.HAND_ON  # gunicorn: invalid chunk size
            length = int(size, 16)
            if length == 0:
                self.in_trailers, self.pos = True, line_end + 2
                self.searched = self.pos
                continue
            self.data_start, self.data_end = line_end + 2, line_end + 2 + length

    def _scan_trailers(self, buf: bytes | bytearray) -> Framing:
        if len(buf) < self.pos + 2:
            return Framing.WAIT
        if buf[self.pos:self.pos + 2] == b"\r\n":
            self.end = self.pos + 2
            return Framing.COMPLETE
        found = buf.find(b"\r\n\r\n", max(self.pos, self.searched - 3))
        if found >= 0:
            self.end = found + 4
            return Framing.COMPLETE
        if len(buf) - self.pos > self.limits.trailers:
            return Framing.HAND_ON  # gunicorn: trailer section too large
        self.searched = len(buf)
        return Framing.WAIT


class BufferedConn(TConn):
    """A connection and the request being received on it."""

    def __init__(self, cfg, sock, client, server) -> None:
        super().__init__(cfg, sock, client, server)
        self.buf = bytearray()
        self.scanner: RequestScanner | None = None
        self.deadline = 0.0
        self.idle = False  # kept alive, nothing of the next request yet
        self.continued = False  # "100 Continue" sent for this request
        self.partial = False  # handed on before the whole request was here: close after answering
        self.drained = 0  # bytes read while closing
        self.gone = False  # closed and no longer counted

    def init(self) -> None:
        """In the thread: reads never touch the socket (the parser holds the request), writes do.
        The answer has room in the send buffer (``_has_room_to_answer``); should it not, the thread
        still waits at most ``REQUEST_TIMEOUT``."""
        super().init()
        self.sock.settimeout(REQUEST_TIMEOUT)


class BufferedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker whose main loop receives each request whole before a thread
    runs it (module docstring). Hooks, heartbeat, graceful stop and settings are gunicorn's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = Limits.from_config(self.cfg)
        self._waiting: dict[BufferedConn, None] = {}  # receiving a request, oldest first
        self._closing: dict[BufferedConn, None] = {}  # answered, waiting for the client to close
        self._buffered = 0
        self._next_sweep = 0.0
        self._stop_capped = False
        self._dropped = {"timed out": 0, "dropped to make room": 0}
        self._next_report = 0.0
        self._probe = select.poll()  # one fd at a time: is there room to answer (_has_room_to_answer)

    @classmethod
    def check_config(cls, cfg, log) -> None:
        """Refuse what the main loop cannot read as plain HTTP/1.1, at startup, not per request."""
        refused = [name for name, on in (("TLS (certfile)", cfg.is_ssl), ("protocol = uwsgi", cfg.protocol != "http"),
                                         ("HTTP/2", "h2" in cfg.http_protocols or cfg.http2_cleartext != "off"),
                                         ("proxy_protocol", cfg.proxy_protocol != "off"),
                                         ("permit_obsolete_folding", cfg.permit_obsolete_folding)) if on]
        if refused:
            raise RuntimeError(f"{cls.__name__} serves plain HTTP/1.1 only; not: {', '.join(refused)}")
        super().check_config(cfg, log)

    # -- receiving -------------------------------------------------------------------------------
    def accept(self, listener) -> None:
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = BufferedConn(self.cfg, sock, client, listener.getsockname())
        self._make_room()
        self._await_request(conn, b"", time.monotonic() + REQUEST_TIMEOUT, idle=False)

    def _await_request(self, conn: BufferedConn, data: bytes, deadline: float, idle: bool) -> None:
        """Start receiving the next request on ``conn``, beginning with ``data`` (read ahead)."""
        conn.buf, conn.scanner = bytearray(data), RequestScanner(self.limits)
        conn.deadline, conn.idle, conn.continued, conn.partial = deadline, idle, False, False
        self._buffered += len(data)
        self._waiting[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._guarded, self._on_readable, conn))
        if data:
            self._advance(conn)

    def _guarded(self, callback, conn: BufferedConn, _fileobj=None) -> None:
        """The main loop must survive anything one connection does: log it and drop that one."""
        try:
            callback(conn)
        except Exception:
            self.log.exception("Dropping connection from %s", conn.client)
            self._forget(conn)

    @staticmethod
    def _recv(conn: BufferedConn) -> bytes | None:
        """What the socket holds now: None when nothing yet, b"" when the client closed or failed."""
        try:
            return conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return b""

    def _on_readable(self, conn: BufferedConn) -> None:
        data = self._recv(conn)
        if data is None:
            return
        if not data:
            if not conn.idle:
                self.log.debug("Client %s went away before its request was whole", conn.client)
            self._forget(conn)
            return
        if conn.idle:  # the next request on a kept-alive connection has begun
            conn.idle, conn.deadline = False, time.monotonic() + REQUEST_TIMEOUT
        conn.buf += data
        self._buffered += len(data)
        self._advance(conn)
        if self._buffered > BUFFER_BUDGET:
            self._make_room(for_bytes=True)

    def _advance(self, conn: BufferedConn) -> None:
        verdict = conn.scanner.scan(conn.buf)
        if verdict is Framing.WAIT:
            if conn.scanner.expects_continue and not conn.continued:
                conn.continued = True  # gunicorn sends another before the app runs; RFC 9110 allows both
                self._send_quietly(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        self._stop_waiting(conn)
        if verdict is Framing.COMPLETE or verdict is Framing.HAND_ON:
            self._run(conn, handed_on=verdict is Framing.HAND_ON)
        elif verdict is Framing.HEAD_TOO_LARGE:
            self.handle_error(None, conn.sock, conn.client, LimitRequestHeaders("max buffer headers"))
            self._close(conn)
        else:
            self._write_error(conn, 413, "Payload Too Large", "chunked body over the limit")
            self._close(conn)

    def _run(self, conn: BufferedConn, handed_on: bool) -> None:
        """Give the thread pool a connection whose parser holds the whole request."""
        if conn.parser is None:
            conn.parser = http.get_parser(self.cfg, (), conn.client)  # reads its buffer, never the socket
        elif not self._has_room_to_answer(conn):
            self.log.debug("Closing %s: it does not read its answers", conn.client)
            self._forget(conn)
            return
        conn.parser.unreader.unread(bytes(conn.buf))
        conn.buf = bytearray()
        conn.partial, conn.data_ready = handed_on, True
        self.enqueue_req(conn)

    def _has_room_to_answer(self, conn: BufferedConn) -> bool:
        """Whether an answer fits in the connection's send buffer now. A client that keeps sending
        requests (pipelined or not) without reading the answers fills it, and the next answer
        would hold a thread until ``REQUEST_TIMEOUT``; such a client is not served further."""
        fd = conn.sock.fileno()
        self._probe.register(fd, select.POLLOUT)
        try:
            return bool(self._probe.poll(0))
        finally:
            self._probe.unregister(fd)

    def handle_request(self, req, conn):
        if conn.partial:
            req.force_close()  # the rest of its body may still be on its way: answer, then close
        return super().handle_request(req, conn)

    def finish_request(self, conn: BufferedConn, fs) -> None:
        """Back in the main loop after a thread answered: wait for the next request (kept alive)
        or close, both without blocking."""
        try:
            keep = not fs.cancelled() and fs.result() is True and not conn.partial
        except Exception:
            keep = False
        try:
            if not keep:
                self._close(conn)
                return
            conn.sock.setblocking(False)
            now = time.monotonic()
            ahead = conn.parser.unreader.take_buffered()  # pipelined: the next request has begun
            deadline = now + (REQUEST_TIMEOUT if ahead else self.cfg.keepalive)
            if not self.alive:
                deadline = min(deadline, now + STOP_KEEPALIVE_LINGER)
            self._await_request(conn, ahead, deadline, idle=not ahead)
        except Exception:
            self.log.exception("Dropping connection from %s", conn.client)
            self._forget(conn)

    # -- letting go ------------------------------------------------------------------------------
    def _stop_waiting(self, conn: BufferedConn) -> None:
        if conn in self._waiting:
            del self._waiting[conn]
            self._unregister(conn)
            self._buffered -= len(conn.buf)

    def _unregister(self, conn: BufferedConn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _forget(self, conn: BufferedConn) -> None:
        """Close at once, whatever state the connection is in (once: it is counted once)."""
        self._stop_waiting(conn)
        if conn in self._closing:
            del self._closing[conn]
            self._unregister(conn)
        if not conn.gone:
            conn.gone = True
            self.nr_conns -= 1
            conn.close()

    def _close(self, conn: BufferedConn) -> None:
        """RFC 9112 section 9.6, as gunicorn does it, but in the poller: send FIN, then read (and
        drop) what the client still sends until it closes, ``CLOSE_LINGER`` or ``CLOSE_DRAIN``,
        so the last answer is not cut off by a reset."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:  # gone already (or closed by the thread)
            self._forget(conn)
            return
        conn.deadline, conn.drained = time.monotonic() + CLOSE_LINGER, 0
        self._closing[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._guarded, self._on_closing_readable, conn))

    def _on_closing_readable(self, conn: BufferedConn) -> None:
        data = self._recv(conn)
        if data is None:
            return
        conn.drained += len(data)
        if not data or conn.drained >= CLOSE_DRAIN:
            self._forget(conn)

    def _make_room(self, for_bytes: bool = False) -> None:
        """Keep connections under ``worker_connections`` (so the worker never stops accepting) or
        buffered bytes within ``BUFFER_BUDGET``: close connections being closed anyway first, then
        the one that has waited longest for its request."""
        def full() -> bool:
            return self._buffered > BUFFER_BUDGET if for_bytes else self.nr_conns >= self.worker_connections

        while full():
            if self._closing and not for_bytes:
                self._forget(next(iter(self._closing)))
            elif self._waiting:
                oldest = next(iter(self._waiting))
                self.log.debug("Dropping %s: room needed for newer connections", oldest.client)
                self._dropped["dropped to make room"] += 0 if oldest.idle else 1
                self._forget(oldest)
            else:
                return

    def murder_pending(self) -> None:
        """Called by gunicorn's loop after every wake-up (at least once a second), running and
        stopping: enforce the deadlines."""
        now = time.monotonic()
        if not self.alive and not self._stop_capped:  # stopping: idle connections get gunicorn's linger
            self._stop_capped, self._next_sweep = True, 0.0
            for conn in self._waiting:
                if conn.idle:
                    conn.deadline = min(conn.deadline, now + STOP_KEEPALIVE_LINGER)
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        for conn in [c for c in self._waiting if c.deadline <= now]:
            if conn.buf:
                self.log.debug("Closing %s: no whole request within %g s", conn.client, REQUEST_TIMEOUT)
                self._dropped["timed out"] += 1
                self._stop_waiting(conn)
                self._write_error(conn, 408, "Request Timeout", "")
                self._close(conn)
            else:
                self._forget(conn)  # idle: a kept-alive connection past keepalive, or one that sent nothing
        for conn in [c for c in self._closing if c.deadline <= now]:
            self._forget(conn)
        if now >= self._next_report and any(self._dropped.values()):
            self.log.info("Slow clients since the last report: %d requests not whole within %g s, %d "
                          "connections dropped to make room; %d connections open",
                          self._dropped["timed out"], REQUEST_TIMEOUT, self._dropped["dropped to make room"],
                          self.nr_conns)
            self._dropped = dict.fromkeys(self._dropped, 0)
            self._next_report = now + REPORT_INTERVAL

    # -- small writes from the main loop ---------------------------------------------------------
    def _send_quietly(self, conn: BufferedConn, data: bytes) -> None:
        """A few bytes on a socket whose send buffer is empty: never blocks; if it fails, the
        client is gone and the read side will notice."""
        try:
            conn.sock.send(data)
        except OSError:
            pass

    def _write_error(self, conn: BufferedConn, status: int, reason: str, message: str) -> None:
        try:
            util.write_error(conn.sock, status, reason, message)
        except OSError:
            pass
