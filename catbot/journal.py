"""The webhook's durable record in the embedded default: one append-only file per process.

A delivery is acknowledged after one ``write`` to this process's journal (``O_APPEND``): the
bytes are in the kernel then, so they survive the process being killed, the same durability
as SQLite's WAL with ``synchronous=NORMAL``, for a fraction of a transaction's cost. Consumers
import journal lines into the store (:meth:`Journal.import_into`), where
de-duplication and queueing happen, recording each file's offset in the same transaction.

A writer holds a shared ``flock`` on its file for as long as it lives; a file whose lock can
be taken exclusively belongs to a process that is gone (the kernel releases locks of killed
processes), so once imported it can be deleted. Two rules keep that inference sound:

- a file is created under a temporary name, locked, and only then renamed into place, so an
  importer never sees a journal file that is unlocked while its writer lives;
- a writer checks after each write that its file is still the one at its path (not unlinked,
  not replaced); if it is not, what it wrote went nowhere, so it opens a new file and writes
  again before the webhook acknowledges.

A write that fails (disk full) is undone (the file is cut back to its last whole line) or, if
that fails too, the file is given up: its descriptor is closed, which releases the lock, so the
importers can finish it and delete it. A torn last line from a writer that died mid-``write``
was never acknowledged, and is dropped.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

from catbot.events import X_DM
from catbot.logs import event
from catbot.replies import Intent
from catbot.store import Inbound, RecordResult, StoreUnavailable

ROTATE_BYTES = 8 * 1024 * 1024
READ_LIMIT = 256 * 1024  # bytes of one file per import transaction: about 3,000 messages
MAX_PAYLOAD = READ_LIMIT // 2  # an import takes whole lines only: no line may come near READ_LIMIT
SUFFIX = ".jsonl"
OPENING_SUFFIX = ".opening"  # a file being created: not yet locked, so not yet a journal

log = logging.getLogger("catbot.journal")



_TOKEN = re.compile(r"[A-Za-z0-9_.:-]+")  # ids, kinds and intents: nothing JSON would escape


def _line(m: Inbound, now: float) -> str:
    """One message as a JSON array ``[for_user_id, event_id, user_id, intent, created_ms,
    received_at, kind, payload]``, read back inside SQLite by :data:`DECODE`. Formatted
    directly, since this runs on every delivery (``json.dumps`` cost as much as parsing the
    whole delivery): safe because ids, kind and intent are plain ASCII tokens, which the parsers
    guarantee and this checks. Only a payload (opaque, rare) goes through ``json.dumps``."""
    fields = (m.for_user_id, m.event_id, m.user_id, m.kind)
    if not all(_TOKEN.fullmatch(f) for f in fields):
        raise ValueError(f"journal ids must be plain ASCII tokens, not {fields!r}")
    payload = "null" if m.payload is None else json.dumps(m.payload)
    if len(payload) > MAX_PAYLOAD:  # the parsers bound payloads far below this; a longer line would
        raise ValueError(f"a payload of {len(payload)} characters cannot be journaled")  # never import
    return (f'["{m.for_user_id}","{m.event_id}","{m.user_id}","{m.intent.value}",'
            f'{int(m.created_ms)},{float(now)!r},"{m.kind}",{payload}]\n')


def encode(messages: Sequence[Inbound], now: float) -> bytes:
    return "".join(_line(m, now) for m in messages).encode()


# Lines decoded inside SQLite, well-formed ones only, in arrival order (the store stages raw
# lines in ``temp.catbot_lines``; decoding there leaves the GIL to the webhook thread beside it).
# Columns: kind, for_user_id, event_id, user_id, intent, created_ms, received_at, payload. Lines
# of six fields were written before messages had kinds: X DMs.
DECODE = f"""
select coalesce(json_extract(line, '$[6]'), '{X_DM}'), json_extract(line, '$[0]'), json_extract(line, '$[1]'),
       json_extract(line, '$[2]'), json_extract(line, '$[3]'), json_extract(line, '$[4]'),
       json_extract(line, '$[5]'), json_extract(line, '$[7]')
