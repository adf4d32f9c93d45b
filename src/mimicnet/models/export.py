"""A trained network as a file that runs without mimicnet: TorchScript (``.ts``) and ``torch.export`` (``.pt2``).

The input contract of every export (and of ``Standalone``): a float32 tensor N×3×32×32 of RGB images with
values in [0, 1] (uint8 pixels / 255), any N >= 1; the output: N×K float32 logits. The network's own
preprocessing is inside: the per-image standardisation of data.augment.standardize (mean and population std
over all 3×32×32 values, the std floored at 1/sqrt(3072)) times the run's ``input_scale``. So a user needs only
torch::

    model = torch.jit.load("student.ts")                    # or torch.export.load("student.pt2").module()
    logits = model(images_uint8.float() / 255)

Both files carry a ``mimicnet.json`` extra file (``torch.jit.load(..., _extra_files=...)``,
``torch.export.load(..., extra_files=...)``) that says so (``"normalize": "none"``: the model takes the
[0, 1] images as they are), with the classes, family, widths and parameter count: an export is itself a
valid ``mimicnet compress --teacher``.

Batch norm after a conv or linear layer is folded into that layer for the export (``fold_batchnorm``: fewer
parameters and operations, the same outputs in eval mode). The linear bottleneck of conv0/conv1 is folded by
the caller (studies.compress) only when that lowers the parameter count (``fold_linear`` multiplies k×in and
h×k into h×in, which is larger whenever the bottleneck k is narrow, as S4's students' are).
"""
from __future__ import annotations

import json
import math
import warnings
from collections import OrderedDict

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..core import artifacts

__all__ = ["Standalone", "fold_batchnorm", "save_torchscript", "save_exported", "load_torchscript",
           "load_exported", "METADATA_NAME", "INPUT_CONTRACT"]

METADATA_NAME = "mimicnet.json"
INPUT_CONTRACT = "float32 N×3×32×32 RGB images in [0, 1] (uint8 / 255); output N×K logits"


class Standalone(nn.Module):
    """``net`` with the preprocessing it was trained with: N×3×32×32 float images in [0, 1] -> logits.
    Per-image standardisation (as data.augment.standardize), times ``input_scale``, then ``net``."""

    takes_images = True   # models.inference.predict_logits feeds it [0, 1] images, not standardised ones

    def __init__(self, net: nn.Module, input_scale: float = 1.0, in_shape=(3, 32, 32)):
        super().__init__()
        self.net = net
        self.input_scale = float(input_scale)
        self.floor = 1.0 / math.sqrt(max(math.prod(in_shape), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True, correction=0)
        return self.net((x - mean) / std.clamp_min(self.floor) * self.input_scale)


def fold_batchnorm(net: nn.Module) -> nn.Module:
    """A copy of a flat Sequential (a MimicNet, a folded net) with every BatchNorm that directly follows a
    Conv2d or Linear folded into it (eval-mode statistics); ``net`` itself when it has none to fold."""
    children = list(net.named_children()) if isinstance(net, nn.Sequential) else []
    if not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for _, m in children):
        return net
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    prev = None
    for name, m in children:
        fusable = prev is not None and (
            (isinstance(m, nn.BatchNorm2d) and isinstance(layers[prev], nn.Conv2d))
            or (isinstance(m, nn.BatchNorm1d) and isinstance(layers[prev], nn.Linear)))
        if fusable:
            fuse = fuse_conv_bn_eval if isinstance(m, nn.BatchNorm2d) else fuse_linear_bn_eval
            layers[prev] = fuse(layers[prev].eval(), m.eval())
            continue
        layers[name] = m
        prev = name
    return nn.Sequential(layers).eval()


def _example(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def save_torchscript(model: nn.Module, path, metadata: dict) -> None:
    """``model`` (eval mode, CPU) scripted and saved with ``metadata`` as its mimicnet.json extra file."""
    model = model.eval().cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 points users to torch.export
        scripted = torch.jit.script(model)
        artifacts.atomic_write(path, lambda tmp: torch.jit.save(
            scripted, tmp, _extra_files={METADATA_NAME: json.dumps(metadata, sort_keys=True)}))


def save_exported(model: nn.Module, path, metadata: dict) -> None:
    """``model`` (eval mode, CPU) as a torch.export program with a dynamic batch dimension, saved with
    ``metadata`` as its mimicnet.json extra file."""
    model = model.eval().cpu()
    dim = getattr(torch.export.Dim, "DYNAMIC", None) or torch.export.Dim("batch")
    with torch.no_grad():
        ep = torch.export.export(model, (_example(),), dynamic_shapes={"x": {0: dim}})

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: torch.export warns about a path not ending in .pt2
            torch.export.save(ep, f, extra_files={METADATA_NAME: json.dumps(metadata, sort_keys=True)})
    artifacts.atomic_write(path, write)


def load_torchscript(path, device="cpu") -> tuple[nn.Module, dict]:
    """(the scripted module, its mimicnet.json extra file as a dict, {} when it has none)."""
    extra = {METADATA_NAME: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = torch.jit.load(str(path), map_location=torch.device(device), _extra_files=extra)
    return model, _metadata(extra[METADATA_NAME])


def load_exported(path, device="cpu") -> tuple[nn.Module, dict]:
    """(the torch.export program's module, its mimicnet.json extra file as a dict, {} when it has none)."""
    extra = {METADATA_NAME: ""}
    with open(path, "rb") as f:  # a file object: a program under any name (torch.export warns unless .pt2)
        ep = torch.export.load(f, extra_files=extra)
    return ep.module().to(device), _metadata(extra[METADATA_NAME])


def _metadata(raw) -> dict:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not raw:
        return {}
    try:
        d = json.loads(raw)
    except ValueError:
        return {"_unreadable": raw[:80]}
    return d if isinstance(d, dict) else {"_unreadable": str(d)[:80]}
