"""The fixed-arm studies: Ba & Caruana (S5), Ratusznik et al. (S6) and the feature-data recipe. Each
study's preset and claims live in a file of its own (ba_caruana.py, ratusznik.py, features.py; catalog.py
lists them); this file runs and tabulates any of them.

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
from typing import Callable

from ..core import artifacts, noise
from ..core.errors import ConfigError, Diverged
from ..core.index import RunKind, pct, read_index
from ..core.lock import folder_lock
from ..data.cifar import default_cache_dir, download_cifar
from ..data.features import load_features
from ..data.splits import load_train_data
from ..distill.ensemble import build_ensemble
from ..distill.features import mimic_features
from ..distill.student import Teachers, index_failed, train_run
from ..distill.transfer import TransferConfig, generate
from ..models.families import arch_string, scale_to_budget
from ..models.inference import resolve_device
from ..train.config import TrainConfig, check_distill
from ..train.loop import fit
from ..train.run import RunInfo
from .main import Study, checked, train_cfg


@dataclass
class Arm:
    name: str                      # the table row
    model: str                     # a key of StudyPreset.models
    teacher: str = ""              # "" = the true labels; else a key of `ensembles` or `teachers`
    train: dict = field(default_factory=dict)   # TrainConfig overrides (loss, normalize_logits, ...)
    lrs: tuple = ()                # learning rates to choose from on validation; () = the preset's `lrs`
    paper: float | None = None     # published test accuracy (%) of this row, when the paper has one
    paper_model: str = ""          # what the paper measured there (architecture, scale)


@dataclass(frozen=True)
class ModelSpec:
    family: str
    widths: tuple[int, ...]        # the paper's widths (scaled to StudyPreset.budget when it has one)


@dataclass(frozen=True)
class EnsembleSpec:
    members: tuple[str, ...]       # teacher names
    method: str = "topk"           # distill.ensemble's member rule (on validation)
    size: int | None = None        # members to keep; None: all


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
    ensembles: dict[str, EnsembleSpec] = field(default_factory=dict)
    ensemble_paper: dict = field(default_factory=dict)  # name -> (published %, what it was)
    transfer_epochs: int = 10
    models: dict[str, ModelSpec] = field(default_factory=dict)
    budget: int | None = None      # models' widths scaled by one factor to this many parameters
    student_base: dict = field(default_factory=dict)  # TrainConfig fields of every arm
    lrs: tuple = (0.01,)
    # arm name -> an earlier arm whose rate, chosen on *its* validation, this arm uses for every seed (its own
    # grid is not tried): for arms that cost many times what their twin costs (online vs fixed-set students)
    shared_lrs: dict = field(default_factory=dict)
    arms: list = field(default_factory=list)          # Arm, in table order
    report: bool = True
    study: str = ""                # whose claims check its table (a key of CLAIMS); smoke versions share it
    inputs: str = "images"         # "images" (a CIFAR archive) | "features" (an .npz of feature vectors)


# Fields that change how long or where a study runs, not what it is (see main.NOT_IDENTITY); `study` and
# `inputs` follow from the preset's name.
NOT_IDENTITY = ("device", "report", "seeds", "study", "inputs")  # more seeds extend the same study

# A study's claims: (preset, its table rows) -> [{"claim", "paper", "ours", "verdict"}], registered by the
# file that defines the study (ba_caruana.py, ratusznik.py, features.py), beside its preset.
CLAIMS: dict[str, Callable[[StudyPreset, list], list[dict]]] = {}


def register_claims(study: str):
    def add(fn):
        CLAIMS[study] = fn
        return fn
    return add


def smoke_version(p: StudyPreset) -> StudyPreset:
    """A few-minute version for the test suite: the same code path, tiny models and epochs."""
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
    models = {k: dataclasses.replace(m, widths=tuple(max(2, w // 8) for w in m.widths)) for k, m in p.models.items()}
    return dataclasses.replace(p, name=f"{p.name}-smoke", max_train=300, seeds=(0, 1), teachers=t,
                               teacher_base=base, transfer_epochs=1, budget=20_000 if p.budget else None,
                               models=models, student_base=dict(p.student_base, max_epochs=1), lrs=p.lrs[:2],
                               arms=arms, study=p.study or p.name)


# ============================================================================================ running

def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def model_widths(p: StudyPreset, model: str, batchnorm: bool = False) -> tuple[int, ...]:
    m = p.models[model]
    if p.budget is None:
        return tuple(m.widths)
    return scale_to_budget(m.family, m.widths, p.budget, batchnorm=batchnorm)


def check_preset(p: StudyPreset) -> None:
    """Every name an arm uses must exist: fail before hours of training, not after."""
    for e, spec in p.ensembles.items():
        missing = [m for m in spec.members if m not in p.teachers]
        if missing:
            raise ConfigError(f"preset {p.name}: ensemble {e!r} has unknown member(s) {missing}")
    names = set()
    for a in p.arms:
        if a.name in names:
            raise ConfigError(f"preset {p.name}: two arms are named {a.name!r}")
        if a.name in p.shared_lrs and p.shared_lrs[a.name] not in names:
            raise ConfigError(f"preset {p.name}: arm {a.name!r} takes the rate of {p.shared_lrs[a.name]!r}, "
                              "which is not an arm before it")
        names.add(a.name)
        if a.model not in p.models:
            raise ConfigError(f"preset {p.name}: arm {a.name!r} uses unknown model {a.model!r}")
        if a.teacher and a.teacher not in p.ensembles and a.teacher not in p.teachers:
            raise ConfigError(f"preset {p.name}: arm {a.name!r} mimics unknown teacher {a.teacher!r}")
        if is_online(a) and p.inputs == "features":
            raise ConfigError(f"preset {p.name}: arm {a.name!r}: online distillation needs images, not feature data")
        if bool(a.teacher) == (a.train.get("loss", "ce") == "ce"):
            raise ConfigError(f"preset {p.name}: arm {a.name!r}: a teacher needs a mimic loss, hard labels 'ce'")
    # every config the study will train is built (and so checked) now: a typo fails here, not hours in
    for name, over in p.teachers.items():
        checked(f"preset {p.name}: teacher {name!r}", lambda: train_cfg(p, p.teacher_base, **over))
    for a in p.arms:  # an online arm with a placeholder teacher folder, so its distillation fields are checked too
        checked(f"preset {p.name}: arm {a.name!r}",
                lambda: check_distill(arm_config(p, a, arm_lrs(p, a)[0], p.seeds[0], None, Path("teacher"))))


def is_online(arm: Arm) -> bool:
    """Does this arm distil online (its teacher labels each batch), rather than from a transfer set?"""
    return arm.train.get("distill_mode", "fixed") == "online"


def arm_config(p: StudyPreset, arm: Arm, lr: float, seed: int, transfer_dir: Path | None,
               teacher_dir: Path | None = None) -> TrainConfig:
    """An arm's run config: a fixed-set student reads `transfer_dir`, an online one runs `teacher_dir`."""
    m = p.models[arm.model]
    d = {"data": p.data, "max_train": p.max_train, "device": p.device, **p.student_base,
         "family": m.family, **arm.train, "lr": lr, "seed": seed}
    d["widths"] = model_widths(p, arm.model, d.get("batchnorm", False))
    if arm.teacher and is_online(arm) and teacher_dir is not None:
        d["teacher"] = str(teacher_dir)
    elif arm.teacher and transfer_dir is not None:
        d["transfer"] = str(transfer_dir)
    return TrainConfig.from_dict(d)


