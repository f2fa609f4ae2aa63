"""X Chat with the bot's real processes (issue 13's "Done when"): gunicorn as the Procfile runs
it, ``python -m catbot.worker`` consumers, SQLite files and a redis-server; SIGKILL; and a search
of everything the bot wrote for the users' words and the private keys."""
import base64
import threading

import pytest
import redis as redis_lib

from catbot.replies import FACT_OPENERS, HELP_TEXT, START_TEXT, STOP_TEXT
from helpers import BOT_ID, counts, wait_until, xchat_keys
from processes import Deployment

SECRET_WORDS = "violet-armadillo-tango"  # in every message a user writes below: findable if written anywhere


@pytest.fixture(params=["sqlite", "redis"])
def chat_bot(request, settings, emulator, tmp_path):
    """The bot with X Chat on, on the embedded SQLite file or on the test's redis-server."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else ""
    blob, version, public = xchat_keys()
    emulator.set_public_keys(BOT_ID, public)
    emulator.set_rate_limit(1000, 900)
    deployment = Deployment(settings.replace(redis_url=redis_url), emulator, tmp_path, REPLY_LEASE_SECONDS="5",
                            X_TIMEOUT="2", CATFACTS_TIMEOUT="1", REPLAY_ON_START="false",
                            XCHAT_PRIVATE_KEYS=blob, XCHAT_KEY_VERSION=version, LOG_LEVEL="DEBUG")
    deployment.backend, deployment.blob, deployment.redis_url = request.param, blob, redis_url
    yield deployment
    deployment.stop()


def chat_texts(emulator, user):
    return [m.text for m in emulator.sent_to(user) if m.channel == "xchat"]


def say_and_wait(emulator, web, user, text, replies_before, fault=None, expect_reply=True) -> str:
    message_id, answer = emulator.deliver_chat(user, text, fault=fault, url=web.url + "/webhook/twitter")
    assert answer.status_code == 200
    if expect_reply:
        assert wait_until(lambda: len(chat_texts(emulator, user)) > replies_before, 20), text
    return message_id


def _written_by_the_bot(deployment) -> bytes:
    """Every byte the bot's processes wrote: their logs, the SQLite files and journal (here),
    and on Redis every key and value."""
    found = b""
    for path in sorted(deployment.tmp_path.rglob("*")):
        if path.is_file():
            found += path.read_bytes()
    if deployment.redis_url:
        client = redis_lib.Redis.from_url(deployment.redis_url)
        for key in client.scan_iter("*"):
            found += key + (client.dump(key) or b"")
            kind = client.type(key)
            if kind == b"string":
                found += client.get(key) or b""
            elif kind == b"hash":
                found += b"".join(k + v for k, v in client.hgetall(key).items())
            elif kind == b"list":
                found += b"".join(client.lrange(key, 0, -1))
            elif kind == b"zset":
                found += b"".join(client.zrange(key, 0, -1))
            elif kind == b"set":
                found += b"".join(client.smembers(key))
    return found


def test_a_conversation_through_gunicorn_is_answered_and_no_plaintext_or_key_is_written(chat_bot, emulator):
    web = chat_bot.web(embedded=chat_bot.backend == "sqlite")
    if chat_bot.backend == "redis":
        chat_bot.worker()
    user = "3000000801"
    first = say_and_wait(emulator, web, user, f"hello {SECRET_WORDS}", 0)
    assert emulator.redeliver(first, web.url + "/webhook/twitter").status_code == 200  # X delivers it again
    say_and_wait(emulator, web, user, "help", 1)
    say_and_wait(emulator, web, user, "stop", 2)
    say_and_wait(emulator, web, user, f"still there? {SECRET_WORDS}", 3, expect_reply=False)
    say_and_wait(emulator, web, user, "start", 3)
    say_and_wait(emulator, web, user, f"one more {SECRET_WORDS}", 4, fault="rotate")
    replies = chat_texts(emulator, user)
    assert replies[0].split("\n", 1)[0] in FACT_OPENERS and replies[1:4] == [HELP_TEXT, STOP_TEXT, START_TEXT]
    assert replies[4].split("\n", 1)[0] in FACT_OPENERS and len(replies) == 5
    written = _written_by_the_bot(chat_bot)
    assert b"event=reply.sent" in written  # the logs were read (at DEBUG): the search can find things
    for secret in (SECRET_WORDS, chat_bot.blob, *replies):
        assert secret.encode() not in written, secret[:30]
    assert base64.b64decode(chat_bot.blob) not in written


def test_sigkill_between_claim_and_send_loses_no_x_chat_reply(chat_bot, emulator, facts_api):
    facts_api.mode = "slow"  # the consumer dies while it waits for a fact: claimed, not yet sent
    web = chat_bot.web()
    worker = chat_bot.worker()
    _, answer = emulator.deliver_chat("3000000802", "hi", url=web.url + "/webhook/twitter")
    assert answer.status_code == 200
    assert wait_until(lambda: len(facts_api.calls) >= 1, 15)
    worker.kill()
    facts_api.mode = "ok"
    chat_bot.worker()
    assert wait_until(lambda: len(chat_texts(emulator, "3000000802")) >= 1, 30)
    assert wait_until(lambda: False, 2) is False  # and nothing more arrives
    assert counts(emulator) == {"3000000802": 1}


def test_two_web_processes_and_a_worker_on_redis_answer_each_message_once_across_a_rotation(
        settings, emulator, tmp_path, redis_url):
    """Messages of one conversation land on different processes, each with its own SDK
    instance; the key change (first message) and the rotation (second) arrive once each."""
    blob, version, public = xchat_keys()
    emulator.set_public_keys(BOT_ID, public)
    emulator.set_rate_limit(1000, 900)
    deployment = Deployment(settings.replace(redis_url=redis_url), emulator, tmp_path, REPLY_LEASE_SECONDS="5",
                            X_TIMEOUT="2", CATFACTS_TIMEOUT="1", REPLAY_ON_START="false",
                            XCHAT_PRIVATE_KEYS=blob, XCHAT_KEY_VERSION=version)
    try:
        webs = [deployment.web(embedded=True), deployment.web(embedded=True)]
        deployment.worker()
        users = [str(3000000810 + i) for i in range(4)]
        for round_, fault in enumerate((None, "rotate", None)):
            threads = [threading.Thread(target=say_and_wait, args=(emulator, webs[(i + round_) % 2], user,
                                                                    f"round {round_}", round_, fault))
                       for i, user in enumerate(users)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert wait_until(lambda: False, 2) is False  # late duplicates would show by now
        assert counts(emulator) == {user: 3 for user in users}
        assert emulator.rejected == []
    finally:
        deployment.stop()
