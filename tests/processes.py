"""The bot's processes as production runs them (``gunicorn app:app``, ``python -m catbot.worker``),
on the shared process manager in ``localrun/processes.py``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from localrun.processes import ROOT, Process, free_port

__all__ = ["ROOT", "VENV_BIN", "Process", "Worker", "Gunicorn", "bot_env", "free_port"]
VENV_BIN = Path(sys.executable).parent


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
        self.wait_http(self.url + "/healthz", timeout, ok=lambda response: response.status_code == 200)


class Deployment:
    """The bot's web and worker processes for one test, on one store, stopped afterwards.

    ``defaults`` are settings every process gets (a short lease, say); each ``web``/``worker``
    call may add or override some. The first web process is registered at the emulator."""

    def __init__(self, settings, emulator, tmp_path: Path, **defaults: str) -> None:
        self.settings, self.emulator, self.tmp_path, self.defaults = settings, emulator, tmp_path, defaults
        self.started: list[Process] = []

    def env(self, redis_url: str | None = None, **extra: str) -> dict[str, str]:
        settings = self.settings if redis_url is None else self.settings.replace(redis_url=redis_url)
        return bot_env(settings, **{**self.defaults, **extra})

    def web(self, embedded: bool = False, redis_url: str | None = None, **extra: str) -> Gunicorn:
        env = self.env(redis_url, EMBEDDED_CONSUMER="true" if embedded else "false", **extra)
        proc = Gunicorn(env, workers=2, log_path=self.tmp_path / f"web{len(self.started)}.log")
        self.started.append(proc)
        if not self.emulator.webhook_url():
            self.emulator.register(proc.url + "/webhook/twitter")
        return proc

    def worker(self, redis_url: str | None = None, **extra: str) -> Worker:
        proc = Worker(self.env(redis_url, **extra), log_path=self.tmp_path / f"worker{len(self.started)}.log")
        self.started.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.started:
            proc.stop()  # a stopped one is continued first
