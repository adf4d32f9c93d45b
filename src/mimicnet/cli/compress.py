"""`mimicnet compress`: distil your own teacher into the best shallow student at a parameter, FLOPs or latency
budget, with the front of accuracy against latency and parameters, and ONNX beside TorchScript and .pt2."""
from __future__ import annotations

import argparse
import shlex
import sys

import optuna

from ..core.errors import ConfigError
from ..core.lock import folder_lock
from ..core.units import parse_count, parse_ms
from ..report.compress import build_compress_report, compress_table
from ..studies.compress import FAMILIES, CompressConfig, check_config, compress
from ..data.cifar import LABELS
from ..search.pruners import PRUNERS
from ..search.samplers import SAMPLERS
from .common import _budget, _floats, check_out_folder, in_path, in_path_p, out_folder


def _count(s: str) -> int:
    try:
        return parse_count(s, "--flops")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _ms(s: str) -> float:
    try:
        return parse_ms(s, "--latency")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _families(s: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in s.split(",") if f.strip())


def cmd_compress(args) -> int:
    cfg = CompressConfig(
        teacher=str(args.teacher), data=args.data,
        budget=args.budget[0] if len(args.budget) == 1 else tuple(args.budget), families=args.families, trials=args.trials,
        seeds=args.seeds, labels=args.labels, max_train=args.max_train, max_epochs=args.epochs,
        transfer_epochs=args.transfer_epochs, batch_size=args.batch_size, sampler=args.sampler, pruner=args.pruner,
        seed=args.seed, teacher_mean=args.teacher_mean, teacher_std=args.teacher_std,
        teacher_normalize=args.teacher_normalize, device=args.device or "auto", latency=not args.no_latency,
        logits_dtype=args.logits_dtype, pruner_min_epochs=args.pruner_min_epochs, grad_clip=args.grad_clip,
        max_flops=args.flops, max_latency_ms=args.latency, latency_device=args.latency_device,
        latency_batch=args.latency_batch, latency_threads=args.latency_threads, pick=args.pick,
        image_size=args.image_size, onnx=not args.no_onnx)
    check_config(cfg)  # every flag, before any data is read
    check_out_folder(args.out)
    command = " ".join(shlex.quote(a) for a in ["mimicnet", *sys.argv[1:]])
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search prints its own one line per trial
    result = compress(cfg, args.out, command=command)
    with folder_lock(args.out, "mimicnet compress"):
        path = build_compress_report(args.out, result)
    print("\n" + compress_table(result))
    print(f"\nreport: {path}")
    return 0


