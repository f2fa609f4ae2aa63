"""The store's guarantees across connections and processes, on both backends: one SQLite
file, or one Redis."""
import multiprocessing
import time

import pytest

from catbot.budget import RateWindow, budget_verdict, daily_window, next_utc_midnight
from catbot.replies import Intent
from catbot.runtime import open_backend
from catbot.store import Completion, Inbound
from catbot.store.redis import RedisStore
from catbot.store.sqlite import SqliteStore


@pytest.fixture(params=["sqlite", "redis"])
def opener(request, tmp_path):
    """A function that opens a new connection to the same store (what another process does)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return lambda: RedisStore(url)
    path = str(tmp_path / "s.sqlite3")
    return lambda: SqliteStore(path)


def dm(event_id: str, sender: str = "3000000002", intent: Intent = Intent.FACT) -> Inbound:
    return Inbound("x_dm", "2000000001", sender, event_id, intent, int(event_id))


def _claim_all(opener, out) -> None:
    store = opener()
    got = []
    while (batch := store.claim_next(time.time(), 60)) is not None:
        got.append(batch.user_id)
    out.put(got)


@pytest.mark.processes
def test_each_batch_is_claimed_by_exactly_one_process(opener):
    store = opener()
    store.record([dm(str(i), sender=str(3000 + i), intent=Intent.FACT) for i in range(200)], time.time())
    out = multiprocessing.get_context("fork").Queue()
    procs = [multiprocessing.get_context("fork").Process(target=_claim_all, args=(opener, out)) for _ in range(4)]
    for p in procs:
        p.start()
    claims = [user for _ in procs for user in out.get(timeout=30)]
    for p in procs:
        p.join()
    assert sorted(claims) == sorted(str(3000 + i) for i in range(200))


def test_an_expired_lease_lets_another_consumer_take_over(opener):
    store = opener()
    store.record([dm("1", intent=Intent.FACT)], 1000.0)
    first = store.claim_next(1000.0, lease=60)
    assert store.claim_next(1030.0, lease=60) is None  # still held
    second = store.claim_next(1061.0, lease=60)  # the holder died; the lease ran out
    assert second is not None and second.token != first.token
    assert store.complete(first, Completion(opted_out=False, sent=True), 1062.0) is False  # stale holder
    assert store.complete(second, Completion(opted_out=False, sent=True), 1062.0) is True


def test_records_are_durable_across_connections(opener):
    opener().record([dm("1", intent=Intent.FACT)], time.time())
    reopened = opener()
    assert reopened.health()["pending_messages"] == 1
    assert reopened.record([dm("1", intent=Intent.FACT)], time.time()).duplicates == 1


def test_budget_is_shared_and_respected(opener):
    a, b = opener(), opener()
    assert a.reserve_send(1000.0, "t1", 30) is None  # nothing known yet: one probe
    assert b.reserve_send(1000.0, "t2", 30) == 1001.0  # the probe is in flight: wait
    a.settle_send("t1", [RateWindow("dm", 2, 2000.0, 15)], 1000.5)
    assert b.reserve_send(1000.5, "t2", 30) is None  # 2 left, none in flight
    assert a.reserve_send(1000.5, "t3", 30) is None  # 2 left, 1 in flight
    assert b.reserve_send(1000.5, "t4", 30) is not None  # 2 left, 2 in flight: no more
    a.settle_send("t2", [RateWindow("dm", 1, 2000.0, 15)], 1001.0)
    b.settle_send("t3", [RateWindow("dm", 0, 2000.0, 15)], 1001.0)
    assert b.reserve_send(1001.0, "t4", 30) == 2000.0  # spent: wait for the reset
    assert b.reserve_send(2001.0, "t4", 30) is None  # a new window: the known limit applies


def test_a_dead_senders_reservation_lapses(opener):
    a, b = opener(), opener()
    assert a.reserve_send(1000.0, "dies", hold=5) is None  # never settled
    assert b.reserve_send(1002.0, "t2", 30) == 1003.0
    assert b.reserve_send(1006.0, "t2", 30) is None


def test_budget_verdict_rule():
    now = 1000.0
    assert budget_verdict([], 0, now) is None
    assert budget_verdict([], 1, now) == now + 1
    assert budget_verdict([(3, 1900.0, 15)], 2, now) is None
    assert budget_verdict([(3, 1900.0, 15)], 3, now) == now + 1  # in flight may free up slots
    assert budget_verdict([(0, 1900.0, 15)], 0, now) == 1900.0
    assert budget_verdict([(5, 1900.0, 15), (0, 90000.0, 1440)], 0, now) == 90000.0  # the 24 h window
    assert budget_verdict([(0, 900.0, 15)], 14, now) is None  # reset passed: 15 - 14 in flight
    assert budget_verdict([(0, 900.0, 15)], 15, now) == now + 1


def test_messages_arriving_during_a_send_are_absorbed_up_to_the_next_command(opener):
    store = opener()
    store.record([dm("1", intent=Intent.FACT)], 1000.0)
    batch = store.claim_next(1000.0, lease=60)
    store.record([dm("2", intent=Intent.FACT), dm("3", intent=Intent.FACT), dm("4", intent=Intent.STOP), dm("5", intent=Intent.FACT)],
                 1001.0)
    assert store.complete(batch, Completion(opted_out=False, sent=True, absorb_facts=True), 1002.0)
    following = store.claim_next(1003.0, lease=60)
    assert following.intents == (Intent.STOP, Intent.FACT)


def test_a_retry_waits_for_its_time(opener):
    store = opener()
    store.record([dm("1", intent=Intent.FACT)], 1000.0)
    batch = store.claim_next(1000.0, lease=60)
    store.release(batch, not_before=1010.0, count_attempt=True)
    assert store.claim_next(1005.0, lease=60) is None
    assert store.next_due(1005.0) == 1010.0
    again = store.claim_next(1010.0, lease=60)
    assert again.attempts == 1


def test_once_only_lease(opener):
    a, b = opener(), opener()
    assert a.try_lease("sweep", 0.3, time.time()) is True
    assert b.try_lease("sweep", 0.3, time.time()) is False
    time.sleep(0.35)
    assert b.try_lease("sweep", 0.3, time.time()) is True


def test_prune_forgets_old_ids_only(tmp_path):
    store = SqliteStore(str(tmp_path / "s.sqlite3"))
    store.record([dm("1", intent=Intent.IGNORE)], 1000.0)
    store.record([dm("2", intent=Intent.IGNORE)], 1000.0 + 8 * 86400)
    store.prune(1000.0 + 8 * 86400)
    assert store.record([dm("1", intent=Intent.IGNORE)], 1000.0 + 8 * 86400).duplicates == 0
    assert store.record([dm("2", intent=Intent.IGNORE)], 1000.0 + 8 * 86400).duplicates == 1


def test_a_user_answered_with_more_waiting_goes_to_the_back_of_the_line(opener):
    store = opener()
    store.record([dm("1", "3001", intent=Intent.FACT), dm("2", "3002", intent=Intent.FACT)], 1000.0)
    first = store.claim_next(1000.0, lease=60)
    assert first.user_id == "3001"
    store.record([dm("3", "3001", intent=Intent.HELP)], 1000.5)  # while 3001's reply is in flight
    store.complete(first, Completion(opted_out=False, sent=True), 1001.0)
    store.record([dm("4", "3003", intent=Intent.FACT)], 1001.5)
    assert [store.claim_next(1002.0, 60).user_id for _ in range(2)] == ["3002", "3001"]


def test_one_wake_up_per_pass_not_per_message(opener):
    store = opener()
    assert store.record([dm("1", intent=Intent.FACT)], 1000.0).wake is True
    assert store.record([dm("2", "3003", intent=Intent.FACT)], 1000.1).wake is False  # one is pending already
    assert store.record([dm("2", "3003", intent=Intent.FACT)], 1000.1).wake is False  # a duplicate never wakes
    store.take_wake()  # a consumer starts its pass
    assert store.record([dm("3", "3004", intent=Intent.FACT)], 1000.2).wake is True


# -- a lost lease (issue 10, items 5 and 7) ---------------------------------------------------------
def test_a_completion_from_a_lost_lease_cannot_undo_a_stop(opener):
    """"hi", the first consumer stalls past its lease, "stop", the second consumer confirms it;
    the first wakes and completes: only its send is counted, the opt-out stands."""
    store = opener()
    store.record([dm("1", intent=Intent.FACT)], 1000.0)
    stale = store.claim_next(1000.0, lease=60)
    store.record([dm("2", intent=Intent.STOP)], 1010.0)
    current = store.claim_next(1061.0, lease=60)
    assert current.intents == (Intent.FACT, Intent.STOP)
    assert store.complete(current, Completion(opted_out=True, sent=True), 1062.0) is True
    assert store.complete(stale, Completion(opted_out=False, sent=True, absorb_facts=True), 1063.0) is False
    store.record([dm("3", intent=Intent.FACT)], 1070.0)
    again = store.claim_next(1070.0, lease=60)
    assert again.opted_out is True and again.intents == (Intent.FACT,)  # still opted out, message kept
    assert store.sent_since("2000000001", "3000000002", 1000.0) == 2  # both DMs that went out count


def test_renew_tells_a_stalled_holder_its_claim_is_gone(opener):
    store = opener()
    store.record([dm("1", intent=Intent.FACT)], 1000.0)
    stale = store.claim_next(1000.0, lease=60)
    assert store.renew(stale, 1030.0, lease=60) is True  # still ours: held until 1090 now
    assert store.claim_next(1061.0, lease=60) is None
    current = store.claim_next(1091.0, lease=60)
    assert store.renew(stale, 1092.0, lease=60) is False  # must not send
    assert store.renew(current, 1092.0, lease=60) is True


def test_claims_of_a_dead_holder_are_voided_at_once(opener):
    store = opener()
    store.record([dm("1", intent=Intent.FACT), dm("2", sender="3000000003", intent=Intent.FACT)], 1000.0)
    dead = store.claim_next(1000.0, lease=60)
    assert store.reserve_send(1000.0, dead.token, hold=30) is None  # one probe in flight...
    alive = store.claim_next(1000.0, lease=60)
    assert store.reserve_send(1000.0, "someone", hold=30) == 1001.0  # ...so nobody else may send
    # Both claims come from this process in this test: pretend the first one's holder died.
    dead_holder = "0-deadbeef0000"
    dead = _with_token(store, dead, dead_holder + ".x")
    voided = store.void_leases(1001.0, lambda holder: holder != dead_holder)
    assert voided == 1
    assert store.reserve_send(1001.0, "someone", hold=30) is None  # its reservation went with it
    assert store.renew(dead, 1002.0, lease=60) is False
    assert store.renew(alive, 1002.0, lease=60) is True
    taken = store.claim_next(1002.0, lease=60)
    assert taken is not None and taken.user_id == dead.user_id  # long before the lease ends at 1060
    assert store.void_leases(1003.0, lambda holder: True) == 0


def _with_token(store, batch, token):
    """Give a claim another holder's token, as if another process had made it."""
    import dataclasses
    key = (batch.for_user_id, batch.user_id)
    if isinstance(store, SqliteStore):
        with store._tx() as db:
            db.execute("update catbot_users set claim_token = ? where for_user_id = ? and user_id = ?", (token, *key))
            db.execute("update catbot_inflight set token = ? where token = ?", (token, batch.token))
    else:
        store.client.hset(f"catbot:user:{key[0]}:{key[1]}", "token", token)
        score = store.client.zscore("catbot:inflight", batch.token)
        if score is not None:
            store.client.zrem("catbot:inflight", batch.token)
            store.client.zadd("catbot:inflight", {token: score})
    return dataclasses.replace(batch, token=token)


