"""Artifacts on disk: atomic writes, checkpoints that carry their config, the code version.

Every artifact is written to a temporary name in the same folder and then renamed, so a killed
process never leaves a file that looks finished but is not (os.replace is atomic on POSIX).
A checkpoint is ONE safetensors file whose metadata holds the full JSON description (config, code
version, epoch, ...): the weights and the config that made them cannot drift apart. A `.json`
sidecar with the same metadata is written next to it for humans and `jq`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .. import __version__
from .errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, corrupt or not a mimicnet checkpoint (message names the file)."""


@functools.cache
def code_version() -> str:
    """Package version plus the git commit (and '-dirty' if the tree has changes), when run from a checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        if not sha:
            return __version__
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{__version__}+g{sha}" + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return __version__


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and paths to plain JSON values. A config with an on-disk format of its own
    (a ``to_dict()`` method, e.g. the flat TrainConfig) is written in that format."""
    if hasattr(obj, "to_dict") and not isinstance(obj, type):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dataclass_from_dict(cls, d: dict, error: type[Exception], what: str = "config"):
    """cls(**d) for a config dataclass read from JSON: unknown fields are an `error` naming them, and JSON
    lists become tuples where the field's default is a tuple or None (widths, dropout rates, hsv, ...)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise error(f"unknown {what} field(s): {', '.join(unknown)}")
    return cls(**tuples_from_lists(d))


def tuples_from_lists(d: dict) -> dict:
    """A config dict read from JSON with its lists back as the tuples a config keeps (two levels deep:
    widths, dropout rates, hsv, (lo, hi) bounds pairs)."""
    return {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
            for k, v in d.items()}


def config_hash(cfg: Any, exclude: tuple[str, ...] = ()) -> str:
    """Short stable hash of a config (used to name run folders and to check a resume matches its run).

    For a dataclass only the fields that differ from their defaults count, so adding a field with a
    default (a new option) leaves the identity of every existing run unchanged. A config with an on-disk
    format of its own (``to_dict()``, e.g. the flat TrainConfig) is hashed in that format, against the
    format of its default instance."""
    d = to_jsonable(cfg)
    defaults = _field_defaults(cfg)
    if defaults is not None:
        d = {k: v for k, v in d.items() if k not in defaults or v != defaults[k]}
    if isinstance(d, dict):
        d = {k: v for k, v in d.items() if k not in exclude}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


def _field_defaults(cfg: Any) -> dict | None:
    """JSON value of each field's default; None for a config that is not a dataclass."""
    if isinstance(cfg, type) or not dataclasses.is_dataclass(cfg):
        return None
    if hasattr(cfg, "to_dict"):
        return to_jsonable(type(cfg)())
    defaults = {}
    for f in dataclasses.fields(cfg):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = to_jsonable(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = to_jsonable(f.default_factory())
    return defaults


def file_hash(path, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes, read in chunks (archives and transfer sets do not fit in memory twice)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_sha256(path, chunk: int = 1 << 20) -> str:
    return file_hash(path, "sha256", chunk)


def atomic_write(path, write) -> None:
    """`write(tmp_path)` to a temporary name in the same folder, then rename: a killed process never leaves a
    half-written file under `path`."""
    _atomic(Path(path), write)


@contextlib.contextmanager
def naming(path):
    """An OSError raised inside without a file name (a full disk on write(), os.pwrite, fsync) gets `path`
    as its filename, so the command line can say which file could not be written. A safetensors error
    that is a full disk or a denied permission becomes that OSError."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    except SafetensorError as e:  # "I/O error: No space left on device (os error 28)"
        m = re.search(r"\(os error (\d+)\)|code: (\d+)", str(e))
        if m:
            code = int(m.group(1) or m.group(2))
            raise OSError(code, os.strerror(code), str(path)) from e
        raise


def _umask() -> int:
    """This process's umask, read without changing it where Linux says it (/proc/self/status, >= 4.7)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            write(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's (or a writer's own) 0600: shared as the umask says
            os.replace(tmp, path)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            if e.filename == tmp:  # name the file being written, not its temporary name
                raise OSError(e.errno, e.strerror, str(path)) from e
            raise
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_text(path, text: str) -> None:
    def w(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    _atomic(Path(path), w)


def write_json(path, obj: Any) -> None:
    write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json(path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a JSON file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def save_checkpoint(path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Weights (and any extra state tensors) plus metadata, atomically; a JSON sidecar beside it."""
    path = Path(path)
    meta = {**to_jsonable(meta), "code_version": code_version(), "format": "mimicnet-checkpoint-1"}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic(path, lambda tmp: save_file(tensors, tmp, metadata={"mimicnet": json.dumps(meta)}))
    write_json(path.with_suffix(".json"), meta)


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a checkpoint written by save_checkpoint; CheckpointError on anything else."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.safetensors"
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("mimicnet")
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({str(e).splitlines()[0][:120]})") from None
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without mimicnet metadata")
    return tensors, json.loads(raw)
