"""The per-process journal: what the webhook writes is imported once, even when writers die."""
import errno
import fcntl
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import requests
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from helpers import dm_delivery, drain, post_delivery, runtime_of
from catbot.journal import READ_LIMIT, Journal, encode
from catbot.replies import Intent
from catbot.runtime import import_journals
from catbot.store import Inbound, StoreUnavailable
from catbot.store.sqlite import SqliteStore


def dm(n: int) -> Inbound:
    return Inbound("x_dm", "2000000001", str(3000 + n), str(10**17 + n), Intent.FACT, 0)


def test_lines_are_imported_once(tmp_path):
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j")
    journal.append([dm(1), dm(2)], 1000.0)
    first = journal.import_into(store)
    journal.append([dm(3)], 1001.0)
    second = journal.import_into(store)
    third = journal.import_into(store)
    assert (first.new, second.new, third.new) == (2, 1, 0)
    assert store.health()["pending_messages"] == 3


def test_redelivered_events_are_duplicates_at_import(tmp_path):
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j")
    journal.append([dm(1)], 1000.0)
    journal.append([dm(1)], 1000.5)
    result = journal.import_into(store)
    assert (result.new, result.duplicates) == (1, 1)


def test_a_live_writers_file_is_kept(tmp_path):
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j")
    journal.append([dm(1)], 1000.0)
    journal.import_into(store)
    journal.import_into(store)
    assert len(journal.files()) == 1  # this process still writes it


