"""CIFAR-10 in the official python format: download, verify, load, split.

We read the official pickled batches straight out of the .tar.gz (no extraction), so the file that was
md5-checked is the file that is trained on, and the same code reads the full archive, the small real
subset used on CPU, or an already-extracted folder. Every problem with the input becomes one
`DataError` line naming the file (and member) and what is wrong, never a traceback from inside tarfile.
"""
from __future__ import annotations

import codecs
import hashlib
import http.client
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..core.artifacts import file_hash, file_sha256
from ..core.errors import UserError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
WANTED = (*TRAIN_BATCHES, TEST_BATCH, META)
N_VAL_FULL = 10_000  # the paper's (and everyone's) validation set: the last 10k of the 50k training images


class DataError(UserError):
    """Bad or missing data. str(e) is one line: '<file>[: member <name>]: <problem>'."""


def _error(source, problem, member=None) -> DataError:
    where = f"{source}: member {member}" if member else str(source)
    return DataError(" ".join(f"{where}: {problem}".split()))  # squash newlines: always one line


@dataclass(frozen=True)
class Cifar:
    x_train: torch.Tensor | None  # uint8 N×3×32×32; None when the source has no data_batch_*
    y_train: torch.Tensor | None  # int64 (N,)
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    classes: tuple[str, ...]
    source: str  # resolved path it was read from
    sha256: str  # of the archive file, or of the batch files concatenated in WANTED order for a folder


# ----------------------------------------------------------------------------------------------------
# hashing and cache location


def file_md5(path) -> str:
    return file_hash(path, "md5")


def default_cache_dir() -> Path:
    return Path(os.environ.get("MIMICNET_CACHE") or "~/.cache/mimicnet").expanduser()


# ----------------------------------------------------------------------------------------------------
# unpickling: the official format is pickle, so we accept it, but only the few globals a CIFAR batch
# needs (numpy array reconstruction, bytes from protocol 2). A crafted archive cannot run code.

def _np_global(name):
    try:
        import numpy._core.multiarray as ma  # numpy >= 2 (numpy.core is a deprecated alias there)
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core.multiarray as ma
    return getattr(ma, name)


def _np_numeric(name):
    try:
        import numpy._core.numeric as nm  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core.numeric as nm
    return getattr(nm, name)


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    return codecs.encode(obj, encoding, errors)


