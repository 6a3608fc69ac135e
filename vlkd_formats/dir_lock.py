"""One writer per directory: an advisory `fcntl.flock` on `<dir>/.lock`, held by whatever writes the dir (the
few-shot committer of a grasp model dir, a dataset collection run) for as long as it writes.

A second writer, in this process or another, is refused at once with a `DirLockedError` naming the holder (pid,
host, command, since when), read from the lock file the holder wrote. The kernel drops the lock when the holder's
file is closed or its process dies, however it dies, so a stale `.lock` file never blocks anyone: it is left in
place (removing it would race with a writer that has just opened it). Readers never take the lock.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from vlkd_formats.errors import VlkdError

LOCK_FILE = ".lock"


class DirLockedError(VlkdError, RuntimeError):
    """Another writer holds the directory's lock; the message names it."""


class DirLock:
    """`with DirLock(dir, "dataset collection"):` (purpose: what kind of writer holds it) or `acquire()` / `release()`; re-acquiring a held lock is a
    no-op. Locks of two instances conflict even within one process (flock locks belong to the open file)."""

    def __init__(self, folder: str | os.PathLike, purpose: str):
        self.folder, self.purpose = Path(folder), purpose
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this instance holds the lock."""
        return self._fd is not None

    def acquire(self) -> "DirLock":
        """Take the lock or raise DirLockedError naming the holder (OSError if the dir cannot hold a lock file)."""
        if self._fd is not None:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise DirLockedError(f"{self.folder} is locked by another writer ({holder}): one {self.purpose} may write "
                                 "it at a time; wait for that one to finish or stop it, or use another dir") from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
                "command": " ".join(sys.argv)[:300], "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays; see the module doc)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown; the kernel drops the lock with the process
            pass


def _holder(fd: int) -> str:
    """What the lock file says of its holder, as one line."""
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        info = json.loads(raw)
        mine = " (this process)" if info.get("pid") == os.getpid() else ""
        return (f"pid {info.get('pid')}{mine} on {info.get('host')}, a {info.get('purpose')}, since "
                f"{info.get('since')} (command: {info.get('command')!r})")
    except (OSError, ValueError, AttributeError):
        return "a process that has not written its details yet"