def arm_lrs(p: StudyPreset, arm: Arm) -> tuple:
    """The rates an arm chooses from (an arm in p.shared_lrs is not given its own: see run_arm)."""
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
        index_failed(index, cfg, run_dir, info, status=e.status, epochs=e.epochs)
        print(f"diverged: {e}")
        return None


def run_arm(p: StudyPreset, arm: Arm, out: Path, data, transfer_dirs: dict, index: Path,
            teacher_dirs: dict | None = None, teachers: Teachers | None = None, chosen: dict | None = None) -> float:
    """Seed 0 at every lr, then the best-by-validation lr with the other seeds. Returns that lr. An arm in
    `p.shared_lrs` runs every seed at the rate `chosen` (so far) holds for its twin.
    Images: a mimic arm reads its teacher's transfer set; feature data: it is given the teacher itself."""
    folder = out / "arms" / slug(arm.name)
    lrs, seeds = arm_lrs(p, arm), tuple(p.seeds)
    if arm.name in p.shared_lrs:
        lrs = (chosen[p.shared_lrs[arm.name]],)
    online = (teacher_dirs or {}).get(arm.teacher) if is_online(arm) else None  # its teacher, in its config
    tdir = transfer_dirs.get(arm.teacher)
    teacher = (teacher_dirs or {}).get(arm.teacher) if tdir is None and arm.teacher and online is None else None
    info, teachers = RunInfo(study=arm.name), teachers or Teachers()
    vals = {}
    for lr in lrs:
        print(f"-- {arm.name}: lr {lr:g}, seed {seeds[0]}", flush=True)
        v = _run(arm_config(p, arm, lr, seeds[0], tdir, online), folder / f"lr{lr:g}-s{seeds[0]}", data, index,
                 info, teachers, teacher)
        vals[lr] = -1.0 if v is None else v
    best = max(lrs, key=lambda lr: (vals[lr], -lrs.index(lr)))
    for s in seeds[1:]:
        print(f"-- {arm.name}: lr {best:g} (best on validation), seed {s}", flush=True)
        _run(arm_config(p, arm, best, s, tdir, online), folder / f"lr{best:g}-s{s}", data, index, info, teachers,
             teacher)
    return best


