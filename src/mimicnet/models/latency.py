"""Latency of a model on this machine: milliseconds per forward pass of a batch of N×3×32×32 float images in
[0, 1] (what a model with ``takes_images`` takes: an external teacher, models.export.Standalone), at batch 1
(one request) and batch 256 (throughput), after a few warm-up passes, the median of timed passes."""
from __future__ import annotations

import statistics
import time

import torch

BATCHES = (1, 256)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def latency_ms(model: torch.nn.Module, device, batch: int, warmup: int = 3, reps: int = 20,
               max_seconds: float = 1.0) -> float:
    """Median milliseconds of one forward pass of `batch` random images on `device` (the model is moved
    there): `warmup` untimed passes first, then up to `reps` timed ones or until `max_seconds` have passed
    (at least 3)."""
    device = torch.device(device)
    model = model.to(device).eval()
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    for _ in range(warmup):
        model(x)
    _sync(device)
    times: list[float] = []
    end = time.perf_counter() + max_seconds
    while len(times) < reps and (len(times) < 3 or time.perf_counter() < end):
        t0 = time.perf_counter()
        model(x)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def measure(model: torch.nn.Module, device, batches=BATCHES) -> dict[int, float]:
    """{batch: median ms} on `device`."""
    return {b: round(latency_ms(model, device, b), 4) for b in batches}
