"""Per-trial overhead of a study: archive loads per process, and seconds from a trial's start to its first step.

Runs `mimicnet reproduce` in this process with every stage cut to one epoch (the structure of the preset,
its number of teachers, cells and trials, is kept), and counts:
  - archive loads: how often the CIFAR archive is opened (tarfile.open on the --data path, or its folder read);
  - for every search trial: seconds from the trial's start (Optuna hands it to the objective) to the first
    optimizer step of its run (sampling, config, data, model, transfer set, teacher: all setup).

    python bench/bench_overhead.py --preset cpu --data ../shared/data/cifar-10-subset-python.tar.gz

Everything is measured, nothing asserted; numbers go to bench/results/overhead-{cpu,gpu}.json.
"""
from __future__ import annotations

import argparse
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import optuna
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from common import save

_EPOCHS = {"max_epochs": 1}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", type=Path, help="results folder (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(2)

    loads = []
    real_open = tarfile.open

    def counting_open(name=None, *a, **kw):
        name = name if name is not None else getattr(kw.get("fileobj"), "name", None)  # data.cifar streams a file
        if name is not None and Path(str(name)).resolve() == Path(args.data).resolve():
            loads.append(time.perf_counter())
        return real_open(name, *a, **kw)

    tarfile.open = counting_open

    starts, first_steps, in_trial = [], [], [False]
    real_optimize = optuna.study.Study.optimize

    def timed_optimize(self, *a, **kw):
        starts.append(time.perf_counter())
        first_steps.append(None)
        in_trial[0] = True
        try:
            return real_optimize(self, *a, **kw)
        finally:
            in_trial[0] = False

    optuna.study.Study.optimize = timed_optimize

    def first_step(opt, a, kw):
        if in_trial[0] and first_steps and first_steps[-1] is None:
            first_steps[-1] = time.perf_counter()

    register_optimizer_step_pre_hook(first_step)

    from mimicnet.cli import main as cli_main
    out = args.out or Path(tempfile.mkdtemp(prefix="mimicnet-overhead-"))
    sets = [f"--set={k}" for k in (
        'teacher_base={"family":"teacher","widths":[32,64,128,256],"batchnorm":true,"schedule":"onecycle",'
        '"lr":0.05,"momentum":0.9,"weight_decay":5e-4,"label_smoothing":0.1,"batch_size":128,"max_epochs":1}',
        "transfer_epochs=1",
        'baseline_base={"schedule":"onecycle","max_epochs":1,"batch_size":128}',
        'student_base={"schedule":"onecycle","max_epochs":1,"batch_size":128}')]
    t0 = time.perf_counter()
    rc = cli_main(["reproduce", "--preset", args.preset, "--data", args.data, "--out", str(out), "--device", "cpu",
                   *sets])
    total = time.perf_counter() - t0
    setup = [f - s for s, f in zip(starts, first_steps) if f is not None]
    res = {"preset": args.preset, "rc": rc, "archive_loads": len(loads), "trials_timed": len(setup),
           "trial_setup_s_median": statistics.median(setup) if setup else None,
           "trial_setup_s_mean": statistics.fmean(setup) if setup else None,
           "trial_setup_s_max": max(setup) if setup else None, "total_s": round(total, 1), "out": str(out)}
    print(f"{'preset':8s} {'archive loads':>13s} {'trials':>6s} {'setup median s':>14s} {'mean s':>7s} {'max s':>6s}")
    print(f"{args.preset:8s} {len(loads):>13d} {len(setup):>6d} {res['trial_setup_s_median'] or 0:>14.2f} "
          f"{res['trial_setup_s_mean'] or 0:>7.2f} {res['trial_setup_s_max'] or 0:>6.2f}")
    print(f"wrote {save('overhead', res)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
