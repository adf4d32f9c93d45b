"""`mimicnet ensemble`: average trained runs, members chosen on validation."""
from __future__ import annotations


from ..data.splits import load_train_data
from ..distill.ensemble import METHODS, build_ensemble
from ..models.inference import resolve_device
from .common import in_path, in_path_p, labels_arg, out_file, out_folder


def _fmt(v) -> str:
    return "   -  " if v is None else f"{100 * v:6.2f}"


def cmd_ensemble(args) -> int:
    device = resolve_device(args.device or "auto")
    data = load_train_data(args.data, labels=args.labels)
    res = build_ensemble(args.runs, args.out, data, args.method, args.size, device, index=args.index)
    print(f"{'member':40s} {'weight':>6s} {'val %':>7s} {'test %':>7s}")
    for m in sorted(res["members"], key=lambda m: -m["val_acc"]):
        print(f"{str(m['run_id'])[:40]:40s} {m['weight']:6d} {_fmt(m['val_acc']):>7s} {_fmt(m['test_acc']):>7s}")
    sb = res["single_best"]
    print(f"{'single best (by val)':40s} {'':6s} {_fmt(sb['val_acc']):>7s} {_fmt(sb['test_acc']):>7s}")
    print(f"{'ensemble (' + res['method'] + ', ' + str(res['n_members']) + ' members)':40s} "
          f"{sum(m['weight'] for m in res['members']):6d} {_fmt(res['val_acc']):>7s} {_fmt(res['test_acc']):>7s}")
    print(f"ensemble folder: {args.out}  ({res['params']:,} params)")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("ensemble", help="average the logits of trained runs, members chosen on validation",
                              description="Choose ensemble members from training run folders on the validation split "
                              "(greedy: Caruana et al. 2004 forward selection with replacement; topk: the K best), "
                              "average their logits, and write ensemble.json and logits.safetensors. The same "
                              "command again reuses the finished folder.")
    p.add_argument("runs", nargs="+", type=in_path_p, metavar="RUN_DIR", help="training run folders (with best.safetensors)")
    p.add_argument("--data", type=in_path, required=True, help="CIFAR archive the runs were trained on (its validation split selects)")
    labels_arg(p)
    p.add_argument("--out", required=True, type=out_folder, help="ensemble folder")
    p.add_argument("--method", choices=METHODS, default="greedy")
    p.add_argument("--size", type=int, default=16, help="greedy: selection steps; topk: members (default 16, as S2)")
    p.add_argument("--index", type=out_file, help="run-index CSV to append the ensemble's row to")
    p.add_argument("--device", default=None, help="auto (default: cuda if present), cpu, cuda, cuda:1 ...")
    p.set_defaults(func=cmd_ensemble)
