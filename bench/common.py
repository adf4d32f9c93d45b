"""Shared bits of the benchmarks: hardware description, JSON output, a timer."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def hardware() -> dict:
    h = {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
         "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if torch.cuda.is_available():
        h["gpu"] = torch.cuda.get_device_name(0)
    return h


def save(name: str, numbers: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if torch.cuda.is_available() else "cpu"
    path = RESULTS / f"{name}-{tag}.json"
    path.write_text(json.dumps({"benchmark": name, "hardware": hardware(),
                                "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **numbers}, indent=2) + "\n")
    return path


def timed(fn, repeat: int = 3, sync=None) -> float:
    """Median seconds of `repeat` calls after one warm-up call."""
    fn()
    ts = []
    for _ in range(repeat):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        ts.append(time.perf_counter() - t0)
    return sorted(ts)[len(ts) // 2]
