"""What the main study does differently from Urban et al., and why: one list, shown in README ("What differs
from the paper", a generated block) and in every report of the main study (the deviations of its preset).

A deviation names what the paper did ("not stated" where the paper does not say, so the choice is ours), what
mimicnet does, why, and the presets it concerns (empty: every preset of the main study).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Deviation:
    topic: str
    paper: str
    ours: str
    why: str
    presets: tuple[str, ...] = ()   # () = every preset of the main study

    def applies(self, preset: str | None) -> bool:
        return not self.presets or preset in self.presets


CPU = ("cpu", "smoke")

DEVIATIONS: tuple[Deviation, ...] = (
    Deviation("hyperparameter search", "Spearmint (GP, Python 2)",
              "Optuna: scrambled-Sobol start-up, then a GP with log-EI (paper preset) or TPE (with a pruner)",
              "Spearmint is unmaintained Python 2; Optuna shares trials between workers through its storage"),
    Deviation("trials per cell", "not stated", "30 per student and baseline cell (paper); 6 with successive "
              "halving (cpu); 129 teacher trials as stated",
              "the paper gives the teachers' 129 but not the students' count"),
    Deviation("minibatch", "not stated", "128", "a common choice for these model sizes"),
    Deviation("seed reruns", "the best trial of each search, once",
              "the best config by validation trained again with `seeds` other seeds (paper 3, cpu 4); tables and claims use "
              "their mean ± sd; the best teacher's config too (paper preset)",
              "one run per cell cannot tell a difference from seed noise; the claims are judged by a t-test"),
    Deviation("claims", "differences read off single numbers",
              "Welch's t-test on seed samples, Holm-corrected within a claim, α = 0.05 (core/noise.py)",
              "a verdict should survive another seed"),
    Deviation("collapsed runs", "not stated",
              "a run whose validation accuracy, after rising, falls back towards chance (the largest class's "
              "share) for two epochs in a row, or at its last epoch, is a failure (collapsed), not a completed "
              "trial with its early checkpoint", "an early checkpoint is not the config trained"),
    Deviation("scale jitter's resize", "3rd-order spline, boundary not stated",
              "scipy's zoom(order=3) with mirror boundary", "the paper names the spline, not its boundary mode"),
    Deviation("transfer set's HSV jitter", "the best single model's settings (§2.5)",
              "the best single teacher by validation's settings (the same rule); a teacher that does not search "
              "them trains with the paper's published values", "followed as written"),
    Deviation("transfer-set logits", "not stated", "stored as float16 (`--set logits_dtype=float32` for full)",
              "halves 6.4M × 10 logits on disk; float16's 3 digits are finer than the teacher's seed noise"),
    Deviation("arithmetic on a GPU", "not stated (2015 GPUs: float32)",
              "bf16 autocast and channels-last on CUDA by default (`--set` amp=false for float32)",
              "2-3× the throughput on current GPUs; measured against float32 in bench/"),
    Deviation("epoch cap", "the plateau schedule stops training (30 epochs without improvement, or the rate cut "
              "2000×)", "the same schedule, plus a cap of 1000 epochs; a run stopped by the cap is marked cut short",
              "a run that never plateaus must still end"),
    Deviation("students' gradient (cpu preset)", "not stated (SGD with Nesterov momentum)",
              "the gradient's global norm clipped at 20 before each step (`grad_clip`; the paper preset does not "
              "clip: `--set student_base=...` adds it)",
              "without it, seeds of one config of a deep narrow student end up to 35 points apart (a gradient spike "
              "at high momentum kills its ReLUs); with it, at most 4 (15 configs of conv1, conv3, conv4, 2 seeds)",
              CPU),
    Deviation("teachers (cpu preset)", "S2's family as written, searched",
              "3 fixed S2 teachers 32c²-64c²-128c⁴-256fc² with batch norm, one-cycle rate, label smoothing 0.1, "
              "20 epochs", "on 3k training images and 2 CPU cores the family as written stays near 50%", CPU),
    Deviation("schedule (cpu preset)", "plateau schedule (S3)", "one-cycle: warm-up over 4 of 20 epochs, then "
              "linear decay", "20-epoch runs never reach a plateau", CPU),
    Deviation("pruning (cpu preset)", "none (every trial runs its schedule)",
              "successive halving, rungs at 5 and 15 of 20 epochs (after the warm-up), keep 1/3",
              "6 trials per cell for about the epochs of 3 full ones", CPU),
    Deviation("data and budgets (cpu preset)", "40k/10k CIFAR-10, students at 1M-31.6M, baselines at 10M",
              "≤ 5,000 training images (subset: 3,254 + 814 validation), 0.1M and 0.3M, baselines at 0.3M",
              "the whole study on 2 CPU cores in about an hour and a half", CPU),
)


def deviations(preset: str | None = None) -> list[Deviation]:
    """The deviations that concern `preset` (all of them for None)."""
    return [d for d in DEVIATIONS if preset is None or d.applies(preset)]
