"""A trained network as a file that runs without mimicnet: TorchScript (``.ts``), ``torch.export`` (``.pt2``) and
ONNX (``.onnx``, with the optional ``onnx`` extra: onnx + onnxscript to write it, onnxruntime to run it).

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

The ONNX file (``save_onnx``: torch.onnx's dynamo exporter, opset 18+) has one input ``images`` of shape
``batch×3×H×W`` (``batch`` dynamic) and one output ``logits``; the same ``mimicnet.json`` is its metadata
property of that name. ``run_onnx_fresh`` runs it in a fresh Python process that imports only onnxruntime
and numpy (what a user's server would), which is how compress checks it against the checkpoint::

    import onnxruntime as ort
    sess = ort.InferenceSession("student.onnx")
    logits = sess.run(None, {"images": images_uint8.astype("float32") / 255})[0]

Batch norm after a conv or linear layer is folded into that layer for the export (``fold_batchnorm``: fewer
parameters and operations, the same outputs in eval mode). The linear bottleneck of conv0/conv1 is folded by
the caller (studies.compress) only when that lowers the parameter count (``fold_linear`` multiplies k×in and
h×k into h×in, which is larger whenever the bottleneck k is narrow, as S4's students' are).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from ..core import artifacts

__all__ = ["Standalone", "fold_batchnorm", "save_torchscript", "save_exported", "load_torchscript",
           "load_exported", "METADATA_NAME", "INPUT_CONTRACT", "input_contract", "save_onnx", "onnx_missing", "onnxruntime_missing",
           "run_onnx_fresh", "OnnxError"]

METADATA_NAME = "mimicnet.json"
INPUT_CONTRACT = "float32 N×3×32×32 RGB images in [0, 1] (uint8 / 255); output N×K logits"


def input_contract(in_shape=(3, 32, 32)) -> str:
    """What a shipped student takes and gives (INPUT_CONTRACT for CIFAR's 3×32×32)."""
    return INPUT_CONTRACT.replace("3×32×32", "×".join(map(str, in_shape)))


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


def _example(batch: int = 2, in_shape=(3, 32, 32)) -> torch.Tensor:
    return torch.rand(batch, *in_shape, generator=torch.Generator().manual_seed(0))


def save_torchscript(model: nn.Module, path, metadata: dict) -> None:
    """``model`` (eval mode, CPU) scripted and saved with ``metadata`` as its mimicnet.json extra file."""
    model = model.eval().cpu()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 points users to torch.export
        scripted = torch.jit.script(model)
        artifacts.atomic_write(path, lambda tmp: torch.jit.save(
            scripted, tmp, _extra_files={METADATA_NAME: json.dumps(metadata, sort_keys=True)}))


def save_exported(model: nn.Module, path, metadata: dict, in_shape=(3, 32, 32)) -> None:
    """``model`` (eval mode, CPU) as a torch.export program with a dynamic batch dimension, for inputs of
    ``in_shape``, saved with ``metadata`` as its mimicnet.json extra file."""
    model = model.eval().cpu()
    dim = getattr(torch.export.Dim, "DYNAMIC", None) or torch.export.Dim("batch")
    with torch.no_grad():
        ep = torch.export.export(model, (_example(2, in_shape),), dynamic_shapes={"x": {0: dim}})

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: torch.export warns about a path not ending in .pt2
            torch.export.save(ep, f, extra_files={METADATA_NAME: json.dumps(metadata, sort_keys=True)})
    artifacts.atomic_write(path, write)


class OnnxError(RuntimeError):
    """The ONNX export or its check in onnxruntime failed (the message names the file)."""


def onnx_missing() -> str:
    """'' when torch.onnx can write a file here (onnx and onnxscript installed), else what is missing."""
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    return "" if not missing else f"{' and '.join(missing)} not installed (pip install 'mimicnet[onnx]')"


def onnxruntime_missing() -> str:
    """'' when onnxruntime is installed, else the one line saying so."""
    return "" if importlib.util.find_spec("onnxruntime") is not None else \
        "onnxruntime not installed (pip install 'mimicnet[onnx]')"


def save_onnx(model: nn.Module, path, metadata: dict, in_shape=(3, 32, 32)) -> None:
    """``model`` (eval mode, CPU; it takes [0, 1] images) as an ONNX file with a dynamic batch dimension
    (input ``images``, output ``logits``), ``metadata`` as its ``mimicnet.json`` metadata property."""
    why = onnx_missing()
    if why:
        raise OnnxError(f"{path}: cannot write ONNX: {why}")
    import onnx
    model = model.eval().cpu()
    x = torch.rand(2, *in_shape, generator=torch.Generator().manual_seed(0))
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.onnx._internal.exporter._registration",
                                              "onnxscript")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping ..." is not the user's concern
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(model, (x,), dynamo=True, input_names=["images"], output_names=["logits"],
                                     dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False)
        proto = prog.model_proto
    except Exception as e:  # noqa: BLE001  (any exporter failure is one line naming the file)
        raise OnnxError(f"{path}: torch.onnx could not export the model: {str(e).strip().splitlines()[0][:200]}") \
            from None
    finally:
        for lg, lvl in zip(quiet, levels):
            lg.setLevel(lvl)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_NAME, json.dumps(metadata, sort_keys=True)
    onnx.checker.check_model(proto)
    artifacts.atomic_write(path, lambda tmp: onnx.save_model(proto, str(tmp)))


# The check a user's server would do: onnxruntime and numpy only, in a process of its own. argv: model, input
# .npy, output .npy, threads. Prints the session's input name and shape (for the record).
_ORT_SCRIPT = """
import sys, json, numpy as np, onnxruntime as ort
model, x_path, y_path, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
opts = ort.SessionOptions()
opts.intra_op_num_threads = threads
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
x = np.load(x_path)
y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
one = sess.run(None, {sess.get_inputs()[0].name: x[:1]})[0]
np.save(y_path, np.concatenate([y, one]))
meta = sess.get_modelmeta().custom_metadata_map
print(json.dumps({"onnxruntime": ort.__version__, "input": sess.get_inputs()[0].name,
                  "shape": [str(d) for d in sess.get_inputs()[0].shape], "metadata": sorted(meta)}))
assert not any(m.startswith("mimicnet") or m == "torch" for m in sys.modules), "mimicnet or torch was imported"
"""


def run_onnx_fresh(path, x: torch.Tensor, threads: int = 1, timeout: float = 300) -> tuple[torch.Tensor, dict]:
    """(the ONNX file's outputs on ``x`` (N×C×H×W float in [0, 1]) as onnxruntime gives them, run in a fresh
    process that imports neither torch nor mimicnet, then its first image alone appended as row N; what the
    process said: onnxruntime's version, the input's name and shape)."""
    why = onnxruntime_missing()
    if why:
        raise OnnxError(f"{path}: cannot check the ONNX file: {why}")
    import numpy as np
    with tempfile.TemporaryDirectory(prefix="mimicnet-onnx-") as tmp:
        xp, yp = os.path.join(tmp, "x.npy"), os.path.join(tmp, "y.npy")
        np.save(xp, x.detach().to(torch.float32).cpu().numpy())
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        r = subprocess.run([sys.executable, "-c", _ORT_SCRIPT, str(Path(path).resolve()), xp, yp, str(int(threads))],
                           capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise OnnxError(f"{path}: onnxruntime could not run it in a fresh process: {last[:200]}")
        return torch.from_numpy(np.load(yp)), json.loads(r.stdout.strip().splitlines()[-1])


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
