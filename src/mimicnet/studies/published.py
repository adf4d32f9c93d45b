"""The papers' published numbers, as data (test accuracy in percent, parameters as counts).

Every number is copied from /work/shared/SPEC.md (S2, S4, S5, S6), which copies the papers in
/work/shared/papers/; the paper wins where they differ. The report puts these beside this run's numbers,
so nothing here is ever used to fill in a missing result.

Sources:
  URBAN  -- Urban et al., "Do Deep Convolutional Nets Really Need to be Deep and Convolutional?"
            Table 1 (hard targets, teachers), Table 2 (students), Figure 1.
  BA     -- Ba & Caruana, "Do Deep Nets Really Need to be Deep?", Table 2 (CIFAR-10).
  RAT    -- Ratusznik et al., the re-study with ResNets and softmax-MSE distillation, Tables 3-6.
"""
from __future__ import annotations

import math

# ---------------------------------------------------------------------------------------------- Urban et al.

#: The four parameter budgets of the main study (trainable parameters; 3.16M and 31.6M are 10^6.5, 10^7.5
#: rounded as the paper writes them).
PAPER_BUDGETS: tuple[int, ...] = (1_000_000, 3_160_000, 10_000_000, 31_600_000)

#: Families in the order of the paper's tables, with the names its Figure 1 legend uses.
FAMILY_LABELS: dict[str, str] = {
    "conv0": "MLP: 0 conv (lfc-fc)",
    "conv1": "CNN: 1 conv layer",
    "conv2": "CNN: 2 conv layers",
    "conv3": "CNN: 3 conv layers",
    "conv4": "CNN: 4 conv layers",
}

FAMILY_ARCHITECTURES: dict[str, str] = {
    "conv0": "lfc-fc",
    "conv1": "c-mp-lfc-fc",
    "conv2": "c-mp-c-mp-fc",
    "conv3": "c-mp-c-mp-c-mp-fc",
    "conv4": "c-mp-c-c-mp-c-mp-fc",
}

#: URBAN Table 2: students mimicking the 16-CNN ensemble, test accuracy (%) by family and budget.
STUDENTS: dict[str, dict[int, float]] = {
    "conv0": {1_000_000: 65.3, 3_160_000: 67.4, 10_000_000: 69.5, 31_600_000: 70.2},
    "conv1": {1_000_000: 84.5, 3_160_000: 86.3, 10_000_000: 87.3, 31_600_000: 87.7},
    "conv2": {1_000_000: 87.9, 3_160_000: 89.3, 10_000_000: 90.0, 31_600_000: 90.3},
    "conv3": {1_000_000: 90.7, 3_160_000: 91.6, 10_000_000: 91.9, 31_600_000: 92.3},
    "conv4": {1_000_000: 91.3, 3_160_000: 91.8, 10_000_000: 92.6, 31_600_000: 92.6},
}

#: URBAN Table 1 rows 1-4: the same architectures trained on hard 0/1 labels, 10M parameters only.
BASELINE_BUDGET = 10_000_000
BASELINES: dict[str, float] = {"conv1": 84.6, "conv2": 88.9, "conv3": 91.2, "conv4": 91.75}

#: URBAN Table 1 / S2: the three best of 129 teachers (ranked as the paper lists them).
TEACHERS: tuple[dict, ...] = (
    {"rank": 1, "architecture": "76c²-mp-126c²-mp-148c⁴-mp-1200fc²", "widths": (76, 126, 148, 1200),
     "params": 5_300_000, "test_acc": 92.78},
    {"rank": 2, "architecture": "96c²-mp-171c²-mp-128c⁴-mp-512fc²", "widths": (96, 171, 128, 512),
     "params": 2_500_000, "test_acc": 92.77},
    {"rank": 3, "architecture": "54c²-mp-158c²-mp-189c⁴-mp-1044fc²", "widths": (54, 158, 189, 1044),
     "params": 5_800_000, "test_acc": 92.67},
)
#: S2: the teacher search as a whole.
TEACHER_SEARCH = {"trials": 129, "best_test_acc": 92.8, "fifth_best_test_acc": 92.65}

#: URBAN Table 1 / S2: the ensemble every student mimics (logits averaged).
ENSEMBLE = {"members": 16, "architecture": "c²-mp-c²-mp-c⁴-mp-fc²", "params": 83_400_000,
            "val_acc": 94.0, "test_acc": 93.8}

# ---------------------------------------------------------------------------------------------- Ba & Caruana

#: BA Table 2 (also the (*) rows of URBAN Table 1 and the last row of URBAN Table 2). Accuracies are
#: 100 - the error rates printed there.
BA_TEACHER_CNN = {"architecture": "128c-mp-128c-mp-128c-mp-1k fc", "params": 2_100_000, "test_acc": 88.0}
BA_ENSEMBLE = {"members": 4, "architecture": "4 × 128c-mp-128c-mp-128c-mp-1k fc", "params": 8_600_000,
               "test_acc": 89.0}
