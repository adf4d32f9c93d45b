"""Teacher training step: eager fp32 vs the fast path (bf16 autocast + channels_last, optionally
torch.compile), images/s, achieved TFLOP/s (FLOPs counted by torch's FlopCounterMode) and the fraction
of the device's bf16 peak. Meant for a GPU; on a CPU it still runs (the fast path is then the same).

    python bench/bench_teacher.py [--widths 76,126,148,1200] [--batch 256] [--steps 20] [--compile]
"""
from __future__ import annotations

import argparse

import torch

from common import save
from mimicnet.studies.estimate import device_peak, step_flops, time_train_step
from mimicnet.models.families import build_model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="76,126,148,1200", help="the paper's best teacher by default")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    widths = tuple(int(w) for w in args.widths.split(","))
    flops = step_flops(build_model("teacher", widths).to(device), args.batch, device) / args.batch
    peak = device_peak(device)
    rows = {}
    variants = [("eager fp32", dict(fast=False)), ("bf16 + channels_last", dict(fast=True))]
    if args.compile:
        variants.append(("bf16 + channels_last + compile", dict(fast=True, compile=True)))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for name, kw in variants:
        torch.manual_seed(0)
        ips = time_train_step(build_model("teacher", widths), args.batch, device, args.steps, **kw)
        rows[name] = {"images_per_s": ips, "tflops": ips * flops / 1e12,
                      "peak_fraction": ips * flops / 1e12 / peak if peak else None}
    base = rows["eager fp32"]["images_per_s"]
    print(f"teacher {widths}, batch {args.batch}, {flops / 1e9:.2f} GFLOP per image per step, on {device}")
    print(f"{'path':34s} {'images/s':>10s} {'TFLOP/s':>9s} {'% peak':>7s} {'ratio':>6s}")
    for name, r in rows.items():
        pf = f"{100 * r['peak_fraction']:.1f}" if r["peak_fraction"] else "n/a"
        print(f"{name:34s} {r['images_per_s']:10,.0f} {r['tflops']:9.2f} {pf:>7s} {r['images_per_s'] / base:6.2f}")
    print("wrote", save("teacher", {"device": str(device), "widths": list(widths), "batch": args.batch,
                                    "gflop_per_image_step": flops / 1e9, "peak_bf16_tflops": peak, "variants": rows}))


if __name__ == "__main__":
    main()
