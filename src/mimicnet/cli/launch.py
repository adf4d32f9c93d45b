"""`mimicnet launch slurm --preset P --storage URL --gpus 16 --time 8h`: reproduce's workers as a Slurm job array.

Built on submitit (pip install -e '.[slurm]'): one array task per GPU, each a `mimicnet reproduce` worker of
the same study (its units of work claimed through --storage, studies/work.py). A task that reaches its time
limit or is preempted is requeued by submitit (the worker is Checkpointable: it resubmits itself as it is,
and the study's claims and run folders carry everything it had done). `--executor local` runs the same
array as local processes (submitit's local executor: how it is tested).
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

from ..core.errors import ConfigError
from ..search.storage import as_recorded, is_journal
from ..studies.main import PRESETS


def parse_time(s: str) -> int:
    """Minutes from 8h, 90m, 1h30m, 2d, or Slurm's [D-]HH:MM[:SS]."""
    m = re.fullmatch(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?:in)?)?", s.strip())
    if m and any(m.groups()):
        d, h, mi = (int(v or 0) for v in m.groups())
        return d * 1440 + h * 60 + mi
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d\d)(?::(\d\d))?", s.strip())
    if m:
        d, h, mi, sec = (int(v or 0) for v in m.groups())
        return d * 1440 + h * 60 + mi + (1 if sec else 0)
    raise ConfigError(f"--time {s!r}: expected e.g. 8h, 90m, 1h30m or 08:00:00")


try:
    from submitit.helpers import Checkpointable
except ImportError:  # the launcher says what to install when it is used
    Checkpointable = object


class ReproduceWorker(Checkpointable):
    """One array task: `mimicnet reproduce` with these arguments, in the task's process. Requeued as it is on
    a time limit or a preemption (submitit calls checkpoint(), which resubmits self)."""

    def __init__(self, argv: list[str]):
        self.argv = list(argv)

    def __call__(self, task: int) -> int:
        rc = importlib.import_module(__package__).main(self.argv)  # the CLI's entry point (this module's package)
        if rc != 0:
            raise RuntimeError(f"task {task}: mimicnet {' '.join(self.argv[:3])} ... ended with status {rc}")
        return rc


def worker_argv(args) -> list[str]:
    argv = ["reproduce", "--preset", args.preset, "--storage", args.storage, "--out", str(args.out)]
    for flag in ("data", "device"):
        if getattr(args, flag):
            argv += [f"--{flag}", str(getattr(args, flag))]
    for s in args.set or []:
        argv += ["--set", s]
    if args.workers_per_gpu > 1:  # several workers on the task's GPU (Slurm has set CUDA_VISIBLE_DEVICES)
        argv += ["--workers", str(args.workers_per_gpu)]
    return argv


def make_executor(args):
    try:
        import submitit
    except ImportError:
        raise ConfigError("mimicnet launch needs submitit: pip install -e '.[slurm]'") from None
    folder = Path(args.logs or Path(args.out) / "slurm" / "%j")
    ex = submitit.AutoExecutor(folder=folder, cluster="local" if args.executor == "local" else "slurm")
    minutes = parse_time(args.time)
    params = dict(timeout_min=minutes, name=f"mimicnet-{args.preset}", cpus_per_task=args.cpus_per_task,
                  gpus_per_node=1 if args.gpus else 0, tasks_per_node=1, nodes=1)
    if args.executor != "local":
        params.update(slurm_array_parallelism=args.tasks, slurm_signal_delay_s=120,
                      **({"slurm_partition": args.partition} if args.partition else {}))
    ex.update_parameters(**params)
    return ex


def cmd_launch(args) -> int:
    if args.scheduler != "slurm":
        raise ConfigError(f"launch {args.scheduler}: only slurm is supported (for Kubernetes see README)")
    if not args.storage:
        raise ConfigError("--storage: the workers of a job array share one database (postgresql://...) or "
                          "a journal file on a shared filesystem")
    if args.preset not in PRESETS:  # before N tasks are submitted that would each fail on it
        raise ConfigError(f"--preset {args.preset!r}: launch runs {', '.join(PRESETS)} (a fixed study runs as one "
                          "process: mimicnet reproduce)")
    # every task opens the same folder and journal file, whatever folder Slurm starts it in
    args.out = Path(args.out or Path("results") / args.preset).absolute()
    if is_journal(args.storage):
        args.storage = as_recorded(args.storage)
    args.tasks = args.gpus or args.tasks
    if not args.tasks or args.tasks < 1:
        raise ConfigError("--gpus N (one task per GPU) or --tasks N (CPU tasks) must be at least 1")
    if args.workers_per_gpu < 1:
        raise ConfigError(f"--workers-per-gpu {args.workers_per_gpu}: must be at least 1")
    ex = make_executor(args)
    jobs = ex.map_array(ReproduceWorker(worker_argv(args)), range(args.tasks))
    print(f"submitted {len(jobs)} worker task(s) ({'local' if args.executor == 'local' else 'slurm'}): "
          f"{', '.join(str(j.job_id) for j in jobs[:4])}{' ...' if len(jobs) > 4 else ''}; "
          f"progress: mimicnet status {args.out} --storage URL")
    if args.wait:
        for j in jobs:
            j.result()  # raises with the task's error
    return 0


def register(sub) -> None:
    p = sub.add_parser("launch", help="reproduce's workers as a Slurm job array (submitit)",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("scheduler", choices=["slurm"])
    p.add_argument("--preset", default="paper")
    p.add_argument("--storage", help="the database every worker shares (postgresql://... or a journal file)")
    p.add_argument("--out", type=Path, help="the results folder, on a filesystem every node mounts "
                   "(default results/PRESET)")
    p.add_argument("--gpus", type=int, help="GPUs in all: one array task per GPU")
    p.add_argument("--tasks", type=int, help="CPU-only array tasks (without --gpus)")
    p.add_argument("--workers-per-gpu", dest="workers_per_gpu", type=int, default=1,
                   help="worker processes in each task, sharing its GPU")
    p.add_argument("--time", default="8h", help="time limit per task (8h, 90m, 08:00:00); requeued past it")
    p.add_argument("--partition")
    p.add_argument("--cpus-per-task", dest="cpus_per_task", type=int, default=4)
    p.add_argument("--data")
    p.add_argument("--device")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE", help="preset overrides, as reproduce's")
    p.add_argument("--logs", help="submitit's folder of job logs (default OUT/slurm/%%j)")
    p.add_argument("--executor", choices=["slurm", "local"], default="slurm",
                   help="local: the same array as local processes (submitit's local executor)")
    p.add_argument("--wait", action="store_true", help="wait for every task and fail if one failed")
    p.set_defaults(func=cmd_launch)
