"""The GPU check: every GPU figure of the paper preset in one time-boxed call (issue 29).

    python bench/gpu_check.py [--device cuda] [--budget-s 420] [--out DIR] [--data ARCHIVE] [--only 3,4] [--tiny]

Steps, in order: 1 env (versions, device, memory, bf16 peak, mimicnet importable with its dependencies),
2 pytest (`pytest -m gpu`, in a subprocess with a timeout), 3 teacher (training step of the paper's 5.3M
teacher: fp32 eager, bf16 + channels_last, + torch.compile: images/s, TFLOP/s from FlopCounterMode, % of the
bf16 peak), 4 students (conv0-conv4 at 1M and 31.6M, width constants 0.5, same modes), 5 label (16-member
ensemble labelling through predict_logits, as `mimicnet transfer` runs it, and with bf16 + channels_last),
6 trials (K = 1, 2, 4, 8 student trials at once, one process each, as `--workers-per-gpu K` would run them),
7 epoch (one epoch of the teacher, a one-epoch transfer set, one epoch of a 31.6M student, on a 50,000-image
rehearsal archive tiled from the subset, through the real data path; sizes, timings and peak GPU memory,
never an accuracy), 8 estimate (`mimicnet estimate --preset paper` measured on this device, beside 24 hours).

Every step has a time box. A step starts only if the budget left, less what the steps after it need at
least, holds its minimum; else it is skipped with a line. A step that overruns its box is stopped (SIGALRM,
or the subprocess's timeout) and says so. After every measurement `OUT/gpu.json` and `OUT/gpu.md` (one
table) are rewritten atomically, so a run killed at any moment leaves what it measured. Large files (the
rehearsal archive, run folders) go to a temporary work folder, never to OUT.

`--tiny` runs every step with tiny sizes (seconds on a CPU: `--device cpu --tiny`); the suite does that.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import multiprocessing as mp
import os
import pickle
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
TARGET_HOURS = 24.0          # the paper preset on one H100 (issue 29)
GIB = 2 ** 30

MODES = {"fp32 eager": dict(fast=False, compile=False),
         "bf16 + channels_last": dict(fast=True, compile=False),
         "bf16 + channels_last + compile": dict(fast=True, compile=True)}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What every step measures; TINY keeps each step's code path at sizes a CPU runs in seconds."""
    teacher: tuple = (76, 126, 148, 1200)      # S2's paper teacher, 76c2-126c2-148c4-1200fc2, 5.3M parameters
    batch: int = 128                            # the paper preset's batch size
    families: tuple = ("conv0", "conv1", "conv2", "conv3", "conv4")
    budgets: tuple = (1_000_000, 31_600_000)
    seconds: float = 1.0                        # timed window of one training-step row
    members: int = 16                           # the paper's ensemble
    label_batch: int = 1000                     # TransferConfig's batch_size
    label_batches: int = 5
    ks: tuple = (1, 2, 4, 8)
    trial: tuple = ("conv2", 1_000_000)         # the model of the K-trials step
    window: float = 4.0                         # seconds each trial runs with the others
    rehearsal: int = 50_000                     # images in the rehearsal archive (40,000 train + 10,000 val)
    tile_from: int | None = None                # tile the first N training images of the subset (None: all)
    epoch_student: tuple = ("conv4", 31_600_000)  # the largest student per image (8 GFLOP a training step)
    estimate_steps: int = 10
    estimate_batch: int = 128
    backend: str = "inductor"                   # torch.compile's


FULL = Sizes()
TINY = Sizes(teacher=(8, 8, 16, 32), batch=16, budgets=(20_000,), seconds=0.1, members=16, label_batch=64,
             label_batches=1, ks=(1, 2), trial=("conv2", 20_000), window=0.5, rehearsal=1_000, tile_from=300,
             epoch_student=("conv2", 20_000), estimate_steps=1, estimate_batch=8,
             backend="aot_eager")   # dynamo and AOT autograd without inductor's C++ build: seconds, not minutes


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    title: str
    box: float       # seconds it may take at most
    need: float      # seconds it needs at least to start
    tiny_box: float
    tiny_need: float


STEPS = (Step("env", "environment", 20, 5, 20, 1),
         Step("pytest", "pytest -m gpu", 90, 30, 60, 5),
         Step("teacher", "paper teacher training step", 60, 15, 60, 3),
         Step("students", "student training steps", 100, 30, 60, 3),
         Step("label", "16-member ensemble labelling", 25, 8, 30, 1),
         Step("trials", "K student trials at once", 60, 20, 60, 5),
         Step("epoch", "one epoch on the rehearsal archive", 60, 30, 60, 3),
         Step("estimate", "mimicnet estimate --preset paper", 60, 30, 60, 5))


class StepTimeout(Exception):
    pass


