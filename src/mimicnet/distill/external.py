"""Teachers from outside mimicnet: any model that maps N×3×32×32 float images to N×K logits, as a TorchScript
file (``torch.jit.save``) or a ``torch.export`` program (``torch.export.save``, ``.pt2``).

The kind of a teacher path is read from its content, not its name (``detect``): a folder holding
ensemble.json, results.json or best.safetensors (or a .safetensors checkpoint) is one of mimicnet's own
(distill.ensemble.load_teacher); a folder holding teacher.json is an external teacher set up by
``mimicnet compress`` (below); a zip archive holding TorchScript code is TorchScript; one holding a
torch.export archive (archive_format, or the older serialized_exported_program.json) is a ``.pt2`` program.
Anything else is a one-line error naming the file.

Input normalisation. The pipeline hands a teacher uint8 images; ``ExternalTeacher`` turns them into float
[0, 1] images and applies the teacher's own normalisation (``Normalization``):

    mean-std      (x - mean) / std per channel, on the [0, 1] scale (e.g. 0.4914,0.4822,0.4465 / 0.247,0.243,0.261)
    standardize   mimicnet's per-image standardisation (data.augment.standardize; what mimicnet's runs see)
    none          the [0, 1] images as they are (the model normalises inside, as mimicnet's exports do)

It comes from flags (``--teacher-mean/--teacher-std`` or ``--teacher-normalize``) or else from metadata stored
with the model: a JSON object ``{"mean": [...], "std": [...]}`` or ``{"normalize": "standardize" | "none"}``,
as an extra file ``mimicnet.json`` inside the file (``torch.jit.save(m, f, _extra_files={"mimicnet.json": ...})``,
``torch.export.save(ep, f, extra_files={"mimicnet.json": ...})``) or in a file beside it named like the
model plus ``.json`` (``teacher.pt2.json``). Flags win over metadata.

A teacher folder (what the rest of the pipeline loads by path, like an ensemble folder):

    teacher.json   format, the model file (path, sha256, kind), its normalisation, classes, parameters,
                   validation/test accuracy on the data it was checked on, and ``identity``: the sha256 of
                   (file sha256, kind, normalisation). teacher_info's ``sha256`` is that identity, so a
                   transfer set made from it names the exact file and normalisation, and a changed file is
                   refused (its sha256 is checked on every load) instead of silently reused.
"""
from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core import artifacts
from ..core.artifacts import CheckpointError, file_sha256
from ..data.augment import standardize
from ..data.splits import TrainData
from ..models.export import METADATA_NAME, load_exported, load_torchscript
from ..models.inference import accuracy, model_inputs, predict_logits

__all__ = ["TeacherError", "Normalization", "ExternalTeacher", "detect", "read_metadata", "resolve_normalization",
           "load_external", "check_teacher", "write_teacher_folder", "external_info", "load_teacher_folder",
           "TEACHER_JSON", "MIMICNET", "TORCHSCRIPT", "EXPORT"]

FORMAT = "mimicnet-external-teacher-1"
TEACHER_JSON = "teacher.json"
MIMICNET, TORCHSCRIPT, EXPORT, FOLDER = "mimicnet", "torchscript", "export", "teacher-folder"
NORMALIZE = ("mean-std", "standardize", "none")


class TeacherError(CheckpointError):
    """A teacher that cannot be used: not a model file, a model that fails on images, outputs that do not fit
    the data (the message names the file and what is wrong)."""


# ----------------------------------------------------------------------------------------------
# Normalisation

@dataclass(frozen=True)
class Normalization:
    kind: str                           # mean-std | standardize | none
    mean: tuple[float, ...] = ()        # mean-std: per channel, on [0, 1] images
    std: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        d = {"normalize": self.kind}
        if self.kind == "mean-std":
            d.update(mean=list(self.mean), std=list(self.std))
        return d

    def describe(self) -> str:
        if self.kind == "mean-std":
            return f"(x - mean {list(self.mean)}) / std {list(self.std)}"
        return {"standardize": "per-image standardisation", "none": "[0, 1] images as they are"}[self.kind]