_SAFE_GLOBALS = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): lambda: _np_global("_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _np_global("_reconstruct"),
    ("numpy.core.multiarray", "scalar"): lambda: _np_global("scalar"),
    ("numpy._core.multiarray", "scalar"): lambda: _np_global("scalar"),
    ("_codecs", "encode"): lambda: _codecs_encode,
    # pickle protocol 5 (Python >= 3.8 writes it with protocol=-1): an array is its raw buffer, rebuilt by
    # _frombuffer(buffer, dtype, shape, order), which only reads that buffer
    ("numpy.core.numeric", "_frombuffer"): lambda: _np_numeric("_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): lambda: _np_numeric("_frombuffer"),
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return _SAFE_GLOBALS[(module, name)]()


def _unpickle(raw: bytes, source, member):
    try:
        # encoding="bytes": the batches were pickled by Python 2, keys come back as b"data", b"labels".
        return _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # pickle raises nearly anything on garbage input
        raise _error(source, f"not a readable pickle ({type(e).__name__}: {e})", member) from None


def _parse_batch(obj, source, member) -> tuple[np.ndarray, np.ndarray]:
    """Validate one batch dict and return (uint8 N×3×32×32, int64 N)."""
    if not isinstance(obj, dict):
        raise _error(source, f"not a CIFAR batch (pickle holds {type(obj).__name__}, expected dict)", member)
    for key in (b"data", b"labels"):
        if key not in obj:
            raise _error(source, f"not a CIFAR batch (no {key!r} key)", member)
    data, labels = obj[b"data"], obj[b"labels"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", type(data).__name__)
        raise _error(source, f"data has shape {shape}, expected (N, 3072)", member)
    if data.dtype != np.uint8:
        # Accept any integer array that fits in a byte; floats would mean someone normalised the file.
        if data.dtype.kind not in "iu" or (data.size and (data.min() < 0 or data.max() > 255)):
            raise _error(source, f"data has dtype {data.dtype} or values outside 0..255, expected uint8",
                         member)
        data = data.astype(np.uint8)
    try:
        labels = np.asarray(labels)
    except Exception:
        labels = np.asarray([None])  # fall through to the dtype error below
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise _error(source, f"labels must be a list of ints (got {labels.dtype}, shape {labels.shape})",
                     member)
    if len(labels) != len(data):
        raise _error(source, f"{len(labels)} labels for {len(data)} images", member)
    bad = labels[(labels < 0) | (labels > 9)]
    if bad.size:
        raise _error(source, f"labels outside 0..9 (found {bad[0]})", member)
    # Rows are R plane (1024), G plane, B plane, each row-major 32×32: a plain reshape gives NCHW.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _parse_meta(obj, source, member) -> tuple[str, ...]:
    names = obj.get(b"label_names") if isinstance(obj, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise _error(source, "not a CIFAR-10 batches.meta (expected 10 b'label_names')", member)
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


# ----------------------------------------------------------------------------------------------------
# reading members from an archive or a folder


def _read_tar(path: Path) -> dict[str, tuple[Path, str | None, bytes]]:
    """{basename: (file, member name, raw bytes)} for the CIFAR members, in one streaming pass.

    Streaming mode ('r|*') reads the .tar.gz once, front to back; random access into a gzip would
    decompress it again for every member. Nothing is written to disk.
    """
    found: dict[str, tuple[Path, str | None, bytes]] = {}
    try:
        with open(path, "rb") as f:
            try:
                tf = tarfile.open(fileobj=f, mode="r|*")
            except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
                f.seek(0)
                if f.read(2) == b"\x1f\x8b":  # gzip magic: a real .tar.gz cut short before the first member
                    raise _error(path, f"truncated or corrupt gzip archive ({e})") from None
                raise _error(path, f"not a gzip/tar archive ({e})") from None
            try:
                for m in tf:
                    base = m.name.rstrip("/").rsplit("/", 1)[-1]
                    if not m.isfile() or base not in WANTED:
                        continue
                    if base in found:
                        raise _error(path, f"two members named {base} ({found[base][1]}, {m.name})")
                    raw = tf.extractfile(m).read()
                    if len(raw) != m.size:
                        raise _error(path, f"truncated archive ({len(raw)} of {m.size} bytes)", m.name)
                    found[base] = (path, m.name, raw)
            except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
                raise _error(path, f"truncated or corrupt archive ({type(e).__name__}: {e})") from None
            finally:
                tf.close()
    except OSError as e:  # e.g. permission denied on open()
        raise _error(path, f"cannot read file ({e.strerror or e})") from None
    return found


def _read_folder(folder: Path) -> dict[str, tuple[Path, str | None, bytes]]:
    found = {}
    for base in WANTED:
        p = folder / base
        if p.is_file():
            try:
                found[base] = (p, None, p.read_bytes())
            except OSError as e:
                raise _error(p, f"cannot read file ({e.strerror or e})") from None
    return found


def load_cifar(path) -> Cifar:
    """Load CIFAR-10 from a .tar.gz/.tgz/.tar archive or an extracted folder (see module docstring).

    A folder may be cifar-10-batches-py/ itself or its parent. Training batches are concatenated in
    order data_batch_1..5 (whichever are present); a test-only source gives x_train = None.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise _error(path, "no such file or directory")
    path = path.resolve()
    if path.is_dir():
        if (path / FOLDER).is_dir():
            path = path / FOLDER
        found = _read_folder(path)
        h = hashlib.sha256()
        for base in WANTED:  # fixed order, so the hash names the content, not the listing order
            if base in found:
                h.update(found[base][2])
        sha = h.hexdigest()
    else:
        found = _read_tar(path)
        sha = file_sha256(path)
    if not any(b in found for b in (*TRAIN_BATCHES, TEST_BATCH)):
        raise _error(path, f"no CIFAR-10 batches found (expected {FOLDER}/data_batch_1..5 and/or test_batch)")

    def load(base, parse):
        source, member, raw = found[base]
        return parse(_unpickle(raw, source, member), source, member)

    def to_torch(parts):
        if not parts:
            return None, None
        x = np.concatenate([x for x, _ in parts])
        y = np.concatenate([y for _, y in parts])
        return torch.from_numpy(x), torch.from_numpy(y)

    x_train, y_train = to_torch([load(b, _parse_batch) for b in TRAIN_BATCHES if b in found])
    x_test, y_test = to_torch([load(TEST_BATCH, _parse_batch)] if TEST_BATCH in found else [])
    classes = load(META, _parse_meta) if META in found else CLASSES
    return Cifar(x_train, y_train, x_test, y_test, classes, str(path), sha)


# ----------------------------------------------------------------------------------------------------
# splits


def split_train_val(x, y):
    """Hold out the LAST 10,000 images (N >= 50,000, as in the paper) or the last 20% (subsets).

    Deterministic and unshuffled, so val is the same set for every teacher, student and seed.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} rows but y has {len(y)}")
    n_val = N_VAL_FULL if n >= 50_000 else round(n * 0.2)  # n*0.2 is never exactly k+0.5
    cut = n - n_val  # not x[-n_val:]: that is everything when n_val == 0
    return x[:cut], y[:cut], x[cut:], y[cut:]


def load_split(path, split: str):
    """(x uint8 N×3×32×32, y int64) for split in {'train', 'val', 'test'}; 'train' excludes val."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
    return select_split(load_cifar(path), split)


def select_split(d: Cifar, split: str):
    """The split of an already loaded archive (see load_split)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
    if split == "test":
        if d.x_test is None:
            raise _error(d.source, f"no {TEST_BATCH}: split 'test' is not available")
        return d.x_test, d.y_test
    if d.x_train is None:
        raise _error(d.source, f"no data_batch_*: split {split!r} is not available")
    x_tr, y_tr, x_val, y_val = split_train_val(d.x_train, d.y_train)
    return (x_tr, y_tr) if split == "train" else (x_val, y_val)


# ----------------------------------------------------------------------------------------------------
# download


def download_cifar(dest_dir, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5, progress: bool = True) -> Path:
    """Download url into dest_dir (verified by md5) and return the file's path; reuse a verified copy.

    We write to '<name>.part' and rename only after the md5 matches, so a final file that exists was
    complete when written; a corrupted one (disk, manual copy) is still re-checked and replaced.
    """
    name = Path(urllib.parse.urlparse(url).path).name
    if not name:
        raise ValueError(f"cannot tell a file name from URL {url!r}")
    dest_dir = Path(dest_dir).expanduser()
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _error(dest_dir, f"cannot create folder ({e.strerror or e})") from None
    final, part = dest_dir / name, dest_dir / (name + ".part")
    md5 = md5.lower()

    if final.is_file():
        if file_md5(final) == md5:
            return final
        final.unlink()  # a broken earlier copy: fetch again

    h = hashlib.md5()
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
    except (OSError, http.client.HTTPException, ValueError) as e:  # URLError/HTTPError are OSErrors
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) if not isinstance(e, urllib.error.HTTPError) else None
        raise DataError(" ".join(f"cannot download {url}: {reason or e}".split())) from None

    if total is not None and got != total:
        part.unlink(missing_ok=True)
        raise _error(final, f"download from {url} stopped early ({got} of {total} bytes)")
    actual = h.hexdigest()
    if actual != md5:
        part.unlink(missing_ok=True)
        raise _error(final, f"md5 mismatch after download from {url}: expected {md5}, got {actual}")
    os.replace(part, final)
    return final
