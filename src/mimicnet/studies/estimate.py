"""`mimicnet estimate --preset NAME`: how long would a preset take on this device?

Measured, not assumed: the throughput of one training step of a representative model of every stage
(a teacher at width constants 0.5, every baseline and student cell at constants 0.5) and of ensemble
inference is timed here, on the current device, with the same fast path training uses (bf16 autocast
and channels_last on CUDA). What cannot be measured in seconds, how many epochs a run lasts under the
S3 schedule, is an explicit assumption printed with the result (flags change it).
"""
from __future__ import annotations

import dataclasses
import heapq
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from ..models.families import build_model, get_family, solve_budget, teacher_widths
from ..distill.transfer import shard_ranges
from ..search.pruners import rungs

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' datasheets, to express achieved rates as a
# fraction of the device's peak. Unknown devices (and CPUs) report no fraction.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}


def device_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def step_flops(model: torch.nn.Module, batch: int, device, train: bool = True) -> int:
    """FLOPs of one forward(+backward) step, counted by torch's FlopCounterMode."""
    x = torch.randn(batch, 3, 32, 32, device=device)
    with FlopCounterMode(display=False) as fc:
        out = model(x)
        if train:
            out.float().pow(2).mean().backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def time_train_step(model: torch.nn.Module, batch: int, device: torch.device, steps: int = 5,
                    fast: bool = True, compile: bool = False) -> float:
    """Images per second of SGD steps (forward, L2 loss, backward, update) on random data."""
    model = model.to(device)
    cuda = device.type == "cuda"
    if fast and cuda:
        model = model.to(memory_format=torch.channels_last)
    run = torch.compile(model) if compile else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, 32, 32, device=device)
    if fast and cuda:
        x = x.to(memory_format=torch.channels_last)
    z = torch.randn(batch, 10, device=device)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if (fast and cuda) else nullcontext

    def step():
        with ctx():
            loss = F.mse_loss(run(x).float(), z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for _ in range(3 if compile else 2):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


@torch.no_grad()
def time_inference(model: torch.nn.Module, batch: int, device: torch.device, steps: int = 5) -> float:
    model = model.to(device).eval()
    cuda = device.type == "cuda"
    x = torch.randn(batch, 3, 32, 32, device=device)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else nullcontext
    if cuda:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    for _ in range(2):
        with ctx():
            model(x)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        with ctx():
            model(x)
    if cuda:
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t0)


@dataclasses.dataclass
class Assumptions:
    """Epoch counts the S3 schedule decides at run time; defaults are upper-end guesses, change them."""
    n_train: int = 40_000
    n_val: int = 10_000
    teacher_epochs: int = 200           # plateau schedule: typically stops after 100-300 epochs
    baseline_epochs: int = 200
    student_epochs: int = 160           # one pass over a 160-epoch transfer set, at most


def searched_epochs(trials: int, epochs: int, pruner: str = "none", min_epochs: int = 1, eta: int = 3) -> float:
    """Epochs a search of `trials` runs of `epochs` spends: all of them without a pruner; with successive
    halving (sha, and hyperband's first bracket, an upper bound for it) every trial reaches the first rung and
    1/eta of those alive at each rung go on (at least one), the survivors to the end. median: not modelled
    (it depends on the curves), counted as no pruning."""
    if pruner not in ("sha", "hyperband"):
        return float(trials * epochs)
    total, prev, alive = 0.0, 0, float(trials)
    for rung in rungs(pruner, min_epochs, epochs, eta):
        total += alive * (rung - prev)
        prev, alive = rung, max(1.0, alive / eta)
    return total + alive * (epochs - prev)