def test_a_claim_renewed_for_its_send_is_never_voided_only_its_lease_ends_it(opener):
    """Once a holder renewed to send, a missed heartbeat (a pause, a Redis outage) or a deleted
    lock file is no proof it will not finish the send: voiding it then would send twice."""
    store = opener()
    store.record([dm("1")], 1000.0)
    batch = _with_token(store, store.claim_next(1000.0, lease=60), "0-deadbeef0001.x")
    assert store.renew(batch, 1001.0, lease=60)
    assert store.void_leases(1002.0, lambda holder: False) == 0
    assert store.claim_next(1002.0, lease=60) is None
    assert store.renew(batch, 1003.0, lease=60)  # still ours: the send may go on
    assert store.claim_next(1064.0, lease=60) is not None  # the lease, and only it, ends a sending claim


def test_claims_in_the_format_before_holders_are_left_to_their_lease(opener):
    """During an upgrade an old consumer may still be sending under a token that names no
    holder: it cannot be proven dead."""
    store = opener()
    store.record([dm("1")], 1000.0)
    old = _with_token(store, store.claim_next(1000.0, lease=60), "0123456789abcdef0123456789abcdef")
    assert store.void_leases(1001.0, lambda holder: False) == 0
    assert store.renew(old, 1002.0, lease=60)


