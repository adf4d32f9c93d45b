"""Counting and describing a family's models without building them for real (meta device), and the
paper-style architecture string of a width tuple."""
from __future__ import annotations

import torch
from torch import nn

from .layers import MimicNet, _check_widths
from .registry import build_model, get_family


def _meta_model(family, widths, **opts) -> nn.Module:
    with torch.device("meta"):  # shapes only: counting a 30M-parameter model allocates nothing
        return build_model(family, widths, **opts)


def count_params(model_or_family, widths=None, **opts) -> int:
    """Trainable parameters of a module, or of ``(family, widths, **build options)`` built on meta."""
    if isinstance(model_or_family, nn.Module):
        model = model_or_family
    else:
        if widths is None:
            raise ValueError("count_params(family, widths): widths are required for a family")
        model = _meta_model(model_or_family, widths, **opts)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def describe(family, widths=None, **opts) -> list[dict]:
    """Per layer: name, type, output shape (without the batch dim), trainable params.
    ``family`` may also be a built module (widths then ignored). Runs a meta-device forward."""
    if isinstance(family, nn.Module):
        model = family
        in_shape = getattr(model, "in_shape", opts.get("in_shape", (3, 32, 32)))
    else:
        model = _meta_model(family, widths, **opts)
        in_shape = opts.get("in_shape", (3, 32, 32))
    device = next(model.parameters()).device
    if not device.type == "meta":
        # A real module: describe a meta copy's shapes instead of running real compute.
        cfg = model.config() if isinstance(model, MimicNet) else None
        if cfg is None:
            raise ValueError("describe() of a module needs a MimicNet (built by build_model)")
        fam_name = cfg.pop("family")
        widths = cfg.pop("widths")
        cfg["dropout"] = tuple(cfg["dropout"])
        meta = _meta_model(fam_name, widths, **cfg)
        rows = describe(meta)
        for row, (_, mod) in zip(rows, model.named_children()):  # counts from the real module
            row["params"] = sum(p.numel() for p in mod.parameters() if p.requires_grad)
        return rows
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [mod.register_forward_hook(
        lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
        for name, mod in model.named_children()]
    was_training = model.training
    model.eval()  # BatchNorm1d refuses a batch of one in training mode
    try:
        with torch.no_grad():
            model(torch.zeros((1, *in_shape), device="meta"))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [{"name": name, "type": type(mod).__name__, "shape": shapes[name],
             "params": sum(p.numel() for p in mod.parameters() if p.requires_grad)}
            for name, mod in model.named_children()]


def arch_string(family, widths) -> str:
    """Paper-style name, e.g. teacher (76,126,148,1200) -> '76c²-mp-126c²-mp-148c⁴-mp-1200fc²',
    conv1 (128,1200,30000) -> '128c-mp3-1200lfc-30000fc': the family's own ``arch``, else read off its
    description (each 'c' token takes the next conv width, the last width is the fc layer's)."""
    fam = get_family(family)
    w = _check_widths(fam, widths)
    if fam.arch is not None:
        return fam.arch(w)
    parts, convs = [], iter(w[:-1])
    for token in fam.description.split("-")[:-1]:
        parts.append(f"{next(convs)}c" if token == "c" else token)
    return "-".join(parts + [f"{w[-1]}fc"])
