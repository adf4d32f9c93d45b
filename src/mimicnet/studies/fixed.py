"""The two other studies of SPEC.md as presets: Ba & Caruana (S5) and Ratusznik et al. (S6).

The main study (reproduce.py) searches widths for every (family, budget) cell. These two compare a few
named models under a few training conditions, so a row of their tables is an *arm*: one model, one
teacher (or the hard labels), one loss. A study runs

    teachers -> ensembles -> one transfer set per teacher that an arm mimics -> arms -> tables + report

with the main study's stages and artifacts (run folders, ensemble.json, transfer sets, index.csv), so
it is resumable the same way: kill it, run the same command, it continues.

Each arm is run for every seed in `seeds` (mean ± sd in the tables, never one lucky run). When an arm
lists several learning rates, the first seed is run at each and the rate with the best *validation*
accuracy is used for the other seeds: losses of different scales (L2 on logits vs on probabilities)
need different rates, and choosing it by hand would be choosing it by the test set. The report reads
the index (plus each run's config.json for its lr) and repeats that choice.
"""
from __future__ import annotations

import dataclasses
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..core import artifacts
from ..core.errors import ConfigError, Diverged
from ..core.index import RunKind, pct, read_index
from ..data.cifar import default_cache_dir, download_cifar
from ..data.features import load_features
from ..data.splits import load_train_data
from ..distill.ensemble import build_ensemble
from ..distill.features import mimic_features
from ..distill.student import Teachers, index_failed, train_run
from ..distill.transfer import TransferConfig, generate
from ..models.families import arch_string, scale_to_budget
from ..models.inference import resolve_device
from ..train.config import TrainConfig
from ..train.loop import fit
from ..train.run import RunInfo
from . import published as P
from .main import Study, train_cfg


@dataclass
class Arm:
    name: str                      # the table row
    model: str                     # a key of StudyPreset.models
    teacher: str = ""              # "" = the true labels; else a key of `ensembles` or `teachers`
    train: dict = field(default_factory=dict)   # TrainConfig overrides (loss, normalize_logits, ...)
    lrs: tuple = ()                # learning rates to choose from on validation; () = the preset's `lrs`
    paper: float | None = None     # published test accuracy (%) of this row, when the paper has one
    paper_model: str = ""          # what the paper measured there (architecture, scale)


@dataclass
class StudyPreset:
    name: str
    title: str = ""
    paper: str = ""                # which paper's tables this reproduces
    data: str = ""                 # archive; empty: download CIFAR-10 into the cache
    max_train: int | None = None
    device: str = "auto"
    seeds: tuple = (0, 1)
    teachers: dict = field(default_factory=dict)      # name -> TrainConfig overrides (on teacher_base)
    teacher_base: dict = field(default_factory=dict)
    teacher_paper: dict = field(default_factory=dict)  # name -> (published %, what it was)
    ensembles: dict = field(default_factory=dict)     # name -> {"members": [...], "method", "size"}
    ensemble_paper: dict = field(default_factory=dict)  # name -> (published %, what it was)
    transfer_epochs: int = 10
    models: dict = field(default_factory=dict)        # name -> {"family", "widths"} (the paper's widths)
    budget: int | None = None      # models' widths scaled by one factor to this many parameters
    student_base: dict = field(default_factory=dict)  # TrainConfig fields of every arm
    lrs: tuple = (0.01,)
    arms: list = field(default_factory=list)          # Arm, in table order
    report: bool = True


# Fields that change how long or where a study runs, not what it is (see reproduce.NOT_IDENTITY).
NOT_IDENTITY = ("device", "report", "seeds")  # more seeds extend the same study

# --------------------------------------------------------------------------------------- Ba & Caruana
# CPU scale on the 4k-image subset: teachers and students shrunk, same shapes. The teacher is their CNN
# 128c-mp-128c-mp-128c-mp-1000fc (our conv3, 5×5 convs) at half width, with batch norm and a one-cycle lr
# instead of their dropout + stochastic pooling (a 20-epoch CPU budget). Everything sees GCN + ZCA (S5).
# The SNN-MIMIC 128c-p-1200L-30k is kept at 1/4 of its conv/linear widths and 1/10 of its 30k ReLU units.
_BA_TEACHER = dict(family="conv3", widths=(64, 64, 64, 500), batchnorm=True, schedule="onecycle", lr=0.05,
                   momentum=0.9, weight_decay=5e-4, label_smoothing=0.1, batch_size=128, max_epochs=20,
                   preprocess="gcn-zca")
