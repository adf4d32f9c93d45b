"""Checkpoints as models: rebuild the network a checkpoint describes (its config is inside the file) and
load its weights; fold a trained linear bottleneck into the next layer (Ba & Caruana)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..core import artifacts
from ..data.preprocess import Whitened, load_zca, save_zca
from .families import ModelError, build_model, count_params, fold_linear


def model_from_checkpoint(path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model a checkpoint describes and load its weights."""
    tensors, meta = artifacts.load_checkpoint(path)
    try:
        model = build_model(meta["family"], tuple(meta["widths"]), num_classes=meta["num_classes"],
                            dropout=tuple(meta.get("dropout", ())), batchnorm=meta.get("batchnorm", False),
                            in_shape=tuple(meta.get("in_shape", (3, 32, 32))))
        if meta.get("folded"):  # `mimicnet model fold`: the same family with its bottleneck multiplied out
            model = fold_linear(model)
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    except (KeyError, RuntimeError, ValueError) as e:
        raise artifacts.CheckpointError(f"{path}: weights do not match the model it describes ({str(e).splitlines()[0][:160]})") from None
    if meta.get("preprocess") == "gcn-zca":  # the run's saved ZCA state, from its folder (S5)
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        model = Whitened(model, load_zca(folder / meta["zca"]), meta.get("input_scale", 1.0))
    return model.to(device), meta


def fold_checkpoint(src, out) -> dict:
    """Write `src`'s model with its linear bottleneck folded away (models.fold_linear, S5) to `out`: a
    checkpoint that `evaluate` and `model_from_checkpoint` read like any other. The outputs are compared
    with the original's on 64 random inputs before anything is written; returns the summary."""
    src, out = Path(src), Path(out)
    model, meta = model_from_checkpoint(src)
    inner = getattr(model, "net", model)  # a gcn-zca run: fold the network inside the whitening
    folded = fold_linear(inner).eval()
    inner.eval()
    x = torch.randn(64, *meta.get("in_shape", (3, 32, 32)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = inner(x), folded(x)
    diff = (a - b).abs().max().item()
    scale = a.abs().max().item()
    if not diff <= 1e-4 * max(1.0, scale):
        raise ModelError(f"{src}: the folded net differs from the original by {diff:g} (outputs up to {scale:g})")
    n_before, n_after = count_params(inner), count_params(folded)
    new_meta = {**{k: v for k, v in meta.items() if k not in ("epoch", "code_version", "format")},
                "folded": True, "folded_from": str(src), "params": n_after, "params_unfolded": n_before,
                "fold_max_abs_diff": diff}
    if meta.get("preprocess") == "gcn-zca":  # the whitening state travels with the folded weights
        folder = src if src.is_dir() else src.parent
        zca_name = f"{out.stem}.zca.safetensors"
        save_zca(out.parent / zca_name, load_zca(folder / meta["zca"]), {"copied_from": str(folder / meta["zca"])})
        new_meta["zca"] = zca_name
    artifacts.save_checkpoint(out, {f"model.{k}": v for k, v in folded.state_dict().items()}, new_meta)
    return {"out": str(out), "params_unfolded": n_before, "params": n_after, "max_abs_diff": diff,
            "max_abs_output": scale}
