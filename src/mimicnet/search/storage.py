"""Study storage: SQLite by default (one file per search folder), PostgreSQL for many workers; heartbeats
fail a dead worker's trial and queue a retry of it."""
from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from sqlalchemy.engine import make_url

from .samplers import _quiet
from .spaces import SearchError

HEARTBEAT_INTERVAL = 15      # seconds between a running trial's heartbeats
GRACE_PERIOD = 60            # a running trial without a heartbeat for this long is failed (and retried)


# ---------------------------------------------------------------------------------------------------
# Storage and studies
# ---------------------------------------------------------------------------------------------------
def default_storage(out_dir) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def _safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for messages
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _with_driver(url: str) -> str:
    """postgresql://... -> postgresql+psycopg2://... when psycopg2 (our `postgres` extra) is what is installed:
    SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql:// URL. An explicit +driver is left alone."""
    m = re.match(r"(postgresql|postgres)://", url)
    if m and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[m.end():]
    return url


def open_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int | None = GRACE_PERIOD):
    """An RDBStorage with heartbeats (a dead worker's RUNNING trial becomes FAIL after ``grace_period`` s)
    and a retry of such a trial, however often it is lost (each retry resumes the same run folder). Workers starting together may race to create the schema; that is retried."""
    if is_journal(url):
        return _journal(url)
    url = _with_driver(url)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # several local workers share one file: wait for its lock instead of failing at once
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}  # a server restart must not leave dead pooled connections
    last: Exception | None = None
    for attempt in range(6):
        try:
            with _quiet():
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=int(heartbeat_interval),
                    grace_period=None if grace_period is None else int(grace_period),
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None))
        except ImportError as e:
            raise SearchError(f"storage {_safe_url(url)}: the database driver is missing ({e}); for "
                              f"PostgreSQL: pip install -e '.[postgres]' (psycopg2-binary)") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as e:
            last = e
            time.sleep(0.5 * (attempt + 1))
        except sqlalchemy.exc.ArgumentError as e:
            raise SearchError(f"storage {_safe_url(url)}: not a database URL ({e})") from None
        except sqlalchemy.exc.DatabaseError as e:  # e.g. sqlite's "file is not a database": not worth retrying
            raise SearchError(_damaged_db(url, e)) from None
    msg = str(last).strip().splitlines()[0] if last else "unknown error"
    raise SearchError(f"cannot open storage {_safe_url(url)}: {msg}")


def is_journal(url: str) -> bool:
    """A storage given as a file path (no scheme): Optuna's journal file, for workers that share a filesystem
    but no database server. `journal:PATH` says the same explicitly."""
    return url.startswith("journal:") or "://" not in url


def _journal_path(url: str) -> str:
    return str(Path(url[len("journal:"):] if url.startswith("journal:") else url).expanduser())


def as_recorded(url: str) -> str:
    """A storage as a results folder's record keeps it: a journal file (or an SQLite file) by its absolute path,
    so a worker started in another folder opens the same file; a URL with its password replaced by `***`."""
    if is_journal(url):
        prefix = "journal:" if url.startswith("journal:") else ""
        return prefix + os.path.abspath(_journal_path(url))  # (`..` taken out, links kept)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(url[len("sqlite:///"):])
    return _safe_url(url)


def from_record(recorded: str) -> str | None:
    """The storage a record names, if a worker can open it as it is: a journal or SQLite file by its absolute
    path, or a URL that had no password. None: the record hid a password, or (older records) kept a path
    relative to a folder it does not name, so the storage must be given again."""
    if is_journal(recorded):
        return recorded if os.path.isabs(_journal_path(recorded)) else None
    if recorded.startswith("sqlite:///"):
        return recorded if recorded.startswith("sqlite:////") else None
    try:
        return None if make_url(recorded).password is not None else recorded
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: let the caller ask for it
        return None


def same_storage(given: str, recorded: str) -> bool:
    """Whether `given` opens the storage a record names: one journal or SQLite file, however spelled (a
    `journal:` prefix, a relative path; a relative path in an older record cannot be checked and is taken
    as given), or one database, with or without its password and whatever driver is named."""
    if is_journal(given) or is_journal(recorded):
        if not (is_journal(given) and is_journal(recorded)):
            return False
        return not os.path.isabs(_journal_path(recorded)) or \
            os.path.abspath(_journal_path(given)) == _journal_path(recorded)
    if from_record(recorded) is None and recorded.startswith("sqlite:///"):
        return given.startswith("sqlite:///")

    def canonical(url: str):
        try:
            u = make_url(as_recorded(url))
            return u._replace(password=None, drivername=u.get_backend_name()).render_as_string(hide_password=False)
        except Exception:  # noqa: BLE001 - compared as written
            return url
    return canonical(given) == canonical(recorded)


def _journal(url: str):
    """A JournalStorage on a file (created with its folder). Optuna gives it no heartbeats: a dead worker's trial is
    retried by a worker of the same machine (its host:pid is gone), but a dead machine's trial stays RUNNING
    until a worker is started there again; a cluster whose machines come and go wants PostgreSQL."""
    path = Path(_journal_path(url))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    except (OSError, ValueError) as e:
        raise SearchError(f"{path}: cannot be opened as a journal storage ({e})") from None


def _damaged_db(url: str, e: Exception) -> str:
    """One line for a study database that cannot be read: the file (or URL), why, and what to do."""
    why = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:120]
    if url.startswith("sqlite:///"):
        db = url[len("sqlite:///"):]
        return (f"{db}: not a readable study database ({why}); it is damaged: restore it from a copy, or "
                f"delete {Path(db).parent} and run the same command again (its trials start over)")
    return f"storage {_safe_url(url)}: cannot be read ({why})"


def load_study(storage: str, study_name: str | None = None, sampler=None, **storage_kw):
    """An existing study; without a name, the storage's only study."""
    st = open_storage(storage, **storage_kw)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(st, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            raise SearchError(f"storage {_safe_url(storage)} holds {len(names)} studies "
                              f"({', '.join(names) or 'none'}); pass --study NAME")
        study_name = names[0]
    if study_name not in names:
        raise SearchError(f"no study {study_name!r} in {_safe_url(storage)} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=st, sampler=sampler)

