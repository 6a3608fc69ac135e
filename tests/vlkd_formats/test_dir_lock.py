"""vlkd_formats.dir_lock and the writers that hold it: one writer per dir, a second one refused at once with the
holder's pid, the lock gone with its holder however it ends; the dataset collector's out dir takes it."""
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sim.shards import prepare_out_dir
from vlkd_formats.dir_lock import LOCK_FILE, DirLock, DirLockedError

REPO = Path(__file__).resolve().parents[2]
HOLDER = textwrap.dedent("""
    import sys, time
    from vlkd_formats.dir_lock import DirLock
    lock = DirLock(sys.argv[1], "dataset collection").acquire()
    print("HELD", flush=True)
    time.sleep(600)
""")


def test_a_second_writer_in_this_process_is_refused_until_the_first_lets_go(tmp_path):
    first = DirLock(tmp_path / "d", "few-shot learner").acquire()
    assert first.held and first.acquire() is first  # re-acquiring is a no-op
    info = json.loads((tmp_path / "d" / LOCK_FILE).read_text())
    assert info["pid"] == os.getpid() and info["purpose"] == "few-shot learner"
    with pytest.raises(DirLockedError) as err:
        DirLock(tmp_path / "d", "few-shot learner").acquire()
    message = str(err.value)
    assert f"pid {os.getpid()} (this process)" in message and "a few-shot learner" in message
    assert "one few-shot learner may write it at a time" in message and "\n" not in message
    first.release()
    with DirLock(tmp_path / "d", "few-shot learner") as second:
        assert second.held
    assert not second.held and (tmp_path / "d" / LOCK_FILE).is_file()  # the file stays; the lock does not


def test_another_process_holding_the_lock_is_named_and_its_death_frees_the_dir(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        with pytest.raises(DirLockedError, match=rf"pid {holder.pid} on .*, a dataset collection, since"):
            DirLock(tmp_path, "dataset collection").acquire()
        with pytest.raises(DirLockedError, match=f"pid {holder.pid}"):
            prepare_out_dir(tmp_path, {"a": 1}, overwrite=True)  # refused before deleting anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    with DirLock(tmp_path, "dataset collection"):  # killed: the kernel dropped its lock
        pass


def test_the_collector_holds_its_out_dir_while_it_writes(tmp_path):
    out = tmp_path / "data"
    lock = prepare_out_dir(out, {"kind": "toy"}, overwrite=False)
    assert lock.held and sorted(p.name for p in out.iterdir()) == [".lock", ".parts"]
    with pytest.raises(DirLockedError, match=f"pid {os.getpid()} \\(this process\\)"):
        prepare_out_dir(out, {"kind": "toy"}, overwrite=False)
    lock.release()
    with prepare_out_dir(out, {"kind": "toy"}, overwrite=False):  # resumable: the same settings, the lock free
        pass
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / LOCK_FILE).write_text("")  # a stale lock file left by a dead collector is no content
    prepare_out_dir(fresh, {"kind": "toy"}, overwrite=False).release()