def test_a_sends_reservation_lasts_as_long_as_its_claim_and_ends_with_its_count(opener):
    """A sender that stalls after X's 201 past the reservation's hold must still be counted as
    in flight, or another consumer would exceed X's window or DAILY_SEND_LIMIT."""
    store = opener()
    store.settle_send("probe", [RateWindow("dm", 1, 5000.0, 15)], 999.0)  # X: one send left
    store.record([dm("1")], 1000.0)
    batch = store.claim_next(1000.0, lease=60)
    assert store.reserve_send(1000.0, batch.token, hold=8) is None
    assert store.renew(batch, 1001.0, lease=60)
    assert store.reserve_send(1010.0, "another", hold=8) is not None  # past the hold: still in flight
    assert store.complete(batch, Completion(opted_out=False, sent=True), 1011.0)
    assert store.reserve_send(1011.0, "x", hold=8) is None  # the reservation went with the completion


def test_the_daily_cap_does_not_switch_off_probing_an_unknown_window():
    now = 1000.0
    assert budget_verdict([], 1, now, cap=daily_window(100, 0, now)) == now + 1.0  # one probe at a time
    assert budget_verdict([], 0, now, cap=daily_window(100, 0, now)) is None
    assert budget_verdict([], 0, now, cap=daily_window(100, 100, now)) == next_utc_midnight(now)