#: Students (one conv layer, pool, 1200 linear, 30k ReLU) against the teacher they mimicked: the CIFAR
#: counterpart of BA's Figure 3 (TIMIT), i.e. the published points of the teacher -> student curve.
BA_STUDENTS: tuple[dict, ...] = (
    {"name": "SNN-CNN-MIMIC-30k (64c)", "architecture": "64c-p-1200L-30k", "params": 54_000_000,
     "teacher": "single CNN", "teacher_kind": "teacher", "teacher_test_acc": 88.0, "test_acc": 84.6},
    {"name": "SNN-CNN-MIMIC-30k (128c)", "architecture": "128c-p-1200L-30k", "params": 70_000_000,
     "teacher": "single CNN", "teacher_kind": "teacher", "teacher_test_acc": 88.0, "test_acc": 84.9},
    {"name": "SNN-ECNN-MIMIC-30k", "architecture": "128c-p-1200L-30k", "params": 70_000_000,
     "teacher": "ensemble of 4 CNNs", "teacher_kind": "ensemble", "teacher_test_acc": 89.0, "test_acc": 85.8},
)
#: BA Table 2, "SNN-30k": the same shallow net trained on the original labels (21.8% error).
BA_SNN_HARD = {"architecture": "128c-p-1200L-30k + dropout", "params": 70_000_000, "test_acc": 78.2}
#: The SNN-MIMIC row of URBAN Table 2 (1 conv layer, 70M parameters).
BA_SNN_MIMIC = BA_STUDENTS[2]

# ---------------------------------------------------------------------------------------------- Ratusznik et al.

#: RAT Table 5 / S6 (batch norm, Adam, batch size 32 -- not the main study's recipe; for later presets).
RATUSZNIK_TEACHERS: dict[str, dict] = {
    "teacher-1": {"architecture": "76c²-mp-126c²-mp-148c⁴-mp-1200fc² (dropout .2/.3/.37, .42)",
                  "params": 5_000_000, "test_acc": 90.49},
    "deep-resnet": {"architecture": "64c⁸-128c¹²-256c¹⁶", "params": 10_000_000, "test_acc": 91.54},
}
#: RAT Tables 3-4: ~10M-parameter students, hard labels vs softmax-MSE distillation from each teacher.
RATUSZNIK_STUDENTS: tuple[dict, ...] = (
    {"name": "3-layer-1-CONV", "architecture": "64c-mp-640fc", "no_distil": 74.27, "teacher-1": 75.57, "deep-resnet": 76.01},
    {"name": "4-layer-2-CONV", "architecture": "64c²-mp-600fc", "no_distil": 79.04, "teacher-1": 80.62, "deep-resnet": 80.96},
    {"name": "3-layer-linear", "architecture": "2048fc²", "no_distil": 55.12, "teacher-1": 58.09, "deep-resnet": 58.37},
    {"name": "4-layer-linear", "architecture": "1200fc-2400fc-1800fc", "no_distil": 56.87, "teacher-1": 58.39, "deep-resnet": 59.22},
    {"name": "Shallow-ResNet", "architecture": "128c²-512c⁴", "no_distil": 88.72, "teacher-1": 89.63, "deep-resnet": 89.87},
)
#: RAT Table 6: a 20-layer linear net, ~10M parameters, hard labels.
RATUSZNIK_DEEP_LINEAR = {"architecture": "256fc⁸-512fc⁶-1024fc⁸", "params": 10_000_000, "test_acc": 51.15}


# ---------------------------------------------------------------------------------------------- helpers

def budget_label(b: int | float | None) -> str:
    """1000000 -> '1M', 3160000 -> '3.16M', 100000 -> '100k' (the paper's way of writing budgets)."""
    if b is None:
        return "–"
    b = float(b)
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if b >= div:
            return f"{b / div:.3g}{unit}"
    return f"{b:.0f}"


def matching_paper_budget(budget: int | float | None, tol: float = 0.02) -> int | None:
    """The paper budget equal to `budget` within `tol` (so 3,162,278 = 10^6.5 counts as 3.16M), else None."""
    if budget is None:
        return None
    for pb in PAPER_BUDGETS:
        if abs(budget - pb) <= tol * pb:
            return pb
    return None


def nearest_paper_budget(budget: int | float | None) -> int | None:
    """The paper budget closest to `budget` on a log scale (for a clearly labelled, Δ-free comparison)."""
    if budget is None or budget <= 0:
        return None
    return min(PAPER_BUDGETS, key=lambda pb: abs(math.log(budget / pb)))


def student_paper_acc(family: str, budget: int | None) -> float | None:
    """URBAN Table 2 at exactly that (family, budget), else None."""
    pb = matching_paper_budget(budget)
    return STUDENTS.get(family, {}).get(pb) if pb is not None else None


def baseline_paper_acc(family: str, budget: int | None) -> float | None:
    """URBAN Table 1 hard-target accuracy, only when `budget` is the paper's 10M."""
    return BASELINES.get(family) if matching_paper_budget(budget) == BASELINE_BUDGET else None


#: URBAN §3, stated in the text: "the difference in accuracy for models with one convolutional layer is 2.7%
#: (87.3% vs. 84.6%) and only 0.8% (92.6% vs. 91.8%) for models with four convolutional layers" (10M).
COMPRESSION_GAPS_STATED: dict[str, float] = {"conv1": 2.7, "conv4": 0.8}


def compression_gaps() -> dict[str, float]:
    """Urban et al.'s compression gaps (Figure 1): mimic student minus the same family on hard targets, at 10M;
    as stated in §3 where it is (conv1, conv4), else computed from Tables 1 and 2."""
    return {f: COMPRESSION_GAPS_STATED.get(f, round(STUDENTS[f][BASELINE_BUDGET] - acc, 2))
            for f, acc in BASELINES.items()}


def convolutional_gaps() -> dict[int, float]:
    """Figure 1's convolutional gap, computed from Table 2 (the paper states no number): the 1-conv student
    minus the 0-conv student, per budget."""
    return {b: round(STUDENTS["conv1"][b] - STUDENTS["conv0"][b], 2) for b in PAPER_BUDGETS}


def teacher_student_gap() -> float:
    """The ensemble teacher minus the best student of Table 2 (93.8 - 92.6), computed from Tables 1 and 2."""
    return round(ENSEMBLE["test_acc"] - max(max(v.values()) for v in STUDENTS.values()), 2)
