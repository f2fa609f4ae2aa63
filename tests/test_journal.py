"""The per-process journal: what the webhook writes is imported once, even when writers die."""
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import BOT_ID, drain, post_delivery, runtime_of
from catbot.events import IncomingDM
from catbot.journal import READ_LIMIT, Journal
from catbot.replies import Intent
from catbot.store import SqliteStore


def dm(n: int) -> tuple[IncomingDM, Intent]:
    return IncomingDM("2000000001", str(10**17 + n), str(3000 + n), "", 0), Intent.FACT


def test_lines_are_imported_once(tmp_path):
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j")
    journal.append([dm(1), dm(2)], 1000.0)
    first = store.import_journal(journal)
    journal.append([dm(3)], 1001.0)
    second = store.import_journal(journal)
    third = store.import_journal(journal)
    assert (first.new, second.new, third.new) == (2, 1, 0)
    assert store.health()["pending_messages"] == 3


def test_redelivered_events_are_duplicates_at_import(tmp_path):
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j")
    journal.append([dm(1)], 1000.0)
    journal.append([dm(1)], 1000.5)
    result = store.import_journal(journal)
    assert (result.new, result.duplicates) == (1, 1)


def test_a_live_writers_file_is_kept(tmp_path):
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j")
    journal.append([dm(1)], 1000.0)
    store.import_journal(journal)
    store.import_journal(journal)
    assert len(journal.files()) == 1  # this process still writes it


WRITER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from catbot.journal import Journal
from catbot.events import IncomingDM
from catbot.replies import Intent
j = Journal({directory!r})
j.append([(IncomingDM("2000000001", "100000000000000001", "3001", "", 0), Intent.FACT)], 1000.0)
os.write(j._fd, b'["2000000001","1000000000000000')  # torn: the process dies mid-write
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_writers_file_is_imported_then_removed_and_a_torn_line_dropped(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", WRITER.format(root=root, directory=str(tmp_path / "j"))])
    assert proc.returncode == -signal.SIGKILL
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j")
    assert len(journal.files()) == 1
    assert store.import_journal(journal).new == 1  # the complete line
    store.import_journal(journal)  # nothing left but the torn line, and its writer is gone
    assert journal.files() == []
    assert store.health()["pending_messages"] == 1


def test_rotation_keeps_every_line(tmp_path):
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j", rotate_bytes=300)
    for n in range(20):
        journal.append([dm(n)], 1000.0 + n)
    assert len(journal.files()) > 3
    store.import_journal(journal)
    assert store.health()["pending_messages"] == 20
    store.import_journal(journal)
    assert len(journal.files()) == 1  # rotated-away files are gone; the open one stays


def _import(path: str, directory: str, out) -> None:
    out.put(SqliteStore(path).import_journal(Journal(directory)).new)


def test_concurrent_importers_queue_each_message_once(tmp_path):
    journal = Journal(tmp_path / "j", rotate_bytes=2000)
    for n in range(300):
        journal.append([dm(n)], 1000.0)
    path = str(tmp_path / "s.sqlite3")
    SqliteStore(path)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_import, args=(path, str(tmp_path / "j"), out)) for _ in range(3)]
    for p in procs:
        p.start()
    imported = sum(out.get(timeout=30) for _ in procs)
    for p in procs:
        p.join()
    assert imported == 300
    assert SqliteStore(path).health()["pending_messages"] == 300


ids = st.from_regex(r"[0-9]{1,25}", fullmatch=True)


@given(st.lists(st.tuples(ids, ids, ids, st.sampled_from(Intent), st.integers(0, 10**16 - 1)), min_size=1, max_size=4),
       st.floats(0, 2e9))
def test_journal_lines_are_imported_as_written(messages, now):
    """The webhook formats lines by hand and SQLite parses them: the store must read back
    exactly what was written, duplicates counted once."""
    items = [(IncomingDM(f, e, s, "", created), intent) for f, e, s, intent, created in messages]
    with tempfile.TemporaryDirectory() as tmp:
        store, journal = SqliteStore(os.path.join(tmp, "s.sqlite3")), Journal(os.path.join(tmp, "j"))
        journal.append(items, now)
        result = store.import_journal(journal)
        seen = store._read("select for_user_id, event_id, received_at from catbot_seen")
        queued = store._read("select for_user_id, user_id, event_id, intent, created_ms from catbot_inbox order by seq")
        store.close()
    first = {}  # the first copy of each event counts; later copies are duplicates
    for dm, intent in items:
        first.setdefault((dm.for_user_id, dm.event_id), (dm, intent))
    assert result.new + result.ignored == len(first) and result.duplicates == len(items) - len(first)
    assert sorted(seen) == sorted((f, e, now) for f, e in first)
    assert queued == [(dm.for_user_id, dm.sender_id, dm.event_id, intent.value, dm.created_ms)
                      for dm, intent in first.values() if intent is not Intent.IGNORE]


