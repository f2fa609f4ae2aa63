"""Settings and API clients: the one module that reads the environment.

Values come from the process environment or a ``.env`` file beside this module
(python-decouple). ``.env.example`` lists every setting with a comment.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import tweepy
from decouple import AutoConfig

from catbot.settings import DEFAULT_CATFACTS_API_URL, DEFAULT_X_API_BASE_URL, Settings, parse_bool
from catbot.xclient import build_tweepy_client

REQUIRED = ("CONSUMER_KEY", "CONSUMER_SECRET", "ACCESS_TOKEN", "ACCESS_TOKEN_SECRET")
HERE = Path(__file__).resolve().parent


class SettingsError(Exception):
    """Raised with one message that names every missing or invalid setting."""


def load_settings(config: AutoConfig | None = None) -> Settings:
    """Read every setting once. Raises :class:`SettingsError` naming all problems at once."""
    config = config or AutoConfig(search_path=os.environ.get("CATBOT_ENV_DIR", str(HERE)))
    problems: list[str] = []
    channels = _channels(config, problems)
    missing = [name for name in REQUIRED if not config(name, default="").strip()]
    if missing and (len(missing) < len(REQUIRED) or not channels):  # X is off only with another channel on
        problems.append("missing required settings: " + ", ".join(missing))

    def typed(name: str, cast, default):
        raw = config(name, default="").strip()
        if not raw:  # unset and empty both mean the default (a copied .env.example works)
            return default
        try:
            return cast(raw)
        except (ValueError, TypeError) as exc:
            problems.append(f"{name}: {exc}")
            return default

    values = dict(
        x_api_base_url=config("X_API_BASE_URL", default=DEFAULT_X_API_BASE_URL).strip().rstrip("/")
        or DEFAULT_X_API_BASE_URL,
        catfacts_api_url=config("CATFACTS_API_URL", default=DEFAULT_CATFACTS_API_URL).strip(),
        redis_url=config("REDIS_URL", default="").strip(),
        sqlite_path=config("SQLITE_PATH", default="catbot.sqlite3").strip() or "catbot.sqlite3",
        trigger_pattern=config("TRIGGER_PATTERN", default=""),
        replies_per_user_per_hour=typed("REPLIES_PER_USER_PER_HOUR", int, 5),
        x_timeout=typed("X_TIMEOUT", float, 10.0),
        catfacts_timeout=typed("CATFACTS_TIMEOUT", float, 2.0),
        send_max_attempts=typed("SEND_MAX_ATTEMPTS", int, 8),
        daily_send_limit=typed("DAILY_SEND_LIMIT", int, 0),
        embedded_consumer=typed("EMBEDDED_CONSUMER", parse_bool, True),
        worker_threads=typed("WORKER_THREADS", int, 2),
        reply_lease_seconds=typed("REPLY_LEASE_SECONDS", float, 90.0),
        replay_on_start=typed("REPLAY_ON_START", parse_bool, True),
        bot_user_id=config("BOT_USER_ID", default="").strip(),
        log_level=config("LOG_LEVEL", default="INFO").strip().upper() or "INFO",
        xchat_private_keys=config("XCHAT_PRIVATE_KEYS", default="").strip(),
        xchat_key_version=config("XCHAT_KEY_VERSION", default="").strip(),
    )
    problems += xchat_problems(values["xchat_private_keys"], values["xchat_key_version"])
    if values["xchat_private_keys"] and missing:
        problems.append("X Chat (XCHAT_PRIVATE_KEYS) needs X's keys: " + ", ".join(missing))
    if values["trigger_pattern"]:
        try:
            re.compile(values["trigger_pattern"])
        except re.error as exc:
            problems.append(f"TRIGGER_PATTERN is not a valid regular expression: {exc}")
    if not 0 < values["catfacts_timeout"] <= 2:
        problems.append("CATFACTS_TIMEOUT must be more than 0 and at most 2 seconds")
    if values["x_timeout"] <= 0:
        problems.append("X_TIMEOUT must be more than 0 seconds")
    if values["replies_per_user_per_hour"] < 1:
        problems.append("REPLIES_PER_USER_PER_HOUR must be at least 1")
    if values["worker_threads"] < 1:
        problems.append("WORKER_THREADS must be at least 1")
    if values["reply_lease_seconds"] < values["x_timeout"] + values["catfacts_timeout"] + 1:
        problems.append("REPLY_LEASE_SECONDS must exceed X_TIMEOUT + CATFACTS_TIMEOUT by at least 1 second")
    if values["redis_url"] and not re.match(r"^(redis|rediss|unix)://", values["redis_url"]):
        problems.append("REDIS_URL must start with redis://, rediss:// or unix://")
    if values["daily_send_limit"] < 0:
        problems.append("DAILY_SEND_LIMIT must be 0 (no limit) or more")
    if values["send_max_attempts"] < 1:
        problems.append("SEND_MAX_ATTEMPTS must be at least 1")
    if not re.match(r"^https?://[^/\s]+", values["x_api_base_url"]):
        problems.append("X_API_BASE_URL must be an http(s) URL")
    if problems:
        raise SettingsError(
            "catfacts bot cannot start: " + "; ".join(problems)
            + ". Set them in the environment or in a .env file; .env.example lists every setting."
        )
    return Settings(
        consumer_key=config("CONSUMER_KEY", default="").strip(),
        consumer_secret=config("CONSUMER_SECRET", default="").strip(),
        access_token=config("ACCESS_TOKEN", default="").strip(),
        access_token_secret=config("ACCESS_TOKEN_SECRET", default="").strip(),
        bearer_token=config("BEARER_TOKEN", default="").strip(),
        channels=channels,
        **values,
    )


def _channels(config, problems: list[str]) -> dict[str, dict[str, str]]:
    """The settings of each channel beside X that is on (all its required settings set); a
    channel with only some of them is a problem that names the missing ones."""
    from catbot.channels import channel_classes

    found = {}
    for name, cls in channel_classes().items():
        values = {key: config(key, default="").strip() for key in cls.required}
        missing = [key for key, value in values.items() if not value]
        if len(missing) == len(values):
            continue
        if missing:
            problems.append(f"{name} needs {', '.join(missing)} too (set all of {', '.join(cls.required)}, "
                            f"or none to leave {name} off)")
            continue
        values.update({key: config(key, default="").strip() or default for key, default in cls.optional.items()})
        problems += [f"{key} holds a character that is not printable ASCII (an invisible one pasted with it?)"
                     for key, value in values.items() if not all(" " <= c <= "~" for c in value)]
        problems += cls.problems(values)
        found[name] = values
    return found


def xchat_problems(blob: str, version: str) -> list[str]:
    """What is wrong with the X Chat settings, in words that never quote the blob (a secret)."""
    if not blob and not version:
        return []
    if not blob or not version:
        missing, given = ("XCHAT_PRIVATE_KEYS", "XCHAT_KEY_VERSION") if not blob else ("XCHAT_KEY_VERSION",
                                                                                        "XCHAT_PRIVATE_KEYS")
        return [f"{missing} is missing: X Chat needs it with {given} (or neither, to leave X Chat off)"]
    if not re.fullmatch(r"[1-9][0-9]{0,24}", version):
        return ["XCHAT_KEY_VERSION must be the number X gave the registered public key"]
    from catbot.xchat import load_identity  # the Chat XDK is loaded only when X Chat is on

    try:
        load_identity(blob, version, "1")
    except ValueError as exc:
        return [f"XCHAT_PRIVATE_KEYS {exc} (register_webhook.py xchat-keys makes one)"]
    return []


def create_x_client(settings: Settings) -> tweepy.Client:
    """The tweepy client the bot sends DMs with (user context, timeouts, base URL honoured)."""
    return build_tweepy_client(settings)