class Check:
    """The run's record, rewritten atomically (gpu.json, gpu.md) after every measurement."""

    def __init__(self, args, device: torch.device, sizes: Sizes):
        self.args, self.device, self.sizes = args, device, sizes
        self.t0 = time.monotonic()
        self.out = Path(args.out)
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-", dir=args.work))
        self.record = {"script": "bench/gpu_check.py", "argv": sys.argv[1:], "note": args.note,
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "finished": None, "budget_s": args.budget_s,
                       "device": str(device), "tiny": args.tiny, "sizes": dataclasses.asdict(sizes), "steps": {}}
        self.cur: dict | None = None
        self.deadline = math.inf

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.t0)

    def step_left(self) -> float:
        return min(self.deadline, self.args.budget_s + self.t0) - time.monotonic()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def log(self, line: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {line}", flush=True)

    def row(self, what: str, mode: str = "", **numbers) -> dict:
        """One measurement of the current step (a row of gpu.md), saved at once."""
        r = {"what": what, "mode": mode, **numbers}
        self.cur["rows"].append(r)
        self.save()
        return r

    def save(self) -> None:
        from mimicnet.core.artifacts import write_json, write_text
        write_json(self.out / "gpu.json", self.record)
        write_text(self.out / "gpu.md", markdown(self.record))

    def peak_reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / GIB if self.device.type == "cuda" else None


# ---------------------------------------------------------------------------------------------------
# Timing a training step


def make_train_step(model, batch: int, device: torch.device, fast: bool, compile: bool, backend: str = "inductor"):
    """One SGD step (forward, L2 loss on random logits, backward, update) on fixed random data, as
    studies.estimate.time_train_step takes it, with the project's fast path (bf16 autocast + channels_last)
    only where training takes it (train.loop.FAST_PATH_DEVICES)."""
    from mimicnet.train.loop import FAST_PATH_DEVICES
    fast = fast and device.type in FAST_PATH_DEVICES
    model = model.to(device)
    if fast:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        # a fresh dynamo cache per model: every family is an nn.Sequential, whose one forward would otherwise
        # be recompiled per model, with dynamic shapes after the first and eager past the recompile limit
        torch.compiler.reset()
    run = torch.compile(model, backend=backend) if compile else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, 32, 32, device=device)
    if fast:
        x = x.contiguous(memory_format=torch.channels_last)
    z = torch.randn(batch, 10, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            loss = F.mse_loss(run(x).float(), z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def timed_window(step, seconds: float, sync) -> tuple[int, float]:
    """(steps, seconds) of `step` run for at least `seconds`, synchronised only between doubling chunks."""
    n, done, t0 = 1, 0, time.perf_counter()
    while True:
        for _ in range(n):
            step()
        done += n
        sync()
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return done, elapsed
        n = min(2 * n, 64)


def flops_per_image(model, device) -> float:
    """FLOPs of one training step per image, counted by torch's FlopCounterMode on the built model."""
    from mimicnet.studies.estimate import step_flops
    return step_flops(model, 2, device) / 2


def measure_modes(c: Check, what: str, build, modes, peak: float | None, flops: float) -> list[dict]:
    """One row per mode: images/s over a timed window, TFLOP/s, % of the bf16 peak, peak GPU memory."""
    rows = []
    for mode in modes:
        if c.step_left() < 2 * c.sizes.seconds + 1:
            c.row(what, mode, note="skipped: the step's time box is spent")
            continue
        torch.manual_seed(0)
        c.peak_reset()
        t = time.perf_counter()
        step = make_train_step(build(), c.sizes.batch, c.device, **MODES[mode], backend=c.sizes.backend)
        for _ in range(3 if MODES[mode]["compile"] else 2):
            step()
        c.sync()
        warm = time.perf_counter() - t
        steps, secs = timed_window(step, c.sizes.seconds, c.sync)
        ips = steps * c.sizes.batch / secs
        tflops = ips * flops / 1e12
        rows.append(c.row(what, mode, images_per_s=ips, tflops=tflops,
                          peak_pct=100 * tflops / peak if peak else None, peak_gib=c.peak_gib(),
                          steps=steps, seconds=secs, warmup_s=warm,
                          note=f"compile + warm-up {warm:.1f} s" if MODES[mode]["compile"] else ""))
        c.log(f"{what} [{mode}]: {ips:,.0f} img/s, {tflops:.2f} TFLOP/s (warm-up {warm:.1f} s)")
        del step
    return rows


# ---------------------------------------------------------------------------------------------------
# The steps


def step_env(c: Check) -> None:
    """Versions, the device, its memory and bf16 peak, mimicnet and every dependency it declares."""
    from mimicnet.studies.estimate import device_peak
    d = c.device
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cudnn_benchmark": torch.backends.cudnn.benchmark,
           "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
           "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
           "platform": platform.platform(), "cpus": os.cpu_count()}
    if d.type == "cuda":
        p = torch.cuda.get_device_properties(d)
        env.update(device_name=p.name, memory_gib=p.total_memory / GIB, multiprocessors=p.multi_processor_count,
                   capability=f"{p.major}.{p.minor}", peak_bf16_tflops=device_peak(d))
        try:
            q = "name,driver_version,memory.total,clocks.max.sm,power.limit"
            env["nvidia_smi"] = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                                               capture_output=True, text=True, timeout=15).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            env["nvidia_smi"] = f"not run: {e}"
    else:
        env.update(device_name=platform.processor() or platform.machine(), peak_bf16_tflops=None)
    import mimicnet
    env["mimicnet"] = {"version": mimicnet.__version__, "path": str(Path(mimicnet.__file__).parent),
                       "from_tree": Path(mimicnet.__file__).resolve().is_relative_to(ROOT / "src")}
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    versions = {}
    for req in deps:
        name = re.split(r"[<>=!~ ;\[]", req, maxsplit=1)[0]
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env["dependencies"] = versions
    missing = [k for k, v in versions.items() if v is None]
    c.cur["results"] = env
    import mimicnet.cli  # noqa: F401  (imports every layer: optuna, sqlalchemy, scipy, matplotlib, ...)
    peak = env["peak_bf16_tflops"]
    c.row("environment", note=f"{env['device_name']}, torch {env['torch']}, CUDA {env['cuda']}, "
          f"python {env['python']}" + (f", {env['memory_gib']:.0f} GiB, bf16 peak {peak} TFLOP/s" if d.type == "cuda"
                                       else "") + f"; mimicnet {'from src/' if env['mimicnet']['from_tree'] else 'installed'}"
          + (f"; missing: {', '.join(missing)}" if missing else "; every dependency there"))
    c.log(json.dumps(env))