def register(sub) -> None:
    c = sub.add_parser(
        "compress", help="distil your own teacher (TorchScript, .pt2, or a mimicnet run/ensemble) into the best "
        "shallow student at a parameter, FLOPs or latency budget",
        description="Check the teacher on the validation split (its accuracy is printed; an output that is not "
        "N×K logits for the data's K classes, or not finite, is an error), label a transfer set with it, search "
        "each student family at the budget (successive-halving pruner), train each family's best config again with "
        "--seeds seeds, and write the best student by validation as a mimicnet checkpoint (OUT/student/"
        "best.safetensors + config.json), as TorchScript (student.ts), as a torch.export program (student.pt2) and "
        "as ONNX (student.onnx, checked in onnxruntime in a fresh process), plus OUT/report.html: per family test "
        "accuracy, agreement with the teacher, parameters and latency on this machine, and the front of validation "
        "accuracy against latency and parameters (also OUT/front.csv). --flops and --latency are ceilings like "
        "--budget: widths above them are infeasible before any epoch. "
        "The exports take float32 N×3×32×32 RGB images in [0, 1] and include their preprocessing. "
        "A teacher file's input normalisation comes from --teacher-mean/--teacher-std or --teacher-normalize, or "
        "from a mimicnet.json stored with it ({\"mean\": [...], \"std\": [...]} or {\"normalize\": \"standardize\"|"
        "\"none\"}: a TorchScript/torch.export extra file, or a file beside it named like it plus .json, e.g. "
        "model.pt2.json). Run the same command again "
        "to continue a killed run; a finished one trains nothing more.")
    c.add_argument("--teacher", type=in_path_p, required=True, metavar="T",
                   help="TorchScript file, torch.export .pt2, or a mimicnet run or ensemble folder")
    c.add_argument("--budget", type=_budget, required=True, metavar="B", action="append",
                   help="parameters of the student (100k, 1M, ...); give it more than once to search several budgets "
                   "(every family at each: points of the front)")
    c.add_argument("--flops", type=_count, default=None, metavar="N",
                   help="ceiling on the student's multiply-adds per image (20M, 1.5G, ...), counted from the built "
                   "model as shipped: widths above it are infeasible before any epoch")
    c.add_argument("--latency", type=_ms, default=None, metavar="T",
                   help="ceiling on the student's median latency (0.5ms, 500us, ...) on --latency-device at "
                   "--latency-batch: measured once per architecture before any epoch, widths above it infeasible")
    c.add_argument("--latency-device", dest="latency_device", default="auto", metavar="DEV",
                   help="where --latency is measured: auto (default: the run's --device), cpu, cuda[:N]")
    c.add_argument("--latency-batch", dest="latency_batch", type=int, default=1, metavar="N",
                   help="images per forward pass for --latency (default 1: one request)")
    c.add_argument("--latency-threads", dest="latency_threads", type=int, default=1, metavar="N",
                   help="CPU threads while timing (torch's intra-op threads; default 1)")
    c.add_argument("--pick", default="best", metavar="HOW",
                   help="the exported student: best (default: the highest validation accuracy) or smallest-within=D "
                   "(the fewest parameters, or the lowest latency with --latency, within D validation points of the "
                   "best)")
    c.add_argument("--data", type=in_path, required=True, metavar="D",
                   help="CIFAR-10 or CIFAR-100 archive (.tar.gz) or folder, or a folder of class subfolders of PNG/JPEG "
                   "images (DIR/<class>/*.png, or DIR/train/<class>/ and DIR/test/<class>/; without test/, every 6th "
                   "file of each class by name is held out for test; validation: the last 20%% of the training files "
                   "by name; OUT/split.json lists them)")
    c.add_argument("--image-size", dest="image_size", type=int, default=32, metavar="S",
                   help="images of a folder are resized to S×S (default 32; a CIFAR archive is 32×32 only); the "
                   "augmentation's smallest crop keeps its fraction of the side (24 of 32)")
    c.add_argument("--out", type=out_folder, required=True, metavar="DIR", help="results folder")
    c.add_argument("--families", type=_families, default=FAMILIES,
                   help=f"student families to search, comma-separated (default {','.join(FAMILIES)})")
    c.add_argument("--trials", type=int, default=8, help="search trials per family (default 8)")
    c.add_argument("--seeds", type=int, default=2, help="reruns of each family's best config (default 2)")
    c.add_argument("--labels", choices=LABELS, default="fine", help="CIFAR-100: fine (100 classes, default) or coarse (20)")
    c.add_argument("--max-train", dest="max_train", type=int, default=None, help="use only the first N training images")
    c.add_argument("--epochs", type=int, default=20, help="training epochs of every student (default 20)")
    c.add_argument("--transfer-epochs", dest="transfer_epochs", type=int, default=20,
                   help="augmented passes over the training images the teacher labels (default 20)")
    c.add_argument("--batch-size", dest="batch_size", type=int, default=128, help="student minibatch (default 128)")
    c.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="search sampler (default tpe)")
    c.add_argument("--pruner", choices=tuple(PRUNERS), default="sha",
                   help="stop poor trials early (default sha: successive halving at 5, 15, ... epochs: the first "
                   "rung after the one-cycle warm-up, then times --pruner-eta 3)")
    c.add_argument("--pruner-min-epochs", dest="pruner_min_epochs", type=int, default=5, metavar="E",
                   help="the pruner's first rung (default 5: after the warm-up of 20 one-cycle epochs; it must come "
                   "after the warm-up, a fifth of --epochs)")
    c.add_argument("--grad-clip", dest="grad_clip", type=float, default=20.0, metavar="G",
                   help="clip each student's gradient norm at G before a step (default 20, as the cpu preset; 0: never)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--teacher-mean", dest="teacher_mean", type=_floats, default=None, metavar="R,G,B",
                   help="the teacher's input mean per channel, on [0, 1] images (with --teacher-std)")
    c.add_argument("--teacher-std", dest="teacher_std", type=_floats, default=None, metavar="R,G,B",
                   help="the teacher's input std per channel, on [0, 1] images (with --teacher-mean)")
    c.add_argument("--teacher-normalize", dest="teacher_normalize", choices=("standardize", "none"), default=None,
                   help="standardize: mimicnet's per-image standardisation; none: the [0, 1] images as they are")
    c.add_argument("--logits-dtype", dest="logits_dtype", choices=("float16", "float32"), default="float16",
                   help="how the transfer set stores the teacher's logits (float32 for logits beyond ±65504)")
    c.add_argument("--no-latency", dest="no_latency", action="store_true", help="do not measure latencies")
    c.add_argument("--no-onnx", dest="no_onnx", action="store_true",
                   help="do not write student.onnx (written by default where onnx and onnxscript are installed)")
    c.add_argument("--device", default=None, help="auto (default: cuda if present), cpu, cuda, cuda:1 ...")
    c.set_defaults(func=cmd_compress)
