"""Transfer-set labelling: images/s of ensemble inference (k teachers, logits averaged) on augmented
batches, including the augmentation, as `mimicnet transfer` does it; against k=1 in the same run.

    python bench/bench_label.py [--widths 76,126,148,1200] [--k 1,4,16] [--batch 1000] [--batches 3]
"""
from __future__ import annotations

import argparse
import time

import torch

from common import save
from mimicnet.data.augment import AugmentConfig, augment, standardize, to_uint8
from mimicnet.distill.ensemble import Ensemble
from mimicnet.models.families import build_model


@torch.no_grad()
def label_rate(ens, batch: int, batches: int, device) -> float:
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    g = torch.Generator().manual_seed(0)
    cuda = device.type == "cuda"
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else torch.no_grad

    def once():
        imgs = to_uint8(augment(x, AugmentConfig(), g))
        with ctx():
            return ens(standardize(imgs)).float().cpu()
    once()
    t0 = time.perf_counter()
    for _ in range(batches):
        once()
    return batches * batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cuda = torch.cuda.is_available()
    ap.add_argument("--widths", default="76,126,148,1200" if cuda else "32,64,128,256")
    ap.add_argument("--k", default="1,4,16" if cuda else "1,3")
    ap.add_argument("--batch", type=int, default=1000 if cuda else 250)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    widths = tuple(int(w) for w in args.widths.split(","))
    rows = {}
    for k in (int(v) for v in args.k.split(",")):
        members = [build_model("teacher", widths, batchnorm=True).eval() for _ in range(k)]
        ens = Ensemble(members, [1] * k, [1.0] * k).to(device).eval()
        if device.type == "cuda":
            ens = ens.to(memory_format=torch.channels_last)
        rows[k] = label_rate(ens, args.batch, args.batches, device)
    print(f"teacher {widths} on {device}, batch {args.batch}")
    print(f"{'ensemble size':>14s} {'images/s':>10s} {'member-images/s':>16s}")
    for k, r in rows.items():
        print(f"{k:14d} {r:10,.0f} {k * r:16,.0f}")
    print("wrote", save("label", {"device": str(device), "widths": list(widths), "batch": args.batch,
                                  "images_per_s": {str(k): v for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