def step_pytest(c: Check) -> None:
    """`pytest -m gpu` over the test files that hold GPU tests, in a subprocess with the step's timeout."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider", *files]
    timeout = max(1.0, c.step_left())
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, rc = p.stdout + p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        rc = None
    secs = time.perf_counter() - t
    from mimicnet.core.artifacts import write_text
    write_text(c.out / "pytest-gpu.txt", out)
    lines = [l for l in out.strip().splitlines() if l.strip()]
    summary = lines[-1].strip("= ") if lines else ""
    c.cur["results"] = {"command": " ".join(["pytest", *cmd[3:]]), "files": files, "returncode": rc,
                        "summary": summary, "seconds": secs, "output": "pytest-gpu.txt"}
    c.row("pytest -m gpu", note=(f"timed out after {secs:.0f} s" if rc is None else f"{summary} (exit {rc})"),
          seconds=secs)
    c.log(f"pytest: {summary} (exit {rc}, {secs:.0f} s)")


def step_teacher(c: Check) -> None:
    from mimicnet.models.families import build_model, count_params
    from mimicnet.studies.estimate import device_peak
    w = c.sizes.teacher
    model = build_model("teacher", w)
    n = count_params(model)
    flops = flops_per_image(model.to(c.device), c.device)
    peak = device_peak(c.device)
    c.cur["results"] = {"widths": list(w), "params": n, "gflop_per_image_step": flops / 1e9,
                        "batch": c.sizes.batch, "peak_bf16_tflops": peak}
    del model
    measure_modes(c, f"teacher {'-'.join(map(str, w))} ({n / 1e6:.2f}M)", lambda: build_model("teacher", w), MODES,
                  peak, flops)
    compiled = [r for r in c.cur["rows"] if r["mode"].endswith("compile") and "warmup_s" in r]
    c.cur["results"]["compile_s"] = compiled[0]["warmup_s"] if compiled else None


def step_students(c: Check) -> None:
    """Every student at width constants 0.5 (widths from the budget solver): the eager modes of all first,
    then the compiled mode of each while the box holds the teacher's compile time (each compile is new)."""
    from mimicnet.models.families import build_model, get_family, solve_budget
    from mimicnet.studies.estimate import device_peak
    peak = device_peak(c.device)
    models = []
    for b in c.sizes.budgets:
        for fam in c.sizes.families:
            w = solve_budget(fam, b, (0.5,) * get_family(fam).n_constants)
            model = build_model(fam, w)
            models.append((f"{fam} {b / 1e6:g}M {','.join(map(str, w))}", fam, w, flops_per_image(model.to(c.device),
                                                                                               c.device)))
            del model
    c.cur["results"] = {"models": [{"what": m[0], "family": m[1], "widths": list(m[2]), "gflop_per_image_step":
                                    m[3] / 1e9} for m in models], "batch": c.sizes.batch, "constants": 0.5}
    eager = [m for m in MODES if not MODES[m]["compile"]]
    for what, fam, w, flops in models:
        measure_modes(c, what, lambda: build_model(fam, w), eager, peak, flops)
    teacher = c.record["steps"].get("teacher", {}).get("results", {})
    compile_s = teacher.get("compile_s") or (45.0 if c.device.type == "cuda" else 10.0)
    compiled = [m for m in MODES if MODES[m]["compile"]]
    for what, fam, w, flops in models:
        if c.step_left() < compile_s + c.sizes.seconds:
            c.row(what, compiled[0], note=f"skipped: {c.step_left():.0f} s left in the box, a compile took "
                  f"{compile_s:.0f} s")
            continue
        measure_modes(c, what, lambda: build_model(fam, w), compiled, peak, flops)