def normalization(kind: str | None, mean, std, where: str) -> Normalization:
    """A Normalization from its parts, checked: a TeacherError starting with `where` (a flag, a file)."""
    if mean is not None or std is not None:
        if kind not in (None, "mean-std"):
            raise TeacherError(f"{where}: give a mean and std or normalize {kind!r}, not both")
        if mean is None or std is None:
            raise TeacherError(f"{where}: a mean needs a std and a std a mean (3 numbers each, R,G,B)")
        try:
            mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        except (TypeError, ValueError):
            raise TeacherError(f"{where}: mean and std must be lists of 3 numbers") from None
        if len(mean) != 3 or len(std) != 3:
            raise TeacherError(f"{where}: mean and std take 3 numbers each (R,G,B), got {len(mean)} and {len(std)}")
        if not all(0.0 < s for s in std):
            raise TeacherError(f"{where}: std must be > 0, got {list(std)}")
        if any(abs(m) > 1.0 for m in mean) or any(s > 1.0 for s in std):
            raise TeacherError(f"{where}: mean and std are on the [0, 1] scale of the images (e.g. 0.49,0.48,0.45 "
                               f"and 0.25,0.24,0.26), got mean {list(mean)}, std {list(std)} (0-255 scale? divide "
                               "by 255)")
        return Normalization("mean-std", mean, std)
    if kind not in NORMALIZE or kind == "mean-std":
        raise TeacherError(f"{where}: normalize must be standardize or none (or a mean and std), not {kind!r}")
    return Normalization(kind)


def resolve_normalization(path, metadata: dict, mean=None, std=None, kind: str | None = None) -> tuple[Normalization, str]:
    """The teacher's normalisation and where it came from ("flags" | "metadata"): the flags when any is given,
    else the model's metadata, else a TeacherError saying how to give it."""
    if mean is not None or std is not None or kind is not None:
        return normalization(kind, mean, std, "--teacher-mean/--teacher-std/--teacher-normalize"), "flags"
    if metadata.get("_unreadable") is not None:
        raise TeacherError(f"{path}: its {METADATA_NAME} is not a JSON object ({metadata['_unreadable']!r})")
    if any(k in metadata for k in ("normalize", "mean", "std")):
        return normalization(metadata.get("normalize"), metadata.get("mean"), metadata.get("std"),
                             f"{path}: {METADATA_NAME}"), "metadata"
    raise TeacherError(f"{path}: its input normalisation is unknown: pass --teacher-mean R,G,B --teacher-std R,G,B "
                       "(on [0, 1] images), --teacher-normalize standardize (per-image) or --teacher-normalize none, "
                       f"or store {METADATA_NAME} with the model (see `mimicnet compress --help`)")


# ----------------------------------------------------------------------------------------------
# What a path holds

def detect(path) -> str:
    """MIMICNET (run or ensemble folder, checkpoint), FOLDER (teacher.json), TORCHSCRIPT or EXPORT, by content;
    a TeacherError naming the path for anything else."""
    p = Path(path)
    if p.is_dir():
        if (p / TEACHER_JSON).is_file():
            return FOLDER
        if any((p / n).exists() for n in ("ensemble.json", "results.json", "best.safetensors")):
            return MIMICNET
        raise TeacherError(f"{p}: a folder, but not a teacher (no ensemble.json, results.json or best.safetensors "
                           f"of a mimicnet run or ensemble, no {TEACHER_JSON})")
    if not p.exists():
        raise TeacherError(f"{p}: no such file or folder")
    if p.suffix == ".safetensors":
        return MIMICNET
    try:
        names = zipfile.ZipFile(p).namelist() if zipfile.is_zipfile(p) else None
    except (OSError, zipfile.BadZipFile):
        names = None
    if names:
        if any(n.endswith(("/archive_format", "serialized_exported_program.json")) or n == "archive_format"
               for n in names):
            return EXPORT
        if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
            return TORCHSCRIPT
        if any(n.endswith("data.pkl") for n in names):
            raise TeacherError(f"{p}: a torch.save pickle, not a model file that runs on its own; save the model with "
                               "torch.jit.save(torch.jit.script(model), ...) or torch.export.save(torch.export.export("
                               "model, (x,)), ...)")
    raise TeacherError(f"{p}: not a model file (neither TorchScript, a torch.export .pt2 program, nor a mimicnet "
                       "run or ensemble folder)")


