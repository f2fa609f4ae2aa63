"""Settings: read once, every problem named at once, secrets never shown."""
import re

import pytest
from decouple import Config, RepositoryEnv

from api_config import SettingsError, load_settings
from helpers import xchat_keys

FULL = {"CONSUMER_KEY": "ck", "CONSUMER_SECRET": "cs-very-secret", "ACCESS_TOKEN": "2000000001-at",
        "ACCESS_TOKEN_SECRET": "ats-very-secret"}


def config(tmp_path, values):
    env = tmp_path / ".env"
    env.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return Config(RepositoryEnv(str(env)))


def test_all_missing_settings_are_named_in_one_message(tmp_path):
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, {"CONSUMER_KEY": "ck"}))
    message = str(err.value)
    assert "CONSUMER_SECRET, ACCESS_TOKEN, ACCESS_TOKEN_SECRET" in message
    assert ".env.example" in message


def test_defaults(tmp_path):
    s = load_settings(config(tmp_path, FULL))
    assert s.x_api_base_url == "https://api.twitter.com"
    assert s.catfacts_api_url == "https://catfact.ninja/fact"
    assert s.replies_per_user_per_hour == 5
    assert s.catfacts_timeout <= 2
    assert s.bot_user_id == "2000000001"  # from the access token


def test_empty_catfacts_url_means_bundled_only(tmp_path):
    assert load_settings(config(tmp_path, {**FULL, "CATFACTS_API_URL": ""})).catfacts_api_url == ""


def test_secrets_are_not_in_repr(tmp_path):
    s = load_settings(config(tmp_path, {**FULL, "BEARER_TOKEN": "bearer-very-secret",
                                        "REDIS_URL": "redis://:pw-very-secret@host:6379"}))
    text = repr(s)
    for secret in ("cs-very-secret", "ats-very-secret", "bearer-very-secret", "pw-very-secret"):
        assert secret not in text


@pytest.mark.parametrize("name,value,fragment", [
    ("TRIGGER_PATTERN", "([a-", "TRIGGER_PATTERN"),
    ("REPLIES_PER_USER_PER_HOUR", "many", "REPLIES_PER_USER_PER_HOUR"),
    ("REPLIES_PER_USER_PER_HOUR", "0", "REPLIES_PER_USER_PER_HOUR"),
    ("CATFACTS_TIMEOUT", "5", "CATFACTS_TIMEOUT"),
    ("X_API_BASE_URL", "ftp://x", "X_API_BASE_URL"),
    ("EMBEDDED_CONSUMER", "perhaps", "EMBEDDED_CONSUMER"),
])
def test_invalid_values_are_named(tmp_path, name, value, fragment):
    with pytest.raises(SettingsError, match=fragment):
        load_settings(config(tmp_path, {**FULL, name: value}))


def test_a_copied_env_example_with_keys_filled_in_loads(tmp_path):
    from pathlib import Path
    text = (Path(__file__).parent.parent / ".env.example").read_text()
    for name, value in FULL.items():  # whole lines: LINE_CHANNEL_ACCESS_TOKEN is not ACCESS_TOKEN
        text = re.sub(rf"^{name}=$", f"{name}={value}", text, flags=re.MULTILINE)
    (tmp_path / ".env").write_text(text)
    s = load_settings(Config(RepositoryEnv(str(tmp_path / ".env"))))
    assert s.replies_per_user_per_hour == 5 and s.catfacts_api_url == "https://catfact.ninja/fact"


def test_daily_send_limit_is_off_by_default_and_never_negative(tmp_path):
    assert load_settings(config(tmp_path, FULL)).daily_send_limit == 0
    assert load_settings(config(tmp_path, {**FULL, "DAILY_SEND_LIMIT": "500"})).daily_send_limit == 500
    with pytest.raises(SettingsError, match="DAILY_SEND_LIMIT"):
        load_settings(config(tmp_path, {**FULL, "DAILY_SEND_LIMIT": "-1"}))


def test_x_chat_is_off_without_its_settings(tmp_path):
    assert not load_settings(config(tmp_path, FULL)).xchat_enabled


def test_x_chat_is_on_with_a_blob_that_loads(tmp_path):
    blob, version, _ = xchat_keys()
    s = load_settings(config(tmp_path, {**FULL, "XCHAT_PRIVATE_KEYS": blob, "XCHAT_KEY_VERSION": version}))
    assert s.xchat_enabled and s.xchat_key_version == version
    assert blob not in repr(s)


@pytest.mark.parametrize("given, missing", [("XCHAT_PRIVATE_KEYS", "XCHAT_KEY_VERSION"),
                                            ("XCHAT_KEY_VERSION", "XCHAT_PRIVATE_KEYS")])
def test_one_x_chat_setting_without_the_other_is_named(tmp_path, given, missing):
    blob, version, _ = xchat_keys()
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, {**FULL, given: blob if given == "XCHAT_PRIVATE_KEYS" else version}))
    assert f"{missing} is missing" in str(err.value)
    assert blob not in str(err.value)


@pytest.mark.parametrize("bad", ["not base64 at all!", "c2hvcnQ=", "A" * 88])
def test_a_blob_that_does_not_load_is_named_and_never_quoted(tmp_path, bad):
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, {**FULL, "XCHAT_PRIVATE_KEYS": bad, "XCHAT_KEY_VERSION": "1700000000000"}))
    message = str(err.value)
    assert "XCHAT_PRIVATE_KEYS" in message and bad not in message


TELEGRAM = {"TELEGRAM_BOT_TOKEN": "7000000001:AAEsetting-test-token", "TELEGRAM_SECRET_TOKEN": "a-secret_token-1"}


def test_a_channel_with_only_some_of_its_settings_is_named_with_what_is_missing(tmp_path):
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, {**FULL, "TELEGRAM_BOT_TOKEN": TELEGRAM["TELEGRAM_BOT_TOKEN"]}))
    assert "telegram needs TELEGRAM_SECRET_TOKEN" in str(err.value)
    assert TELEGRAM["TELEGRAM_BOT_TOKEN"] not in str(err.value)


def test_x_keys_are_optional_when_another_channel_is_on(tmp_path):
    s = load_settings(config(tmp_path, TELEGRAM))
    assert not s.x_enabled and set(s.channels) == {"telegram"}


def test_some_of_xs_keys_are_still_an_error_beside_another_channel(tmp_path):
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, {**TELEGRAM, "CONSUMER_KEY": "ck"}))
    assert "CONSUMER_SECRET, ACCESS_TOKEN, ACCESS_TOKEN_SECRET" in str(err.value)


def test_a_channels_own_check_of_its_settings_stops_the_bot_at_start(tmp_path):
    with pytest.raises(SettingsError) as err:
        load_settings(config(tmp_path, {**TELEGRAM, "TELEGRAM_SECRET_TOKEN": "has spaces and !"}))
    assert "TELEGRAM_SECRET_TOKEN" in str(err.value) and "has spaces" not in str(err.value)