def step_label(c: Check) -> None:
    """Labelling a transfer-set batch as `mimicnet transfer` does (augment on the device, the Ensemble through
    models.inference.predict_logits: fp32, logits to the host), and the same with bf16 + channels_last."""
    from mimicnet.data.augment import AugmentConfig, augment, to_uint8
    from mimicnet.distill.ensemble import Ensemble
    from mimicnet.models.families import build_model
    from mimicnet.models.inference import predict_logits
    s, d = c.sizes, c.device
    torch.manual_seed(0)
    ens = Ensemble([build_model("teacher", s.teacher) for _ in range(s.members)], [1] * s.members,
                   [1.0] * s.members).to(d).eval()
    x = torch.randint(0, 256, (s.label_batch, 3, 32, 32), dtype=torch.uint8, device=d)
    g = torch.Generator().manual_seed(0)
    cuda = d.type == "cuda"
    c.cur["results"] = {"members": s.members, "teacher": list(s.teacher), "batch": s.label_batch}
    for mode in ("fp32 (predict_logits, as transfer runs)", "bf16 + channels_last"):
        fast = mode.startswith("bf16") and cuda
        if fast:
            ens = ens.to(memory_format=torch.channels_last)

        def once():
            imgs = to_uint8(augment(x, AugmentConfig(), g))
            with torch.autocast(d.type, dtype=torch.bfloat16, enabled=fast):
                return predict_logits(ens, imgs, 1.0, d, s.label_batch)
        c.peak_reset()
        once()
        c.sync()
        t = time.perf_counter()
        for _ in range(s.label_batches):
            once()
        c.sync()
        ips = s.label_batches * s.label_batch / (time.perf_counter() - t)
        c.row(f"ensemble of {s.members} teachers, batch {s.label_batch}", mode, images_per_s=ips,
              member_images_per_s=ips * s.members, peak_gib=c.peak_gib(),
              note=("the fast path is CUDA-only: the same as fp32 here" if fast != mode.startswith("bf16") else ""))
        c.log(f"label [{mode}]: {ips:,.0f} img/s, {ips * s.members:,.0f} member-img/s")


def _trial_worker(spec: dict, barrier, results) -> None:
    """One student trial's training steps (the fast path, as a search trial trains): warm up, wait for the
    others, then run `window` seconds together."""
    try:
        torch.set_num_threads(spec["threads"])
        from mimicnet.models.families import build_model
        device = torch.device(spec["device"])
        torch.manual_seed(spec["rank"])
        step = make_train_step(build_model(spec["family"], tuple(spec["widths"])), spec["batch"], device,
                               fast=True, compile=False)
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        for _ in range(3):
            step()
        sync()
        barrier.wait(timeout=spec["wait"])
        steps, secs = timed_window(step, spec["window"], sync)
        results.put((spec["rank"], steps * spec["batch"], secs, None))
    except Exception as e:  # noqa: BLE001  (reported by the parent as that trial's line)
        results.put((spec["rank"], 0, 0.0, f"{type(e).__name__}: {e}"))


