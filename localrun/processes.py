"""Local processes for tests, benchmarks and the demo: a free loopback port, and a process in its
own process group with its output in a log file, stopped gracefully or killed whole.

One process group per process, so SIGTERM/SIGKILL reach gunicorn's workers and a worker's
threads too, and nothing is left running when a test or a demo ends.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Sequence

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A process started from the repository root in its own process group."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log_path: Path | None = None, *,
                 stdin=None) -> None:
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=stdin, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the whole process group."""
        os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group. Nothing gets to clean up."""
        self.signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM the process (gunicorn passes it on to its workers); its exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Gracefully if it can, killed if it will not; the log closed."""
        if self.proc.poll() is None:
            try:
                self.signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
                self.terminate(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    self.kill()
                except ProcessLookupError:
                    pass
        if self._log is not subprocess.DEVNULL:
            self._log.close()

    def wait_http(self, url: str, timeout: float = 20.0, ok=lambda response: True) -> None:
        """Until ``url`` answers (and ``ok(response)``), or raise with the log if the process
        exited or the time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                if ok(requests.get(url, timeout=1)):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.args[0]} did not answer {url} within {timeout:.0f} s: {self.log()[-2000:]}")