_BA_SNN = "SNN-MIMIC 32c-p-300L-3k"
BA_CARUANA = StudyPreset(
    name="ba-caruana", title="Do deep nets really need to be deep? (CIFAR-10, at CPU scale)",
    paper="Ba & Caruana (2014), Table 2", max_train=5000, seeds=(0, 1),
    teachers={f"CNN {i}": dict(seed=i) for i in range(4)}, teacher_base=_BA_TEACHER,
    teacher_paper={f"CNN {i}": (P.BA_TEACHER_CNN["test_acc"], P.BA_TEACHER_CNN["architecture"]) for i in range(4)},
    ensembles={"ensemble of 4": dict(members=[f"CNN {i}" for i in range(4)], method="topk", size=4),
               "best single CNN": dict(members=[f"CNN {i}" for i in range(4)], method="topk", size=1)},
    ensemble_paper={"ensemble of 4": (P.BA_ENSEMBLE["test_acc"], P.BA_ENSEMBLE["architecture"]),
                    "best single CNN": (P.BA_TEACHER_CNN["test_acc"], P.BA_TEACHER_CNN["architecture"])},
    transfer_epochs=10,
    models={_BA_SNN: dict(family="snn", widths=(32, 300, 3000))},
    student_base=dict(schedule="onecycle", max_epochs=15, batch_size=128, momentum=0.9, preprocess="gcn-zca"),
    lrs=(0.001, 0.003, 0.01, 0.03, 0.1),
    arms=[
        Arm("hard labels (SNN-30k)", _BA_SNN, "", dict(loss="ce"), paper=P.BA_SNN_HARD["test_acc"],
            paper_model=P.BA_SNN_HARD["architecture"]),
        Arm("L2 on logits, ensemble (SNN-ECNN-MIMIC)", _BA_SNN, "ensemble of 4", dict(loss="l2-logits"),
            paper=P.BA_STUDENTS[2]["test_acc"], paper_model=P.BA_STUDENTS[2]["architecture"]),
        Arm("L2 on normalised logits, ensemble", _BA_SNN, "ensemble of 4",
            dict(loss="l2-logits", normalize_logits=True)),
        Arm("L2 on probabilities, ensemble", _BA_SNN, "ensemble of 4", dict(loss="l2-probs"),
            lrs=(0.03, 0.1, 0.3, 1.0, 3.0)),  # gradients ~100× smaller than on logits
        Arm("KL(teacher‖student), ensemble", _BA_SNN, "ensemble of 4", dict(loss="kl"),
            lrs=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3)),  # measured: best at 0.1, so one rate above it
        Arm("L2 on logits, best single CNN (SNN-CNN-MIMIC)", _BA_SNN, "best single CNN", dict(loss="l2-logits"),
            paper=P.BA_STUDENTS[1]["test_acc"], paper_model=P.BA_STUDENTS[1]["architecture"]),
    ])