def step_trials(c: Check) -> None:
    """K student trials at once, one process each (what `--workers-per-gpu K` would start), started together:
    total images/s and per trial, against K = 1."""
    from mimicnet.models.families import get_family, solve_budget
    s = c.sizes
    fam, budget = s.trial
    w = solve_budget(fam, budget, (0.5,) * get_family(fam).n_constants)
    c.cur["results"] = {"family": fam, "budget": budget, "widths": list(w), "batch": s.batch,
                        "window_s": s.window, "per_k": {}}
    ctx = mp.get_context("spawn")
    cost, base = None, None
    threads = 1 if c.device.type == "cpu" else 2
    for k in s.ks:
        need = (cost * 1.5 if cost else 3 * s.window)
        if c.step_left() < need:
            c.row(f"{k} × {fam} {budget / 1e6:g}M", "bf16 + channels_last",
                  note=f"skipped: {c.step_left():.0f} s left in the box, K={k} needs ~{need:.0f} s")
            continue
        t = time.perf_counter()
        barrier, q = ctx.Barrier(k), ctx.Queue()
        wait = max(5.0, c.step_left() - s.window - 2)
        spec = dict(device=str(c.device), family=fam, widths=list(w), batch=s.batch, window=s.window, wait=wait,
                    threads=threads)
        procs = [ctx.Process(target=_trial_worker, args=({**spec, "rank": r}, barrier, q), daemon=True)
                 for r in range(k)]
        for p in procs:
            p.start()
        got, errors = [], []
        try:
            while len(got) + len(errors) < k:
                try:
                    rank, images, secs, err = q.get(timeout=max(1.0, c.step_left()))
                except queue.Empty:
                    errors.append(f"{k - len(got) - len(errors)} of {k} trials had not finished when the box ended")
                    break
                if err:
                    errors.append(f"trial {rank}: {err}")
                    barrier.abort()  # the others stop waiting for it
                else:
                    got.append(images / secs)
        finally:
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join()
        cost = time.perf_counter() - t
        if errors:
            c.row(f"{k} × {fam} {budget / 1e6:g}M", "bf16 + channels_last", note=f"failed: {errors[0]}")
            continue
        total = sum(got)
        base = base or (total if k == 1 else None)
        c.cur["results"]["per_k"][str(k)] = {"total_images_per_s": total, "per_trial": got, "wall_s": cost}
        c.row(f"{k} × {fam} {budget / 1e6:g}M", "bf16 + channels_last", images_per_s=total,
              per_trial_images_per_s=total / k, speedup=(total / base) if base else None, seconds=cost)
        c.log(f"trials K={k}: {total:,.0f} img/s in all ({total / k:,.0f} each), {cost:.1f} s")
    per_k = c.cur["results"]["per_k"]
    if per_k:
        best = max(per_k, key=lambda k: per_k[k]["total_images_per_s"])
        c.cur["results"]["best_k"] = int(best)


# (dy, dx) pixel shifts of the rehearsal archive's copies: copy 2j is the subset shifted by SHIFTS[j] (edges
# repeated), copy 2j + 1 its mirror image, so every copy of the 13 that make 50,000 images differs
SHIFTS = ((0, 0), (2, 0), (0, 2), (-2, 0), (0, -2), (2, 2), (-2, -2), (2, -2), (-2, 2))


def write_rehearsal(subset: Path, n: int, dest: Path, tile_from: int | None = None) -> dict:
    """A CIFAR-10 archive (python format, plain .tar) of `n` training images tiled from `subset`'s (its first
    `tile_from`), each copy shifted or mirrored (SHIFTS); five data_batch files, the subset's own test_batch
    and batches.meta."""
    from mimicnet.data.cifar import CLASSES, load_cifar
    src = load_cifar(subset)
    x, y = src.x_train[:tile_from].numpy(), src.y_train[:tile_from].numpy()
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="edge")
    copies = []
    while len(copies) * len(x) < n:
        j, mirror = divmod(len(copies), 2)
        dy, dx = SHIFTS[j % len(SHIFTS)]
        a = padded[:, :, 2 + dy:34 + dy, 2 + dx:34 + dx]
        copies.append((np.ascontiguousarray(a[..., ::-1] if mirror else a), y))
    xs = np.concatenate([a for a, _ in copies])[:n].reshape(n, 3072)
    ys = np.concatenate([b for _, b in copies])[:n]
    members = {"batches.meta": {b"label_names": [s.encode() for s in CLASSES], b"num_vis": 3072},
               "test_batch": {b"data": src.x_test.numpy().reshape(-1, 3072), b"labels": src.y_test.tolist(),
                              b"batch_label": b"testing batch 1 of 1"}}
    for b, (xb, yb) in enumerate(zip(np.array_split(xs, 5), np.array_split(ys, 5))):
        members[f"data_batch_{b + 1}"] = {b"data": xb, b"labels": yb.tolist(),
                                          b"batch_label": f"rehearsal batch {b + 1} of 5".encode()}
    tmp = dest.with_name(dest.name + ".partial")
    with tarfile.open(tmp, "w") as tf:
        for name, obj in members.items():
            raw = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    tmp.rename(dest)
    return {"images": n, "copies": len(copies), "bytes": dest.stat().st_size, "test_images": len(src.y_test)}