def estimate(preset, device: torch.device, a: Assumptions = Assumptions(), batch: int = 128, steps: int = 5,
             log=print) -> dict:
    """Seconds per stage of `preset` on `device` (see module docstring)."""
    stages = {}
    tw = teacher_widths(0.5, 0.5, 0.5, 0.5)
    teacher = build_model("teacher", tw, batchnorm=bool(preset.teacher_base.get("batchnorm")))
    t_ips = time_train_step(teacher, batch, device, steps)
    t_inf = time_inference(teacher, 1000 if device.type == "cuda" else 250, device, steps)
    flops = step_flops(build_model("teacher", tw), batch, device)
    tflops = flops * t_ips / batch / 1e12
    peak = device_peak(device)
    log(f"teacher {tw}: train {t_ips:,.0f} img/s ({tflops:.2f} TFLOP/s"
        + (f", {100 * tflops / peak:.1f}% of bf16 peak)" if peak else ")") + f", inference {t_inf:,.0f} img/s")
    n_teachers = preset.teacher_trials if preset.teacher_mode == "search" else len(preset.teachers)
    # a searched teacher's best config is also trained again with `seeds` seeds (its claim against the ensemble)
    n_trained = n_teachers + (getattr(preset, "seeds", 0) if preset.teacher_mode == "search" else 0)
    epochs_t = a.teacher_epochs if preset.teacher_base.get("schedule", "plateau") == "plateau" else \
        preset.teacher_base.get("max_epochs", a.teacher_epochs)
    per_epoch = a.n_train / t_ips + a.n_val / t_inf
    stages["teachers"] = n_trained * epochs_t * per_epoch
    members = min(preset.ensemble_size, n_teachers)
    rows = preset.transfer_epochs * a.n_train
    stages["transfer"] = rows * members / t_inf
    measured = {"teacher": {"widths": tw, "train_ips": t_ips, "inference_ips": t_inf, "tflops": tflops,
                            "peak_fraction": (tflops / peak) if peak else None,
                            "trials": n_teachers, "trial_seconds": epochs_t * per_epoch,
                            "seed_seconds": (n_trained - n_teachers) * epochs_t * per_epoch},
                "ensemble": {"seconds": members * 2 * a.n_val / t_inf}, "transfer": {"seconds": stages["transfer"], "epochs": preset.transfer_epochs}}

    # the projection with a pruner: the preset's own, or else successive halving with its first rung at 1/27
    # of a run (three rungs of eta=3 before the end)
    pruner = preset.pruner if preset.pruner in ("sha", "hyperband") else "sha"
    own = preset.pruner == pruner     # the preset's own rungs; else the first at 1/27 of a run, eta 3
    seeds = getattr(preset, "seeds", 0)
    pruned: dict[str, float] = {}

    def cells(kind, families, budgets, trials, epochs, base):
        total = 0.0
        for b in budgets:
            for fam in families:
                n_c = get_family(fam).n_constants
                w = solve_budget(fam, b, (0.5,) * n_c)
                ips = time_train_step(build_model(fam, w), batch, device, steps)
                e = epochs if base.get("schedule", "plateau") == "plateau" else base.get("max_epochs", epochs)
                per_epoch = a.n_train / ips + a.n_val / (3 * ips)
                spent = searched_epochs(trials, e, preset.pruner, preset.pruner_min_epochs, preset.pruner_eta)
                first, eta = (preset.pruner_min_epochs, preset.pruner_eta) if own else (max(1, e // 27), 3)
                secs = (spent + seeds * e) * per_epoch
                pruned[kind] = pruned.get(kind, 0.0) + (searched_epochs(trials, e, pruner, first, eta)
                                                        + seeds * e) * per_epoch
                measured[f"{kind}/{fam}/{b}"] = {"widths": w, "train_ips": ips, "trials": trials,
                                                 "trial_seconds": spent * per_epoch / trials,
                                                 "seed_seconds": seeds * e * per_epoch}
                log(f"{kind} {fam} {b:,}: {ips:,.0f} img/s -> {trials} trials ({spent:.0f} epochs"
                    f"{', pruned' if preset.pruner != 'none' else ''}) + {seeds} seeds x {e} epochs = {secs / 3600:.2f} h")
                total += secs
        return total
    stages["baselines"] = cells("baseline", preset.baseline_families, preset.baseline_budgets,
                                preset.baseline_trials, a.baseline_epochs, preset.baseline_base)
    stages["students"] = cells("student", preset.student_families, preset.student_budgets, preset.student_trials,
                               a.student_epochs, preset.student_base)
    with_pruner = {**stages, "baselines": pruned["baseline"], "students": pruned["student"]} if pruned else stages
    return {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "cpu", "assumptions": dataclasses.asdict(a), "stages_seconds": stages,
            "total_seconds": sum(stages.values()), "pruner": preset.pruner,
            "with_pruner": {"pruner": pruner, "stages_seconds": with_pruner,
                            "total_seconds": sum(with_pruner.values())}, "measured": measured}


# ---------------------------------------------------------------------------------------------------
# Many workers: the makespan of the study's units of work (studies/work.py), not the sum over N
# ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Job:
    name: str
    seconds: float
    needs: tuple = ()


def work_jobs(res: dict) -> list[Job]:
    """The study's work as reproduce's workers share it, timed from `estimate`'s measurements: every search
    trial a job (idle workers help a running cell), the ensemble one job, the transfer set its shards of
    epochs (distill.transfer.shard_ranges; the merge, a copy, not counted), every cell's seed reruns one job
    (its seeds one after another), in the plan's order."""
    m = res["measured"]
    t = m["teacher"]
    teachers = [Job(f"teacher/{i}", t["trial_seconds"]) for i in range(t["trials"])]
    tr = m["transfer"]
    shards = [Job(f"transfer/{a}", tr["seconds"] * (b - a) / tr["epochs"], ("ensemble",))
              for a, b in shard_ranges(tr["epochs"])]
    jobs = teachers + [Job("ensemble", m["ensemble"]["seconds"], tuple(j.name for j in teachers)), *shards,
                       Job("transfer", 0.0, tuple(j.name for j in shards))]
    seeds = [Job("seeds/teacher", t["seed_seconds"], tuple(j.name for j in teachers))] if t["seed_seconds"] else []
    for key, c in m.items():
        if not key.startswith(("baseline/", "student/")):
            continue
        needs = ("transfer",) if key.startswith("student/") else ()
        cell = [Job(f"{key}/{i}", c["trial_seconds"], needs) for i in range(c["trials"])]
        jobs += cell
        if c["seed_seconds"]:
            seeds.append(Job(f"seeds/{key}", c["seed_seconds"], tuple(j.name for j in cell)))
    return jobs + seeds


def makespan(jobs: list[Job], workers: int) -> float:
    """Wall clock of `workers` workers taking, whenever one is free, the first job (in plan order) whose needs
    are done: list scheduling, as the workers of studies/work.py do."""
    done_at: dict[str, float] = {}
    left = list(jobs)
    free = [0.0] * workers
    heapq.heapify(free)
    running: list[tuple[float, str]] = []
    while left:
        now = heapq.heappop(free)
        while running and running[0][0] <= now:  # what has finished by now
            end, name = heapq.heappop(running)
            done_at[name] = end
        ready = next((j for j in left if all(n in done_at for n in j.needs)), None)
        if ready is None and not running:
            raise ValueError(f"jobs that can never run: {', '.join(j.name for j in left[:3])}")
        if ready is None:  # idle until the next job ends (the free times come out in order: done_at <= now)
            heapq.heappush(free, running[0][0])
            continue
        left.remove(ready)
        heapq.heappush(running, (now + ready.seconds, ready.name))
        heapq.heappush(free, now + ready.seconds)
    return max([e for e, _ in running] + list(done_at.values()) + [0.0])


def critical_path(jobs: list[Job]) -> float:
    """The longest chain of needs: no number of workers finishes sooner."""
    finish: dict[str, float] = {}
    for j in jobs:  # plan order lists every job after what it needs
        finish[j.name] = j.seconds + max((finish[n] for n in j.needs), default=0.0)
    return max(finish.values(), default=0.0)


WORKER_COUNTS = (1, 2, 4, 8, 16, 64)


def scaling(jobs: list[Job], counts=WORKER_COUNTS) -> dict:
    """Makespan per worker count, the critical path, and the first count past which doubling the workers
    saves less than 10% (where more workers stop helping)."""
    rows = [{"workers": n, "seconds": makespan(jobs, n)} for n in counts]
    for r in rows:
        r["speedup"] = rows[0]["seconds"] / r["seconds"] if r["seconds"] else 1.0
        r["efficiency"] = r["speedup"] / r["workers"]
    stop = next((a["workers"] for a, b in zip(rows, rows[1:]) if b["seconds"] > 0.9 * a["seconds"]), None)
    return {"rows": rows, "critical_path_seconds": critical_path(jobs), "stops_helping_at": stop}