# --------------------------------------------------------------------------------------- Ratusznik et al.
# CPU scale: Teacher-1 (S2's best teacher with dropout .2/.3/.37 after the pools, .42 after fc2) at half
# width, the deep ResNet 64c⁸-128c¹²-256c¹⁶ at quarter width (depth kept: 36 convs + stem); the five
# students and the deep linear net at 200k parameters instead of 10M (every width scaled by one factor:
# models.scale_to_budget). Batch norm and Adam everywhere as in the paper; batch 64 (paper: 32) and a
# one-cycle lr for 12-epoch CPU students (paper: 75 epochs without, 200-300 with distillation).
_RAT_BASE = dict(batchnorm=True, optimizer="adam", schedule="onecycle", weight_decay=0.0, batch_size=64)
_RAT_TEACHER1 = "Teacher-1"
_RAT_RESNET = "Deep-ResNet"
RATUSZNIK = StudyPreset(
    name="ratusznik", title="ResNet teachers, shallow and linear students, softmax-MSE distillation (CPU scale)",
    paper="Ratusznik et al., Tables 3-6", max_train=5000, seeds=(0, 1),
    teachers={_RAT_TEACHER1: dict(family="teacher", widths=(38, 63, 74, 600), dropout=(0.2, 0.3, 0.37, 0.0, 0.42),
                                  lr=0.003, max_epochs=20),
              _RAT_RESNET: dict(family="resnet_deep", widths=(16, 32, 64), lr=0.003, max_epochs=15)},
    teacher_base=_RAT_BASE,
    teacher_paper={_RAT_TEACHER1: (P.RATUSZNIK_TEACHERS["teacher-1"]["test_acc"],
                                   P.RATUSZNIK_TEACHERS["teacher-1"]["architecture"]),
                   _RAT_RESNET: (P.RATUSZNIK_TEACHERS["deep-resnet"]["test_acc"],
                                 P.RATUSZNIK_TEACHERS["deep-resnet"]["architecture"])},
    transfer_epochs=10,
    models={**{s["name"]: dict(family=f, widths=w) for s, (f, w) in
               zip(P.RATUSZNIK_STUDENTS, [("cnn1", (64, 640)), ("cnn2", (64, 64, 600)), ("mlp", (2048, 2048)),
                                          ("mlp", (1200, 2400, 1800)), ("resnet_shallow", (128, 512))])},
            # §4.6: "a ReLU activation function at each layer": their deep "linear" net is fully connected
            # with ReLUs; SPEC's name also reads as no activation at all, so both are run.
            "Deep-linear (ReLU)": dict(family="mlp", widths=(256,) * 8 + (512,) * 6 + (1024,) * 8),
            "Deep-linear (no activation)": dict(family="linear", widths=(256,) * 8 + (512,) * 6 + (1024,) * 8)},
    budget=200_000,
    student_base=dict(_RAT_BASE, max_epochs=12),
    lrs=(0.002,),
    arms=[a for s in P.RATUSZNIK_STUDENTS for a in (
        Arm(f"{s['name']}, no distillation", s["name"], "", dict(loss="ce"), paper=s["no_distil"],
            paper_model=s["architecture"]),
        Arm(f"{s['name']}, distilled from Teacher-1", s["name"], _RAT_TEACHER1, dict(loss="softmax-mse"),
            paper=s["teacher-1"], paper_model=s["architecture"]),
        Arm(f"{s['name']}, distilled from Deep-ResNet", s["name"], _RAT_RESNET, dict(loss="softmax-mse"),
            paper=s["deep-resnet"], paper_model=s["architecture"]))]
    + [Arm("Deep-linear (ReLU), no distillation", "Deep-linear (ReLU)", "", dict(loss="ce"),
           paper=P.RATUSZNIK_DEEP_LINEAR["test_acc"], paper_model=P.RATUSZNIK_DEEP_LINEAR["architecture"]),
       Arm("Deep-linear (no activation), no distillation", "Deep-linear (no activation)", "", dict(loss="ce"),
           paper=P.RATUSZNIK_DEEP_LINEAR["test_acc"], paper_model=P.RATUSZNIK_DEEP_LINEAR["architecture"])])

# --------------------------------------------------------------------------------------- feature data (S5)
# Ba & Caruana's TIMIT recipe (deep MLP teachers -> shallow mimic MLPs with a linear bottleneck, 250L-8k) on
# any .npz of fixed-length feature vectors (TIMIT is licensed; `mimicnet features make-npz` makes one from
# CIFAR). The teachers are 4-layer ReLU MLPs, the students a k-unit linear layer then H ReLU units.
_FEAT_STUDENT = "mimic MLP 64L-1k"
FEATURES = StudyPreset(
    name="features", title="Shallow mimic MLPs on fixed-length feature vectors (Ba & Caruana's TIMIT recipe)",
    paper="Ba & Caruana (2014), TIMIT (phone error rates on licensed data: not comparable, none shown)",
    seeds=(0, 1),
    teachers={f"deep MLP {i}": dict(seed=i) for i in range(3)},
    teacher_base=dict(family="mlp", widths=(512, 512, 512, 512), batchnorm=True, dropout=(0.2,) * 4,
                      optimizer="adam", lr=1e-3, schedule="onecycle", max_epochs=20, batch_size=128, augment=False),
    ensembles={"ensemble of 3": dict(members=[f"deep MLP {i}" for i in range(3)], method="topk", size=3),
               "best single MLP": dict(members=[f"deep MLP {i}" for i in range(3)], method="topk", size=1)},
    models={_FEAT_STUDENT: dict(family="mlp_lin", widths=(64, 1024))},
    student_base=dict(schedule="onecycle", max_epochs=20, batch_size=128, momentum=0.9, augment=False),
    lrs=(0.001, 0.003, 0.01, 0.03, 0.1),
    arms=[Arm("hard labels", _FEAT_STUDENT, "", dict(loss="ce")),
          Arm("L2 on logits, ensemble", _FEAT_STUDENT, "ensemble of 3", dict(loss="l2-logits")),
          Arm("L2 on normalised logits, ensemble", _FEAT_STUDENT, "ensemble of 3",
              dict(loss="l2-logits", normalize_logits=True)),
          Arm("L2 on probabilities, ensemble", _FEAT_STUDENT, "ensemble of 3", dict(loss="l2-probs"),
              lrs=(0.1, 0.3, 1.0, 3.0, 10.0)),
          Arm("KL(teacher‖student), ensemble", _FEAT_STUDENT, "ensemble of 3", dict(loss="kl")),
          Arm("L2 on logits, best single MLP", _FEAT_STUDENT, "best single MLP", dict(loss="l2-logits"))])