def step_epoch(c: Check) -> None:
    """One epoch of the paper teacher (train.loop.fit, hard labels), a one-epoch transfer set labelled by it
    (distill.transfer.generate) and one epoch of a 31.6M student on that set (distill.student.train_run),
    on the rehearsal archive; sizes, timings, peak GPU memory. The runs' accuracies are never read."""
    from mimicnet.data.splits import load_train_data
    from mimicnet.distill.student import Teachers, train_run
    from mimicnet.distill.transfer import TransferConfig, generate
    from mimicnet.models.families import get_family
    from mimicnet.train.config import TrainConfig
    s, dev = c.sizes, str(c.device)
    quiet = lambda line: None  # noqa: E731
    t = time.perf_counter()
    archive = c.work / "rehearsal.tar"
    made = write_rehearsal(Path(c.args.data), s.rehearsal, archive, s.tile_from)
    made["write_s"] = time.perf_counter() - t
    t = time.perf_counter()
    data = load_train_data(str(archive))
    made.update(load_s=time.perf_counter() - t, train=len(data.train.y), val=len(data.val.y))
    c.cur["results"] = {"archive": made}
    c.row(f"rehearsal archive: {made['train']:,} train + {made['val']:,} val images", seconds=made["write_s"],
          note=f"{made['bytes'] / 2**20:.0f} MiB from {made['copies']} copies of the subset, written in "
          f"{made['write_s']:.1f} s, loaded in {made['load_s']:.1f} s")

    def timed(key, what, run, images):
        c.peak_reset()
        t = time.perf_counter()
        res = run()
        c.sync()
        secs = time.perf_counter() - t
        c.cur["results"][key] = {"seconds": secs, "images": images, "peak_gib": c.peak_gib(), **(res or {})}
        c.row(what, "bf16 + channels_last" if c.device.type == "cuda" else "fp32", images_per_s=images / secs,
              seconds=secs, peak_gib=c.peak_gib(), note=(res or {}).get("note", ""))
        c.log(f"{what}: {secs:.1f} s")

    base = dict(data=str(archive), max_epochs=1, batch_size=s.batch, device=dev, seed=0)
    tdir, sdir = c.work / "teacher", c.work / "student"

    def teacher():
        r = fit_epoch(TrainConfig.of(family="teacher", widths=s.teacher, **base), tdir, data)
        return {"params": r["params"], "note": f"{r['params'] / 1e6:.2f}M params; epoch {r['epoch_s']:.1f} s "
                f"(train + val), fit in all (checkpoints, test) the rest"}
    timed("teacher", f"teacher epoch, {made['train']:,} images", teacher, made["train"])
    if c.step_left() < 5:
        return
    man = {}

    def transfer():
        man.update(generate(TransferConfig(data=str(archive), epochs=1, device=dev), tdir, c.work / "transfer",
                            log=quiet, progress=False, data=data))
        size = sum(f.stat().st_size for f in (c.work / "transfer").iterdir())
        return {"bytes": size, "note": f"1 teacher, {size / 2**20:.0f} MiB on disk (images mode)"}
    timed("transfer", f"transfer set, 1 epoch of {made['train']:,} images", transfer, made["train"])
    if c.step_left() < 5:
        return
    fam, budget = s.epoch_student

    def student():
        cfg = TrainConfig.of(family=fam, budget=budget, constants=(0.5,) * get_family(fam).n_constants,
                             loss="l2-logits", transfer=str(c.work / "transfer"), **base)
        r = fit_epoch(cfg, sdir, data, lambda: train_run(cfg, sdir, data, teachers=Teachers(), log=quiet))
        return {"params": r["params"], "widths": r["widths"],
                "note": f"{r['params'] / 1e6:.2f}M params {','.join(map(str, r['widths']))}; epoch "
                        f"{r['epoch_s']:.1f} s (train + val)"}
    timed("student", f"student {fam} {budget / 1e6:g}M epoch, {made['train']:,} transfer rows", student,
          made["train"])


def fit_epoch(cfg, run_dir: Path, data, run=None) -> dict:
    """Train one epoch (fit, or `run`), and what the run folder says of it: params, widths, the epoch's seconds
    (train + validation) from metrics.jsonl. Accuracies stay in the folder, unread."""
    from mimicnet.train.loop import fit
    r = run() if run else fit(cfg, run_dir, data, log=lambda line: None)
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"params": r["params"], "widths": r["widths"], "epoch_s": rows[-1]["seconds"]}


