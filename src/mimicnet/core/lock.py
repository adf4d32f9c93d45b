"""One writer per results folder: `reproduce` and `train` hold an exclusive flock on FOLDER/.lock while they
write FOLDER, with the holder's host:pid (and command) written inside. A second command on the same folder
ends at once with one line naming the holder (a UserError: exit status 2), instead of two processes
interleaving checkpoints. flock is released by the kernel when its holder dies, so the lock of a killed
process is free again at once (the file stays; only the lock on it matters).

Locks are re-entrant within a process (the CLI locks the folder, `reproduce` inside it locks it again), and
never taken on a search's folder: many `mimicnet search run` workers share one study folder by design.
"""
from __future__ import annotations

import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from .artifacts import naming
from .errors import UserError

LOCK_NAME = ".lock"
_HELD: dict[str, int] = {}     # resolved folder -> nesting depth, for the folders this process holds


class FolderLocked(UserError, RuntimeError):
    """Another process is writing this folder (the message names it and its holder)."""


def holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@contextmanager
def folder_lock(folder, what: str = "mimicnet"):
    """Hold FOLDER/.lock exclusively while the block runs (creating FOLDER); FolderLocked if another
    process holds it. A block that fails leaves no lock file where there was none, and removes the folders it
    created when nothing was written in them."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _HELD:  # this process holds it already: flock would conflict with our own other descriptor
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    path = folder / LOCK_NAME
    new_lock = not path.exists()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # as the umask says
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = os.pread(fd, 400, 0).decode(errors="replace").strip().replace("\n", " ") or "another process"
            raise FolderLocked(f"{folder}: in use by {who} (it holds {path}); wait for it to finish or stop "
                               "it, then run the command again") from None
        with naming(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder()} ({what})\n".encode(), 0)
        _HELD[key] = 1
        try:
            yield
        except BaseException:
            if new_lock:
                _undo(path, created)  # still held: no other process is between the unlink and the release
            raise
        finally:
            del _HELD[key]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _undo(lock: Path, created: list[Path]) -> None:
    """Remove the lock file (and the folders made for it, when empty) of a command that failed: a lock file
    is only its holder's mutex, and this one's holder is ending."""
    try:
        lock.unlink()
        for p in created:  # deepest first; one holding anything (real work) stays, and so do those above it
            p.rmdir()
    except OSError:
        pass


@contextmanager
def held(lock_path):
    """An exclusive flock on lock_path (created) while the block runs, waiting for it: for a short
    read-modify-write of a file that many workers share (the run index, reproduce.json), which is replaced
    atomically and so cannot be locked itself."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
