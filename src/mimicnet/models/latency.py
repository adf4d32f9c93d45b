"""Latency of a model on this machine: milliseconds per forward pass of a batch of N×3×H×W float images in
[0, 1] (what a model with ``takes_images`` takes: an external teacher, models.export.Standalone), at batch 1
(one request) and batch 256 (throughput).

The method, everywhere (``latency_ms``, ``onnx_latency_ms``, bench/bench_latency.py): the same random batch
each pass; `warmup` untimed passes; then up to `reps` timed passes (at least 3, more until `max_seconds`), each
timed alone with ``time.perf_counter`` (and a CUDA synchronise on a GPU); the result is their median. On the
CPU, torch's intra-op threads are set to `threads` for the measurement and restored after (onnxruntime's
``intra_op_num_threads`` likewise), and the number used is part of the record: a latency without its thread
count says little."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

BATCHES = (1, 256)
METHOD = "median of timed passes after warm-up"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(step: Callable[[], None], warmup: int, reps: int, max_seconds: float) -> float:
    for _ in range(warmup):
        step()
    times: list[float] = []
    end = time.perf_counter() + max_seconds
    while len(times) < reps and (len(times) < 3 or time.perf_counter() < end):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _images(batch: int, in_shape=(3, 32, 32)) -> torch.Tensor:
    return torch.rand(batch, *in_shape, generator=torch.Generator().manual_seed(0))


@torch.inference_mode()
def latency_ms(model: torch.nn.Module, device, batch: int, warmup: int = 3, reps: int = 20,
               max_seconds: float = 1.0, threads: int | None = None, in_shape=(3, 32, 32)) -> float:
    """Median milliseconds of one forward pass of `batch` random images on `device` (the model is moved
    there); `threads`: torch's intra-op threads during the measurement (None: as they are)."""
    device = torch.device(device)
    model = model.to(device)
    try:
        model.eval()
    except NotImplementedError:  # torch.export's module (student.pt2): already an inference graph
        pass
    x = _images(batch, in_shape).to(device)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        def step():
            model(x)
            _sync(device)
        return _median_ms(step, warmup, reps, max_seconds)
    finally:
        torch.set_num_threads(before)


def measure(model: torch.nn.Module, device, batches=BATCHES, threads: int | None = None,
            in_shape=(3, 32, 32)) -> dict[int, float]:
    """{batch: median ms} on `device`."""
    return {b: round(latency_ms(model, device, b, threads=threads, in_shape=in_shape), 4) for b in batches}


def onnx_latency_ms(path, batch: int, threads: int = 1, in_shape=(3, 32, 32), warmup: int = 3, reps: int = 20,
                    max_seconds: float = 1.0) -> float:
    """The same measurement of an ONNX file in onnxruntime (CPU, `threads` intra-op threads); needs onnxruntime."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = int(threads), 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: _images(batch, in_shape).numpy()}
    return _median_ms(lambda: sess.run(None, feed), warmup, reps, max_seconds)