def step_estimate(c: Check) -> None:
    """The paper preset's projection, measured on this device by studies.estimate (what `mimicnet estimate
    --preset paper` runs: a representative model of every stage at width constants 0.5, the fast path),
    beside the 24-hour target; its student rates against step 4's, and the search stages scaled by the best
    K of step 6."""
    from mimicnet.studies.estimate import Assumptions, estimate
    from mimicnet.studies.main import PRESETS
    s = c.sizes
    preset = PRESETS["paper"]
    if c.args.tiny:  # the code path, not a projection: tiny cells
        preset = dataclasses.replace(preset, baseline_families=("conv2",), baseline_budgets=s.budgets,
                                     student_families=("conv0", "conv2"), student_budgets=s.budgets)
    lines = []
    res = estimate(preset, c.device, Assumptions(), batch=s.estimate_batch, steps=s.estimate_steps,
                   log=lines.append)
    hours = res["total_seconds"] / 3600
    pruned = res["with_pruner"]["total_seconds"] / 3600
    stages = {k: v / 3600 for k, v in res["stages_seconds"].items()}
    out = {"preset": "paper" + (" (tiny cells)" if c.args.tiny else ""), "hours": hours,
           "hours_with_pruner": pruned, "pruner": res["with_pruner"]["pruner"], "stages_hours": stages,
           "target_hours": TARGET_HOURS, "assumptions": res["assumptions"], "lines": lines,
           "measured": res["measured"]}
    # the estimate's student rates against step 4's bf16 rows of the same widths
    students = c.record["steps"].get("students", {})
    what = {tuple(m["widths"]): m["what"] for m in students.get("results", {}).get("models", [])}
    rate = {r["what"]: r["images_per_s"] for r in students.get("rows", [])
            if r["mode"] == "bf16 + channels_last" and r.get("images_per_s")}
    out["estimate_vs_step4"] = {key: m["train_ips"] / rate[what[tuple(m["widths"])]]
                                for key, m in res["measured"].items()
                                if "widths" in m and what.get(tuple(m["widths"])) in rate}
    c.cur["results"] = out
    c.row("paper preset, one device", "as estimate measures (bf16 + channels_last)",
          hours=hours, note=f"{hours:,.1f} h projected (pruner {res['pruner']}), {pruned:,.1f} h with "
          f"{out['pruner']}; target {TARGET_HOURS:g} h: {hours / TARGET_HOURS:.1f}× / {pruned / TARGET_HOURS:.1f}×; "
          + ", ".join(f"{k} {v:,.1f} h" for k, v in stages.items()))
    trials = c.record["steps"].get("trials", {}).get("results", {})
    k = trials.get("best_k")
    if k and k > 1:
        per_k = trials["per_k"]
        gain = per_k[str(k)]["total_images_per_s"] / per_k["1"]["total_images_per_s"]
        searched = stages["baselines"] + stages["students"]
        scaled = hours - searched + searched / gain
        out["with_workers"] = {"k": k, "gain": gain, "hours": scaled}
        c.row(f"paper preset, {k} trials per device", f"step 6's gain {gain:.2f}× on every search cell",
              hours=scaled, note=f"{scaled:,.1f} h, an upper bound: large students gain less than "
              f"{trials['family']} {trials['budget'] / 1e6:g}M; target {TARGET_HOURS:g} h")
    for line in lines:
        c.log("estimate: " + line)


FUNCS = {"env": step_env, "pytest": step_pytest, "teacher": step_teacher, "students": step_students,
         "label": step_label, "trials": step_trials, "epoch": step_epoch, "estimate": step_estimate}


# ---------------------------------------------------------------------------------------------------
# The table


def _fmt(v, spec: str) -> str:
    return "" if v is None else format(v, spec)


def markdown(rec: dict) -> str:
    env = rec["steps"].get("env", {}).get("results", {})
    head = [f"# GPU check: {env.get('device_name', rec['device'])}", "",
            f"`python bench/gpu_check.py {' '.join(rec['argv'])}`, started {rec['started']}, "
            + (f"finished {rec['finished']}" if rec["finished"] else "not finished (yet, or cut short)")
            + f"; budget {rec['budget_s']:g} s" + (f"; {rec['note']}" if rec.get("note") else "")
            + (" — TINY sizes: a test of the code, not figures" if rec["tiny"] else ""), "",
            "| # | step | what | mode | images/s | TFLOP/s | % bf16 peak | peak GiB | s | note |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    body = []
    for i, st in enumerate(STEPS, 1):
        s = rec["steps"].get(st.name)
        if s is None:
            continue
        rows = s.get("rows") or [{"what": "", "mode": ""}]
        for r in rows:
            note = r.get("note", "")
            if r is rows[-1] and s["status"] != "ok":
                note = "; ".join(x for x in (note, s["line"]) if x)
            ips = r.get("images_per_s")
            if r.get("hours") is not None:
                ips_s = ""
            else:
                ips_s = _fmt(ips, ",.0f")
            body.append(f"| {i} | {st.name} | {r['what']} | {r['mode']} | {ips_s} | {_fmt(r.get('tflops'), '.2f')} | "
                        f"{_fmt(r.get('peak_pct'), '.1f')} | {_fmt(r.get('peak_gib'), '.2f')} | "
                        f"{_fmt(r.get('seconds'), '.1f')} | {note.replace('|', '/')} |")
    return "\n".join(head + body) + "\n"


# ---------------------------------------------------------------------------------------------------
# Running the steps inside the budget


@contextmanager
def alarm(seconds: float):
    """StepTimeout raised in the main thread after `seconds` (between Python bytecodes: a running CUDA call
    finishes first)."""
    def fire(signum, frame):
        raise StepTimeout()
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_steps(c: Check, chosen: list[Step]) -> None:
    for i, st in enumerate(chosen):
        box, need = (st.tiny_box, st.tiny_need) if c.args.tiny else (st.box, st.need)
        later = sum((s.tiny_need if c.args.tiny else s.need) for s in chosen[i + 1:])
        room = c.left() - later
        c.cur = c.record["steps"][st.name] = {"title": st.title, "status": "running", "box_s": box, "rows": [],
                                              "results": {}, "line": ""}
        if room < need:
            c.cur.update(status="skipped", seconds=0.0,
                         line=f"skipped: {max(0.0, c.left()):.0f} s of the budget left, {later:g} s kept for the "
                              f"steps after it; it needs {need:g} s")
            c.log(f"{st.name}: {c.cur['line']}")
            c.save()
            continue
        allowed = min(box, room)
        c.log(f"{st.name}: {st.title} (box {allowed:.0f} s)")
        c.save()
        t = time.monotonic()
        c.deadline = t + allowed
        try:
            with alarm(allowed + min(15.0, 0.25 * allowed)):
                FUNCS[st.name](c)
            c.cur.update(status="ok")
        except StepTimeout:
            c.cur.update(status="timed out", line=f"stopped at its time box ({allowed:.0f} s)")
        except Exception as e:  # noqa: BLE001  (one step's failure must not cost the others' figures)
            msg = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            c.cur.update(status="failed", line=f"failed: {msg}")
            import traceback
            traceback.print_exc()
        finally:
            c.deadline = math.inf
        c.cur["seconds"] = time.monotonic() - t
        if c.cur["line"]:
            c.log(f"{st.name}: {c.cur['line']}")
        c.save()


def steps_arg(text: str) -> list[str]:
    """Steps by number or name, comma-separated."""
    names = [s.name for s in STEPS]
    out = []
    for part in text.split(","):
        part = part.strip()
        name = names[int(part) - 1] if part.isdigit() and 1 <= int(part) <= len(names) else part
        if name not in names:
            raise argparse.ArgumentTypeError(f"no step {part!r} (steps: 1-{len(names)} or {', '.join(names)})")
        out.append(name)
    return out


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"gpu_check: error: {message} (`python bench/gpu_check.py --help` lists the arguments)\n")


