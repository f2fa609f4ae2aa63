"""Helpers for tests that run the bot as production does: ``gunicorn app:app`` in a process."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bot_env(settings, **extra: str) -> dict[str, str]:
    """The environment that makes ``api_config.load_settings`` produce ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUMER_", "ACCESS_TOKEN", "X_API",
                                                                     "CATFACTS", "REDIS", "SQLITE"))}
    env.update(REDIS_URL=settings.redis_url, CONSUMER_KEY=settings.consumer_key, CONSUMER_SECRET=settings.consumer_secret,
               ACCESS_TOKEN=settings.access_token, ACCESS_TOKEN_SECRET=settings.access_token_secret,
               X_API_BASE_URL=settings.x_api_base_url, CATFACTS_API_URL=settings.catfacts_api_url,
               SQLITE_PATH=settings.sqlite_path, X_TIMEOUT=str(settings.x_timeout),
               CATBOT_ENV_DIR=str(Path(settings.sqlite_path).parent), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class Process:
    """A bot process in its own process group, with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path | None) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill(self) -> None:
        """SIGKILL the whole process group. Nothing gets to clean up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 40.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.terminate(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not subprocess.DEVNULL:
            self._log.close()


class Worker(Process):
    """``python -m catbot.worker``, the Procfile's worker line."""

    def __init__(self, env: dict[str, str], log_path: Path | None = None) -> None:
        super().__init__([sys.executable, "-m", "catbot.worker"], env, log_path)


class Gunicorn(Process):
    """``gunicorn app:app`` from the repository root, as the Procfile runs it.

    ``workers=None`` passes no ``-w``, so the worker count comes from ``gunicorn.conf.py`` (and
    ``WEB_CONCURRENCY``) exactly as in production; ``extra_args`` are further command-line flags."""

    def __init__(self, env: dict[str, str], workers: int | None = 2, log_path: Path | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [str(VENV_BIN / "gunicorn"), "app:app", "-b", f"127.0.0.1:{self.port}"]
        if workers is not None:
            args += ["-w", str(workers)]
        super().__init__(args + list(extra_args), env, log_path)
        self.wait_healthy()

    def worker_pids(self) -> list[int]:
        """The master's children: its workers (a worker killed and replaced shows as a new pid)."""
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return sorted(int(pid) for pid in out.stdout.split())

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}: {self.log()}")
            try:
                if requests.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not become healthy: " + self.log())
