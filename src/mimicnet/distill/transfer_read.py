"""Reading a finished transfer set: its manifest, its files verified against their checksums once per process
(verify), rows read in contiguous ranges with replayed images rebuilt bit for bit (TransferSet)."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch



from .transfer_format import (FORMAT, REPLAY_RESIZE, TransferError, _array_to_params,
                              _augment, _hash_files, _train_split)


def _read_manifest(path: Path) -> dict:
    man_path = path / "manifest.json"
    if not man_path.exists():
        prog_path = path / "progress.json"
        if prog_path.exists():
            try:
                prog = json.loads(prog_path.read_text())
                state = f"{prog['epochs_done']}/{prog['epochs']} epochs"
            except (OSError, ValueError, KeyError):
                state = "unreadable progress.json"
            raise TransferError(f"{path}: incomplete transfer set ({state}); run the same `mimicnet transfer` "
                                "command to finish it")
        if not path.is_dir():
            raise TransferError(f"{path}: no such transfer set folder")
        raise TransferError(f"{path}: not a transfer set (no manifest.json)")
    try:
        man = json.loads(man_path.read_text())
    except ValueError as e:
        raise TransferError(f"{man_path}: not valid JSON ({e})") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise TransferError(f"{man_path}: not a mimicnet transfer set manifest")
    return man


class TransferSet:
    """A finished transfer set, read in contiguous row ranges (never loaded whole).

    `read(start, stop)` -> (images uint8 [k,3,32,32], teacher logits float32 [k,C], true labels int64 [k]),
    all on `device`. In replay mode the images are rebuilt from the source images and the stored params,
    bit-identical to what the teacher saw when read on the device type the set was generated on."""

    def __init__(self, path, device="cpu", data=None):
        self.path = Path(path)
        self.device = torch.device(device)
        self.manifest = man = _read_manifest(self.path)
        self.epochs, self.n, self.rows = man["epochs"], man["n"], man["rows"]
        self.num_classes, self.mode, self.teacher = man["num_classes"], man["mode"], man["teacher"]
        self.files = man["files"]
        for f in self.files.values():
            p = self.path / f["name"]
            size = p.stat().st_size if p.exists() else None
            if size != f["bytes"]:
                raise TransferError(f"{p}: {'missing' if size is None else f'{size} bytes'}, the manifest says "
                                    f"{f['bytes']}; the set is damaged")
        self.train_labels = torch.from_numpy(self._read("train_labels", 0, self.n).astype(np.int64)).to(self.device)
        self._x = None
        if self.mode == "replay":
            if man.get("resize") != REPLAY_RESIZE:
                raise TransferError(f"{self.path}: a replay set made with another resize ({man.get('resize', 'bicubic')}"
                                    f", not {REPLAY_RESIZE}): its images cannot be rebuilt; delete it and run again")
            self._x = self._source_images(data).to(self.device)

    def _source_images(self, data) -> torch.Tensor:
        d = self.manifest["data"]
        path = data or d["path"]
        if not Path(path).exists():
            raise TransferError(f"{self.path}: replay needs the training images of {d['path']} (sha256 "
                                f"{d['sha256'][:12]}…), which are not there; pass data=… to point at a copy")
        x, _, sha, _ = _train_split(str(path), d["max_train"])
        if sha != d["sha256"]:
            raise TransferError(f"{path}: sha256 {sha[:12]}… is not the data this replay set was made from "
                                f"({d['sha256'][:12]}…)")
        return x

    def _read(self, key: str, start: int, count: int) -> np.ndarray:
        f = self.files[key]
        items = math.prod(f["shape"][1:])
        a = np.fromfile(self.path / f["name"], dtype=np.dtype(f["dtype"]).newbyteorder("<"), count=count * items,
                        offset=start * f["row_bytes"])
        if len(a) != count * items:
            raise TransferError(f"{self.path / f['name']}: short read at row {start}; the set is damaged")
        return a.reshape(count, *f["shape"][1:])

    def __len__(self) -> int:
        return self.rows

    def epoch_rows(self, e: int) -> tuple[int, int]:
        if not 0 <= e < self.epochs:
            raise IndexError(f"epoch {e} out of range (set has {self.epochs})")
        return e * self.n, (e + 1) * self.n

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= start <= stop <= self.rows:
            raise IndexError(f"rows {start}:{stop} out of range (set has {self.rows})")
        k = stop - start
        src = torch.from_numpy(self._read("source", start, k).astype(np.int64)).to(self.device)
        logits = torch.from_numpy(self._read("logits", start, k).astype(np.float32)).to(self.device)
        if self.mode == "images":
            imgs = torch.from_numpy(self._read("images", start, k)).to(self.device)
        else:
            p = _array_to_params(torch.from_numpy(self._read("params", start, k)).to(self.device))
            imgs = _augment(self._x, src, p)
        return imgs, logits, self.train_labels[src]


# Sets verified by this process: resolved folder -> (size, mtime_ns, inode) of each file when it was hashed.
# A process hashes a set once (generate's reuse, then every student that reads it), and again if a file changed.
_VERIFIED: dict[str, tuple] = {}


def _repair(path: Path) -> str:
    return (f"the set is damaged: delete {path} and run the same command again (`mimicnet reproduce` or "
            "`mimicnet transfer` regenerates it)")


def content_id(manifest: dict) -> str:
    """A transfer set by content alone: its files' sha256 (images or augmentation draws, teacher logits, labels),
    the same set wherever it lives and whatever paths its manifest records."""
    key = sorted((k, f["sha256"]) for k, f in manifest["files"].items())
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def verify(path) -> dict:
    """Check every file against the manifest -- its size, then its sha256 -- before a set is used; returns the
    manifest, a TransferError naming the damaged file and how to repair it otherwise."""
    path = Path(path)
    man = _read_manifest(path)
    files = list(man["files"].values())
    stats = []
    for f in files:
        p = path / f["name"]
        if not p.exists():
            raise TransferError(f"{p}: missing; {_repair(path)}")
        st = p.stat()
        if st.st_size != f["bytes"]:
            raise TransferError(f"{p}: {st.st_size} bytes, the manifest says {f['bytes']} (truncated?); {_repair(path)}")
        stats.append((st.st_size, st.st_mtime_ns, st.st_ino))
    key = str(path.resolve())
    if _VERIFIED.get(key) == tuple(stats):
        return man
    bad = [f["name"] for f, sha in zip(files, _hash_files([path / f["name"] for f in files])) if sha != f["sha256"]]
    if bad:
        raise TransferError(f"{path / bad[0]}: checksum mismatch in {', '.join(bad)} (sha256 differs from the "
                            f"manifest); {_repair(path)}")
    _VERIFIED[key] = tuple(stats)
    return man