WRITER = """
import os, signal, sys
sys.path.insert(0, {root!r})
from catbot.journal import Journal
from catbot.replies import Intent
from catbot.store import Inbound
j = Journal({directory!r})
j.append([Inbound("x_dm", "2000000001", "3001", "100000000000000001", Intent.FACT, 0)], 1000.0)
os.write(j._fd, b'["2000000001","1000000000000000')  # torn: the process dies mid-write
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.processes
def test_a_killed_writers_file_is_imported_then_removed_and_a_torn_line_dropped(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", WRITER.format(root=root, directory=str(tmp_path / "j"))])
    assert proc.returncode == -signal.SIGKILL
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j")
    assert len(journal.files()) == 1
    assert journal.import_into(store).new == 1  # the complete line
    journal.import_into(store)  # nothing left but the torn line, and its writer is gone
    assert journal.files() == []
    assert store.health()["pending_messages"] == 1


def test_rotation_keeps_every_line(tmp_path):
    line = len(encode([dm(10)], 1010.0))
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j", rotate_bytes=3 * line + 1)
    for n in range(10, 28):  # four lines a file: four full files and one still open
        journal.append([dm(n)], 1000.0 + n)
    assert len(journal.files()) == 5
    journal.import_into(store)
    assert store.health()["pending_messages"] == 18
    journal.import_into(store)
    assert len(journal.files()) == 1  # rotated-away files are gone; the open one stays


def _import(path: str, directory: str, out) -> None:
    out.put(Journal(directory).import_into(SqliteStore(path)).new)


@pytest.mark.processes
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


@hsettings(deadline=None)  # each example opens a SQLite file: its time says nothing about the code
@given(st.lists(st.tuples(ids, ids, ids, st.sampled_from(Intent), st.integers(0, 10**16 - 1)), min_size=1, max_size=4),
       st.floats(0, 2e9))
def test_journal_lines_are_imported_as_written(messages, now):
    """The webhook formats lines by hand and SQLite parses them: the store must read back
    exactly what was written, duplicates counted once."""
    items = [Inbound("x_dm", f, s, e, intent, created) for f, e, s, intent, created in messages]
    with tempfile.TemporaryDirectory() as tmp:
        store, journal = SqliteStore(os.path.join(tmp, "s.sqlite3")), Journal(os.path.join(tmp, "j"))
        journal.append(items, now)
        result = journal.import_into(store)
        seen = store._read("select for_user_id, event_id, received_at from catbot_seen")
        queued = store._read("select for_user_id, user_id, event_id, intent, created_ms from catbot_inbox order by seq")
        store.close()
    first = {}  # the first copy of each event counts; later copies are duplicates
    for m in items:
        first.setdefault((m.for_user_id, m.event_id), m)
    assert result.new + result.ignored == len(first) and result.duplicates == len(items) - len(first)
    assert sorted(seen) == sorted((f, e, now) for f, e in first)
    assert queued == [(m.for_user_id, m.user_id, m.event_id, m.intent.value, m.created_ms)
                      for m in first.values() if m.intent is not Intent.IGNORE]


@pytest.mark.parametrize("bad", ["", "1\"2", "1\\2", "1 2", "1\n2", "\u0663"])  # "\u0663" is ARABIC-INDIC DIGIT THREE
def test_the_journal_refuses_ids_that_json_would_escape(tmp_path, bad):
    """Lines are formatted by hand for speed: an id that would need escaping must never get in
    (other kinds of message have ids with letters, so those are allowed)."""
    with pytest.raises(ValueError):
        Journal(tmp_path / "j").append([Inbound("x_dm", "2000000001", bad, "1800000000000000001", Intent.FACT, 0)],
                                       1000.0)


def test_import_queues_users_in_arrival_order_across_workers_files(tmp_path):
    """Two web workers, two journals: the line follows arrival time, not file order."""
    store = SqliteStore(str(tmp_path / "s.sqlite3"))
    first, second = Journal(tmp_path / "j"), Journal(tmp_path / "j")
    for n in range(6):
        (first if n % 2 else second).append([dm(n)], 1000.0 + n)
    assert len(first.files()) == 2
    first.import_into(store)
    claimed = [store.claim_next(2000.0, 60).user_id for _ in range(6)]
    assert claimed == [str(3000 + n) for n in range(6)]


def test_a_backlog_bigger_than_one_read_is_imported_in_one_call(tmp_path):
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j")
    count = READ_LIMIT // 30  # lines are about 60 bytes: two reads' worth
    journal.append([dm(n) for n in range(count)], 1000.0)
    assert os.path.getsize(journal.files()[0]) > READ_LIMIT
    assert journal.import_into(store).new == count
    assert store.health()["pending_messages"] == count


def test_while_xs_budget_is_spent_deliveries_wait_in_the_journal_for_the_sweep(app, client, emulator):
    """Importing could only move messages from one queue to another until X allows a send;
    the sweep still imports once a minute, so the journal stays short."""
    emulator.set_rate_limit(1, 900)
    runtime = runtime_of(app)
    post_delivery(client, dm_delivery("3000000001", "hi", "1800000000000000001"))
    runtime.replier.run_pass()
    assert len(emulator.sent) == 1  # and X said remaining=0
    post_delivery(client, dm_delivery("3000000002", "hi", "1800000000000000002"))
    runtime.replier.run_pass()
    backlog = runtime.backlog()
    assert backlog["pending_messages"] == 0 and backlog["journal_bytes"] > 0
    runtime.upkeep.sweep()
    backlog = runtime.backlog()
    assert backlog["pending_messages"] == 1 and backlog["journal_bytes"] == 0


def test_what_a_user_writes_while_their_reply_is_on_its_way_is_answered_by_it(app, client, emulator):
    """Imports wait for a send that can go out, so the pass imports again before closing a
    batch: the second "hi" is absorbed by the fact in flight, and the user who wrote meanwhile
    is next in line instead of behind a second reply to the first."""
    emulator.faults.latency = 0.5
    runtime = runtime_of(app)
    post_delivery(client, dm_delivery("3000000001", "hi", "1800000000000000001"))
    in_flight = threading.Thread(target=runtime.replier.run_pass)
    in_flight.start()
    deadline = time.monotonic() + 5
    while emulator.dm_attempts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    post_delivery(client, dm_delivery("3000000001", "hi", "1800000000000000002"))
    post_delivery(client, dm_delivery("3000000002", "hi", "1800000000000000003"))
    in_flight.join()
    drain(app)
    assert [dm.participant_id for dm in emulator.sent] == ["3000000001", "3000000002"]


# -- a journal never vanishes under a live writer (issue 10, item 2) ------------------------------
class _ImportWhenLocking:
    """``fcntl`` as the journal sees it, except that an importer runs a full import (and its
    clean-up of dead writers' files) at the moment a writer is about to lock a new file: the
    exact interleaving that once made an importer delete a live writer's file."""

    def __init__(self, store: SqliteStore, journal: Journal) -> None:
        self.store, self.journal, self.busy = store, journal, False
        self.LOCK_SH, self.LOCK_EX, self.LOCK_NB = fcntl.LOCK_SH, fcntl.LOCK_EX, fcntl.LOCK_NB

    def flock(self, fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_SH and not self.busy:
            self.busy = True
            try:
                self.journal.import_into(self.store)
            finally:
                self.busy = False
        fcntl.flock(fd, operation)


def test_an_importer_never_sees_a_new_journal_file_before_it_is_locked(tmp_path, monkeypatch):
    store, writer, importer = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j"), Journal(tmp_path / "j")
    monkeypatch.setattr("catbot.journal.fcntl", _ImportWhenLocking(store, importer))
    writer.append([dm(1)], 1000.0)  # acknowledged
    monkeypatch.undo()
    assert importer.import_into(store).new == 1
    assert store.health()["pending_messages"] == 1


def test_a_writer_whose_folder_was_removed_writes_again_before_acknowledging(tmp_path):
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j")
    journal.append([dm(1)], 1000.0)
    shutil.rmtree(tmp_path / "j")  # an operator, a clean-up script, a bad deploy
    journal.append([dm(2)], 1001.0)
    journal.append([dm(3)], 1002.0)
    assert journal.import_into(store).new == 2  # dm(1) went with the folder before its import
    assert store.health()["pending_messages"] == 2


def test_a_writer_whose_file_was_replaced_writes_again_before_acknowledging(tmp_path):
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(tmp_path / "j")
    journal.append([dm(1)], 1000.0)
    [path] = journal.files()
    path.rename(tmp_path / "elsewhere")
    path.write_bytes(b"")
    journal.append([dm(2)], 1001.0)
    assert journal.import_into(store).new == 1
    assert len(journal.files()) == 1 and journal.files()[0] != path  # the stray empty file is retired


_SHORT_LIVED_WRITER = """
import sys
sys.path.insert(0, {root!r})
from catbot.journal import Journal
from catbot.replies import Intent
from catbot.store import Inbound
j = Journal({directory!r})
for k in range(5):
    j.append([Inbound("x_dm", "2000000001", "3001", str(10**17 + {n} * 10 + k), Intent.FACT, 0)], 1000.0)
"""


def _poll_imports(path: str, directory: str, stop) -> None:
    store, journal = SqliteStore(path), Journal(directory)
    while not stop.is_set():
        journal.import_into(store)


@pytest.mark.processes
def test_short_lived_writers_and_polling_importers_lose_nothing(tmp_path):
    """The race driver from the report: two importers polling while writers come and go."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path, directory = str(tmp_path / "s.sqlite3"), str(tmp_path / "j")
    SqliteStore(path)
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    importers = [ctx.Process(target=_poll_imports, args=(path, directory, stop)) for _ in range(2)]
    for p in importers:
        p.start()
    try:
        writers = 60
        for batch in range(0, writers, 6):
            procs = [subprocess.Popen([sys.executable, "-c", _SHORT_LIVED_WRITER.format(
                root=root, directory=directory, n=n)]) for n in range(batch, batch + 6)]
            assert [p.wait(timeout=30) for p in procs] == [0] * 6
    finally:
        stop.set()
        for p in importers:
            p.join(timeout=30)
    store = SqliteStore(path)
    Journal(directory).import_into(store)
    assert store.health()["pending_messages"] == writers * 5


def test_lines_an_import_cannot_read_are_logged_and_counted(tmp_path, caplog, app):
    runtime = runtime_of(app)
    runtime.journal.append([dm(1)], 1000.0)
    with open(runtime.journal.files()[0], "ab") as f:
        f.write(b'["2000000001","1","3001","fact"]\n{"not": "a journal line"}\n')
    runtime.journal.append([dm(2)], 1001.0)
    with caplog.at_level(logging.WARNING, logger="catbot"):
        import_journals(runtime.backend)
    assert runtime.store.health()["pending_messages"] == 2
    assert runtime.backlog()["journal_malformed_lines"] == 2
    assert any("event=journal.malformed" in r.getMessage() and "lines=2" in r.getMessage() for r in caplog.records)


def test_an_unwritable_journal_folder_answers_503_then_recovers(app, client, emulator):
    folder = runtime_of(app).journal.directory
    shutil.rmtree(folder, ignore_errors=True)
    folder.write_text("not a folder")  # mkdir and every write into it fail
    answer = post_delivery(client, dm_delivery("3000000001", "hi", "1800000000000000001"))
    assert answer.status_code == 503  # X delivers again; never a 200 for what was not written
    folder.unlink()
    assert post_delivery(client, dm_delivery("3000000001", "hi", "1800000000000000001")).status_code == 200
    drain(app)
    assert [dm.participant_id for dm in emulator.sent] == ["3000000001"]


def test_deliveries_after_the_journal_folder_is_removed_are_answered(app, client, emulator):
    post_delivery(client, dm_delivery("3000000001", "hi", "1800000000000000001"))
    drain(app)
    shutil.rmtree(runtime_of(app).journal.directory)
    for n in range(2, 7):
        assert post_delivery(client, dm_delivery(str(3000000000 + n), "hi", f"180000000000000000{n}")).status_code == 200
    drain(app)
    assert sorted(dm.participant_id for dm in emulator.sent) == [str(3000000000 + n) for n in range(1, 7)]
    assert runtime_of(app).backlog()["journal_bytes"] == 0


# -- a full disk (issue 10, item 3) -----------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A real small file system (tmpfs; the tests run as root) that ``_fill`` fills up."""
    mounted = []

    def mount(size: str = "256k"):
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(disk, leave: int) -> None:
    """Fill ``disk`` up to ``leave`` bytes of free space."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(disk / "filler", "wb") as f:
        try:
            f.write(b"\0" * max(0, free - leave))
            f.flush()
        except OSError as exc:  # others wrote meanwhile: full is full
            assert exc.errno == errno.ENOSPC


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_full_disk_leaks_no_descriptor_and_no_file_and_recovers(tmp_path, small_disk):
    small_disk = small_disk()
    store, journal = SqliteStore(str(tmp_path / "s.sqlite3")), Journal(small_disk / "j")
    journal.append([dm(0)], 1000.0)
    _fill(small_disk, leave=2048)
    acknowledged, failed = [0], 0
    fds = None
    for n in range(1, 400):
        try:
            journal.append([dm(n)], 1000.0 + n)
            acknowledged.append(n)
        except StoreUnavailable:
            failed += 1
            fds = fds or _open_fds()
    assert failed > 200
    assert _open_fds() == fds  # nothing opened per failure
    assert len(journal.files()) == 1  # and no new file per failure
    (small_disk / "filler").unlink()  # space comes back
    journal.append([dm(1000)], 2000.0)
    acknowledged.append(1000)
    assert journal.import_into(store).new == len(acknowledged)  # every acknowledged line, once
    assert journal.pending_bytes(store.journal_offsets()) == 0  # no torn bytes left behind
    journal.close()
    journal.import_into(store)
    assert journal.files() == []  # the writer is gone: retired


def test_a_full_disk_under_gunicorn_answers_503_leaks_nothing_and_recovers(settings, emulator, small_disk, tmp_path):
    from processes import Gunicorn, bot_env
    small_disk = small_disk("8m")
    bot = Gunicorn(bot_env(settings.replace(sqlite_path=str(small_disk / "catbot.sqlite3"))), workers=1,
                   log_path=tmp_path / "gunicorn.log")
    try:
        emulator.set_rate_limit(1000, 900)
        emulator.register(bot.url + "/webhook/twitter")
        assert emulator.deliver_dm("3000000001", "before")[1].status_code == 200
        emulator.wait_for_sent(1, timeout=15)
        worker = _worker_pids(bot.proc.pid)[0]
        _fill(small_disk, leave=0)
        before = len(os.listdir(f"/proc/{worker}/fd"))
        statuses = {str(3000000100 + n): emulator.deliver_dm(str(3000000100 + n), "during")[1].status_code
                    for n in range(100)}
        assert list(statuses.values()).count(503) >= 50  # X delivers again (the page already allocated takes a few lines)
        assert len(os.listdir(f"/proc/{worker}/fd")) <= before + 2
        (small_disk / "filler").unlink()
        for n in range(5):
            assert emulator.deliver_dm(str(3000000200 + n), "after")[1].status_code == 200
        answered = {"3000000001"} | {u for u, status in statuses.items() if status == 200} | {
            str(3000000200 + n) for n in range(5)}
        emulator.wait_for_sent(len(answered), timeout=30)
        deadline = time.monotonic() + 90  # the sweep imports and retires within a minute
        while time.monotonic() < deadline:
            health = requests.get(bot.url + "/healthz", timeout=5).json()
            if health["status"] == "ok" and health["store"]["journal_bytes"] == health["store"]["pending_messages"] == 0:
                break
            time.sleep(0.5)
        assert health["store"]["journal_bytes"] == 0 and health["store"]["pending_messages"] == 0
        assert sorted(dm.participant_id for dm in emulator.sent) == sorted(answered)  # each acknowledged DM, once
    finally:
        bot.stop()


def _worker_pids(master: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = open(f"/proc/{master}/task/{master}/children").read().split()
        if children:
            return [int(c) for c in children]
        time.sleep(0.1)
    raise AssertionError("no gunicorn worker")


def test_a_failed_write_never_cuts_below_what_an_importer_read(tmp_path, monkeypatch):
    """A delivery of three DMs is written part-way (two whole lines), an importer reads those,
    then the disk is full: the writer cuts only the torn tail, so the deliveries acknowledged
    after space returns are still imported."""
    import catbot.journal
    store = SqliteStore(str(tmp_path / "s.sqlite3"))
    writer, importer = Journal(tmp_path / "j", store), Journal(tmp_path / "j", store)
    writer.append([dm(0)], 1000.0)
    importer.import_into()
    real_write, calls = os.write, []

    def short_then_full(fd, data):
        calls.append(1)
        if len(calls) == 1:  # the kernel takes two whole lines and part of the third
            data = bytes(data)
            return real_write(fd, data[:data.index(b"\n", data.index(b"\n") + 1) + 5])
        importer.import_into()  # between the short write and the failure
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(catbot.journal.os, "write", short_then_full)
    with pytest.raises(StoreUnavailable):
        writer.append([dm(1), dm(2), dm(3)], 1001.0)  # 503
    monkeypatch.undo()
    writer.append([dm(4)], 1002.0)  # 200
    writer.append([dm(5)], 1003.0)  # 200
    importer.import_into()
    users = {u for (u,) in store._read("select user_id from catbot_inbox")}
    assert {"3004", "3005"} <= users  # acknowledged: never lost
    assert writer.pending_bytes() == 0
