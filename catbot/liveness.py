"""Which reply consumers are alive, so a dead one's claims are taken over at once instead of
when their lease runs out.

Every claim's token starts with its holder: one id per consumer process (``holder_id``). A
process announces itself before it claims anything, and the watch (``catbot.runtime``) voids
the claims of holders that are provably gone:

- **SQLite** (one machine): a holder holds a shared ``flock`` on its own file beside the
  database for as long as it lives, like a journal writer (``catbot.journal``); the kernel
  drops the lock when the process dies, however it dies, so "the lock is free" means "gone".
- **Redis** (many machines): a holder refreshes a key with a short TTL; a missing key means it
  died, or stopped long enough (a paused container) that it must not act on its claims. A
  holder that wakes after that finds its claim voided and does not send (see ``renew``).
"""
from __future__ import annotations

import fcntl
import os
import threading
import uuid
from pathlib import Path
from typing import Protocol

SEPARATOR = "."  # token = holder + SEPARATOR + a random part
HEARTBEAT_SECONDS = 3.0
HEARTBEAT_TTL = 12.0  # four missed beats: dead to the others
_LOCK_SUFFIX = ".alive"

_holder = ("", 0)
_holder_lock = threading.Lock()


def holder_id() -> str:
    """This process's id as a claim holder: unique across machines and restarts, new after a
    fork (a child does not inherit its parent's claims)."""
    global _holder
    with _holder_lock:
        if _holder[1] != os.getpid():
            _holder = (f"{os.getpid()}-{uuid.uuid4().hex[:12]}", os.getpid())
        return _holder[0]


def new_token() -> str:
    """A claim token of this process."""
    return f"{holder_id()}{SEPARATOR}{uuid.uuid4().hex}"


def holder_of(token: str) -> str:
    return token.split(SEPARATOR, 1)[0]


class Liveness(Protocol):
    def announce(self) -> None:
        """Declare this process alive (idempotent; call before claiming anything)."""

    def beat(self) -> None:
        """Keep this process's declaration fresh (called every ``HEARTBEAT_SECONDS``)."""

    def alive(self, holder: str) -> bool:
        """False only when ``holder`` is provably gone (or, on Redis, silent for too long)."""

    @property
    def proves_death(self) -> bool:
        """Whether ``alive() == False`` proves the holder can act no more (so even a claim it
        renewed to send may be taken over at once)."""


class LockFiles:
    """Liveness on one machine: a locked file per live holder (the embedded default)."""

    proves_death = True  # a free lock, or no file and no such process: it cannot send any more

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._fd: tuple[int, int, tuple[int, int]] | None = None  # (descriptor, pid, (st_dev, st_ino))
        self._lock = threading.Lock()

    def _path(self, holder: str) -> Path:
        return self.directory / (holder + _LOCK_SUFFIX)

    def announce(self) -> None:
        with self._lock:
            if self._fd is not None and self._fd[1] == os.getpid():
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            final = self._path(holder_id())
            temporary = final.with_suffix(".opening")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)  # locked before it is visible, as journals are
            os.rename(temporary, final)
            stat = os.fstat(fd)
            self._fd = (fd, os.getpid(), (stat.st_dev, stat.st_ino))

    def beat(self) -> None:
        """The kernel holds the lock for as long as the process lives; but if the file was
        deleted or replaced (a clean-up, an operator), announce again."""
        with self._lock:
            if self._fd is None or self._fd[1] != os.getpid():
                return
            try:
                stat = os.stat(self._path(holder_id()))
                if (stat.st_dev, stat.st_ino) == self._fd[2]:
                    return
            except OSError:
                pass
            os.close(self._fd[0])
            self._fd = None
        self.announce()

    def alive(self, holder: str) -> bool:
        path = self._path(holder)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return _process_exists(holder)  # no file proves nothing while its process runs
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        else:
            path.unlink(missing_ok=True)  # its holder is gone: the file has served its purpose
            return False
        finally:
            os.close(fd)


class Heartbeats:
    """Liveness across machines: ``catbot:alive:<holder>`` with a TTL, refreshed by a beat."""

    proves_death = False  # a silent holder may only be paused, its DM on the wire

    def __init__(self, client) -> None:
        self.client = client
        self._announced = 0  # pid

    def _key(self, holder: str) -> str:
        return f"catbot:alive:{holder}"

    def announce(self) -> None:
        if self._announced != os.getpid():
            self.beat()
            self._announced = os.getpid()

    def beat(self) -> None:
        self.client.set(self._key(holder_id()), "1", px=int(HEARTBEAT_TTL * 1000))

    def alive(self, holder: str) -> bool:
        return bool(self.client.exists(self._key(holder)))


def _process_exists(holder: str) -> bool:
    """Whether the process named in ``holder`` (``<pid>-<random>``) still exists on this machine."""
    try:
        pid = int(holder.split("-", 1)[0])
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return pid > 0