@pytest.mark.parametrize("bad", ["", "12a", "1\"2", "\u0663"])  # "\u0663" is ARABIC-INDIC DIGIT THREE
def test_the_journal_refuses_ids_that_are_not_ascii_digits(tmp_path, bad):
    with pytest.raises(ValueError):
        Journal(tmp_path / "j").append([(IncomingDM("2000000001", "1800000000000000001", bad, "", 0),
                                         Intent.FACT)], 1000.0)


def test_import_queues_users_in_arrival_order_across_workers_files(tmp_path):
    """Two web workers, two journals: the line follows arrival time, not file order."""
    store = SqliteStore(str(tmp_path / "s.sqlite3"))
    first, second = Journal(tmp_path / "j"), Journal(tmp_path / "j")
    for n in range(6):
        (first if n % 2 else second).append([dm(n)], 1000.0 + n)
    assert len(first.files()) == 2
    store.import_journal(first)
    claimed = [store.claim_next(2000.0, 60).user_id for _ in range(6)]
    assert claimed == [str(3000 + n) for n in range(6)]


def test_a_backlog_bigger_than_one_read_is_imported_in_one_call(tmp_path):
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j")
    count = READ_LIMIT // 30  # lines are about 60 bytes: two reads' worth
    journal.append([dm(n) for n in range(count)], 1000.0)
    assert os.path.getsize(journal.files()[0]) > READ_LIMIT
    assert store.import_journal(journal).new == count
    assert store.health()["pending_messages"] == count


def delivery_from(sender: str, event_id: str) -> dict:
    return {"for_user_id": BOT_ID, "direct_message_events": [{
        "type": "message_create", "id": event_id, "created_timestamp": "1763790000000",
        "message_create": {"target": {"recipient_id": BOT_ID}, "sender_id": sender,
                           "message_data": {"text": "hi"}}}]}


def test_while_xs_budget_is_spent_deliveries_wait_in_the_journal_for_the_sweep(app, client, emulator):
    """Importing could only move messages from one queue to another until X allows a send;
    the sweep still imports once a minute, so the journal stays short."""
    emulator.set_rate_limit(1, 900)
    runtime = runtime_of(app)
    post_delivery(client, delivery_from("3000000001", "1800000000000000001"))
    runtime.deliverer.run_pass()
    assert len(emulator.sent) == 1  # and X said remaining=0
    post_delivery(client, delivery_from("3000000002", "1800000000000000002"))
    runtime.deliverer.run_pass()
    backlog = runtime.backlog()
    assert backlog["pending_messages"] == 0 and backlog["journal_bytes"] > 0
    runtime.sweep()
    backlog = runtime.backlog()
    assert backlog["pending_messages"] == 1 and backlog["journal_bytes"] == 0


def test_what_a_user_writes_while_their_reply_is_on_its_way_is_answered_by_it(app, client, emulator):
    """Imports wait for a send that can go out, so the pass imports again before closing a
    batch: the second "hi" is absorbed by the fact in flight, and the user who wrote meanwhile
    is next in line instead of behind a second reply to the first."""
    emulator.faults.latency = 0.5
    runtime = runtime_of(app)
    post_delivery(client, delivery_from("3000000001", "1800000000000000001"))
    in_flight = threading.Thread(target=runtime.deliverer.run_pass)
    in_flight.start()
    deadline = time.monotonic() + 5
    while emulator.dm_attempts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    post_delivery(client, delivery_from("3000000001", "1800000000000000002"))
    post_delivery(client, delivery_from("3000000002", "1800000000000000003"))
    in_flight.join()
    drain(app)
    assert [dm.participant_id for dm in emulator.sent] == ["3000000001", "3000000002"]