def positive(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {s!r}")
    return v


def default_data() -> str:
    for p in (ROOT / ".data" / "cifar-10-subset-python.tar.gz",
              ROOT.parent / "shared" / "data" / "cifar-10-subset-python.tar.gz"):
        if p.is_file():
            return str(p)
    return str(ROOT / ".data" / "cifar-10-subset-python.tar.gz")


def main(argv=None) -> int:
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=positive, default=420.0, help="seconds for the whole run (default 420)")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu-check",
                    help="folder of gpu.json, gpu.md, pytest-gpu.txt (default $OUT, else ./gpu-check)")
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cuda:N or cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: every step's code in seconds (CPU test)")
    ap.add_argument("--data", default=default_data(),
                    help="the CIFAR-10 subset the rehearsal archive is tiled from (default .data/, else ../shared/data/)")
    ap.add_argument("--work", default=None, help="parent folder of the temporary work folder (default: the system's)")
    ap.add_argument("--only", type=steps_arg, default=[], help="run only these steps (numbers or names, "
                    "comma-separated)")
    ap.add_argument("--skip", type=steps_arg, default=[], help="skip these steps")
    ap.add_argument("--note", default="", help="recorded in gpu.json and gpu.md (e.g. the commit)")
    args = ap.parse_args(argv)
    chosen = [s for s in STEPS if (not args.only or s.name in args.only) and s.name not in args.skip]
    from mimicnet.core.errors import UserError
    from mimicnet.models.inference import resolve_device
    try:
        device = resolve_device(args.device)
    except UserError as e:
        return _fail(f"--device {args.device}: {e}")
    if any(s.name == "epoch" for s in chosen) and not Path(args.data).is_file():
        return _fail(f"--data {args.data}: no such file (the CIFAR-10 subset; bench/gpu_wheels.sh copies it to .data/)")
    if args.work and not Path(args.work).is_dir():
        return _fail(f"--work {args.work}: no such folder")
    try:
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return _fail(f"--out {args.out}: cannot create it ({e.strerror})")
    if args.tiny and device.type == "cpu":
        torch.set_num_threads(1)  # tiny tensors gain nothing from threads; on a busy CPU they cost 100x
    c = Check(args, device, TINY if args.tiny else FULL)
    c.log(f"gpu check on {device}, budget {args.budget_s:g} s, steps {', '.join(s.name for s in chosen)}; "
          f"writing {c.out / 'gpu.json'}")
    try:
        run_steps(c, chosen)
    finally:
        shutil.rmtree(c.work, ignore_errors=True)
    c.record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    c.record["seconds"] = time.monotonic() - c.t0
    c.save()
    print(markdown(c.record), flush=True)
    return 0


def _fail(line: str) -> int:
    print(f"gpu_check: error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
