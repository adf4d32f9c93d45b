"""Does the student `mimicnet compress --latency T` chose meet T when timed again, in a fresh process?

    python bench/bench_latency.py --out DIR [--runs 3]

DIR is a finished compress run. Each of --runs fresh Python processes loads the exported student and times it
with models.latency's method (the same random batch, 3 warm-up passes, the median of up to 20 timed passes)
at the run's --latency-batch with its --latency-threads, on the CPU:

- ``shipped``: the checkpoint as compress ships it (studies.compress.deployable), the module the ceiling was
  checked on during the search;
- ``student.ts`` (TorchScript), ``student.pt2`` (torch.export), and ``student.onnx`` in onnxruntime when
  both are there.

It prints one row per process and per file, and whether every run of ``shipped`` is within the ceiling
(results.json's), and writes bench/results/latency-{cpu,gpu}.json. The machine's load moves these figures:
compare them with the ceiling, not with another machine's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import save


def child(out: Path) -> None:
    """One fresh process: time every export of OUT/student at the run's latency setting; print JSON."""
    import torch

    from mimicnet.core import artifacts
    from mimicnet.models.export import load_exported, load_torchscript, onnxruntime_missing
    from mimicnet.models.latency import latency_ms, onnx_latency_ms
    from mimicnet.studies.compress import deployable

    res = artifacts.read_json(out / "results.json")
    c = res["ceilings"]
    batch, threads = int(c["batch"]), int(c["threads"])
    student = out / "student"
    shape = tuple(artifacts.read_json(student / "student.json").get("in_shape") or (3, 32, 32))  # --image-size
    kw = {"threads": threads, "in_shape": shape}
    ms = {"shipped": latency_ms(deployable(student / "best.safetensors")[0], "cpu", batch, **kw),
          "student.ts": latency_ms(load_torchscript(student / "student.ts")[0], "cpu", batch, **kw),
          "student.pt2": latency_ms(load_exported(student / "student.pt2")[0], "cpu", batch, **kw)}
    if (student / "student.onnx").is_file() and not onnxruntime_missing():
        ms["student.onnx (onnxruntime)"] = onnx_latency_ms(student / "student.onnx", batch, threads, shape)
    print(json.dumps({"ms": ms, "batch": batch, "threads": threads, "torch": torch.__version__}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="a finished `mimicnet compress` results folder")
    ap.add_argument("--runs", type=int, default=3, help="fresh processes (default 3)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.out)
    res = json.loads((args.out / "results.json").read_text())
    ceiling = (res.get("ceilings") or {}).get("latency_ms")
    s = res["student"]
    print(f"student: {s['family']} {s['widths']}, {s['params']:,} parameters (from {args.out}); ceiling "
          f"{ceiling if ceiling is not None else 'none'} ms at batch {res['ceilings']['batch']}, "
          f"{res['ceilings']['threads']} thread(s); compress measured "
          f"{next(r for r in res['families'] if r['space'] == res['best_space'])['costs']['latency_ms']:.4f} ms")
    runs = []
    for k in range(args.runs):
        t0 = time.time()
        r = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--child"], capture_output=True,
                           text=True, check=False)
        if r.returncode != 0:
            sys.exit(f"run {k + 1} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"run {k + 1} (fresh process, {time.time() - t0:.1f} s): " +
              ", ".join(f"{n} {v:.4f} ms" for n, v in runs[-1]["ms"].items()))
    shipped = [r["ms"]["shipped"] for r in runs]
    meets = ceiling is None or all(v <= ceiling for v in shipped)
    print(f"shipped, {args.runs} fresh processes: median {statistics.median(shipped):.4f} ms, max {max(shipped):.4f} "
          f"ms -> {'meets' if meets else 'DOES NOT meet'} the ceiling of {ceiling} ms")
    path = save("latency", {"out": str(args.out), "student": {k: s[k] for k in ("family", "widths", "params")},
                            "ceiling_ms": ceiling, "setting": res["ceilings"], "runs": runs, "meets": meets,
                            "compress_command": res.get("command")})
    print(f"-> {path}")


if __name__ == "__main__":
    main()
