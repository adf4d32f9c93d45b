"""Paths a user gives, checked where they enter, before any file is written: why a folder cannot be written
into, a file cannot be written, or an input cannot be read, as one phrase naming the path and the reason
(for every OSError errno: ENOENT under /proc, ENAMETOOLONG, ELOOP, EACCES, ENOTDIR, EROFS, ...).

A folder or file that does not exist yet is probed by creating it (or, for a folder that exists, a hidden
temporary folder in it) and removing it at once: the only test that gives the kernel's own answer for every
filesystem (/proc, read-only mounts, root squashing), and it leaves nothing behind.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def reason(e: OSError) -> str:
    """The kernel's reason of an OSError as a phrase ('no such file or directory', 'file name too long')."""
    why = e.strerror or (os.strerror(e.errno) if e.errno else str(e))
    return why[:1].lower() + why[1:]


def _existing(path: Path) -> tuple[Path, list[str], str | None]:
    """(the deepest part of `path` that exists, the names below it that do not, why it stops there when
    it is not the missing names: an errno's reason naming where)."""
    missing: list[str] = []
    for p in (path, *path.parents):
        try:
            os.stat(p)
            return p, missing, None
        except FileNotFoundError:
            missing.insert(0, p.name)
        except OSError as e:
            return p, missing, reason(e) + ("" if p == path else f" ({p})")
    return Path("."), missing, None  # a relative path none of whose parts exists: below the current folder


def folder_problem(path) -> str | None:
    """Why `path` cannot be a folder a command creates (if needed) and writes into, or None if it can."""
    path = Path(path)
    here, missing, why = _existing(path)
    if why:
        return why
    if not stat.S_ISDIR(os.stat(here).st_mode):
        return f"{here} is a file, not a folder"
    try:
        if missing:  # create the first missing folder and remove it: ENOENT under /proc, EROFS, EACCES, ...
            first = here / missing[0]
            os.mkdir(first)
            os.rmdir(first)
            long = _too_long(here, missing)
            if long:
                return long
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".mimicnet-probe-", dir=here))
    except FileExistsError:
        pass  # made meanwhile by someone else: it is there
    except OSError as e:
        return f"cannot create a folder in {here}: {reason(e)}"
    return None


def file_problem(path) -> str | None:
    """Why `path` cannot be a file a command writes (replacing it if there), or None if it can."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        return reason(e)
    if st is not None and stat.S_ISDIR(st.st_mode):
        return "is a folder, not a file"
    if not path.parent.is_dir():  # its folder will be made: that it can be, and that the name fits
        return folder_problem(path.parent) or _too_long(_existing(path)[0], [path.name])
    if st is None:  # create it and remove it: ENAMETOOLONG, EACCES, EROFS ...
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            os.unlink(path)
        except FileExistsError:
            pass
        except OSError as e:
            return f"cannot create it: {reason(e)}"
    return None


def _too_long(here: Path, names: list[str]) -> str | None:
    """The first of `names` (to be made below the existing folder `here`) longer than its filesystem allows."""
    name_max = os.pathconf(here, "PC_NAME_MAX")
    long = next((m for m in names if len(os.fsencode(m)) > name_max), None)
    return f"the name {long[:40]}... is longer than the filesystem allows ({name_max} bytes)" if long else None


def input_problem(path) -> str | None:
    """Why `path` cannot be read (file or folder), or None if it can."""
    try:
        os.stat(path)
    except OSError as e:
        return reason(e)
    if not os.access(path, os.R_OK):
        return "permission denied (cannot read it)"
    return None
