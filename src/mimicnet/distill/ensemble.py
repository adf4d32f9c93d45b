"""Teacher ensembles (SPEC S2): average the logits of several trained runs, members chosen on validation.

An ensemble is one folder:
    cache/<ckpt-sha>-<data-sha>.safetensors   each candidate's val and test logits (computed once, reused)
    logits.safetensors   the ensemble's val and test logits (students report agreement with it on test)
    ensemble.json        written last: members (path, checkpoint sha256, val/test acc, weight), method,
                         ensemble and single-best val/test accuracy. Its presence means "finished".

Selection only ever looks at the validation split; the test split is evaluated for the report.
Logits are averaged BEFORE the softmax (paper §2.7), with integer weights (how often greedy selection
picked a member). Each member keeps its own `input_scale`: the ensemble takes standardised images (scale 1)
and multiplies them by each member's scale, so `train.predict_logits(ens, x, 1.0, device)` just works.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..core import artifacts
from ..core.artifacts import CheckpointError, file_sha256
from ..core.errors import ConfigError
from ..core.index import IndexRow, RunKind, append_index
from ..data.splits import TrainData
from ..models.checkpoint import model_from_checkpoint
from ..models.inference import accuracy, predict_logits
from . import external

__all__ = ["Ensemble", "combine", "select", "build_ensemble", "load_ensemble", "load_teacher", "teacher_info",
           "checkpoint_path"]

FORMAT = "mimicnet-ensemble-1"
METHODS = ("greedy", "topk")


# ----------------------------------------------------------------------------------------------
# The module

def combine(logits: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Weighted mean of logit tensors, sum(w_i * L_i) / sum(w). The one place the average is computed,
    so the cached ensemble logits and Ensemble.forward agree to the last bit given equal member outputs."""
    total = float(sum(weights))
    out = None
    for w, z in zip(weights, logits):
        out = z * float(w) if out is None else out + z * float(w)
    return out / total


class Ensemble(nn.Module):
    """Weighted average of member logits. Input: standardised images (input_scale 1); member i sees
    them times its own input_scale, exactly as it did in training."""

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float], input_scales: Sequence[float]):
        super().__init__()
        if not (len(members) == len(weights) == len(input_scales)) or not members:
            raise ValueError("an ensemble needs >= 1 member, one weight and one input scale per member")
        if any(w <= 0 for w in weights):
            raise ValueError(f"ensemble weights must be > 0, got {list(weights)}")
        self.members = nn.ModuleList(members)
        self.weights = [float(w) for w in weights]
        self.input_scales = [float(s) for s in input_scales]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return combine([m(x * s) for m, s in zip(self.members, self.input_scales)], self.weights)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, input_scales={self.input_scales}"


# ----------------------------------------------------------------------------------------------
# Selection (validation logits only)

def _score(z: torch.Tensor, y: torch.Tensor) -> tuple[int, float]:
    """(number correct, mean NLL) of averaged logits z. Counts are integers so ties are exact."""
    return int((z.argmax(1) == y).sum()), float(F.cross_entropy(z, y))


