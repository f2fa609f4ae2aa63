"""Which consumers are alive: a claim may be taken over only from a holder that is provably gone."""
import os
import subprocess
import sys

from catbot.liveness import LockFiles, holder_id


def test_a_live_holder_whose_lock_file_was_deleted_is_still_alive_and_announces_again(tmp_path):
    mine = LockFiles(tmp_path / "consumers")
    mine.announce()
    for path in (tmp_path / "consumers").iterdir():
        path.unlink()  # a tmp cleaner, an operator, a restored folder
    other = LockFiles(tmp_path / "consumers")
    assert other.alive(holder_id())  # its process still runs: not proof of death
    mine.beat()
    assert [p.name for p in (tmp_path / "consumers").iterdir()] == [holder_id() + ".alive"]
    assert other.alive(holder_id())


def test_a_holder_whose_process_exited_is_dead(tmp_path):
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from catbot.liveness import LockFiles, holder_id\n"
            "LockFiles(%r).announce(); print(holder_id())") % (os.getcwd(), str(tmp_path / "consumers"))
    gone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert LockFiles(tmp_path / "consumers").alive(gone) is False
    assert LockFiles(tmp_path / "consumers").alive("999999999-0123456789ab") is False  # never announced, no such pid
