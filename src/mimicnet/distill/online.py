"""Consistent ("function matching") distillation, after Beyer et al., "Knowledge distillation: a good teacher
is patient and consistent" (CVPR 2022): the teacher labels exactly the batch the student sees, at every step,
instead of a transfer set labelled once. `--distill online`; the fixed transfer set stays the default (the
method of the papers this toolkit reproduces).

Each step draws a batch of training images, augments it with the run's augmentation (as a transfer set
would), optionally mixes it (`mix`: mixup or cutmix of the augmented images; Beyer et al.'s best recipe uses
mixup), and runs the teacher on those very pixels, in eval mode, without gradients: the student's target is
the teacher's function on the student's input, never on a different view of the image.

Steps per epoch are those of a transfer set of the same images (every image once, the last batch partial),
so an online student and a fixed-set student with the same `max_epochs` take the same number of steps.
Resuming is exact: epoch e's shuffle, augmentation and mixing come from a generator seeded by (seed, e), and
the teacher is deterministic. What the teacher costs is measured per step (`teacher_ms_per_step` in every
metrics row and in results.json).
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from ..data.augment import augment
from ..data.splits import Split
from ..models.inference import model_inputs, preprocess
from ..train.batches import epoch_generator

# The random stream of an online student's epochs: not stream 0, the one hard-label runs (its teachers among
# them) shuffle and augment with, so a student never replays its teacher's batches (transfer sets: 17).
_STREAM = 23


def mix_images(x: torch.Tensor, mix: str, alpha: float, g: torch.Generator) -> torch.Tensor:
    """Float [0, 1] images mixed with a shuffled copy of the batch: mixup blends every image with its
    partner, x' = λ x + (1 - λ) x[perm]; cutmix pastes a box of area (1 - λ) of the partner in. One λ ~
    Beta(alpha, alpha) per batch, every draw from `g` (train.config.MIXES). The labels are not mixed: the student's target is
    the teacher's output on x', whatever x' is."""
    if mix == "none" or len(x) < 2:
        return x
    perm = torch.randperm(len(x), generator=g).to(x.device)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    if mix == "mixup":
        return lam * x + (1.0 - lam) * x[perm]
    h, w = x.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    bh, bw = int(round(h * cut)), int(round(w * cut))
    cy, cx = int(torch.randint(0, h, (1,), generator=g)), int(torch.randint(0, w, (1,), generator=g))
    y0, y1 = max(cy - bh // 2, 0), min(cy - bh // 2 + bh, h)
    x0, x1 = max(cx - bw // 2, 0), min(cx - bw // 2 + bw, w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    return out


class OnlineBatches:
    """epoch -> iterator of (student inputs, (teacher logits, true labels)), the teacher run on each batch."""

    def __init__(self, cfg, split: Split, teacher: torch.nn.Module, device: torch.device):
        self.cfg, self.teacher, self.device = cfg, teacher, device
        self.x, self.y = split.x.to(device), split.y.to(device)
        self.aug = cfg.augment_config()
        self.steps_per_epoch = -(-len(self.x) // cfg.optim.batch_size)
        self._teacher_s, self._steps = 0.0, 0

    def __call__(self, epoch: int):
        cfg, bs = self.cfg, self.cfg.optim.batch_size
        g = epoch_generator(cfg.seed, epoch, _STREAM)
        perm = torch.randperm(len(self.x), generator=g).to(self.device)
        self.teacher.eval()
        for i in range(self.steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            xb = self.x[idx]
            xb = augment(xb, self.aug, g) if self.aug is not None else xb.to(torch.float32) / 255.0
            xb = mix_images(xb, cfg.distill.mix, cfg.distill.mix_alpha, g)
            if self.device.type == "cuda":  # time the teacher alone: first let the queued student step finish
                torch.cuda.synchronize(self.device)
            t0 = time.perf_counter()
            with torch.no_grad():
                z = self.teacher(model_inputs(self.teacher, xb, 1.0)).float()  # members apply their own scales
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self._teacher_s += time.perf_counter() - t0
            self._steps += 1
            yield preprocess(xb, cfg.data.input_scale), (z, self.y[idx])

    def epoch_stats(self) -> dict:
        """What the teacher cost since the last call: mean milliseconds per step (for the metrics row)."""
        ms = 1000.0 * self._teacher_s / max(self._steps, 1)
        self._teacher_s, self._steps = 0.0, 0
        return {"teacher_ms_per_step": round(ms, 3)}