from temp.catbot_lines
where json_valid(line) and json_array_length(line) in (6, 8)
  and json_type(line, '$[0]') = 'text' and json_type(line, '$[1]') = 'text' and json_type(line, '$[2]') = 'text'
  and json_extract(line, '$[3]') in ({", ".join(f"'{intent.value}'" for intent in Intent)})
  and json_type(line, '$[4]') = 'integer' and json_type(line, '$[5]') in ('integer', 'real')
  and (json_array_length(line) = 6 or (json_type(line, '$[6]') = 'text'
       and json_type(line, '$[7]') in ('text', 'null')))
order by json_extract(line, '$[5]'), n
"""


class Journal:
    """The journal folder: this process's file to write, every process's files to import.
    ``store`` is where imports go (the SQLite store beside it)."""

    def __init__(self, directory: str | Path, store: "JournalStore | None" = None,
                 rotate_bytes: int = ROTATE_BYTES) -> None:
        self.directory = Path(directory)
        self.store = store
        self.rotate_bytes = rotate_bytes
        self._fd: int | None = None
        self._pid = 0
        self._size = 0
        self._path: Path | None = None
        self._identity: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the file this process writes
        self._lock = threading.Lock()
        self._seen_sizes: dict[str, int] = {}

    # -- writing (the webhook) ------------------------------------------------------------------
    def _open(self) -> int:
        """A new file for this process, visible under its journal name only once it is locked:
        an importer that saw it unlocked would take its writer for dead and delete it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        temporary, path = self.directory / (name + OPENING_SUFFIX), self.directory / (name + SUFFIX)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # "my writer is alive" for as long as this process is
            os.rename(temporary, path)
            stat = os.fstat(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(temporary)
            raise
        self._fd, self._pid, self._size, self._path = fd, os.getpid(), 0, path
        self._identity = (stat.st_dev, stat.st_ino)
        return fd

    def _close_file(self) -> None:
        """Stop writing the current file; closing releases its lock, so importers may finish
        and delete it."""
        fd, self._fd = self._fd, None
        if fd is not None and self._pid == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass

    def _in_place(self) -> bool:
        """Is the file this process writes still the one at its path? (Not unlinked, not
        replaced, its folder not removed.)"""
        try:
            stat = os.stat(self._path)  # type: ignore[arg-type]
        except OSError:
            return False
        return (stat.st_dev, stat.st_ino) == self._identity

    def _undo(self, fd: int, written: bytes) -> None:
        """After a failed write: cut only the torn tail of what this write put in the file, so
        the next line does not land behind a torn one. The whole lines before it stay: an
        importer may have read them already (they belong to a delivery that gets 503, so X's
        retry is a duplicate), and cutting below what it read would hide later lines from it.
        If even that fails, give the file up."""
        keep = written.rfind(b"\n") + 1
        try:
            os.ftruncate(fd, self._size + keep)
            self._size += keep
        except OSError:
            self._close_file()

    def append(self, items: Sequence[Inbound], now: float) -> None:
        """Durably note these messages (against the process dying) before X gets its 200.

        Raises :class:`StoreUnavailable` when they could not be written (the webhook answers
        503 and X delivers again)."""
        if not items:
            return
        data = encode(items, now)
        with self._lock:
            for _ in range(3):
                try:
                    if self._fd is None or self._pid != os.getpid():
                        self._fd = None  # a forked child never writes its parent's file
                        self._open()
                    fd = self._fd
                    assert fd is not None
                    view = memoryview(data)
                    try:
                        while view:
                            view = view[os.write(fd, view):]
                    except OSError:
                        self._undo(fd, data[:len(data) - len(view)])
                        raise
                except OSError as exc:
                    raise StoreUnavailable(f"{type(exc).__name__}: {exc.strerror or exc}") from exc
                if self._in_place():
                    self._size += len(data)
                    if self._size >= self.rotate_bytes:
                        self._close_file()
                    return
                # Unlinked or replaced under us: those bytes reached no file an importer reads.
                event(log, "journal.reopened", logging.WARNING, reason="file unlinked or replaced")
                self._close_file()
            raise StoreUnavailable("the journal file keeps disappearing")

    def close(self) -> None:
        with self._lock:
            self._close_file()

    # -- reading (the consumers) ----------------------------------------------------------------
    def import_into(self, store: "JournalStore | None" = None) -> RecordResult:
        """Move what the webhooks wrote into the store: each line once (lines and the files'
        offsets are committed together, and the store de-duplicates anyway), merged across the
        workers' files by arrival time, a chunk of every file that grew at a time until caught
        up; then files whose writers are gone are retired."""
        store = store or self.store
        if store is None:
            raise ValueError("a journal without a store has nowhere to import into")
        total = RecordResult(0, 0, 0)
        while True:
            grown, done = self._grown_and_done(store.journal_offsets())
            more = False

            def read(offsets: Mapping[str, int]) -> tuple[list[str], dict[str, int]]:
                nonlocal more
                lines, ends = [], {}
                for path in grown:
                    got, end, full = self.read_lines(path, offsets.get(path.name, 0))
                    if got:
                        lines += got
                        ends[path.name] = end
                        more = more or full
                    else:
                        done.append(path)  # nothing whole past the offset: maybe a torn tail
                return lines, ends

            result = store.record_lines(read, DECODE) if grown else RecordResult(0, 0, 0)
            total = RecordResult(total.new + result.new, total.duplicates + result.duplicates,
                                 total.ignored + result.ignored, total.wake or result.wake,
                                 total.malformed + result.malformed)
            if done:
                offsets = store.journal_offsets()
                for path in done:
                    if self.retire(path, offsets.get(path.name, 0)):
                        store.forget_journal(path.name)
            if not more:
                return total

    def _grown_and_done(self, offsets: Mapping[str, int]) -> tuple[list[Path], list[Path]]:
        """Files with bytes past their imported offset, and the others (a cheap stat each: the
        store's write lock is taken only when a file grew)."""
        grown, done = [], []
        for path in self.files():
            try:
                (grown if path.stat().st_size > offsets.get(path.name, 0) else done).append(path)
            except FileNotFoundError:
                continue
        return grown, done

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
    def retire(path: Path, imported: int) -> bool:
        """Delete ``path`` if its writer is gone and every whole line in it was imported
        (``imported`` is the offset the store recorded). True when the file is gone.

        Both are decided under an exclusive lock, which a live writer's shared lock refuses: a
        line written just before its writer died is still seen here and imported first. A
        torn last line (no newline) was never acknowledged."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # its writer lives
            os.lseek(fd, imported, os.SEEK_SET)
            while chunk := os.read(fd, READ_LIMIT):
                if b"\n" in chunk:
                    return False  # not imported yet
            _unlink_quietly(path)
            return True
        finally:
            os.close(fd)

    def remove_leftovers(self, older_than: float = 60.0) -> None:
        """Temporary files of writers killed between creating and naming their file: never
        written to, so nothing in them to import."""
        try:
            leftovers = [p for p in self.directory.iterdir() if p.name.endswith(OPENING_SUFFIX)]
        except FileNotFoundError:
            return
        cutoff = time.time() - older_than
        for path in leftovers:
            try:
                if path.stat().st_mtime < cutoff:
                    self.retire(path, 0)
            except FileNotFoundError:
                continue

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

    def pending_bytes(self, offsets: Mapping[str, int] | None = None) -> int:
        """Bytes written and not yet imported (``/healthz``)."""
        if offsets is None:
            offsets = self.store.journal_offsets() if self.store is not None else {}
        total = 0
        for path in self.files():
            try:
                total += max(0, path.stat().st_size - offsets.get(path.name, 0))
            except FileNotFoundError:
                continue
        return total


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class JournalStore(Protocol):
    """What the journal needs of a store: lines and offsets, nothing of files or formats."""

    def journal_offsets(self) -> dict[str, int]: ...

    def record_lines(self, read: Callable[[Mapping[str, int]], tuple[list[str], dict[str, int]]],
                     decode: str) -> RecordResult: ...

    def forget_journal(self, name: str) -> None: ...
