"""`mimicnet evaluate`: accuracy of a checkpoint on any CIFAR archive."""
from __future__ import annotations

from pathlib import Path

import torch

from ..core.artifacts import code_version, write_json
from ..data.cifar import load_cifar, select_split
from ..models.checkpoint import model_from_checkpoint
from ..models.inference import accuracy, predict_logits, resolve_device
from .common import _device_arg


def cmd_evaluate(args) -> int:
    device = resolve_device(args.device or "auto")
    model, meta = model_from_checkpoint(args.checkpoint, device)
    archive = load_cifar(args.data)
    x, y = select_split(archive, args.split)
    logits = predict_logits(model, x, meta.get("input_scale", 1.0), device)
    acc = accuracy(logits, y)
    pred = logits.argmax(1)
    per_class = {int(c): (pred[y == c] == c).float().mean().item() for c in torch.unique(y)}
    print(f"accuracy {acc:.4f} on the {args.split} split of {args.data} ({len(y)} images)")
    if args.json:
        write_json(args.json, {"checkpoint": str(args.checkpoint), "data": str(args.data),
                               "data_sha256": archive.sha256, "split": args.split, "n": len(y),
                               "accuracy": acc, "per_class_accuracy": per_class, "family": meta["family"],
                               "widths": meta["widths"], "params": meta.get("params"),
                               "code_version": code_version()})
        print(f"wrote {args.json}")
    return 0


def register(sub) -> None:
    e = sub.add_parser("evaluate", help="accuracy of a checkpoint on any CIFAR archive",
                       description="Evaluate a checkpoint (best.safetensors or its run folder) on a split of a "
                       "CIFAR-format archive; an archive holding only test_batch works for --split test.")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--data", required=True, help="CIFAR archive (.tar.gz) or folder")
    e.add_argument("--split", choices=("test", "val", "train"), default="test")
    e.add_argument("--json", type=Path, help="also write the result as JSON here")
    _device_arg(e)
    e.set_defaults(func=cmd_evaluate)
