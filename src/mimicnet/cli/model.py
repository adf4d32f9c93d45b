"""`mimicnet model list|describe|fold`: the registered families, layer shapes and counts, bottleneck folding."""
from __future__ import annotations


from ..models.checkpoint import fold_checkpoint
from ..models.families import FAMILIES, ModelError, count_params, describe, get_family, solve_budget, teacher_widths
from .common import _budget, _floats, _ints, in_path, out_file


def cmd_model_list(args) -> int:
    for f in FAMILIES.values():
        print(f"{f.name:10s} {f.description:32s} widths: {','.join(f.width_names)}")
    return 0


def cmd_model_describe(args) -> int:
    fam = get_family(args.family)
    if args.widths is not None:
        widths = args.widths
    elif args.budget is not None:
        widths = tuple(solve_budget(args.family, args.budget, args.constants or (0.5,) * fam.n_constants,
                                    num_classes=args.num_classes))
    elif args.constants is not None and args.family == "teacher":
        widths = teacher_widths(*args.constants)
    else:
        raise ModelError(f"{args.family}: give --widths, or --budget (and --constants)")
    if not fam.variable_widths and len(widths) != len(fam.width_names):
        raise ModelError(f"{args.family} takes {len(fam.width_names)} widths ({','.join(fam.width_names)}), got {len(widths)}")
    rows = describe(args.family, widths, batchnorm=args.batchnorm, num_classes=args.num_classes)
    print(f"{fam.name}: {fam.description}   widths " + ", ".join(f"{n}={w}" for n, w in zip(fam.width_names, widths)))
    print(f"{'layer':28s} {'output':>16s} {'params':>12s}")
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        print(f"{r['name'] + ' ' + r['type']:28s} {shape:>16s} {r['params']:>12,}")
    n = count_params(args.family, widths, batchnorm=args.batchnorm, num_classes=args.num_classes)
    print(f"{'total':28s} {'':>16s} {n:>12,}")
    if args.budget is not None:
        print(f"budget {args.budget:,}: {n - args.budget:+,} ({100 * (n - args.budget) / args.budget:+.3f}%)")
    return 0


def cmd_model_fold(args) -> int:
    r = fold_checkpoint(args.checkpoint, args.out)
    print(f"folded the linear bottleneck: {r['params_unfolded']:,} -> {r['params']:,} parameters; "
          f"max |output difference| {r['max_abs_diff']:.3g} on 64 random inputs (outputs up to "
          f"{r['max_abs_output']:.3g}); wrote {r['out']}")
    return 0


def register(sub) -> None:
    m = sub.add_parser("model", help="model families: list, describe, fold").add_subparsers(dest="model_cmd", required=True)
    ml = m.add_parser("list", help="list the registered model families")
    ml.set_defaults(func=cmd_model_list)
    md = m.add_parser("describe", help="layer shapes and parameter count of a model",
                      description="Print each layer's output shape and parameters. With --budget, solve the "
                      "dependent width from the width constants and show how close the count lands.")
    md.add_argument("family")
    md.add_argument("--widths", type=_ints)
    md.add_argument("--budget", type=_budget)
    md.add_argument("--constants", type=_floats)
    md.add_argument("--batchnorm", action="store_true")
    md.add_argument("--num-classes", dest="num_classes", type=int, default=10,
                    help="outputs of the last layer: 10 (CIFAR-10, default), 100 (CIFAR-100), 20 (--labels coarse)")
    md.set_defaults(func=cmd_model_describe)
    mf = m.add_parser("fold", help="multiply a trained net's linear bottleneck into the next layer (S5)",
                      description="Ba & Caruana's linear bottleneck adds no representational power: W = W_H W_L. "
                      "Writes the folded net as a checkpoint that `mimicnet evaluate` reads, after checking that "
                      "it gives the same outputs. Families with a bottleneck: conv0, conv1, snn, mlp_lin.")
    mf.add_argument("checkpoint", type=in_path, help="best.safetensors or its run folder")
    mf.add_argument("--out", type=out_file, required=True, help="the folded checkpoint (.safetensors)")
    mf.set_defaults(func=cmd_model_fold)