def select(val_logits: Sequence[torch.Tensor], y_val: torch.Tensor, method: str = "greedy",
           size: int = 16) -> list[int]:
    """Integer weight per candidate (0 = not in the ensemble).

    greedy: ensemble selection of Caruana et al. (2004): forward selection WITH replacement; each of
      `size` steps adds the candidate whose addition gives the best validation accuracy of the averaged
      logits (ties: lower validation NLL, then lower index). The result is the best prefix of that
      sequence (by accuracy; ties: the shorter prefix), so extra steps can never hurt validation.
    topk: the `size` candidates with the best validation accuracy (ties: NLL, then index), weight 1 each;
      fewer when there are fewer candidates.
    """
    if method not in METHODS:
        raise ConfigError(f"ensemble method must be one of {', '.join(METHODS)}, not {method!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"ensemble size must be an integer >= 1, got {size!r}")
    if not val_logits:
        raise ConfigError("no ensemble candidates")
    y = y_val.long().cpu()
    # float64 sums: the order members are added in must not flip a near-tie between candidates
    zs = [z.detach().cpu().double() for z in val_logits]
    m = len(zs)

    def key(i: int, z: torch.Tensor) -> tuple:
        correct, nll = _score(z, y)
        return (-correct, nll, i)

    if method == "topk":
        order = sorted(range(m), key=lambda i: key(i, zs[i]))
        picked = set(order[:size])
        return [int(i in picked) for i in range(m)]

    counts = [0] * m
    total = torch.zeros_like(zs[0])
    best_correct, best_counts = -1, None
    for step in range(1, size + 1):
        # argmax is scale-free, but the NLL tie-break needs the true average, hence / step
        i = min(range(m), key=lambda i: key(i, (total + zs[i]) / step))
        total += zs[i]
        counts[i] += 1
        correct = _score(total / step, y)[0]
        if correct > best_correct:  # strict: a later prefix must beat, not tie, an earlier one
            best_correct, best_counts = correct, list(counts)
    return best_counts


# ----------------------------------------------------------------------------------------------
# Members on disk

def checkpoint_path(run: str | Path) -> Path:
    """The best.safetensors of a run folder (or the file itself)."""
    p = Path(run)
    return p / "best.safetensors" if p.is_dir() else p


def _member_info(run: str | Path) -> dict:
    """Identity of one candidate run: resolved path, checkpoint sha256, and the checkpoint's metadata."""
    run = Path(run)
    ckpt = checkpoint_path(run)
    if not ckpt.is_file():
        raise CheckpointError(f"{ckpt}: checkpoint not found (is {run} a training run folder?)")
    if run.is_dir() and not (run / "results.json").exists():
        raise CheckpointError(f"{run}: run not finished (no results.json); "
                              "finish it with the same `mimicnet train` command")
    meta = _checkpoint_meta(ckpt)
    results = ckpt.parent / "results.json"
    run_id = _results(results).get("run_id") if results.exists() else None
    return {"path": str(ckpt.resolve()), "sha256": file_sha256(ckpt), "meta": meta,
            "run_id": run_id or ckpt.parent.name}


def _results(path: Path) -> dict:
    """A run's results.json, which must hold an object (a file holding null is a damaged run)."""
    res = artifacts.read_json(path)
    if not isinstance(res, dict):
        raise CheckpointError(f"{path}: not the results of a run (holds {json.dumps(res)[:40]}); delete "
                              f"{path.parent} and run the command that trained it again")
    return res


def _checkpoint_meta(ckpt: Path) -> dict:
    """A checkpoint's metadata without reading its weights (they are read once, when logits are needed)."""
    try:
        with safe_open(str(ckpt), framework="pt") as f:
            raw = (f.metadata() or {}).get("mimicnet")
    except Exception as e:  # safetensors raises several types on garbage
        raise CheckpointError(f"{ckpt}: not a readable safetensors checkpoint ({str(e).splitlines()[0][:120]})") from None
    if raw is None:
        raise CheckpointError(f"{ckpt}: safetensors file without mimicnet metadata")
    return json.loads(raw)


def _member_logits(info: dict, data: TrainData, cache_dir: Path, device, log) -> dict[str, torch.Tensor]:
    """{'val': ..., 'test': ...} logits of one candidate, from the cache when it has them."""
    cache = cache_dir / f"{info['sha256'][:16]}-{data.sha256[:16]}.safetensors"
    if cache.exists():
        try:
            return load_file(str(cache))
        except Exception:  # a torn cache file (should not happen: writes are atomic); recompute
            pass
    model, meta = model_from_checkpoint(info["path"], device)
    scale = meta.get("input_scale", 1.0)
    out = {"val": predict_logits(model, data.val.x, scale, device)}
    if data.test is not None:
        out["test"] = predict_logits(model, data.test.x, scale, device)
    artifacts._atomic(cache, lambda tmp: save_file({k: v.contiguous() for k, v in out.items()}, tmp))
    log(f"  logits of {info['path']}")
    return out


def _inputs_hash(infos: list[dict], data_sha: str, method: str, size: int) -> str:
    key = {"members": [(i["path"], i["sha256"]) for i in infos], "data_sha256": data_sha,
           "method": method, "size": size}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def build_ensemble(run_dirs: Sequence[str | Path], out_dir: str | Path, data: TrainData, method: str = "greedy",
                   size: int = 16, device="cpu", index=None, log: Callable[[str], None] = print) -> dict:
    """Select an ensemble from `run_dirs` on validation, write it to `out_dir`, return ensemble.json's content.

    A finished out_dir built from the same inputs (same checkpoints by sha256, same data, method, size) is
    returned as it is; one built from other inputs is an error (choose another --out)."""
    out_dir = Path(out_dir)
    infos = _candidates(run_dirs, data, method)
    inputs_hash = _inputs_hash(infos, data.sha256, method, size)
    finished = _finished_ensemble(out_dir, inputs_hash, log, _content_key(
        [i["sha256"] for i in infos], data.sha256, method, size))
    if finished is not None:
        if index is not None:  # its row, if a kill came between ensemble.json and the index (kept if there)
            append_index(index, ensemble_row(finished, out_dir), replace=False)
        return finished

    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"ensemble of {len(infos)} candidates -> {out_dir}")
    logits = [_member_logits(i, data, out_dir / "cache", device, log) for i in infos]
    weights = select([z["val"] for z in logits], data.val.y, method, size)
    members = [_member_record(info, z, w, data) for info, z, w in zip(infos, logits, weights)]
    chosen = [i for i, w in enumerate(weights) if w > 0]
    ens = _ensemble_logits([logits[i] for i in chosen], [weights[i] for i in chosen], data)
    result = _result(method, size, inputs_hash, members, chosen, ens, _single_best(members, logits, data), data)
    artifacts._atomic(out_dir / "logits.safetensors", lambda tmp: save_file(
        {k: v.contiguous() for k, v in ens.items()}, tmp, metadata={"inputs_hash": inputs_hash}))
    artifacts.write_json(out_dir / "ensemble.json", result)  # last: its presence means "finished"
    if index is not None:
        append_index(index, ensemble_row(result, out_dir))
    return result