def read_metadata(path, loaded: dict) -> dict:
    """The model's mimicnet.json: the extra file inside it (`loaded`), else the file beside it (PATH.json)."""
    if loaded:
        return loaded
    side = Path(str(path) + ".json")
    if side.is_file():
        d = artifacts.read_json(side)
        if not isinstance(d, dict):
            raise TeacherError(f"{side}: not a JSON object of teacher metadata")
        return d
    return {}


# ----------------------------------------------------------------------------------------------
# The model

class ExternalTeacher(nn.Module):
    """An external model with its normalisation: takes the float [0, 1] images models.inference feeds a
    model with ``takes_images``, returns its logits. The wrapped model stays in the mode it was loaded in
    (eval; an exported program has no other), whatever ``train()``/``eval()`` are called on the wrapper."""

    takes_images = True

    def __init__(self, model: nn.Module, norm: Normalization, name: str = "teacher"):
        super().__init__()
        self.model = model
        self.norm = norm
        self.name = name
        if norm.kind == "mean-std":
            self.register_buffer("mean", torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm.kind == "standardize":
            x = standardize(x)
        elif self.norm.kind == "mean-std":
            x = (x - self.mean) / self.std
        out = self.model(x)
        if not isinstance(out, torch.Tensor):
            raise TeacherError(f"{self.name}: returns {type(out).__name__}, not a tensor of N×K logits")
        return out

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def extra_repr(self) -> str:
        return f"name={self.name!r}, normalize={self.norm.describe()!r}"


def _first_line(e: BaseException) -> str:
    """The line of an exception's message that says what went wrong (TorchScript puts its own traceback first
    and the error last)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    return (lines[-1] if lines[0].startswith("The following operation failed") else lines[0])[:200]


def load_external(path, kind: str, device="cpu") -> tuple[nn.Module, dict]:
    """(the model of a TORCHSCRIPT or EXPORT file in eval mode on `device`, its metadata)."""
    try:
        model, meta = (load_torchscript if kind == TORCHSCRIPT else load_exported)(path, device)
    except (RuntimeError, ValueError, KeyError, OSError, zipfile.BadZipFile, AttributeError) as e:
        what = "TorchScript" if kind == TORCHSCRIPT else "a torch.export program"
        raise TeacherError(f"{path}: cannot be loaded as {what} ({_first_line(e)})") from None
    try:
        model.eval()
    except (NotImplementedError, RuntimeError):
        pass  # an exported program cannot switch mode: it runs as it was exported
    return model, read_metadata(path, meta)


def n_params(model: nn.Module) -> int | None:
    try:
        return int(sum(p.numel() for p in model.parameters()))
    except (RuntimeError, AttributeError):
        return None


# ----------------------------------------------------------------------------------------------
# Checks on the data

def _guarded(name, what: str, hint: str, fn):
    """fn(): a teacher that fails on images becomes one line naming it (running out of memory still raises)."""
    try:
        return fn()
    except TeacherError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, AssertionError, torch.jit.Error) as e:
        # torch.jit.Error: a TorchScript teacher's own `raise` (not a RuntimeError)
        if isinstance(e, getattr(torch, "OutOfMemoryError", ())):
            raise
        raise TeacherError(f"{name}: fails on {what} ({_first_line(e)}){hint}") from None


@torch.no_grad()
def check_teacher(model: nn.Module, data: TrainData, name, device, batch_size: int = 500) -> dict:
    """Run the teacher on the validation (and test) split: its output must be N×K logits with K the data's
    number of classes, finite everywhere. Returns {"val_acc", "test_acc", "num_classes"}; a one-line
    TeacherError naming `name` otherwise."""
    k, shape = data.num_classes, "×".join(map(str, data.in_shape))
    model.eval()
    out = _guarded(name, f"a batch of images 2×{shape}", f"; a teacher maps N×{shape} float images to N×K logits",
                   lambda: model(model_inputs(model, data.val.x[:2].to(device), 1.0)))
    if not isinstance(out, torch.Tensor):
        raise TeacherError(f"{name}: returns {type(out).__name__}, not a tensor of N×K logits")
    if out.ndim != 2 or out.shape[0] != 2:
        raise TeacherError(f"{name}: output of shape {tuple(out.shape)} for 2 images; a teacher maps N×{shape} "
                           "images to N×K logits")
    if out.shape[1] != k:
        raise TeacherError(f"{name}: {out.shape[1]} outputs per image, the data have {k} classes "
                           f"({data.dataset or 'data'}, {data.labels} labels); give the data (and --labels) the "
                           "teacher was trained for")
    result = {"num_classes": k}
    splits = [("val", data.val)] + ([("test", data.test)] if data.test is not None else [])
    for split, s in splits:
        z = _guarded(name, f"a batch of {min(batch_size, len(s.x))} images", "",
                     lambda: predict_logits(model, s.x, 1.0, device, batch_size))
        bad = int((~torch.isfinite(z)).any(1).sum())
        if bad:
            raise TeacherError(f"{name}: its outputs are not finite (NaN or inf) for {bad} of {len(z)} {split} images")
        result[f"{split}_acc"] = accuracy(z, s.y)
    result.setdefault("test_acc", None)
    return result


# ----------------------------------------------------------------------------------------------
# The teacher folder

def identity(file_sha: str, kind: str, norm: Normalization) -> str:
    d = {"file_sha256": file_sha, "kind": kind, "normalize": norm.to_dict()}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()


def write_teacher_folder(folder, file, kind: str, norm: Normalization, file_sha: str, record: dict) -> dict:
    """FOLDER/teacher.json for the model `file` (of `kind`, sha256 `file_sha`) with `norm`; `record`: what
    else to keep (accuracies, classes, parameters, data sha256). A teacher.json of the same identity is kept as
    it is (only the file's path is updated when it has moved); one of another identity is an error."""
    folder = Path(folder)
    ident = identity(file_sha, kind, norm)
    path = folder / TEACHER_JSON
    if path.exists():
        old = artifacts.read_json(path)
        if not isinstance(old, dict) or old.get("identity") != ident:
            raise TeacherError(f"{path}: holds another teacher (file sha256 {str((old or {}).get('file_sha256'))[:12]}…"
                               f", {old.get('normalize') if isinstance(old, dict) else '?'}); choose another --out")
        if old.get("file") != str(Path(file).resolve()):
            artifacts.write_json(path, {**old, "file": str(Path(file).resolve())})
        return artifacts.read_json(path)
    rec = {**record, "format": FORMAT, "identity": ident, "file": str(Path(file).resolve()), "file_sha256": file_sha,
           "kind": kind, "normalize": norm.to_dict(), "code_version": artifacts.code_version()}
    artifacts.write_json(path, rec)
    return rec


def _read_folder(folder: Path) -> dict:
    path = folder / TEACHER_JSON
    rec = artifacts.read_json(path)
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise TeacherError(f"{path}: not a mimicnet teacher record (format {rec.get('format') if isinstance(rec, dict) else None!r})")
    return rec


def external_info(folder) -> dict:
    """teacher_info of a teacher folder (without loading or hashing the model)."""
    folder = Path(folder)
    rec = _read_folder(folder)
    return {"kind": "external", "path": str(folder.resolve()), "sha256": rec["identity"], "file": rec["file"],
            "file_sha256": rec["file_sha256"], "format": rec["kind"], "normalize": rec["normalize"],
            "val_acc": rec.get("val_acc"), "test_acc": rec.get("test_acc"), "num_classes": rec["num_classes"],
            "params": rec.get("params"), "n_members": 1, "data_sha256": rec.get("data_sha256")}


def load_teacher_folder(folder, device="cpu") -> ExternalTeacher:
    """The model of a teacher folder, wrapped with its normalisation; its file must be the one recorded (sha256)."""
    folder = Path(folder)
    rec = _read_folder(folder)
    file = Path(rec["file"])
    if not file.is_file():
        raise TeacherError(f"{folder / TEACHER_JSON}: the teacher's model file {file} is missing")
    if file_sha256(file) != rec["file_sha256"]:
        raise TeacherError(f"{file}: changed since {folder / TEACHER_JSON} was written (sha256 differs); a changed "
                           "teacher needs another --out")
    n = rec["normalize"]
    norm = normalization(n.get("normalize"), n.get("mean"), n.get("std"), str(folder / TEACHER_JSON))
    model, _ = load_external(file, rec["kind"], device)
    return ExternalTeacher(model, norm, str(file)).to(device).eval()
