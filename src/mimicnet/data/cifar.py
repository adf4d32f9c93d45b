"""CIFAR-10 and CIFAR-100 in the official python format: download, verify, load, split.

We read the official pickled batches straight out of the .tar.gz (no extraction), so the file that was
md5-checked is the file that is trained on, and the same code reads the full archive, the small real
subset used on CPU, or an already-extracted folder. Every problem with the input becomes one
`DataError` line naming the file (and member) and what is wrong, never a traceback from inside tarfile.

Which dataset a source holds is told by its contents, not its name: CIFAR-10 is ``data_batch_1..5``,
``test_batch`` and ``batches.meta`` (10 classes); CIFAR-100 is ``train``, ``test`` and ``meta``, each image
with a fine label (100 classes, the default) and a coarse one (its superclass, 20; ``labels="coarse"``).
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..core.artifacts import file_hash, file_sha256
from ..core.errors import UserError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
# the names of the official `meta` (used when a source has none, as CLASSES for CIFAR-10)
FINE_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle", "bowl", "boy",
    "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish",
    "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom", "oak_tree", "orange",
    "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk",
    "skyscraper", "snail", "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm")
COARSE_CLASSES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables", "household_electrical_devices",
    "household_furniture", "insects", "large_carnivores", "large_man-made_outdoor_things",
    "large_natural_outdoor_scenes", "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates",
    "people", "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2")
assert len(FINE_CLASSES) == 100 and len(COARSE_CLASSES) == 20

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
WANTED = (*TRAIN_BATCHES, TEST_BATCH, META)
CIFAR100_FOLDER = "cifar-100-python"
C100_TRAIN, C100_TEST, C100_META = "train", "test", "meta"
C100_WANTED = (C100_TRAIN, C100_TEST, C100_META)
ALL_WANTED = (*WANTED, *C100_WANTED)  # the order a folder's files are hashed in
# the label sets a source can be read with: CIFAR-10 has only "fine" (its 10 classes), CIFAR-100 both
LABELS = ("fine", "coarse")
# `mimicnet data download --dataset NAME`: (url, md5) of each official archive
DATASETS = {"cifar10": (CIFAR10_URL, CIFAR10_MD5), "cifar100": (CIFAR100_URL, CIFAR100_MD5)}
N_VAL_FULL = 10_000  # the paper's (and everyone's) validation set: the last 10k of the 50k training images


class DataError(UserError):
    """Bad or missing data. str(e) is one line: '<file>[: member <name>]: <problem>'."""


def _error(source, problem, member=None) -> DataError:
    where = f"{source}: member {member}" if member else str(source)
    return DataError(" ".join(f"{where}: {problem}".split()))  # squash newlines: always one line


@dataclass(frozen=True)
class Cifar:
    x_train: torch.Tensor | None  # uint8 N×3×32×32; None when the source has no data_batch_* (train)
    y_train: torch.Tensor | None  # int64 (N,), of the label set `labels`
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    classes: tuple[str, ...]      # names of the classes of `labels`
    source: str  # resolved path it was read from
    sha256: str  # of the archive file, or of the batch files concatenated in ALL_WANTED order for a folder
    dataset: str = "cifar10"      # what the contents are: "cifar10" | "cifar100"
    labels: str = "fine"          # the label set y_train / y_test hold (CIFAR-10's one set is "fine")
    # every label set the source has: {name: (y_train, y_test, classes)} (CIFAR-100: fine and coarse)
    label_sets: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return DATASET_NAMES.get(self.dataset, self.dataset)


DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def check_labels(labels) -> str:
    """`labels` if it names a label set (LABELS), else one DataError line."""
    if labels not in LABELS:
        raise DataError(f"labels must be one of {', '.join(LABELS)}, got {labels!r}")
    return labels


def no_labels_error(source, dataset: str, labels: str, have=("fine",)) -> DataError:
    """The one line for a label set the data does not have (coarse labels of CIFAR-10, of a feature file)."""
    what = DATASET_NAMES.get(dataset, dataset)
    why = " (the 20 superclasses are CIFAR-100's)" if labels == "coarse" else ""
    return _error(source, f"{what} has no {labels} labels{why}, only {', '.join(have) or 'none'}")


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


# label keys of a batch: {label set: (key, number of classes)}
C10_LABEL_KEYS = {"fine": (b"labels", 10)}
C100_LABEL_KEYS = {"fine": (b"fine_labels", 100), "coarse": (b"coarse_labels", 20)}


def _parse_batch(obj, source, member, label_keys=C10_LABEL_KEYS) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Validate one batch dict and return (uint8 N×3×32×32, {label set: int64 N}) for each set of `label_keys`."""
    if not isinstance(obj, dict):
        raise _error(source, f"not a CIFAR batch (pickle holds {type(obj).__name__}, expected dict)", member)
    for key in (b"data", *(k for k, _ in label_keys.values())):
        if key not in obj:
            raise _error(source, f"not a CIFAR batch (no {key!r} key)", member)
    data = obj[b"data"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", type(data).__name__)
        raise _error(source, f"data has shape {shape}, expected (N, 3072)", member)
    if data.dtype != np.uint8:
        # Accept any integer array that fits in a byte; floats would mean someone normalised the file.
        if data.dtype.kind not in "iu" or (data.size and (data.min() < 0 or data.max() > 255)):
            raise _error(source, f"data has dtype {data.dtype} or values outside 0..255, expected uint8",
                         member)
        data = data.astype(np.uint8)
    ys = {}
    for name, (key, n_classes) in label_keys.items():
        what = key.decode()  # "labels", "fine_labels", "coarse_labels"
        try:
            labels = np.asarray(obj[key])
        except Exception:
            labels = np.asarray([None])  # fall through to the dtype error below
        if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
            raise _error(source, f"{what} must be a list of ints (got {labels.dtype}, shape {labels.shape})",
                         member)
        if len(labels) != len(data):
            raise _error(source, f"{len(labels)} {what} for {len(data)} images", member)
        bad = labels[(labels < 0) | (labels >= n_classes)]
        if bad.size:
            raise _error(source, f"{what} outside 0..{n_classes - 1} (found {bad[0]})", member)
        ys[name] = labels.astype(np.int64)
    # Rows are R plane (1024), G plane, B plane, each row-major 32×32: a plain reshape gives NCHW.
    return data.reshape(-1, 3, 32, 32), ys


def _names(names) -> tuple[str, ...]:
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _parse_meta(obj, source, member) -> tuple[str, ...]:
    names = obj.get(b"label_names") if isinstance(obj, dict) else None
    if not isinstance(names, list) or len(names) != 10:
        raise _error(source, "not a CIFAR-10 batches.meta (expected 10 b'label_names')", member)
    return _names(names)


def _parse_meta100(obj, source, member) -> dict[str, tuple[str, ...]]:
    """{label set: class names} of a CIFAR-100 meta."""
    found = {}
    for name, key, n in (("fine", b"fine_label_names", 100), ("coarse", b"coarse_label_names", 20)):
        names = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(names, list) or len(names) != n:
            raise _error(source, "not a CIFAR-100 meta (expected 100 b'fine_label_names' and 20 "
                         f"b'coarse_label_names'; {key!r} is "
                         f"{f'{len(names)} names' if isinstance(names, list) else 'missing'})", member)
        found[name] = _names(names)
    return found


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
                    if not m.isfile() or base not in ALL_WANTED:
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
    # A folder with CIFAR-10 batches is CIFAR-10: files of its that happen to be named like CIFAR-100's
    # (meta, train, test) are not its data, and must neither change its hash nor make it unreadable.
    c10 = any((folder / b).is_file() for b in (*TRAIN_BATCHES, TEST_BATCH))
    found = {}
    for base in (WANTED if c10 else ALL_WANTED):
        p = folder / base
        if p.is_file():
            try:
                found[base] = (p, None, p.read_bytes())
            except OSError as e:
                raise _error(p, f"cannot read file ({e.strerror or e})") from None
    return found


def load_cifar(path, labels: str = "fine") -> Cifar:
    """Load CIFAR-10 or CIFAR-100 (told by the contents) from a .tar.gz/.tgz/.tar archive or an extracted folder
    (see module docstring); y_train / y_test are the labels of the set `labels` ("fine": CIFAR-10's classes or
    CIFAR-100's 100, "coarse": CIFAR-100's 20 superclasses), every set is in `label_sets`.

    A folder may be cifar-10-batches-py/ (cifar-100-python/) itself or its parent. CIFAR-10's training
    batches are concatenated in order data_batch_1..5 (whichever are present); a test-only source gives
    x_train = None.
    """
    check_labels(labels)
    path = Path(path).expanduser()
    if not path.exists():
        raise _error(path, "no such file or directory")
    path = path.resolve()
    if path.is_dir():
        if (path / FOLDER).is_dir() and (path / CIFAR100_FOLDER).is_dir():
            raise _error(path, f"holds both {FOLDER} and {CIFAR100_FOLDER}: give the one to read")
        if (path / FOLDER).is_dir():
            path = path / FOLDER
        elif (path / CIFAR100_FOLDER).is_dir():
            path = path / CIFAR100_FOLDER
        found = _read_folder(path)
        h = hashlib.sha256()
        for base in ALL_WANTED:  # fixed order, so the hash names the content, not the listing order
            if base in found:
                h.update(found[base][2])
        sha = h.hexdigest()
    else:
        found = _read_tar(path)
        sha = file_sha256(path)
    c10 = [b for b in (*TRAIN_BATCHES, TEST_BATCH) if b in found]
    c100 = [b for b in (C100_TRAIN, C100_TEST) if b in found]
    if c10 and c100:
        raise _error(path, f"holds both CIFAR-10 batches ({', '.join(c10)}) and CIFAR-100 files ({', '.join(c100)}): "
                     "give one dataset")
    if not c10 and not c100:
        raise _error(path, f"no CIFAR-10 batches found (expected {FOLDER}/data_batch_1..5 and/or test_batch), nor "
                     f"CIFAR-100 files ({CIFAR100_FOLDER}/train and/or test)")
    dataset = "cifar100" if c100 else "cifar10"
    keys = C100_LABEL_KEYS if c100 else C10_LABEL_KEYS
    if labels not in keys:
        raise no_labels_error(path, dataset, labels, tuple(keys))
    train_members = (C100_TRAIN,) if c100 else TRAIN_BATCHES
    test_member = C100_TEST if c100 else TEST_BATCH

    def load(base, parse):
        source, member, raw = found[base]
        return parse(_unpickle(raw, source, member), source, member)

    def parse(obj, source, member):
        return _parse_batch(obj, source, member, keys)

    def to_torch(parts):
        if not parts:
            return None, {name: None for name in keys}
        x = np.concatenate([x for x, _ in parts])
        return torch.from_numpy(x), {name: torch.from_numpy(np.concatenate([ys[name] for _, ys in parts]))
                                     for name in keys}

    x_train, y_trains = to_torch([load(b, parse) for b in train_members if b in found])
    x_test, y_tests = to_torch([load(test_member, parse)] if test_member in found else [])
    if c100:
        names = load(C100_META, _parse_meta100) if C100_META in found else {"fine": FINE_CLASSES,
                                                                            "coarse": COARSE_CLASSES}
    else:
        names = {"fine": load(META, _parse_meta) if META in found else CLASSES}
    sets = {name: (y_trains[name], y_tests[name], names[name]) for name in keys}
    return Cifar(x_train, y_trains[labels], x_test, y_tests[labels], names[labels], str(path), sha, dataset, labels,
                 sets)


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


def load_split(path, split: str, labels: str = "fine"):
    """(x uint8 N×3×32×32, y int64) for split in {'train', 'val', 'test'}; 'train' excludes val."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
    return select_split(load_cifar(path, labels), split)


def select_split(d: Cifar, split: str):
    """The split of an already loaded archive (see load_split)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
    if split == "test":
        if d.x_test is None:
            raise _error(d.source, f"no {C100_TEST if d.dataset == 'cifar100' else TEST_BATCH}: split 'test' is "
                         "not available")
        return d.x_test, d.y_test
    if d.x_train is None:
        what = C100_TRAIN if d.dataset == "cifar100" else "data_batch_*"
        raise _error(d.source, f"no {what}: split {split!r} is not available")
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
        raise DataError(" ".join(f"cannot download {url}: {reason or e}".split()) + "; without network, give an "
                        "archive already on disk: --data ARCHIVE (the official one, or a CIFAR-format subset)") from None

    if total is not None and got != total:
        part.unlink(missing_ok=True)
        raise _error(final, f"download from {url} stopped early ({got} of {total} bytes)")
    actual = h.hexdigest()
    if actual != md5:
        part.unlink(missing_ok=True)
        raise _error(final, f"md5 mismatch after download from {url}: expected {md5}, got {actual}")
    os.replace(part, final)
    return final


def download_cifar100(dest_dir, url: str = CIFAR100_URL, md5: str = CIFAR100_MD5, progress: bool = True) -> Path:
    """The official CIFAR-100 archive, downloaded into dest_dir and md5-checked like CIFAR-10's (download_cifar)."""
    return download_cifar(dest_dir, url=url, md5=md5, progress=progress)


def download_dataset(dest_dir, dataset: str = "cifar10", progress: bool = True) -> Path:
    """The official archive of `dataset` (a DATASETS name: cifar10, cifar100), md5-checked, in dest_dir."""
    if dataset not in DATASETS:
        raise DataError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    url, md5 = DATASETS[dataset]
    return download_cifar(dest_dir, url=url, md5=md5, progress=progress)