def identity(p: StudyPreset) -> StudyPreset:
    """What makes two runs of a preset the same study: everything but the lr grids and the arms (and
    NOT_IDENTITY), so a wider grid or more arms continue a study, reusing every run already made. Safe
    because every run folder checks its own config: an arm redefined under the same name is refused there."""
    return dataclasses.replace(p, lrs=(), arms=[], shared_lrs={})


def _older_identity(p: StudyPreset) -> StudyPreset:
    """The identity before arms could be added (records written until issue 17): arms without their lrs."""
    return dataclasses.replace(p, lrs=(), arms=[dataclasses.replace(a, lrs=()) for a in p.arms])


def is_features(p: StudyPreset) -> bool:
    return str(p.data).endswith(".npz")


def run_study(p: StudyPreset, out: Path, command: str = "") -> dict:
    with folder_lock(out, f"mimicnet reproduce --preset {p.name}"):  # one writer per results folder
        return _run_study(p, out, command)


def _run_study(p: StudyPreset, out: Path, command: str = "") -> dict:
    check_preset(p)
    out.mkdir(parents=True, exist_ok=True)
    if p.inputs == "features" and not is_features(p):
        raise ConfigError(f"preset {p.name} needs feature data: --data FILE.npz (`mimicnet features make-npz` "
                          "makes one from a CIFAR archive)")
    if not p.data:
        p = dataclasses.replace(p, data=str(download_cifar(default_cache_dir())))
    st = Study(p, out, command, not_identity=NOT_IDENTITY, identity=identity(p), older_identities=(_older_identity(p),))
    device = resolve_device(p.device)
    if is_features(p):
        data = load_features(p.data)
    else:
        data = load_train_data(p.data, p.max_train)
    st.save_checked(data, study="fixed")  # checks the data first

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
            build_ensemble([tdirs[m] for m in spec.members], d, data, method=spec.method,
                           size=spec.size or len(spec.members), device=device, index=st.index)
            dirs[name] = d
        return dirs
    edirs = st.stage("ensembles", ensembles)

    def transfer_sets():
        dirs = {}
        if is_features(p):  # feature students are labelled on x_transfer (or x_train) directly
            return dirs
        for name in dict.fromkeys(a.teacher for a in p.arms if a.teacher and not is_online(a)):
            d = out / "transfer" / slug(name)
            cfg = TransferConfig(data=p.data, max_train=p.max_train, epochs=p.transfer_epochs, seed=0, device=p.device)
            generate(cfg, edirs.get(name) or tdirs[name], d, data=data)
            dirs[name] = d
        return dirs
    xdirs = st.stage("transfer", transfer_sets)

    named = {**tdirs, **edirs}
    teachers = Teachers()
    def arms():
        chosen = {}
        for a in p.arms:
            chosen[a.name] = run_arm(p, a, out, data, xdirs, st.index, named, teachers, chosen)
        return chosen
    chosen = st.stage("arms", arms)
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
    tests: list = field(default_factory=list)      # % per seed, at the chosen lr (not the run that chose it)
    vals: list = field(default_factory=list)
    seeds: list = field(default_factory=list)      # the seed of each of `tests` (pairs are matched by seed)
    selection: list = field(default_factory=list)  # % of the first seed's run at the chosen lr, when it chose
                                                   # among several: left out of `tests` (a winner's score)
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
                "selection_test": self.selection[0] if self.selection else None,
                "val_mean": statistics.fmean(self.vals) if self.vals else None,
                "agreement_mean": statistics.fmean(self.agreement) if self.agreement else None,
                "paper": self.paper, "paper_model": self.paper_model}


def _arch(r: dict) -> str:
    """The paper-style architecture of an index row."""
    return arch_string(r["family"], [int(w) for w in r["widths"].split("x")])


def _run_lr(path: str, results_dir: Path) -> float | None:
    """An arm run's lr: from its config.json where the index says the run is, or where it is now if the
    results folder was moved (arms/ARM/RUN); failing both (a record of the index alone, as in docs/results),
    from the folder name run_arm gave it, lr{lr:g}-s{seed}."""
    where = Path(path)
    for folder in (where, results_dir.joinpath(*where.parts[-3:])):
        try:
            return float(artifacts.read_json(folder / "config.json")["config"]["lr"])
        except (artifacts.CheckpointError, OSError, KeyError, TypeError, ValueError):
            continue
    m = re.fullmatch(r"lr([0-9.e+-]+)-s\d+", where.name)
    return float(m.group(1)) if m else None