_BEFORE_KINDS = """
create table catbot_inbox (seq integer primary key autoincrement, for_user_id text not null,
    user_id text not null, event_id text not null, intent text not null, created_ms integer not null,
    received_at real not null);
create table catbot_users (for_user_id text not null, user_id text not null,
    opted_out integer not null default 0, claimed_until real not null default 0, claim_token text,
    not_before real not null default 0, attempts integer not null default 0, fact_seed integer not null,
    fact_pos integer not null default 0, queue_pos real, primary key (for_user_id, user_id)) without rowid;
create table catbot_leases (name text primary key, holder text not null, until real not null);
insert into catbot_inbox (for_user_id, user_id, event_id, intent, created_ms, received_at)
    values ('2000000001', '3000000002', '1800', 'fact', 1, 1000.0);
insert into catbot_users (for_user_id, user_id, fact_seed, queue_pos) values ('2000000001', '3000000002', 7, 1000.0);
"""


def _at_barrier(open_, arg, barrier, out) -> None:
    barrier.wait()
    try:
        open_(arg)
        out.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out.put(repr(exc))


def _opened_together(open_, arg, count: int = 3) -> list[str]:
    """``open_(arg)`` in ``count`` forked processes at once, as gunicorn's workers boot: "ok" or
    the error, from each."""
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(count), ctx.Queue()
    procs = [ctx.Process(target=_at_barrier, args=(open_, arg, barrier, out)) for _ in range(count)]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join()
    return results


@pytest.mark.processes
def test_a_file_from_before_is_migrated_once_when_two_workers_open_it_together(tmp_path):
    import sqlite3
    path = str(tmp_path / "old.sqlite3")
    old = sqlite3.connect(path)
    old.execute("pragma journal_mode=wal")  # as the earlier version kept it
    old.executescript(_BEFORE_KINDS)
    old.close()
    assert _opened_together(SqliteStore, path) == ["ok"] * 3
    batch = SqliteStore(path).claim_next(2000.0, 60)
    assert (batch.kind, batch.user_id, batch.intents) == ("x_dm", "3000000002", (Intent.FACT,))  # read as a DM


@pytest.mark.processes
def test_workers_booting_together_on_a_new_file_all_start(settings, tmp_path):
    """gunicorn halts when a worker fails to boot, and every dyno starts on a new SQLite file:
    switching a new file to WAL fails at once ("database is locked", SQLite does not wait on
    it) for whichever worker comes second, so about one start in ten took the bot down."""
    failures = []
    for round_ in range(40):
        fresh = settings.replace(sqlite_path=str(tmp_path / f"new-{round_}.sqlite3"))
        failures += [result for result in _opened_together(open_backend, fresh) if result != "ok"]
    assert failures == []


def test_a_claim_renewed_to_send_is_voided_when_its_holders_death_is_proven(opener):
    """A process that provably died (its lock released by the kernel) sends nothing more: its
    claim, even mid-send, is taken over at once (X may have accepted that send: the one
    duplicate window, as after the lease)."""
    store = opener()
    store.record([dm("1")], 1000.0)
    batch = _with_token(store, store.claim_next(1000.0, lease=60), "0-deadbeef0002.x")
    assert store.renew(batch, 1001.0, lease=60)
    assert store.void_leases(1002.0, lambda holder: False, sending_too=True) == 1
    assert store.claim_next(1002.0, lease=60) is not None


def test_chat_key_changes_are_kept_once_per_version_and_shared(opener):
    """Any process may have to open a conversation's next message: the key change one process
    verified is there for every other, and a second keeping of a version changes nothing."""
    one, other = opener(), opener()
    one.keep_chat_key("2000000001:3000000002", "1700000000001", "first-change")
    one.keep_chat_key("2000000001:3000000002", "1700000000001", "a-replay-of-it")
    one.keep_chat_key("2000000001:3000000002", "1700000000009", "rotation")
    one.keep_chat_key("2000000001:3000000077", "1700000000001", "someone-else")
    assert other.chat_key_changes("2000000001:3000000002") == {"1700000000001": "first-change",
                                                               "1700000000009": "rotation"}
    assert other.chat_key_changes("2000000001:3000000099") == {}


def test_counters_add_up_across_processes_and_show_in_health(opener):
    one, other = opener(), opener()
    one.count("xchat_refused")
    other.count("xchat_refused", 2)
    assert one.health()["xchat_refused"] == 3
