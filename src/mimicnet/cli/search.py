"""`mimicnet search show|run|report`: Bayesian search over the spaces of S2/S4."""
from __future__ import annotations

import sys
from pathlib import Path

import optuna

from ..core.index import RunKind
from ..search.pruners import PRUNERS
from ..search.run import Sharing, Strategy, run_search
from ..search.samplers import SAMPLERS
from ..search.spaces import SPACES, SearchError, Space, get_space
from ..search.storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, _safe_url, default_storage, load_study
from ..search.summary import format_report, report, summary
from ..train.config import FLAT_FIELDS, TrainConfig
from .common import add_train_flags, out_file, out_folder, storage_url, train_config_from_args


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------
def cmd_show(args) -> int:
    if args.space in (None, "list"):
        for name, sp in SPACES.items():
            print(f"{name:24s} {sp.kind:8s} {len(sp.params):2d} params")
        print("any other budget: student-convK-BUDGET, baseline-convK-BUDGET (e.g. student-conv2-0.1M)")
        return 0
    print("\n".join(get_space(args.space).describe()))
    return 0


def _search_base(args, space: Space) -> TrainConfig:
    given = {name for name in FLAT_FIELDS if getattr(args, name, None) is not None}
    clash = sorted(given & space.controlled_fields())
    if args.family == space.family:
        clash.remove("family")  # naming the space's own family is harmless
    if clash:
        raise SearchError(f"space {space.name} sets {', '.join('--' + c.replace('_', '-') for c in clash)}; "
                          "leave them out (see `mimicnet search show`)")
    args.family = None
    cfg = train_config_from_args(args)
    return cfg.replace(family=space.family, widths=None, constants=None, budget=None)


def cmd_run(args) -> int:
    space = get_space(args.space)
    base = _search_base(args, space)
    if space.kind == RunKind.STUDENT and base.optim.loss == "ce":
        print(f"note: {space.name} with hard labels (no --loss/--transfer): the students' space, trained on labels",
              file=sys.stderr)
    study_name = args.study or space.name
    out = args.out or Path("runs") / "search" / study_name
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own one line per trial instead
    strategy = Strategy(sampler=args.sampler, n_startup=args.startup, seed=args.search_seed, pruner=args.pruner,
                        pruner_min_epochs=args.pruner_min_epochs, pruner_eta=args.pruner_eta)
    sharing = Sharing(storage=args.storage, study_name=study_name, heartbeat_interval=args.heartbeat,
                      grace_period=args.grace)
    study = run_search(space, base, out, trials=args.trials, strategy=strategy, sharing=sharing,
                       index=args.index or out / "index.csv")
    print(format_report(summary(study), show=3))
    print(f"study {study_name} in {_safe_url(args.storage or default_storage(out))}; run folders in {out / 'trials'}")
    return 0


def cmd_report(args) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.out is None and args.study is None:
        raise SearchError("give --out DIR (a search's folder) or --study NAME")
    out = args.out or Path("runs") / "search" / args.study
    storage = args.storage or default_storage(out)
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).exists():
        raise SearchError(f"no study database at {storage[len('sqlite:///'):]}; give --out of a search or --storage")
    study = load_study(storage, args.study)
    s = report(study, out, top=args.top)
    print(format_report(s, show=args.show))
    print(f"report: {out / 'report'}")
    return 0


def register(subparsers) -> None:
    s = subparsers.add_parser("search", help="Bayesian hyperparameter search: show, run, report").add_subparsers(
        dest="search_cmd", required=True)

    sh = s.add_parser("show", help="print a search space (S2/S4 ranges), or list them",
                      description="Print each searched hyperparameter's range and scale, the width bounds per "
                      "constant and the dependent width. Without SPACE, list the spaces.")
    sh.add_argument("space", nargs="?", help="teacher, baseline-convK, student-convK-BUDGET (e.g. student-conv2-1M)")
    sh.set_defaults(func=cmd_show)

    r = s.add_parser("run", help="run or join a search (one worker)",
                     description="Run trials until the study holds --trials finished ones. Every trial is a normal "
                     "run folder OUT/trials/N; the objective is its validation accuracy. For many workers run the "
                     "same command on every GPU or machine with --storage postgresql://USER@HOST/DB. Training "
                     "flags set the base config (data, epochs, schedule, loss, transfer set, ...); the space sets "
                     "the rest.")
    r.add_argument("space")
    r.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    r.add_argument("--storage", type=storage_url, help="database URL (default: sqlite:///OUT/study.db)")
    r.add_argument("--study", help="study name (default: the space's name)")
    r.add_argument("--out", type=out_folder, help="folder for trial runs (default runs/search/STUDY)")
    r.add_argument("--sampler", choices=SAMPLERS, default="gp", help="gp (default), tpe or random")
    r.add_argument("--startup", type=int, default=4, help="quasi-random start-up trials before gp/tpe (4)")
    r.add_argument("--search-seed", dest="search_seed", type=int, default=0, help="sampler seed (0)")
    r.add_argument("--pruner", choices=tuple(PRUNERS), default="none",
                   help="stop poor trials early from their validation curves: none (default), median, sha "
                   "(successive halving), hyperband; with a pruner prefer --sampler tpe (GP ignores pruned trials)")
    r.add_argument("--pruner-min-epochs", dest="pruner_min_epochs", type=int, default=None,
                   help="first rung in epochs: no trial is stopped before it (default: the first epoch after the "
                   "schedule's warm-up, 1 without one)")
    r.add_argument("--pruner-eta", dest="pruner_eta", type=int, default=3,
                   help="sha/hyperband: keep the best 1/eta of the trials at each rung (3)")
    r.add_argument("--index", type=out_file, help="run-index CSV (default OUT/index.csv)")
    r.add_argument("--heartbeat", type=int, default=HEARTBEAT_INTERVAL,
                   help=f"seconds between a running trial's heartbeats ({HEARTBEAT_INTERVAL})")
    r.add_argument("--grace", type=int, default=GRACE_PERIOD,
                   help=f"a trial silent this long is failed and retried once ({GRACE_PERIOD} s)")
    add_train_flags(r)
    r.set_defaults(func=cmd_run)

    rp = s.add_parser("report", help="best trials, top-5 mean, importances, optimisation history plot",
                      description="Summarise a study: best trials, mean ± std of the top 5 by validation accuracy "
                      "(and their test accuracy), parameter importances, and OUT/report/history.png.")
    rp.add_argument("--out", type=Path, help="the search's folder (holds study.db; the report goes to OUT/report)")
    rp.add_argument("--storage", help="database URL (default sqlite:///OUT/study.db)")
    rp.add_argument("--study", help="study name (default: the storage's only study)")
    rp.add_argument("--top", type=int, default=5, help="trials in the top-k mean (5, as Figure 1)")
    rp.add_argument("--show", type=int, default=10, help="trials to list")
    rp.set_defaults(func=cmd_report)
