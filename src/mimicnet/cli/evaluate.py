"""`mimicnet evaluate`: accuracy of a checkpoint, or of every run of a results folder, on any CIFAR archive
or a CIFAR-10.1-style .npy pair."""
from __future__ import annotations

import sys

import torch

from ..core.artifacts import code_version
from ..data.augment import IMAGE_SHAPE, is_image_shape
from ..data.cifar import select_split
from ..data.cifar101 import load_test_source
from ..models.checkpoint import model_from_checkpoint
from ..models.inference import accuracy, predict_logits, resolve_device
from ..report.evaluate import (EvaluateError, check_output_file, evaluate_results, is_results_dir, results_table,
                               write_output_json)
from .common import _device_arg, in_path, in_path_p, labels_arg, out_file


def _check_classes(checkpoint, meta: dict, data, args) -> None:
    """A model scored on data of another number of classes gives a number, but a meaningless one: refuse it."""
    n = meta.get("num_classes")
    if n is not None and n != len(data.classes):
        raise EvaluateError(f"{checkpoint}: the model has {n} outputs, {args.data} ({data.name}, {data.labels} "
                            f"labels) has {len(data.classes)} classes; give the data (and --labels) it was trained on")


def cmd_evaluate(args) -> int:
    if args.json is not None:
        check_output_file(args.json)  # before any work: a typo must not cost the whole evaluation
    if is_results_dir(args.checkpoint):
        return _evaluate_results_dir(args)
    if args.checkpoint.is_dir() and not (args.checkpoint / "best.safetensors").exists():
        raise EvaluateError(f"{args.checkpoint}: neither a results folder (no index.csv) nor a run folder "
                            "(no best.safetensors)")
    device = resolve_device(args.device or "auto")
    model, meta = model_from_checkpoint(args.checkpoint, device)
    shape = tuple(meta.get("in_shape", IMAGE_SHAPE))
    archive = load_test_source(args.data, args.labels, shape[-1] if is_image_shape(shape) else 32)
    _check_classes(args.checkpoint, meta, archive, args)
    x, y = select_split(archive, args.split)
    if tuple(x.shape[1:]) != shape:
        raise EvaluateError(f"{args.checkpoint}: the model takes {'×'.join(map(str, shape))} inputs, {args.data} "
                            f"holds {'×'.join(map(str, x.shape[1:]))} images")
    logits = predict_logits(model, x, meta.get("input_scale", 1.0), device)
    acc = accuracy(logits, y)
    pred = logits.argmax(1)
    per_class = {int(c): (pred[y == c] == c).float().mean().item() for c in torch.unique(y)}
    print(f"accuracy {acc:.4f} on the {args.split} split of {args.data} ({len(y)} images)")
    if args.json:
        write_output_json(args.json, {"checkpoint": str(args.checkpoint), "data": str(args.data),
                                      "data_sha256": archive.sha256, "split": args.split, "n": len(y),
                                      "accuracy": acc, "per_class_accuracy": per_class, "family": meta["family"],
                                      "widths": meta["widths"], "params": meta.get("params"),
                                      "code_version": code_version()})
        print(f"wrote {args.json}")
    return 0


def _evaluate_results_dir(args) -> int:
    """Every finished run (and ensemble) of a results folder beside the test accuracy its index reports."""
    device = resolve_device(args.device or "auto")
    data = load_test_source(args.data, args.labels)
    x, y = select_split(data, args.split)
    result = evaluate_results(args.checkpoint, x, y, device, log=lambda s: print(s, file=sys.stderr),
                              num_classes=len(data.classes))
    label = "new" if args.split == "test" else f"new {args.split}"
    print(f"{len(result['rows'])} run(s) of {args.checkpoint} on the {args.split} split of {args.data} "
          f"({len(y)} images); accuracy in %, diff = new - reported")
    print(results_table(result, label), end="")
    if args.json:
        write_output_json(args.json, {"results_dir": str(args.checkpoint), "data": str(args.data),
                                      "data_source": data.source, "data_sha256": data.sha256, "split": args.split,
                                      "n": len(y), **result})
        print(f"wrote {args.json}")
    return 0


def register(sub) -> None:
    e = sub.add_parser("evaluate", help="accuracy of a checkpoint, or of every run of a results folder, on any "
                       "CIFAR archive or CIFAR-10.1 .npy pair",
                       description="Evaluate a checkpoint (best.safetensors or its run folder) on a split of a "
                       "CIFAR-format archive; an archive holding only test_batch works for --split test. Given a "
                       "results folder (one holding index.csv), evaluate the best checkpoint of every finished run "
                       "and every ensemble in it and print each beside the test accuracy the index reports. "
                       "--data may also be a CIFAR-10.1-style pair NAME_data.npy (uint8 N×32×32×3) + "
                       "NAME_labels.npy (either file, or their folder): a test set only.")
    e.add_argument("checkpoint", type=in_path_p, metavar="CKPT_OR_RESULTS_DIR",
                   help="best.safetensors, its run folder, or a results folder (holding index.csv)")
    e.add_argument("--data", type=in_path, required=True, help="CIFAR-10 or CIFAR-100 archive (.tar.gz) or folder, or a "
                   "CIFAR-10.1 .npy pair (NAME_data.npy, NAME_labels.npy or their folder)")
    e.add_argument("--split", choices=("test", "val", "train"), default="test")
    labels_arg(e)
    e.add_argument("--json", type=out_file, help="also write the result as JSON here")
    _device_arg(e)
    e.set_defaults(func=cmd_evaluate)
