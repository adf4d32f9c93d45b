"""Augmentation throughput: mimicnet's batched torch ops vs the main study's per-image way
(colorsys HSV per pixel, scipy.ndimage.zoom(order=3) per channel), on the same kind of images.

    python bench/bench_augment.py [--n 4096] [--n-baseline 128] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import colorsys

import numpy as np
import torch
from scipy import ndimage

from common import save, timed
from mimicnet.data.augment import AugmentConfig, augment


def per_image(img: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """One image (3×32×32 uint8) the plain way: Python colorsys per pixel, scipy zoom per channel."""
    x = img.astype(np.float64) / 255.0
    dh = rng.uniform(-cfg.dh, cfg.dh)
    a_s, a_v = (rng.uniform(1 / (1 + a), 1 + a) for a in (cfg.as_, cfg.av))
    d_s, d_v = rng.uniform(-cfg.ds, cfg.ds), rng.uniform(-cfg.dv, cfg.dv)
    out = np.empty_like(x)
    for i in range(32):
        for j in range(32):
            h, s, v = colorsys.rgb_to_hsv(x[0, i, j], x[1, i, j], x[2, i, j])
            h = (h + dh) % 1.0
            s = min(max(s * a_s + d_s, 0.0), 1.0)
            v = min(max(v * a_v + d_v, 0.0), 1.0)
            out[:, i, j] = colorsys.hsv_to_rgb(h, s, v)
    size = rng.integers(cfg.scale_min, 33)
    x0, y0 = rng.integers(0, 33 - size, 2)
    crop = out[:, y0:y0 + size, x0:x0 + size]
    out = np.stack([ndimage.zoom(c, 32 / size, order=3) for c in crop])[:, :32, :32]
    if rng.random() < 0.5:
        out = out[:, :, ::-1]
    return np.clip(out, 0, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--n-baseline", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    cfg = AugmentConfig()
    x = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    g = torch.Generator().manual_seed(0)
    t_ours = timed(lambda: augment(x, cfg, g), sync=sync)
    xb = x[: args.n_baseline].cpu().numpy()
    rng = np.random.default_rng(0)
    t_base = timed(lambda: [per_image(im, rng, cfg) for im in xb], repeat=1)
    ours, base = args.n / t_ours, args.n_baseline / t_base
    print(f"{'path':34s} {'images/s':>12s}")
    print(f"{'per-image colorsys + scipy zoom':34s} {base:12,.0f}")
    print(f"{'batched torch (' + args.device + ')':34s} {ours:12,.0f}")
    print(f"ratio: {ours / base:.1f}x")
    print("wrote", save("augment", {"device": args.device, "n": args.n, "n_baseline": args.n_baseline,
                                    "images_per_s": {"baseline_per_image": base, "batched": ours},
                                    "ratio": ours / base}))


if __name__ == "__main__":
    main()