def ensemble_row(result: dict, out_dir) -> IndexRow:
    """The index row of a built ensemble, from its ensemble.json content; its run id by content (the same
    ensemble wherever its results folder and members live), or for one built by older code (no content_id) by
    its inputs_hash, as its row always said."""
    h = result.get("content_id") or result["inputs_hash"]
    return IndexRow(kind=RunKind.ENSEMBLE, family="ensemble", params=result["params"], val_acc=result["val_acc"],
                    test_acc=result["test_acc"], run_id=f"ensemble-{h[:10]}", config_hash=h[:10], path=str(out_dir),
                    data_sha256=result.get("data_sha256"), code_version=result.get("code_version"))


def _content_key(member_shas: list[str], data_sha: str, method: str, size: int) -> str:
    """The inputs of an ensemble by content alone (checkpoints' sha256, in order; data; method; size): the
    same ensemble when its results folder has moved and the members' paths with it."""
    return json.dumps([member_shas, data_sha, method, size])


def _candidates(run_dirs: Sequence[str | Path], data: TrainData, method: str) -> list[dict]:
    """The identity of every candidate run, checked: given once each, trained on this data, same classes."""
    if method not in METHODS:
        raise ConfigError(f"ensemble method must be one of {', '.join(METHODS)}, not {method!r}")
    if not run_dirs:
        raise ConfigError("an ensemble needs at least one run folder")
    infos = [_member_info(r) for r in run_dirs]
    seen = set()
    for info in infos:
        if info["path"] in seen:
            raise ConfigError(f"{info['path']}: given twice (greedy selection already repeats members when that helps)")
        seen.add(info["path"])
        # Selecting on a validation split that overlaps a member's training images would be dishonest.
        if info["meta"].get("data_sha256") not in (None, data.sha256):
            raise ConfigError(f"{info['path']}: trained on other data (sha256 {info['meta']['data_sha256'][:12]}…) "
                              f"than the ensemble's (sha256 {data.sha256[:12]}…); its validation split may differ")
        if info["meta"].get("num_classes", data.num_classes) != data.num_classes:
            raise ConfigError(f"{info['path']}: has {info['meta']['num_classes']} classes, the data {data.num_classes} "
                              f"({data.labels} labels); give the data (and --labels) it was trained on")
    return infos