def build_tables(results_dir: Path, p: StudyPreset) -> list[Row]:
    """The study's rows from index.csv (and each arm run's config.json for its lr)."""
    rows = read_index(results_dir / "index.csv") if (results_dir / "index.csv").exists() else []
    out: list[Row] = []
    # rows by their folder within the results folder (teachers/NAME, ensembles/NAME): the index holds the
    # paths the runs had, and a results folder may have been moved or copied since
    by_path = {Path(r["path"]).parts[-2:]: r for r in rows if r.get("path")}
    for name in p.teachers:
        r = by_path.get(("teachers", slug(name)))
        paper, paper_model = p.teacher_paper.get(name, (None, ""))
        row = Row("teacher", name, paper=paper, paper_model=paper_model)
        if r is not None:
            row.model = _arch(r)
            row.params, row.tests, row.vals = int(r["params"]), [pct(r["test_acc"])], [pct(r["val_acc"])]
        out.append(row)
    for name, spec in p.ensembles.items():
        r = by_path.get(("ensembles", slug(name)))
        paper, paper_model = p.ensemble_paper.get(name, (None, ""))
        row = Row("ensemble", name, model=f"{spec.method} {spec.size or len(spec.members)} of "
                  f"{len(spec.members)}", paper=paper, paper_model=paper_model)
        if r is not None:
            row.params = int(r["params"]) if r.get("params") else None
            row.tests, row.vals = [pct(r["test_acc"])], [pct(r["val_acc"])]
        out.append(row)
    arm_rows = defaultdict(list)
    for r in rows:
        if r.get("study") and r["kind"] in (RunKind.STUDENT, RunKind.BASELINE):
            arm_rows[r["study"]].append(r)
    row_lr: dict[str, float | None] = {}
    for a in p.arms:
        rs = arm_rows.get(a.name, [])
        fin = [r for r in rs if r.get("status", "") in ("", "complete") and r.get("val_acc") not in (None, "")]
        row = Row("arm", a.name, teacher=a.teacher or "true labels", loss=a.train.get("loss", "ce"),
                  paper=a.paper, paper_model=a.paper_model)
        row.n_failed = len(rs) - len(fin)
        lr_of = {id(r): _run_lr(r["path"], results_dir) for r in fin}
        lrs = list(arm_lrs(p, a)) if a.name not in p.shared_lrs else [row_lr.get(p.shared_lrs[a.name])]
        first = [r for r in fin if int(r["seed"] or 0) == p.seeds[0] and lr_of[id(r)] in lrs]
        if fin:
            row.model = _arch(fin[0])
            row.params = int(fin[0]["params"])
        if first:  # repeat run_arm's choice: best validation accuracy of the first seed (ties: listed first)
            best = max(first, key=lambda r: (float(r["val_acc"]), -lrs.index(lr_of[id(r)])))
            row.lr = lr_of[id(best)]
            chosen = [r for r in fin if lr_of[id(r)] == row.lr]
            if len(lrs) > 1:  # the run that chose the rate won a selection: its score is biased upwards
                row.selection = [pct(best["test_acc"])] if best.get("test_acc") not in (None, "") else []
                chosen = [r for r in chosen if r is not best]
            chosen.sort(key=lambda r: int(r["seed"] or 0))
            chosen = [r for r in chosen if r.get("test_acc") not in (None, "")]
            row.seeds = [int(r["seed"] or 0) for r in chosen]
            row.tests = [pct(r["test_acc"]) for r in chosen]
            row.vals = [pct(r["val_acc"]) for r in chosen]
            row.agreement = [pct(r["mimic_agreement"]) for r in chosen if r.get("mimic_agreement") not in (None, "")]
        # what run_arm chose: the best seed-0 rate, or the first rate when none of them finished
        row_lr[a.name] = row.lr if row.lr is not None else (lrs[0] if lrs else None)
        out.append(row)
    return out


def study_claims(p: StudyPreset, rows: list[Row]) -> list[dict]:
    """The paper's qualitative claims, checked on this run's table (none for a study that registers none)."""
    fn = CLAIMS.get(p.study or p.name)
    return fn(p, rows) if fn is not None else []


def compare(rows: list[Row], claim: str, a: str, b: str, paper: str) -> dict:
    """Claim "row a beats row b", on the seeds' test accuracies, by core.noise's judge."""
    by = {r.name: r for r in rows}
    ra, rb = by.get(a), by.get(b)
    return noise.claim_row(claim, paper, noise.judge_one(ra.tests, rb.tests) if ra and rb else None)
