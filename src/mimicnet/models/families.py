"""Model families: the deep teacher (SPEC S2) and the budgeted students / hard-target baselines (S4).

Every family is a plain function of a width tuple, registered by name behind one interface
(``FAMILIES`` / ``get_family`` / ``build_model``), timm-style::

    >>> widths = solve_budget("conv2", 1_000_000, (0.5, 0.5))     # (70, 70, h)
    >>> model = build_model("conv2", widths)                       # N x 3 x 32 x 32 -> N x 10

Layer-width convention. A family has a few *width constants* C1, C2, ... in [0, 1] (what the search
picks); each is mapped linearly into its (lo, hi) bound and sets one or more widths; one further width
(``Family.dependent``) is solved from the parameter budget (paper §2.8). The mapping:

=========  =====================  =================  ============================================
family     widths                 constants          dependent (solved from the budget)
=========  =====================  =================  ============================================
teacher    (g1, g2, g3, h)        C1→g1 C2→g2        none (widths are free; S2)
                                  C3→g3 H1→h
conv0      (k, h)                 C1→h               k, the linear bottleneck
conv1      (c, k, h)              C1→c  C2→h         k, the linear bottleneck
conv2      (c1, c2, h)            C1→c1 C2→c2        h, the ReLU fc layer
conv3      (c1, c2, c3, h)        C1→c1 C2→c2,c3     h   (c2, c3 share a constant, as in the
                                                         hard-target bounds "100-300 for second
                                                         and third layer", §6.2)
conv4      (c1, c2, c3, c4, h)    C1→c1,c2 C2→c3,c4  h   (Table 3 gives one range per pair)
snn        (c, k, h)              C1→c  C2→h         k   Ba & Caruana's Kc-p-Lk-Hk (S5), 2×2 pool
mlp_lin    (k, h)                 C1→k               h   250L-8k mimic MLP, any fixed-length input
mlp        (h1, ..., hn)          Ci→hi              hn  ReLU MLP of any depth (S5 DNNs, S6)
linear     (h1, ..., hn)          Ci→hi              hn  deep linear MLP, no activations (S6)
cnn1/cnn2  (c, h) / (c1, c2, h)   C1→c(1) C2→c2      h   S6 students, 3×3 convs: c-mp-fc, c²-mp-fc
resnet_*   stage channels         Ci→ci              last stage (count is quadratic: bisected)
airbench   (w1, w2, w3)           Ci→wi              none (a teacher: models/modern.py)
=========  =====================  =================  ============================================

The issue-6 families (below the line) are not in STUDENT_BOUNDS, so the main study's search never sees
them and ``solve_budget`` needs explicit bounds for them. ResNets (S6): a 3×3 stem conv, basic blocks
(two 3×3 convs, BN when ``batchnorm``, identity or 1×1-projection skip), stride 2 between stages,
global average pool; the blocks per stage are fixed by the variant (``resnet_deep`` 4-6-8 =
64c⁸-128c¹²-256c¹⁶, ``resnet_shallow`` 1-2 = 128c²-512c⁴; ``register_resnet`` for others).

Architecture details (§6.1-6.3): teachers use 3×3 convs, students 5×5 convs, all with "same" padding and
ReLU; max-pool 2×2 stride 2, except the 1-conv model's 3×3 pool, implemented as kernel 3, stride 3,
padding 1 (32×32 → 11×11; the paper gives no stride, stride 3 = non-overlapping like the 2×2 pools).
The linear bottleneck (``lfc``) has no activation. Dropout (only when a rate > 0; no module at all
otherwise) goes after every pool, then after every ReLU fc layer, rates given in that order
(teacher: DOc1, DOc2, DOc3, DOf1, DOf2). ``batchnorm=True`` adds BatchNorm after every conv / ReLU-fc
layer, before its ReLU (not in the paper: the cpu preset's teachers need it on a tiny subset); conv and fc
biases are kept so the parameter count with BN is simply the count without it plus 2 per channel/unit.

Initialisation: Glorot/Xavier uniform on every conv/linear weight, zero biases, then every such weight is
multiplied by ``init_scale`` (a searched hyperparameter; S2, S4).

The code, by part: registry.py (Family, register_family, get_family, build_model, the student and baseline
lists), layers.py (the builder and shared layers), paper.py (teacher, conv0-conv4 and their bounds), s5s6.py
(S5 and S6 families), budgets.py (bounds and the solver), describe.py (counting, describe, arch strings).
This module imports them all (so every family is registered) and is what the rest of mimicnet imports.
"""

from __future__ import annotations

from .budgets import (BUDGETS, round_half_up, scale_to_budget, scaled_bounds, solve_budget, teacher_widths,  # noqa: F401
                      widths_from_constants)
from .describe import arch_string, count_params, describe  # noqa: F401
from .layers import BasicBlock, MimicNet, fold_linear, init_weights  # noqa: F401
from .paper import BASELINE_BUDGET, MAIN_FAMILIES, TEACHER_BOUNDS  # noqa: F401
from .registry import (BASELINE_BOUNDS, FAMILIES, PER_WIDTH, STUDENT, STUDENT_BOUNDS, TEACHER, Bounds,  # noqa: F401
                       BudgetError, Family, ModelError, baseline_families, build_model, get_family, register,
                       register_family, student_families)
from .s5s6 import register_resnet, s6_deep, s6_students  # noqa: F401

__all__ = [
    "Family", "FAMILIES", "register", "register_family", "get_family", "build_model", "count_params", "describe",
    "arch_string", "init_weights", "BudgetError", "ModelError", "TEACHER_BOUNDS", "STUDENT_BOUNDS",
    "BASELINE_BOUNDS", "BUDGETS", "widths_from_constants", "solve_budget", "scaled_bounds",
    "teacher_widths", "MimicNet", "MAIN_FAMILIES", "PER_WIDTH", "BasicBlock", "fold_linear",
    "register_resnet", "s6_students", "s6_deep", "student_families", "baseline_families", "TEACHER", "STUDENT",
]
