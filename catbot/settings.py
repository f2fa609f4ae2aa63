"""The configuration object every part of the bot receives.

Only ``api_config.py`` reads the environment; it builds a :class:`Settings` and hands it to
the app factory, so tests inject settings instead of mutating ``os.environ``.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Mapping

DEFAULT_X_API_BASE_URL = "https://api.twitter.com"
DEFAULT_CATFACTS_API_URL = "https://catfact.ninja/fact"


def parse_bool(value: str) -> bool:
    """The one reading of a true/false setting (X's and every channel's)."""
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


@dataclass(frozen=True)
class Settings:
    """Everything the bot needs to run. Secrets are kept out of ``repr`` so they never reach logs."""

    consumer_key: str = field(repr=False)
    consumer_secret: str = field(repr=False)
    access_token: str = field(repr=False)
    access_token_secret: str = field(repr=False)
    bearer_token: str = field(default="", repr=False)
    x_api_base_url: str = DEFAULT_X_API_BASE_URL
    catfacts_api_url: str = DEFAULT_CATFACTS_API_URL
    redis_url: str = field(default="", repr=False)  # may embed a password
    sqlite_path: str = "catbot.sqlite3"
    trigger_pattern: str = ""
    replies_per_user_per_hour: int = 5
    x_timeout: float = 10.0
    catfacts_timeout: float = 2.0
    catfacts_max_length: int = 240
    send_max_attempts: int = 8
    daily_send_limit: int = 0  # DMs sent per UTC day at most (0: no limit of the bot's own)
    embedded_consumer: bool = True
    worker_threads: int = 2
    reply_lease_seconds: float = 90.0
    replay_on_start: bool = True
    bot_user_id: str = ""
    log_level: str = "INFO"
    xchat_private_keys: str = field(default="", repr=False)  # the bot's X Chat private-key blob (base64)
    xchat_key_version: str = ""  # the version X gave its public half
    # Channels beside X that are on (catbot.channels), each with its settings by name; secrets inside
    channels: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.bot_user_id:
            # OAuth 1.0a access tokens start with the numeric id of the account they belong to.
            match = re.match(r"^(\d+)-", self.access_token)
            if match:
                object.__setattr__(self, "bot_user_id", match.group(1))

    def replace(self, **changes: object) -> "Settings":
        """A copy with some fields changed (tests and tools use this)."""
        return dataclasses.replace(self, **changes)

    @property
    def x_enabled(self) -> bool:
        """X is answered when its four keys are set (required unless another channel is on)."""
        return bool(self.consumer_key and self.consumer_secret and self.access_token and self.access_token_secret)

    @property
    def xchat_enabled(self) -> bool:
        """X Chat is answered when both of its settings are set (``load_settings`` checks them)."""
        return bool(self.xchat_private_keys and self.xchat_key_version)

    @property
    def trigger_regex(self) -> re.Pattern[str] | None:
        return re.compile(self.trigger_pattern, re.IGNORECASE) if self.trigger_pattern else None
