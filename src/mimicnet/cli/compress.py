"""`mimicnet compress`: distil your own teacher into the best shallow student at a parameter budget."""
from __future__ import annotations

import shlex
import sys

import optuna

from ..core.lock import folder_lock
from ..report.compress import build_compress_report, compress_table
from ..studies.compress import FAMILIES, CompressConfig, check_config, compress
from ..data.cifar import LABELS
from ..search.pruners import PRUNERS
from ..search.samplers import SAMPLERS
from .common import _budget, _floats, check_out_folder, in_path, in_path_p, out_folder


def _families(s: str) -> tuple[str, ...]:
    return tuple(f.strip() for f in s.split(",") if f.strip())


def cmd_compress(args) -> int:
    cfg = CompressConfig(
        teacher=str(args.teacher), data=args.data, budget=args.budget, families=args.families, trials=args.trials,
        seeds=args.seeds, labels=args.labels, max_train=args.max_train, max_epochs=args.epochs,
        transfer_epochs=args.transfer_epochs, batch_size=args.batch_size, sampler=args.sampler, pruner=args.pruner,
        seed=args.seed, teacher_mean=args.teacher_mean, teacher_std=args.teacher_std,
        teacher_normalize=args.teacher_normalize, device=args.device or "auto", latency=not args.no_latency,
        logits_dtype=args.logits_dtype)
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
        "shallow student at a parameter budget",
        description="Check the teacher on the validation split (its accuracy is printed; an output that is not "
        "N×K logits for the data's K classes, or not finite, is an error), label a transfer set with it, search "
        "each student family at the budget (successive-halving pruner), train each family's best config again with "
        "--seeds seeds, and write the best student by validation as a mimicnet checkpoint (OUT/student/"
        "best.safetensors + config.json), as TorchScript (student.ts) and as a torch.export program (student.pt2), "
        "plus OUT/report.html: per family test accuracy, agreement with the teacher, parameters and latency on "
        "this machine. The exports take float32 N×3×32×32 RGB images in [0, 1] and include their preprocessing. "
        "A teacher file's input normalisation comes from --teacher-mean/--teacher-std or --teacher-normalize, or "
        "from a mimicnet.json stored with it ({\"mean\": [...], \"std\": [...]} or {\"normalize\": \"standardize\"|"
        "\"none\"}: a TorchScript/torch.export extra file, or a file beside it named like it plus .json, e.g. "
        "model.pt2.json). Run the same command again "
        "to continue a killed run; a finished one trains nothing more.")
    c.add_argument("--teacher", type=in_path_p, required=True, metavar="T",
                   help="TorchScript file, torch.export .pt2, or a mimicnet run or ensemble folder")
    c.add_argument("--budget", type=_budget, required=True, metavar="B", help="parameters of the student (100k, 1M, ...)")
    c.add_argument("--data", type=in_path, required=True, metavar="D", help="CIFAR-10 or CIFAR-100 archive (.tar.gz) or folder")
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
                   help="stop poor trials early (default sha: successive halving at 2, 6, 18 ... epochs)")
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
    c.add_argument("--device", default=None, help="auto (default: cuda if present), cpu, cuda, cuda:1 ...")
    c.set_defaults(func=cmd_compress)