def _finished_ensemble(out_dir: Path, inputs_hash: str, log: Callable[[str], None],
                       content_key: str | None = None) -> dict | None:
    """ensemble.json of an ensemble already built in out_dir from these inputs (None if there is none); an
    ensemble of other inputs is an error. The same checkpoints (by sha256) at other paths (a moved results
    folder) are the same inputs."""
    done_path = out_dir / "ensemble.json"
    if not done_path.exists():
        return None
    done = artifacts.read_json(done_path)
    if not isinstance(done, dict):
        raise CheckpointError(f"{done_path}: not an ensemble (holds {json.dumps(done)[:40]}); delete {out_dir} "
                              "and run the same command again")
    try:
        same_content = content_key is not None and content_key == _content_key(
            [m["sha256"] for m in done["members"]], done["data_sha256"], done["method"], done["size"])
    except (KeyError, TypeError):
        same_content = False
    if done.get("inputs_hash") == inputs_hash or same_content:
        log(f"{out_dir}: ensemble already built from these inputs")
        return done
    raise ConfigError(f"{out_dir}: holds an ensemble of other inputs ({done.get('inputs_hash')}); "
                      "choose another --out")


def _acc(z: torch.Tensor | None, split: str, data: TrainData) -> float | None:
    """Accuracy of logits z on the val or test split (None for test when the data has no test split)."""
    if split == "test" and data.test is None:
        return None
    return accuracy(z, data.val.y if split == "val" else data.test.y)


def _member_record(info: dict, z: dict[str, torch.Tensor], weight: int, data: TrainData) -> dict:
    """One candidate as ensemble.json lists it."""
    meta = info["meta"]
    return {"path": info["path"], "sha256": info["sha256"], "run_id": info["run_id"],
            "family": meta.get("family"), "widths": meta.get("widths"), "params": meta.get("params"),
            "input_scale": meta.get("input_scale", 1.0), "val_acc": _acc(z["val"], "val", data),
            "test_acc": _acc(z.get("test"), "test", data), "weight": weight}


def _ensemble_logits(logits: list[dict[str, torch.Tensor]], weights: list[int], data: TrainData) -> dict:
    """{'val': ..., 'test': ...} weighted mean logits of the chosen members ('test' only when there is a test split)."""
    ens = {"val": combine([z["val"] for z in logits], weights)}
    if data.test is not None:
        ens["test"] = combine([z["test"] for z in logits], weights)
    return ens


def _single_best(members: list[dict], logits: list[dict[str, torch.Tensor]], data: TrainData) -> dict:
    # single best by validation (ties: lower NLL, then order given): what an honest "best teacher" is
    nll = [float(F.cross_entropy(z["val"], data.val.y)) for z in logits]
    best = members[min(range(len(members)), key=lambda i: (-members[i]["val_acc"], nll[i], i))]
    return {"path": best["path"], "run_id": best["run_id"], "val_acc": best["val_acc"], "test_acc": best["test_acc"]}


def _result(method: str, size: int, inputs_hash: str, members: list[dict], chosen: list[int],
            ens: dict[str, torch.Tensor], single_best: dict, data: TrainData) -> dict:
    """ensemble.json's content."""
    has_test = data.test is not None
    content = _content_id({"members": members, "data_sha256": data.sha256, "method": method, "size": size})
    return {"format": FORMAT, "method": method, "size": size, "inputs_hash": inputs_hash, "content_id": content,
            "members": members,
            "n_members": len(chosen), "params": sum(members[i]["params"] or 0 for i in chosen),
            "num_classes": data.num_classes,
            "val_acc": _acc(ens["val"], "val", data), "test_acc": _acc(ens.get("test"), "test", data),
            "single_best": single_best,
            "n_val": len(data.val.y), "n_test": len(data.test.y) if has_test else 0,
            "data_sha256": data.sha256, "code_version": artifacts.code_version()}


def load_ensemble(out_dir: str | Path, device="cpu") -> tuple[Ensemble, dict]:
    """(Ensemble of the members with weight > 0, ensemble.json's content). Member checkpoints are checked
    against the sha256 recorded at build time: a retrained member would silently be another teacher."""
    out_dir = Path(out_dir)
    path = out_dir / "ensemble.json"
    if not path.exists():
        raise CheckpointError(f"{out_dir}: not a finished ensemble (no ensemble.json); "
                              "run `mimicnet ensemble` to build it")
    info = artifacts.read_json(path)
    if info.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a mimicnet ensemble (format {info.get('format')!r})")
    models, weights, scales = [], [], []
    for m in info["members"]:
        if m["weight"] <= 0:
            continue
        member = _member_path(out_dir, m["path"])
        if not member.is_file():
            raise CheckpointError(f"{path}: member {m['path']} is missing")
        if file_sha256(member) != m["sha256"]:
            raise CheckpointError(f"{path}: member {member} changed since the ensemble was built (sha256 differs)")
        model, meta = model_from_checkpoint(member, device)
        models.append(model.eval())
        weights.append(m["weight"])
        scales.append(meta.get("input_scale", 1.0))
    return Ensemble(models, weights, scales).to(device).eval(), info


