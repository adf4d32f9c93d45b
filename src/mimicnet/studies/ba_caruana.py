"""Ba & Caruana (2014), "Do deep nets really need to be deep?" (S5): a shallow net mimicking the logits of
an ensemble of CNNs, against the same net on the labels, other mimic losses and a single teacher. The
preset (CPU scale) and the paper's claims, checked on its table."""
from __future__ import annotations

from ..core import noise
from . import published as P
from .fixed import Arm, EnsembleSpec, ModelSpec, Row, StudyPreset, compare, register_claims

# CPU scale on the 4k-image subset: teachers and students shrunk, same shapes. The teacher is their CNN
# 128c-mp-128c-mp-128c-mp-1000fc (our conv3, 5×5 convs) at half width, with batch norm and a one-cycle lr
# instead of their dropout + stochastic pooling (a 20-epoch CPU budget). Everything sees GCN + ZCA (S5).
# The SNN-MIMIC 128c-p-1200L-30k is kept at 1/4 of its conv/linear widths and 1/10 of its 30k ReLU units.
_TEACHER = dict(family="conv3", widths=(64, 64, 64, 500), batchnorm=True, schedule="onecycle", lr=0.05,
                momentum=0.9, weight_decay=5e-4, label_smoothing=0.1, batch_size=128, max_epochs=20,
                preprocess="gcn-zca")
_SNN = "SNN-MIMIC 32c-p-300L-3k"
ENSEMBLE, SINGLE = "ensemble of 4", "best single CNN"

# The six arms both this study and the feature-data study run, by role (their claims compare roles).
HARD, LOGITS, NORMALISED, PROBS, KL, ONE_TEACHER = (
    "hard", "logits", "normalised", "probs", "kl", "one-teacher")
ARM_NAMES = {HARD: "hard labels (SNN-30k)", LOGITS: "L2 on logits, ensemble (SNN-ECNN-MIMIC)",
             NORMALISED: "L2 on normalised logits, ensemble", PROBS: "L2 on probabilities, ensemble",
             KL: "KL(teacher‖student), ensemble", ONE_TEACHER: "L2 on logits, best single CNN (SNN-CNN-MIMIC)"}

BA_CARUANA = StudyPreset(
    name="ba-caruana", study="ba-caruana", title="Do deep nets really need to be deep? (CIFAR-10, at CPU scale)",
    paper="Ba & Caruana (2014), Table 2", max_train=5000, seeds=(0, 1),
    teachers={f"CNN {i}": dict(seed=i) for i in range(4)}, teacher_base=_TEACHER,
    teacher_paper={f"CNN {i}": (P.BA_TEACHER_CNN["test_acc"], P.BA_TEACHER_CNN["architecture"]) for i in range(4)},
    ensembles={ENSEMBLE: EnsembleSpec(members=tuple(f"CNN {i}" for i in range(4)), method="topk", size=4),
               SINGLE: EnsembleSpec(members=tuple(f"CNN {i}" for i in range(4)), method="topk", size=1)},
    ensemble_paper={ENSEMBLE: (P.BA_ENSEMBLE["test_acc"], P.BA_ENSEMBLE["architecture"]),
                    SINGLE: (P.BA_TEACHER_CNN["test_acc"], P.BA_TEACHER_CNN["architecture"])},
    transfer_epochs=10,
    models={_SNN: ModelSpec(family="snn", widths=(32, 300, 3000))},
    student_base=dict(schedule="onecycle", max_epochs=15, batch_size=128, momentum=0.9, preprocess="gcn-zca"),
    lrs=(0.001, 0.003, 0.01, 0.03, 0.1),
    arms=[
        Arm(ARM_NAMES[HARD], _SNN, "", dict(loss="ce"), paper=P.BA_SNN_HARD["test_acc"],
            paper_model=P.BA_SNN_HARD["architecture"]),
        Arm(ARM_NAMES[LOGITS], _SNN, ENSEMBLE, dict(loss="l2-logits"),
            paper=P.BA_STUDENTS[2]["test_acc"], paper_model=P.BA_STUDENTS[2]["architecture"]),
        Arm(ARM_NAMES[NORMALISED], _SNN, ENSEMBLE, dict(loss="l2-logits", normalize_logits=True)),
        Arm(ARM_NAMES[PROBS], _SNN, ENSEMBLE, dict(loss="l2-probs"),
            lrs=(0.03, 0.1, 0.3, 1.0, 3.0)),  # gradients ~100× smaller than on logits
        Arm(ARM_NAMES[KL], _SNN, ENSEMBLE, dict(loss="kl"),
            lrs=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3)),  # measured: best at 0.1, so one rate above it
        Arm(ARM_NAMES[ONE_TEACHER], _SNN, SINGLE, dict(loss="l2-logits"),
            paper=P.BA_STUDENTS[1]["test_acc"], paper_model=P.BA_STUDENTS[1]["architecture"]),
    ])


def mimic_claims(rows: list[Row], names: dict[str, str], ensemble: str, paper: dict[str, str]) -> list[dict]:
    """Ba & Caruana's claims over the six arms (`names`: role -> this study's row name; `paper`: what the
    paper says for each claim, by role of the first row)."""
    by = {r.name: r for r in rows}
    out = []
    ens = by.get(ensemble)
    single = max((r for r in rows if r.section == "teacher" and r.tests), key=lambda r: r.vals[0], default=None)
    if ens and single and ens.mean is not None:
        # the members are one config trained with several seeds: the best single teacher by validation is that
        # config, and its members are its seed sample (the ensemble, one run, against their spread)
        members = [t.mean for t in rows if t.section == "teacher" and t.mean is not None]
        j = noise.judge_one(ens.tests, members, label=f"vs its best member by validation ({single.name}, "
                            f"{single.mean:.1f}) and that config's {len(members)} seeds")
        out.append(noise.claim_row(f"the {ens.name} beats its best single teacher", paper["ensemble"], j))
    out += [compare(rows, "a mimic net beats the same net trained on the labels", names[LOGITS], names[HARD],
                    paper[HARD]),
            compare(rows, "L2 on logits beats L2 on probabilities", names[LOGITS], names[PROBS],
                    "yes (TIMIT; no CIFAR numbers)"),
            compare(rows, "L2 on logits beats KL", names[LOGITS], names[KL], "yes (TIMIT; no CIFAR numbers)"),
            compare(rows, "mimicking the ensemble beats mimicking one teacher", names[LOGITS], names[ONE_TEACHER],
                    paper[ONE_TEACHER])]
    ra, rb = by.get(names[NORMALISED]), by.get(names[LOGITS])
    if ra and rb and ra.tests and rb.tests:
        # a claim of no difference: equivalence within one point, by Welch's two one-sided tests
        j = noise.equivalent(ra.tests, rb.tests, 1.0)
        out.append(noise.claim_row("normalising the logits is not crucial (within one point, TOST)",
                                   "'helped slightly'", j))
    return out


@register_claims("ba-caruana")
def claims(p: StudyPreset, rows: list[Row]) -> list[dict]:
    return mimic_claims(rows, ARM_NAMES, ENSEMBLE,
                        {"ensemble": "89.0 vs 88.0", HARD: "85.8 vs 78.2", ONE_TEACHER: "85.8 vs 84.9"})
