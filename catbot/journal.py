"""The webhook's durable record in the embedded default: one append-only file per process.

A delivery is acknowledged after one ``write`` to this process's journal (``O_APPEND``): the
bytes are in the kernel then, so they survive the process being killed, the same durability
as SQLite's WAL with ``synchronous=NORMAL``, for a fraction of a transaction's cost. Consumers
import journal lines into the store (:meth:`catbot.store.SqliteStore.import_journal`), where
de-duplication and queueing happen, recording each file's offset in the same transaction.

A writer holds a shared ``flock`` on its file for as long as it lives; a file whose lock can
be taken exclusively belongs to a process that is gone (the kernel releases locks of killed
processes), so once imported it can be deleted. A torn last line from a writer that died
mid-``write`` was never acknowledged, and is dropped.
"""
from __future__ import annotations

import fcntl
import os
import threading
import uuid
from pathlib import Path
from typing import Sequence

from catbot.events import IncomingDM
from catbot.replies import Intent

ROTATE_BYTES = 8 * 1024 * 1024
READ_LIMIT = 256 * 1024  # bytes of one file per import transaction: about 3,000 messages
SUFFIX = ".jsonl"


class JournalUnavailable(Exception):
    """The journal could not be written; the webhook answers 503 so X delivers again."""


def _line(dm: IncomingDM, intent: Intent, now: float) -> str:
    """One message as a JSON array ``[for_user_id, event_id, sender_id, intent, created_ms,
    received_at]``, read back inside SQLite by ``catbot.store``. Formatted directly, since this
    runs on every delivery (``json.dumps`` cost as much as parsing the whole delivery): safe
    because ids are ASCII digit strings, which ``catbot.events`` guarantees and this checks."""
    ids = (dm.for_user_id, dm.event_id, dm.sender_id)
    if not all(i.isascii() and i.isdigit() for i in ids):
        raise ValueError(f"journal ids must be digit strings, not {ids!r}")
    return (f'["{dm.for_user_id}","{dm.event_id}","{dm.sender_id}","{intent.value}",'
            f'{int(dm.created_ms)},{float(now)!r}]\n')


def encode(items: Sequence[tuple[IncomingDM, Intent]], now: float) -> bytes:
    return "".join(_line(dm, intent, now) for dm, intent in items).encode()


class Journal:
    def __init__(self, directory: str | Path, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.directory = Path(directory)
        self.rotate_bytes = rotate_bytes
        self._fd: int | None = None
        self._pid = 0
        self._size = 0
        self._lock = threading.Lock()
        self._seen_sizes: dict[str, int] = {}

    # -- writing (the webhook) ------------------------------------------------------------------
    def _open(self) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)  # "my writer is alive" for as long as this process is
        self._fd, self._pid, self._size = fd, os.getpid(), 0
        return fd

    def append(self, items: Sequence[tuple[IncomingDM, Intent]], now: float) -> None:
        """Durably note these messages (against the process dying) before X gets its 200."""
        if not items:
            return
        data = encode(items, now)
        with self._lock:
            try:
                fd = self._fd if self._fd is not None and self._pid == os.getpid() else self._open()
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                self._size += len(data)
                if self._size >= self.rotate_bytes:
                    os.close(fd)  # releases the lock: importers may delete it once imported
                    self._fd = None
            except OSError as exc:
                self._fd = None
                raise JournalUnavailable(str(exc)) from exc

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None

    # -- reading (the consumers) ----------------------------------------------------------------
    def files(self) -> list[Path]:
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        except FileNotFoundError:
            return []

    def has_news(self) -> bool:
        """Did any journal grow since the last call? (A cheap stat of each file, for polling.)"""
        sizes = {}
        for path in self.files():
            try:
                sizes[path.name] = path.stat().st_size
            except FileNotFoundError:
                continue
        news = any(size > self._seen_sizes.get(name, 0) for name, size in sizes.items())
        self._seen_sizes = sizes
        return news

    @staticmethod
    def writer_gone(path: Path) -> bool:
        """True when no live process holds the file open for writing."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    @staticmethod
    def read_lines(path: Path, offset: int, limit: int = READ_LIMIT) -> tuple[list[str], int, bool]:
        """Complete lines from ``offset`` (at most about ``limit`` bytes), the offset after
        them, and whether the read stopped at ``limit`` (the file may hold more)."""
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(limit)
        except FileNotFoundError:
            return [], offset, False
        end = data.rfind(b"\n") + 1
        return data[:end].decode("utf-8", "replace").split("\n")[:-1], offset + end, len(data) == limit

    def pending_bytes(self, offsets: dict[str, int]) -> int:
        total = 0
        for path in self.files():
            try:
                total += max(0, path.stat().st_size - offsets.get(path.name, 0))
            except FileNotFoundError:
                continue
        return total

