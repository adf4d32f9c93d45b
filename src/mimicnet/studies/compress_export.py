"""The chosen student, standalone: folded as shipped, exported as TorchScript, .pt2 and ONNX, each checked
against the checkpoint (ONNX in onnxruntime, in a fresh process)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import torch

from ..core import artifacts
from ..data.augment import IMAGE_SHAPE
from ..data.preprocess import OLD_NAMES, STANDARDIZE
from ..data.splits import TrainData
from ..models.checkpoint import fold_checkpoint, model_from_checkpoint
from ..models.export import (OnnxError, input_contract, load_exported, load_torchscript,
                             onnx_missing, onnxruntime_missing, run_onnx_fresh, save_exported, save_onnx,
                             save_torchscript)
from ..models.cost import shipped
from ..models.families import ModelError, count_params
from ..models.inference import predict_logits
from .compress_config import EXPORT_FORMAT



# ----------------------------------------------------------------------------------------------
# The student, standalone

def deployable(ckpt: Path) -> tuple[torch.nn.Module, dict, dict]:
    """(the checkpoint's model as shipped (models.cost.shipped: bottleneck folded when that makes it smaller,
    batch norm folded, preprocessing inside); its checkpoint metadata; what was folded and why)."""
    model, meta = model_from_checkpoint(ckpt)
    name = meta.get("preprocess", STANDARDIZE)
    if OLD_NAMES.get(name, name) != STANDARDIZE:
        raise ModelError(f"{ckpt}: preprocess {meta.get('preprocess')!r}: only per-image standardisation exports")
    net, fold = shipped(model, meta.get("input_scale", 1.0), tuple(meta.get("in_shape", IMAGE_SHAPE)),
                        already_folded=bool(meta.get("folded")))
    return net, meta, fold


def _copy(src: Path, dest: Path) -> None:
    artifacts.atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))


def export_student(run: dict, dest: Path, data: TrainData, teacher: dict, log: Callable[[str], None],
                   onnx: bool = True) -> dict:
    """DEST/best.safetensors (+ config.json), student.ts, student.pt2, student.onnx (with `onnx`, where onnx and
    onnxscript are installed) and, last, student.json, from the run `run` (a family_summary run row); kept as
    they are when student.json says they are this run's (and holds the ONNX file when one is wanted)."""
    want_onnx = onnx and not onnx_missing()
    src_dir = Path(run["path"])
    src = src_dir / "best.safetensors"
    src_sha = artifacts.file_sha256(src)
    done = dest / "student.json"
    if done.exists():
        rec = artifacts.read_json(done)
        if isinstance(rec, dict) and rec.get("source_sha256") == src_sha and all(
                (dest / n).is_file() and artifacts.file_sha256(dest / n) == sha for n, sha in rec.get("files", {}).items()) \
                and (not want_onnx or "student.onnx" in rec.get("files", {})):
            log(f"{dest}: the student is already exported")
            return rec
    dest.mkdir(parents=True, exist_ok=True)
    _, meta, fold = deployable(src)
    if fold["bottleneck"] == "folded" and not meta.get("folded"):
        fold_checkpoint(src, dest / "best.safetensors")   # a checkpoint of the folded net (+ its best.json)
    else:
        _copy(src, dest / "best.safetensors")
        if (src_dir / "best.json").exists():
            _copy(src_dir / "best.json", dest / "best.json")
    _copy(src_dir / "config.json", dest / "config.json")
    standalone, meta, _ = deployable(dest / "best.safetensors")    # what `mimicnet evaluate` loads, as shipped
    params = count_params(standalone)
    in_shape = tuple(meta.get("in_shape", IMAGE_SHAPE))
    metadata = {"format": EXPORT_FORMAT, "normalize": "none", "input": input_contract(in_shape),
                "num_classes": meta["num_classes"], "family": meta["family"], "widths": meta["widths"],
                "params": params, "val_acc": run["val_acc"], "test_acc": run["test_acc"],
                "teacher_agreement": run["agreement"], "code_version": artifacts.code_version()}
    save_torchscript(standalone, dest / "student.ts", metadata)
    save_exported(standalone, dest / "student.pt2", metadata, in_shape)
    files = ["best.safetensors", "config.json", "student.ts", "student.pt2"]
    orec = {"file": "student.onnx"}
    why = onnx_missing() if onnx else "not asked for (--no-onnx)"
    if why:
        orec["written"] = f"no: {why}"
        (dest / "student.onnx").unlink(missing_ok=True)  # not an earlier student's
    else:
        save_onnx(standalone, dest / "student.onnx", metadata, in_shape)
        orec["written"] = "yes"
        files.append("student.onnx")
    diffs, orec["check"], scale = _check_exports(dest, data, "student.onnx" in files)
    rec = {**metadata, **({} if in_shape == IMAGE_SHAPE else {"in_shape": list(in_shape)}),
           "source": str(src_dir), "source_sha256": src_sha, "run": run["what"], "fold": fold,
           "max_abs_diff": diffs, "max_abs_logit": scale, "onnx": orec, "teacher": teacher,
           "files": {n: artifacts.file_sha256(dest / n) for n in files}}
    artifacts.write_json(done, rec)
    log(f"student: {meta['family']} {meta['widths']}, {params:,} parameters -> {dest} (exports match the checkpoint "
        f"to {max(diffs.values()):.1e}{'' if 'student.onnx' in diffs else '; ONNX: ' + orec['check']})")
    return rec


@torch.no_grad()
def _check_exports(dest: Path, data: TrainData, onnx: bool = False) -> tuple[dict, str, float]:
    """The exports, loaded back, against the checkpoint as mimicnet runs it, on validation images: ({file: max
    |difference|}, how the ONNX file was checked, the largest |logit|). The ONNX file is run by onnxruntime in a
    fresh process (models.export.run_onnx_fresh), on the images as a batch and on the first alone (its batch is
    dynamic). The tolerance is 1e-4 of the largest |logit| (at least 1e-4): onnxruntime sums a convolution in
    another order than torch, which moves float32 logits of size 50 by about 1e-6 of their size."""
    model, meta = model_from_checkpoint(dest / "best.safetensors")
    x = data.val.x[:256]
    ref = predict_logits(model, x, meta.get("input_scale", 1.0), torch.device("cpu"))
    diffs = {}
    for name, load in (("student.ts", load_torchscript), ("student.pt2", load_exported)):
        m, _ = load(dest / name)
        diffs[name] = float((m(x.float() / 255.0).float() - ref).abs().max()) if len(x) else 0.0
    check = "not written"
    if onnx and onnxruntime_missing():
        check = f"not checked: {onnxruntime_missing()}"
    elif onnx and len(x):
        try:
            y, said = run_onnx_fresh(dest / "student.onnx", x.float() / 255.0)
        except OnnxError as e:
            raise ModelError(str(e)) from None
        diffs["student.onnx"] = float((y - torch.cat([ref, ref[:1]])).abs().max())
        check = (f"onnxruntime {said['onnxruntime']} in a fresh process (no torch, no mimicnet), {len(x)} validation "
                 f"images as one batch and the first alone, input {said['input']} {said['shape']}")
    tol = 1e-4 * max(1.0, float(ref.abs().max()) if len(x) else 1.0)
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    if bad:
        name, v = next(iter(bad.items()))
        raise ModelError(f"{dest / name}: its outputs differ from the checkpoint's by {v:g} (tolerance {tol:g})")
    return diffs, check, float(ref.abs().max()) if len(x) else 0.0