# A few-minute version of each, for the test suite (same code path, tiny models and epochs).
def _tiny(p: StudyPreset) -> StudyPreset:
    t = {k: dict(v, max_epochs=1) for k, v in p.teachers.items()}
    for v in t.values():
        if v.get("family", p.teacher_base.get("family")) == "resnet_deep":
            v["widths"] = (4, 4, 8)
        elif "widths" in v:
            v["widths"] = tuple(max(2, w // 8) for w in v["widths"])
    base = dict(p.teacher_base, max_epochs=1)
    if "widths" in base:
        base["widths"] = tuple(max(2, w // 8) for w in base["widths"])
    arms = [dataclasses.replace(a, lrs=a.lrs[:2]) for a in p.arms]
    return dataclasses.replace(p, name=f"{p.name}-smoke", max_train=300, seeds=(0, 1), teachers=t,
                               teacher_base=base, transfer_epochs=1, budget=20_000 if p.budget else None,
                               models={k: dict(v, widths=tuple(max(2, w // 8) for w in v["widths"]))
                                       for k, v in p.models.items()},
                               student_base=dict(p.student_base, max_epochs=1), lrs=p.lrs[:2], arms=arms)


STUDY_PRESETS: dict[str, StudyPreset] = {"ba-caruana": BA_CARUANA, "ratusznik": RATUSZNIK, "features": FEATURES}
STUDY_PRESETS.update({f"{k}-smoke": _tiny(v) for k, v in list(STUDY_PRESETS.items())})


# ============================================================================================ running

def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def model_widths(p: StudyPreset, model: str, batchnorm: bool = False) -> tuple[int, ...]:
    m = p.models[model]
    if p.budget is None:
        return tuple(m["widths"])
    return scale_to_budget(m["family"], m["widths"], p.budget, batchnorm=batchnorm)


def check_preset(p: StudyPreset) -> None:
    """Every name an arm uses must exist: fail before hours of training, not after."""
    for e, spec in p.ensembles.items():
        missing = [m for m in spec["members"] if m not in p.teachers]
        if missing:
            raise ConfigError(f"preset {p.name}: ensemble {e!r} has unknown member(s) {missing}")
    names = set()
    for a in p.arms:
        if a.name in names:
            raise ConfigError(f"preset {p.name}: two arms are named {a.name!r}")
        names.add(a.name)
        if a.model not in p.models:
            raise ConfigError(f"preset {p.name}: arm {a.name!r} uses unknown model {a.model!r}")
        if a.teacher and a.teacher not in p.ensembles and a.teacher not in p.teachers:
            raise ConfigError(f"preset {p.name}: arm {a.name!r} mimics unknown teacher {a.teacher!r}")
        if bool(a.teacher) == (a.train.get("loss", "ce") == "ce"):
            raise ConfigError(f"preset {p.name}: arm {a.name!r}: a teacher needs a mimic loss, hard labels 'ce'")


def arm_config(p: StudyPreset, arm: Arm, lr: float, seed: int, transfer_dir: Path | None) -> TrainConfig:
    m = p.models[arm.model]
    d = {"data": p.data, "max_train": p.max_train, "device": p.device, **p.student_base,
         "family": m["family"], **arm.train, "lr": lr, "seed": seed}
    d["widths"] = model_widths(p, arm.model, d.get("batchnorm", False))
    if arm.teacher and transfer_dir is not None:
        d["transfer"] = str(transfer_dir)
    return TrainConfig.from_dict(d)


def arm_lrs(p: StudyPreset, arm: Arm) -> tuple:
    return tuple(arm.lrs or p.lrs)


def _run(cfg: TrainConfig, run_dir: Path, data, index, info: RunInfo, teachers: Teachers,
         teacher: Path | None = None) -> float | None:
    """train_run() (feature data with a teacher: distill.features.mimic_features, which labels the rows), or
    None when the run diverged (recorded in failed.json and as a failed index row, so a rerun does not
    train it again)."""
    failed = run_dir / "failed.json"
    if failed.exists():
        return None
    try:
        if teacher is not None:
            return mimic_features(cfg, teacher, data, run_dir, index=index, info=info, teachers=teachers)["val_acc"]
        return train_run(cfg, run_dir, data, index=index, info=info, teachers=teachers)["val_acc"]
    except Diverged as e:
        artifacts.write_json(failed, {"reason": str(e), "config": cfg})
        index_failed(index, cfg, run_dir, info)
        print(f"diverged: {e}")
        return None


def run_arm(p: StudyPreset, arm: Arm, out: Path, data, transfer_dirs: dict, index: Path,
            teacher_dirs: dict | None = None, teachers: Teachers | None = None) -> float:
    """Seed 0 at every lr, then the best-by-validation lr with the other seeds. Returns that lr.
    Images: a mimic arm reads its teacher's transfer set; feature data: it is given the teacher itself."""
    folder = out / "arms" / slug(arm.name)
    lrs, seeds = arm_lrs(p, arm), tuple(p.seeds)
    tdir = transfer_dirs.get(arm.teacher)
    teacher = (teacher_dirs or {}).get(arm.teacher) if tdir is None and arm.teacher else None
    info, teachers = RunInfo(study=arm.name), teachers or Teachers()
    vals = {}
    for lr in lrs:
        print(f"-- {arm.name}: lr {lr:g}, seed {seeds[0]}", flush=True)
        v = _run(arm_config(p, arm, lr, seeds[0], tdir), folder / f"lr{lr:g}-s{seeds[0]}", data, index, info,
                 teachers, teacher)
        vals[lr] = -1.0 if v is None else v
    best = max(lrs, key=lambda lr: (vals[lr], -lrs.index(lr)))
    for s in seeds[1:]:
        print(f"-- {arm.name}: lr {best:g} (best on validation), seed {s}", flush=True)
        _run(arm_config(p, arm, best, s, tdir), folder / f"lr{best:g}-s{s}", data, index, info, teachers, teacher)
    return best


def identity(p: StudyPreset) -> StudyPreset:
    """What makes two runs of a preset the same study: everything but the lr grids (and NOT_IDENTITY), so a
    wider grid continues a study, reusing every run at a rate already tried."""
    return dataclasses.replace(p, lrs=(), arms=[dataclasses.replace(a, lrs=()) for a in p.arms])


def is_features(p: StudyPreset) -> bool:
    return str(p.data).endswith(".npz")


def run_study(p: StudyPreset, out: Path, command: str = "") -> dict:
    check_preset(p)
    out.mkdir(parents=True, exist_ok=True)
    if p.name.startswith("features") and not is_features(p):
        raise ConfigError(f"preset {p.name} needs feature data: --data FILE.npz (`mimicnet features make-npz` "
                          "makes one from a CIFAR archive)")
    if not p.data:
        p = dataclasses.replace(p, data=str(download_cifar(default_cache_dir())))
    st = Study(p, out, command, not_identity=NOT_IDENTITY, identity=identity(p))
    device = resolve_device(p.device)
    if is_features(p):
        data = load_features(p.data)
    else:
        data = load_train_data(p.data, p.max_train)
    st.record["data"] = {"path": p.data, "sha256": data.sha256, "n_train": len(data.train.y),
                         "n_val": len(data.val.y), "n_test": 0 if data.test is None else len(data.test.y)}
    st.record["study"] = "fixed"
    st.save()

    def teachers():
        dirs = {}
        for name, over in p.teachers.items():
            d = out / "teachers" / slug(name)
            fit(train_cfg(p, p.teacher_base, **over), d, data, index=st.index,
                info=RunInfo(kind=RunKind.TEACHER, study=name))
            dirs[name] = d
        return dirs
    tdirs = st.stage("teachers", teachers)

    def ensembles():
        dirs = {}
        for name, spec in p.ensembles.items():
            d = out / "ensembles" / slug(name)
            build_ensemble([tdirs[m] for m in spec["members"]], d, data, method=spec.get("method", "topk"),
                           size=spec.get("size", len(spec["members"])), device=device, index=st.index)
            dirs[name] = d
        return dirs
    edirs = st.stage("ensembles", ensembles)

    def transfer_sets():
        dirs = {}
        if is_features(p):  # feature students are labelled on x_transfer (or x_train) directly
            return dirs
        for name in dict.fromkeys(a.teacher for a in p.arms if a.teacher):
            d = out / "transfer" / slug(name)
            cfg = TransferConfig(data=p.data, max_train=p.max_train, epochs=p.transfer_epochs, seed=0, device=p.device)
            generate(cfg, edirs.get(name) or tdirs[name], d, data=data)
            dirs[name] = d
        return dirs
    xdirs = st.stage("transfer", transfer_sets)

    named = {**tdirs, **edirs}
    teachers = Teachers()
    chosen = st.stage("arms", lambda: {a.name: run_arm(p, a, out, data, xdirs, st.index, named, teachers)
                                       for a in p.arms})
    st.record["chosen_lr"] = chosen
    st.save()
    return st.record


# ============================================================================================ tables

@dataclass
class Row:
    section: str                   # teacher | ensemble | arm
    name: str
    model: str = ""                # architecture at this run's scale
    params: int | None = None
    teacher: str = ""
    loss: str = ""
    lr: float | None = None
    tests: list = field(default_factory=list)      # % per seed, at the chosen lr
    vals: list = field(default_factory=list)
    agreement: list = field(default_factory=list)  # % argmax agreement with the teacher (test set)
    n_failed: int = 0
    paper: float | None = None
    paper_model: str = ""

    @property
    def mean(self):
        return statistics.fmean(self.tests) if self.tests else None

    @property
    def sd(self):
        return statistics.stdev(self.tests) if len(self.tests) > 1 else None

    def as_dict(self) -> dict:
        return {"section": self.section, "name": self.name, "model": self.model, "params": self.params,
                "teacher": self.teacher, "loss": self.loss, "lr": self.lr, "n": len(self.tests),
                "failed": self.n_failed, "test_mean": self.mean, "test_sd": self.sd,
                "tests": " ".join(f"{t:.2f}" for t in self.tests),
                "val_mean": statistics.fmean(self.vals) if self.vals else None,
                "agreement_mean": statistics.fmean(self.agreement) if self.agreement else None,
                "paper": self.paper, "paper_model": self.paper_model}


def _arch(r: dict) -> str:
    """The paper-style architecture of an index row."""
    return arch_string(r["family"], [int(w) for w in r["widths"].split("x")])


def _run_lr(path: str) -> float | None:
    try:
        return float(artifacts.read_json(Path(path) / "config.json")["config"]["lr"])
    except (artifacts.CheckpointError, KeyError, TypeError, ValueError):
        return None


def build_tables(results_dir: Path, p: StudyPreset) -> list[Row]:
    """The study's rows from index.csv (and each arm run's config.json for its lr)."""
    rows = read_index(results_dir / "index.csv") if (results_dir / "index.csv").exists() else []
    out: list[Row] = []
    by_path = {Path(r["path"]).resolve(): r for r in rows if r.get("path")}
    for name in p.teachers:
        r = by_path.get((results_dir / "teachers" / slug(name)).resolve())
        paper, paper_model = p.teacher_paper.get(name, (None, ""))
        row = Row("teacher", name, paper=paper, paper_model=paper_model)
        if r is not None:
            row.model = _arch(r)
            row.params, row.tests, row.vals = int(r["params"]), [pct(r["test_acc"])], [pct(r["val_acc"])]
        out.append(row)
    for name, spec in p.ensembles.items():
        r = by_path.get((results_dir / "ensembles" / slug(name)).resolve())
        paper, paper_model = p.ensemble_paper.get(name, (None, ""))
        row = Row("ensemble", name, model=f"{spec.get('method', 'topk')} {spec.get('size')} of "
                  f"{len(spec['members'])}", paper=paper, paper_model=paper_model)
        if r is not None:
            row.params = int(r["params"]) if r.get("params") else None
            row.tests, row.vals = [pct(r["test_acc"])], [pct(r["val_acc"])]
        out.append(row)
    arm_rows = defaultdict(list)
    for r in rows:
        if r.get("study") and r["kind"] in ("student", "baseline"):
            arm_rows[r["study"]].append(r)
    for a in p.arms:
        rs = arm_rows.get(a.name, [])
        fin = [r for r in rs if r.get("status", "") in ("", "complete") and r.get("val_acc") not in (None, "")]
        row = Row("arm", a.name, teacher=a.teacher or "true labels", loss=a.train.get("loss", "ce"),
                  paper=a.paper, paper_model=a.paper_model)
        row.n_failed = len(rs) - len(fin)
        lr_of = {id(r): _run_lr(r["path"]) for r in fin}
        lrs = list(arm_lrs(p, a))
        first = [r for r in fin if int(r["seed"] or 0) == p.seeds[0] and lr_of[id(r)] in lrs]
        if fin:
            row.model = _arch(fin[0])
            row.params = int(fin[0]["params"])
        if first:  # repeat run_arm's choice: best validation accuracy of the first seed (ties: listed first)
            best = max(first, key=lambda r: (float(r["val_acc"]), -lrs.index(lr_of[id(r)])))
            row.lr = lr_of[id(best)]
            chosen = [r for r in fin if lr_of[id(r)] == row.lr]
            chosen.sort(key=lambda r: int(r["seed"] or 0))
            row.tests = [pct(r["test_acc"]) for r in chosen if r.get("test_acc") not in (None, "")]
            row.vals = [pct(r["val_acc"]) for r in chosen]
            row.agreement = [pct(r["mimic_agreement"]) for r in chosen if r.get("mimic_agreement") not in (None, "")]
        out.append(row)
    return out


def study_claims(p: StudyPreset, rows: list[Row]) -> list[dict]:
    """The paper's qualitative claims, each checked on the seeds' means (with the sds, to judge noise)."""
    by = {r.name: r for r in rows}
    out = []

    def cmp(claim, a: str, b: str, paper: str, margin: float = 0.0):
        ra, rb = by.get(a), by.get(b)
        if not ra or not rb or ra.mean is None or rb.mean is None:
            out.append({"claim": claim, "paper": paper, "ours": "not measured", "verdict": "not measured"})
            return
        d = ra.mean - rb.mean
        noise = max(ra.sd or 0.0, rb.sd or 0.0)
        verdict = "holds" if d > margin else "does not hold"
        if abs(d) <= noise:
            verdict += " (within seed noise)"
        out.append({"claim": claim, "paper": paper, "verdict": verdict,
                    "ours": f"{ra.mean:.1f} vs {rb.mean:.1f} (Δ {d:+.1f}; seed sd ≤ {noise:.1f})"})

    if p.name.startswith(("ba-caruana", "features")):  # the same six arms, in the same order
        ens = by.get(next(iter(p.ensembles), ""))
        single = max((r for r in rows if r.section == "teacher" and r.tests), key=lambda r: r.vals[0], default=None)
        if ens and single and ens.mean is not None:
            d = ens.mean - single.mean
            out.append({"claim": f"the {ens.name} beats its best member (by validation)",
                        "paper": "89.0 vs 88.0" if p.name.startswith("ba") else "yes (TIMIT: ECNN > CNN)", "ours": f"{ens.mean:.1f} vs {single.mean:.1f} ({single.name})",
                        "verdict": "holds" if d > 0 else "does not hold"})
        arms = [a.name for a in p.arms]
        ba = p.name.startswith("ba")
        timit = "yes (TIMIT, phone error rates)"
        cmp("a mimic net beats the same net trained on the labels", arms[1], arms[0], "85.8 vs 78.2" if ba else timit)
        cmp("L2 on logits beats L2 on probabilities", arms[1], arms[3], "yes (TIMIT; no CIFAR numbers)")
        cmp("L2 on logits beats KL", arms[1], arms[4], "yes (TIMIT; no CIFAR numbers)")
        cmp("mimicking the ensemble beats mimicking one teacher", arms[1], arms[5], "85.8 vs 84.9" if ba else timit)
        ra, rb = by.get(arms[2]), by.get(arms[1])
        if ra and rb and ra.mean is not None and rb.mean is not None:
            d = ra.mean - rb.mean
            out.append({"claim": "normalising the logits is not crucial", "paper": "'helped slightly'",
                        "ours": f"{ra.mean:.1f} vs {rb.mean:.1f} (Δ {d:+.1f})",
                        "verdict": "holds" if abs(d) <= max(1.0, ra.sd or 0, rb.sd or 0) else "does not hold"})
    elif p.name.startswith("ratusznik"):
        def each(claim, pairs, paper):  # one claim over the five students: how many of them it holds for
            ds = [(s, by[a].mean - by[b].mean) for s, a, b in pairs
                  if a in by and b in by and by[a].mean is not None and by[b].mean is not None]
            if not ds:
                out.append({"claim": claim, "paper": paper, "ours": "not measured", "verdict": "not measured"})
                return
            k = sum(d > 0 for _, d in ds)
            verdict = "holds" if k == len(ds) else "does not hold" if k == 0 else f"holds for {k} of {len(ds)}"
            out.append({"claim": claim, "paper": paper, "verdict": verdict,
                        "ours": f"{k} of {len(ds)}: " + ", ".join(f"{n} {d:+.1f}" for n, d in ds)})

        students = P.RATUSZNIK_STUDENTS
        for teacher, key in ((_RAT_TEACHER1, "teacher-1"), (_RAT_RESNET, "deep-resnet")):
            each(f"distillation from {teacher} beats the labels, for every student",
                 [(s["name"], f"{s['name']}, distilled from {teacher}", f"{s['name']}, no distillation")
                  for s in students],
                 "5 of 5: " + ", ".join(f"{s['name']} {s[key] - s['no_distil']:+.1f}" for s in students))
        each("the deep ResNet teacher gives better students than Teacher-1",
             [(s["name"], f"{s['name']}, distilled from {_RAT_RESNET}", f"{s['name']}, distilled from {_RAT_TEACHER1}")
              for s in students],
             "5 of 5: " + ", ".join(f"{s['name']} {s['deep-resnet'] - s['teacher-1']:+.1f}" for s in students))
        teachers = [r for r in rows if r.section == "teacher" and r.mean is not None]
        arms = [r for r in rows if r.section == "arm" and r.mean is not None]
        if teachers and arms:
            weakest, best = min(teachers, key=lambda r: r.mean), max(arms, key=lambda r: r.mean)
            out.append({"claim": "both deep teachers beat every student", "paper": "90.49 and 91.54 vs 89.87",
                        "ours": f"{weakest.name} {weakest.mean:.1f} vs {best.name} {best.mean:.1f}",
                        "verdict": "holds" if weakest.mean > best.mean else "does not hold"})
        cmp("the shallow ResNet beats the 2-conv student (no distillation)", "Shallow-ResNet, no distillation",
            "4-layer-2-CONV, no distillation", "88.72 vs 79.04")
        cmp("a 1-conv student beats the fully connected ones (no distillation)", "3-layer-1-CONV, no distillation",
            "4-layer-linear, no distillation", "74.27 vs 56.87")
        cmp("the 20-layer fc net is below the shallow 1-conv student", "3-layer-1-CONV, no distillation",
            "Deep-linear (ReLU), no distillation", "74.27 vs 51.15")
    return out


def preset_from_record(repro: dict) -> StudyPreset:
    """The StudyPreset a reproduce.json was written for (its stored config, arms included)."""
    cfg = dict(repro.get("config") or {})
    if not cfg or cfg.get("name") is None:
        raise ConfigError("reproduce.json holds no study preset")
    cfg["arms"] = [artifacts.dataclass_from_dict(Arm, a, ConfigError, "arm") for a in cfg.get("arms", [])]
    cfg["seeds"] = tuple(cfg.get("seeds", (0,)))
    cfg["lrs"] = tuple(cfg.get("lrs", ()))
    return artifacts.dataclass_from_dict(StudyPreset, cfg, ConfigError, "study preset")


def is_study_record(repro: dict) -> bool:
    return repro.get("study") == "fixed" or (repro.get("preset") or "").split("-smoke")[0] in STUDY_PRESETS