def _member_path(out_dir: Path, recorded: str) -> Path:
    """A member checkpoint where ensemble.json recorded it or, when that is gone (the results folder has moved),
    at the same place relative to a folder above the ensemble's (teachers/t0/best.safetensors beside
    ensemble/); the caller checks its sha256, so a wrong guess is never used."""
    p = Path(recorded)
    if p.is_file():
        return p
    parts = p.parts
    for up in Path(out_dir).resolve().parents[:3]:
        for k in range(min(len(parts) - 1, 4), 1, -1):
            cand = up.joinpath(*parts[-k:])
            if cand.is_file():
                return cand
    return p


def teacher_info(path: str | Path) -> dict:
    """Identity of a teacher without loading its weights: kind (ensemble | run | external), resolved path, sha256
    (of ensemble.json, which pins every member's sha256, or of the checkpoint; an external teacher folder's
    identity, distill.external), val/test accuracy, classes, params."""
    path = Path(path)
    if (path / external.TEACHER_JSON).is_file():
        return external.external_info(path)
    if (path / "ensemble.json").exists():
        info = artifacts.read_json(path / "ensemble.json")
        if info.get("format") != FORMAT:
            raise CheckpointError(f"{path / 'ensemble.json'}: not a mimicnet ensemble (format {info.get('format')!r})")
        return {"kind": RunKind.ENSEMBLE.value, "path": str(path.resolve()), "sha256": file_sha256(path / "ensemble.json"),
                "val_acc": info["val_acc"], "test_acc": info["test_acc"], "num_classes": info["num_classes"],
                "params": info["params"], "n_members": info["n_members"], "data_sha256": info["data_sha256"]}
    ckpt = checkpoint_path(path)
    if not ckpt.is_file():
        raise CheckpointError(f"{path}: not a teacher (no ensemble.json and no best.safetensors)")
    meta = _checkpoint_meta(ckpt)
    results = ckpt.parent / "results.json"
    res = _results(results) if results.exists() else {}
    return {"kind": "run", "path": str(ckpt.resolve()), "sha256": file_sha256(ckpt),
            "val_acc": res.get("val_acc", meta.get("val_acc")), "test_acc": res.get("test_acc"),
            "num_classes": meta["num_classes"], "params": meta.get("params"), "n_members": 1,
            "data_sha256": meta.get("data_sha256")}


def teacher_content_id(path: str | Path, info: dict | None = None) -> str:
    """A teacher by content alone, wherever it lives: a run's checkpoint sha256, an ensemble's members by
    sha256 with its data, method and size (ensemble.json itself records paths), an external teacher's identity.
    `info`: its teacher_info, when already read."""
    info = info or teacher_info(path)
    if info["kind"] != RunKind.ENSEMBLE:
        return info["sha256"]
    return _content_id(artifacts.read_json(Path(path) / "ensemble.json"))


def _content_id(result: dict) -> str:
    key = _content_key([m["sha256"] for m in result["members"]], result["data_sha256"], result["method"],
                       result["size"])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def load_teacher(path: str | Path, device="cpu") -> tuple[Ensemble, dict]:
    """A teacher from an ensemble folder, a run folder or a checkpoint file, always as an Ensemble (a single
    run is an ensemble of one), or from an external teacher folder (distill.external: the model with its own
    normalisation), plus its teacher_info."""
    info = teacher_info(path)
    if info["kind"] == "external":
        return external.load_teacher_folder(path, device), info
    if info["kind"] == RunKind.ENSEMBLE:
        return load_ensemble(path, device)[0], info
    model, meta = model_from_checkpoint(info["path"], device)
    return Ensemble([model.eval()], [1], [meta.get("input_scale", 1.0)]).to(device).eval(), info
