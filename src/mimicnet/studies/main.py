"""`mimicnet reproduce --preset NAME`: the whole study, stage by stage, resumable.

    teachers -> ensemble -> transfer set -> hard-target baselines -> students -> table (+ report)

Each baseline and student cell is a search; its best trial *by validation* is then trained again with
`seeds` more seeds (seeds/<space>/t<trial>-s<seed>), so the tables can give a seed mean ± sd beside the
search's best and the claims can tell a difference from seed noise (the search's best alone is the luckiest
of its trials, an optimistic number).

Every stage writes its artifact into RESULTS_DIR and is skipped when that artifact is already complete
(a finished run has results.json, an ensemble has ensemble.json, a transfer set has manifest.json, a
search has its trials in study.db), so a killed `reproduce` continues where it stopped when run again.
Every finished run appends a row to RESULTS_DIR/index.csv; the table and the report read only that.

Many workers (studies/work.py): the stages are units of work (each teacher or the teacher search, the
ensemble, the transfer set's shards and their merge, every cell's search, every cell's seed reruns, the
report) claimed through Optuna's storage; `reproduce` is one worker, and the same command started again on the
same folder (and --storage) is another. One worker alone runs the units in the order above.

A preset is a dataclass of plain values; any field can be overridden with `--set field=value`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from ..core import artifacts
from ..core.errors import ConfigError, Diverged
from ..core.index import RunKind
from ..core.hardware import hardware
from ..core.lock import held
from ..core.units import budget_name
from ..data.cifar import default_cache_dir, download_cifar
from ..data.splits import TrainData, load_train_data
from ..distill.ensemble import build_ensemble
from ..distill.student import Teachers, index_failed, train_run
from ..distill.transfer import TransferConfig, generate_shard, merge_shards, shard_ranges
from ..models.inference import resolve_device
from ..search.pruners import check_pruner
from ..search.recovery import first_number
from ..search.run import Sharing, Strategy, best_trial, check_rungs_after_warmup, run_search, trial_run_dir
from ..models.families import baseline_families, student_families
from ..search.storage import _safe_url as safe_url, as_recorded, from_record, same_storage
from ..search.spaces import SearchError, apply, get_space, make_space
from ..train.config import TrainConfig
from ..train.loop import fit
from ..train.run import DIVERGED, RunInfo
from .overrides import override
from .work import Unit, Worker, open_work_study

# from the registry (models/paper.py): the families with the paper's student / baseline bounds
STUDENT_FAMILIES = student_families()      # conv0 ... conv4
BASELINE_FAMILIES = baseline_families()    # conv1 ... conv4


@dataclass
class Preset:
    name: str
    data: str = ""                       # archive; empty: download the official CIFAR-10 into the cache
    max_train: int | None = None         # cap on training images (after the validation split)
    device: str = "auto"
    seed: int = 0
    # teachers: "fixed" trains the configs in `teachers` (one run each); "search" runs the S2 search
    teacher_mode: str = "fixed"
    teachers: list = field(default_factory=list)     # TrainConfig overrides, one dict per teacher
    teacher_trials: int = 0
    teacher_base: dict = field(default_factory=dict)  # TrainConfig fields shared by every teacher
    # ensemble
    ensemble_method: str = "greedy"
    ensemble_size: int = 16
    # transfer set
    transfer_epochs: int = 160
    transfer_mode: str = "images"
    logits_dtype: str = "float16"
    # hard-target baselines (searched), and students (searched)
    baseline_families: tuple = BASELINE_FAMILIES
    baseline_budgets: tuple = (10_000_000,)
    baseline_trials: int = 30
    baseline_base: dict = field(default_factory=dict)
    student_families: tuple = STUDENT_FAMILIES
    student_budgets: tuple = (1_000_000, 3_160_000, 10_000_000, 31_600_000)
    student_trials: int = 30
    student_base: dict = field(default_factory=dict)
    sampler: str = "gp"
    n_startup: int = 4
    # multi-fidelity search: stop poor trials early from their validation curves (search/pruners.py)
    pruner: str = "none"                 # none | median | sha | hyperband
    pruner_min_epochs: int = 1           # first rung, in epochs
    pruner_eta: int = 3                  # keep 1/eta at each rung
    seeds: int = 1                       # the best config of every cell, trained again with this many seeds
    report: bool = True


# Teachers on the CPU presets: S2's family with batch norm, one-cycle lr and label smoothing. Measured on
# the subset (2 cores): 32/64/128 filters, 256 fc, 30 epochs -> ~70% test in ~4.5 min; without batch norm
# the same family stays near 50% in that time, and a weak teacher makes distillation meaningless.
_CPU_TEACHER = dict(family="teacher", widths=(32, 64, 128, 256), batchnorm=True, schedule="onecycle",
                    lr=0.05, momentum=0.9, weight_decay=5e-4, label_smoothing=0.1, batch_size=128)

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke", max_train=400,
        teachers=[dict(seed=s) for s in range(2)],
        teacher_base=dict(_CPU_TEACHER, widths=(8, 8, 16, 32), max_epochs=2),
        ensemble_size=4, transfer_epochs=2, logits_dtype="float16",
        baseline_families=("conv2",), baseline_budgets=(20_000,), baseline_trials=1,
        baseline_base=dict(schedule="onecycle", max_epochs=2, batch_size=64),
        student_families=STUDENT_FAMILIES, student_budgets=(20_000,), student_trials=1,
        student_base=dict(schedule="onecycle", max_epochs=2, batch_size=64),
        sampler="random", n_startup=1, seeds=1),
    "cpu": Preset(
        name="cpu", max_train=5000,
        teachers=[dict(seed=s) for s in range(3)],
        teacher_base=dict(_CPU_TEACHER, max_epochs=20),
        ensemble_size=8, transfer_epochs=20,
        baseline_budgets=(300_000,), baseline_trials=6,
        baseline_base=dict(schedule="onecycle", max_epochs=20, batch_size=128),
        student_budgets=(100_000, 300_000), student_trials=6,
        # students clip their gradient's global norm at 20 (their median norm is 10-15, spikes reach 60): without
        # it one spike at high momentum kills the ReLUs of a deep narrow student and seeds of one config end
        # 10-35 points apart (measured on conv4 at 0.1M, 2 seeds each: 5 of 6 configs had a seed collapse,
        # diverge or end 8-35 points below the other; with it, the seeds of each of 15 configs of conv1, conv3
        # and conv4 ended at most 4 points apart). A deviation from the paper's recipe (studies/deviations.py).
        student_base=dict(schedule="onecycle", max_epochs=20, batch_size=128, grad_clip=20.0),
        # successive halving at 5 and 15 epochs keeps the best third at each rung: the first rung after the
        # one-cycle warm-up (4 of 20 epochs), so trials are judged at the peak rate, not on how fast they start;
        # TPE, because GPSampler ignores pruned trials (search/pruners.py)
        # 4 seeds: with the seed spread of stable students (sd ~1 point) they detect a 3.3-point step of the 8
        # depth comparisons under Holm's correction (power 80%); 3 seeds would need ~4 points
        sampler="tpe", n_startup=4, pruner="sha", pruner_min_epochs=5, pruner_eta=3, seeds=4),
    # Urban et al. as they ran it: 129 teacher trials (§2.7 "We trained 129 deep CNN models with spearmint"),
    # and an ensemble of 16 of them chosen on validation (§2.7: "using accuracy on the validation set to select
    # the best combination. The final ensemble contained 16 deep convnets"): the 16 best by validation
    # accuracy, logits averaged (topk); `--set ensemble_method=greedy` for forward selection instead.
    "paper": Preset(
        name="paper", teacher_mode="search", teacher_trials=129,
        teacher_base=dict(family="teacher", schedule="plateau", max_epochs=1000, batch_size=128),
        ensemble_method="topk", ensemble_size=16, transfer_epochs=160,
        baseline_budgets=(10_000_000,), baseline_trials=30,
        baseline_base=dict(schedule="plateau", max_epochs=1000, batch_size=128),
        student_budgets=(1_000_000, 3_160_000, 10_000_000, 31_600_000), student_trials=30,
        student_base=dict(schedule="plateau", max_epochs=1000, batch_size=128),
        sampler="gp", n_startup=4, seeds=3),
}


def apply_overrides(preset, sets: list[str]):
    """`field=value` strings; values are JSON (numbers, lists, objects) or else plain strings, each checked
    against its field's type (studies.overrides)."""
    names = {f.name for f in dataclasses.fields(preset)}
    changes = {}
    for s in sets:
        if "=" not in s:
            raise ConfigError(f"--set {s!r}: expected field=value")
        k, v = s.split("=", 1)
        if k not in names:
            raise ConfigError(f"--set {k}: no such preset field (fields: {', '.join(sorted(names))})")
        changes[k] = override(preset, k, v)
    return dataclasses.replace(preset, **changes)


# Preset fields that say how much or how to compute, not what: changing them continues the same study
# (e.g. `--set student_trials=30` extends every search of an earlier run with fewer trials).
NOT_IDENTITY = ("device", "report", "teacher_trials", "baseline_trials", "student_trials", "seeds")


class Study:
    """The state of one reproduce run: its folder, its record (reproduce.json), stage timing."""

    def __init__(self, preset, out: Path, command: str, not_identity: tuple = NOT_IDENTITY, identity=None,
                 older_identities: tuple = (), storage: str | None = None):
        """`older_identities`: what earlier code took as this preset's identity; a record keyed by one of them
        is continued (and re-keyed). `storage`: the database every search and the work study live in (many
        workers); None: a SQLite file per search in its folder, and RESULTS_DIR/work.db."""
        self.p, self.out, self.index = preset, out, out / "index.csv"
        self.record_path = out / "reproduce.json"
        self.storage = storage
        self._open_args = (preset, out, command, not_identity, identity, older_identities)
        with held(self.record_path.with_name(self.record_path.name + ".lock")):  # workers write it too
            self._open(*self._open_args)

    def _open(self, preset, out: Path, command: str, not_identity: tuple, identity, older_identities: tuple):
        old = artifacts.read_json(self.record_path) if self.record_path.exists() else {}
        ident = preset if identity is None else identity
        # the data's path is not identity (its sha256 is: check_data), so a relative and an absolute path to
        # one archive, or a moved results folder, continue the same study
        key = artifacts.config_hash(ident, exclude=(*not_identity, "data"))
        if old and old.get("config_hash") != key and not any(
                old.get("config_hash") == artifacts.config_hash(i, exclude=(*not_identity, "data"))
                or _legacy_key(old, i, not_identity) for i in (ident, *older_identities)):
            raise ConfigError(f"{out}: holds a reproduce run of another config (preset {old.get('preset')}); "
                              "choose another --out")
        recorded = old.get("storage")
        if recorded and self.storage is None:  # a plain command on a folder whose workers share a storage: join them
            self.storage = from_record(recorded)
            if self.storage is None:
                raise ConfigError(f"{out}: its workers share {recorded}; give it with --storage (the record keeps "
                                  "no password, and older records a path relative to the folder they ran in)")
        elif recorded and not same_storage(self.storage, recorded):
            raise ConfigError(f"--storage {safe_url(self.storage)}: the workers of {out} share {recorded} (its "
                              "reproduce.json); a second storage would run their units again beside them")
        elif self.storage and not recorded and (out / "work.db").exists():
            raise ConfigError(f"--storage {safe_url(self.storage)}: the workers of {out} share its own work.db "
                              "(started without --storage); a second storage would run their units again beside "
                              "them: leave --storage out")
        self.data_sha256 = (old.get("data") or {}).get("sha256")
        self.record = {"preset": preset.name, "command": command, "config": artifacts.to_jsonable(preset),
                       "config_hash": key,
                       "code_version": artifacts.code_version(), "hardware": hardware(),
                       "stages": old.get("stages", {}), "planned_trials": {},
                       # the work study's name in a shared storage: this folder's, made once (under the lock)
                       "work_id": old.get("work_id") or uuid.uuid4().hex[:12],
                       **({"storage": as_recorded(self.storage)} if self.storage else {}),
                       **({"data": old["data"]} if old.get("data") else {})}
        # written first once the data is checked (check_data): a refused run leaves the record as it was

    def sharing(self, space_name: str, join: bool = False) -> Sharing:
        """run_search's storage and study name: the shared storage's study `<work study>/<space>`, or by
        default (None) the SQLite file in the search's folder under the space's name; `join`: see Sharing."""
        if not self.storage:
            return Sharing(join=join)
        return Sharing(storage=self.storage, study_name=f"{self.work_name}/{space_name}", join=join)

    @property
    def work_name(self) -> str:
        """The work study's name: one storage may hold the studies of several results folders."""
        return f"mimicnet-{self.p.name}-{self.record['work_id']}"

    def add_time(self, stage: str, seconds: float) -> None:
        """Add a worker's seconds on a stage to reproduce.json (read-modify-write under its lock: every
        worker adds its own)."""
        with held(self.record_path.with_name(self.record_path.name + ".lock")):
            old = artifacts.read_json(self.record_path).get("stages", {}) if self.record_path.exists() else {}
            self.record["stages"] = dict(old)
            self.record["stages"][stage] = round(self.record["stages"].get(stage, 0) + seconds, 1)
            self.save()

    def check_data(self, data: TrainData) -> None:
        """The data is the data this folder's runs were made from, by content (sha256), wherever it lies."""
        if self.data_sha256 and self.data_sha256 != data.sha256:
            raise ConfigError(f"{self.out}: the data changed: {self.p.data} has sha256 {data.sha256[:12]}…, this "
                              f"results folder was made from {self.data_sha256[:12]}…; give the archive it was "
                              "made from, or choose another --out")

    def save(self):
        artifacts.write_json(self.record_path, self.record)

    def save_checked(self, data: TrainData, **extra) -> None:
        """The record's first write, once the data is checked, under the record's lock. Workers started together
        all open the folder before any has written it: each re-reads it here, so the first to write gives
        the others its work_id (one work study, not one each) and the rest check their config and data
        against it again."""
        with held(self.record_path.with_name(self.record_path.name + ".lock")):
            self._open(*self._open_args)
            self.check_data(data)
            self.record["data"] = {"path": self.p.data, "sha256": data.sha256, "n_train": len(data.train.y),
                                   "n_val": len(data.val.y), "n_test": 0 if data.test is None else len(data.test.y)}
            self.record.update(extra)
            self.save()

    def stage(self, name: str, fn):
        t0 = time.perf_counter()
        print(f"\n== {name}", flush=True)
        out = fn()
        self.record["stages"][name] = round(self.record["stages"].get(name, 0) + time.perf_counter() - t0, 1)
        self.save()
        return out


def _legacy_key(old: dict, ident, not_identity: tuple) -> bool:
    """A reproduce.json written when the data's path was part of the key: the same study if its key is this
    preset's with the path it recorded."""
    path = (old.get("config") or {}).get("data") if isinstance(old.get("config"), dict) else None
    return path is not None and old.get("config_hash") == artifacts.config_hash(
        dataclasses.replace(ident, data=path), exclude=not_identity)


def train_cfg(p, base: dict, **kw) -> TrainConfig:
    d = {"data": p.data, "max_train": p.max_train, "device": p.device, "seed": getattr(p, "seed", 0), **base, **kw}
    return TrainConfig.from_dict(d)


def check_preset(p: Preset) -> None:
    """Build every kind of config the preset will train, so a typo in a field fails before any training."""
    if p.teacher_mode not in ("fixed", "search"):
        raise ConfigError(f"preset {p.name}: teacher_mode must be 'fixed' or 'search', not {p.teacher_mode!r}")
    checked(f"preset {p.name}", lambda: check_pruner(p.pruner, p.pruner_min_epochs, p.pruner_eta))
    if not isinstance(p.seeds, int) or isinstance(p.seeds, bool) or p.seeds < 0:
        raise ConfigError(f"preset {p.name}: seeds must be an integer >= 0, not {p.seeds!r}")
    bases = [("teacher", p.teacher_base, over) for over in (p.teachers or [{}])]
    bases += [("baseline", p.baseline_base, {}), ("student", p.student_base, {})]
    for what, base, over in bases:
        checked(f"preset {p.name}: {what} config", lambda: train_cfg(p, base, **over))
    for what, base in (("baseline", p.baseline_base), ("student", p.student_base)):
        checked(f"preset {p.name}: {what} search",
                lambda: check_rungs_after_warmup(p.pruner, p.pruner_min_epochs, train_cfg(p, base)))


def checked(what: str, build) -> None:
    """build(), with a ConfigError it raises prefixed by `what` (which preset, which part of it)."""
    try:
        build()
    except (ConfigError, SearchError) as e:
        raise ConfigError(f"{what}: {e}") from None


def run_teachers(st: Study, data: TrainData, join: bool = False) -> tuple[list[Path], object]:
    """The teachers' run folders, and their search study (None for fixed teachers)."""
    p = st.p
    if p.teacher_mode == "fixed":
        dirs = []
        for i, over in enumerate(p.teachers):
            cfg = train_cfg(p, p.teacher_base, **over)
            d = st.out / "teachers" / f"t{i}"
            fit(cfg, d, data, index=st.index)
            dirs.append(d)
        return dirs, None
    if p.teacher_mode == "search":
        space = get_space("teacher")
        study = run_search(space, train_cfg(p, p.teacher_base), st.out / "studies" / "teacher", trials=p.teacher_trials,
                           strategy=Strategy.of(p), sharing=st.sharing("teacher", join), data=data, index=st.index)
        return [trial_run_dir(t, st.out / "studies" / "teacher") for t in study.trials
                if t.state.name == "COMPLETE" and "run_dir" in t.user_attrs], study
    raise ConfigError(f"teacher_mode must be 'fixed' or 'search', not {p.teacher_mode!r}")


def run_cells(st: Study, kind: str, families, budgets, trials: int, base: dict, extra: dict, data: TrainData,
              teachers: Teachers | None = None) -> list[tuple]:
    """Search every (family, budget) cell; returns (space, base config, study, teachers) per cell for run_seeds."""
    return [run_cell(st, kind, fam, budget, trials, base, extra, data, teachers)
            for budget, fam in cell_list(families, budgets)]


def cell_list(families, budgets) -> list[tuple]:
    """(budget, family) in the study's order: budget by budget, every family at each."""
    return [(budget, fam) for budget in budgets for fam in families]


def run_cell(st: Study, kind: str, fam: str, budget: int, trials: int, base: dict, extra: dict, data: TrainData,
             teachers: Teachers | None = None, join: bool = False) -> tuple:
    """One cell's search (joined, with `join`: see search.run_search); (space, base config, study, teachers)."""
    space = make_space(kind, fam, budget)
    if not join:
        print(f"-- {kind} {fam} {budget_name(budget)}: {trials} trial(s)", flush=True)
    cfg = train_cfg(st.p, base, family=fam, budget=budget, **extra)
    study = run_search(space, cfg, st.out / "studies" / space.name, trials=trials, strategy=Strategy.of(st.p),
                       sharing=st.sharing(space.name, join), data=data, teachers=teachers, index=st.index)
    return space, cfg, study, teachers


def run_seeds(st: Study, space, base: TrainConfig, study, teachers: Teachers | None, data: TrainData) -> None:
    """rerun_best for one cell of the study (its seed runs under RESULTS_DIR/seeds)."""
    rerun_best(space, base, study, seeds=st.p.seeds, seed=st.p.seed, root=st.out, data=data, index=st.index,
               teachers=teachers, log=lambda s: print(s, flush=True))


def rerun_best(space, base: TrainConfig, study, *, seeds: int, seed: int, root: Path, data: TrainData, index,
               teachers: Teachers | None = None, log: Callable[[str], None] = print) -> None:
    """The cell's best trial by validation trained again with `seeds` other seeds (seed+1 ...), each a run of
    its own in root/seeds/<space>/t<trial>-s<seed> (index rows with repeat_of = that trial). A later, longer
    search with another best trial gets its own seed runs; reports use those of the current best. A seed that
    diverged is a result: it is indexed as failed, leaves DIVERGED, and is not trained again."""
    best = best_trial(study)
    if best is None or seeds < 1:
        return
    cfg = apply(space, best.params, base, data.with_labels(base.data.labels).num_classes, data.in_shape)
    number = first_number(best)  # a retried best trial keeps its original's name
    info = RunInfo(kind=RunKind(space.kind), study=space.name, repeat_of=number)
    for k in range(1, seeds + 1):
        run_seed = seed + k
        run_dir = root / "seeds" / space.name / f"t{number}-s{run_seed}"
        if (run_dir / DIVERGED).exists():
            continue  # a result already: this seed diverged (the same command again trains nothing)
        if not (run_dir / "results.json").exists():
            log(f"-- {space.name}: trial {number} (val {best.value:.4f}) again with seed {run_seed}")
        try:
            train_run(cfg.replace(seed=run_seed), run_dir, data, info=info, index=index,
                      teachers=teachers or Teachers(), log=log)
        except Diverged as e:  # a result: this seed diverged; counted as failed in the cell
            index_failed(index, cfg.replace(seed=run_seed), run_dir, info, status=e.status, epochs=e.epochs)
            artifacts.write_json(run_dir / DIVERGED, {"diverged": str(e), "status": e.status})
            log(f"   seed {run_seed} {e.status}: {e}")


def reproduce(preset: Preset, out: Path, command: str = "", storage: str | None = None,
              finish: Callable[[], object] | None = None, poll: float = 1.0) -> dict:
    """Run the study as one worker of it (studies.work): alone, every stage in order as it always has; with
    others on the same folder (and `storage`, the same database), each takes the next unit nobody holds.
    `finish`: the report unit (the CLI's table and report; the report layer sits above this one)."""
    check_preset(preset)
    out.mkdir(parents=True, exist_ok=True)
    if not preset.data:
        preset = dataclasses.replace(preset, data=str(download_cifar(default_cache_dir())))
    print(json.dumps(artifacts.to_jsonable(preset), indent=1))
    st = Study(preset, out, command, storage=storage)
    resolve_device(preset.device)
    data = load_train_data(preset.data, preset.max_train)  # once: every unit and trial below shares it
    st.save_checked(data, planned_trials=planned_trials(preset))  # checks the data first
    units = plan_units(st, data, finish)
    if st.storage and not storage:
        print(f"joining the workers of {out} through {safe_url(st.storage)} (its reproduce.json)", flush=True)
    study = open_work_study(st.storage or f"sqlite:///{out.resolve() / 'work.db'}", st.work_name)
    Worker(units, study, poll=poll, on_unit=lambda u, secs: st.add_time(u.stage, secs)).run()
    return st.record


def planned_trials(p: Preset) -> dict:
    """The trials every search cell is to hold, keyed kind/family/budget (the report's denominators)."""
    planned = {"teacher/teacher/": p.teacher_trials} if p.teacher_mode == "search" else {}
    for kind, fams, budgets, n in (("baseline", p.baseline_families, p.baseline_budgets, p.baseline_trials),
                                   ("student", p.student_families, p.student_budgets, p.student_trials)):
        planned.update({f"{kind}/{fam}/{budget}": n for budget, fam in cell_list(fams, budgets)})
    return planned


def plan_units(st: Study, data: TrainData, finish: Callable[[], object] | None = None) -> list[Unit]:
    """The study's units of work in its order (teachers, ensemble, transfer set, baseline cells, student
    cells, seed reruns, report), each with the units it needs. A search cell's name carries its trial count
    and a seed unit's its seeds, so a longer search (`--set student_trials=30`) is new work."""
    p, out = st.p, st.out
    units: list[Unit] = []
    if p.teacher_mode == "fixed":
        for i, over in enumerate(p.teachers):
            cfg, d = train_cfg(p, p.teacher_base, **over), out / "teachers" / f"t{i}"
            units.append(Unit(f"teachers/t{i}", "teachers", partial(fit, cfg, d, data, index=st.index)))
    else:
        units.append(Unit(f"teachers/search:{p.teacher_trials}", "teachers", lambda: run_teachers(st, data),
                          join=lambda: run_teachers(st, data, join=True)))
    teachers = tuple(u.name for u in units)
    tdir = out / "transfer"

    def ensemble():
        dirs, _ = run_teachers(st, data)  # all finished: their folders
        build_ensemble(dirs, out / "ensemble", data, method=p.ensemble_method, size=p.ensemble_size,
                       device=resolve_device(p.device), index=st.index)

    def transfer_cfg() -> TransferConfig:
        dirs, _ = run_teachers(st, data)
        hsv, hsv_from = best_teacher_hsv(dirs)
        if hsv_from is None:
            print("transfer: no teacher's results.json and config.json could be read; the transfer set uses S1's "
                  f"fixed HSV ranges {tuple(hsv)}", flush=True)
        with held(st.record_path.with_name(st.record_path.name + ".lock")):  # other workers write it too
            record = artifacts.read_json(st.record_path) if st.record_path.exists() else st.record
            if record.get("transfer_hsv") != {"hsv": list(hsv), "from": hsv_from}:
                st.record = {**record, "transfer_hsv": {"hsv": list(hsv), "from": hsv_from}}
                st.save()
        return TransferConfig(data=p.data, max_train=p.max_train, epochs=p.transfer_epochs, seed=p.seed,
                              hsv=hsv, mode=p.transfer_mode, logits_dtype=p.logits_dtype, device=p.device)

    # the transfer set in shards of epochs (each deterministic in (seed, epoch)), merged after a check of each
    # shard's checksums into the set one generate() makes
    shards = [Unit(f"transfer/e{a}-{b}", "transfer", partial(
        lambda a, b: generate_shard(transfer_cfg(), out / "ensemble", tdir, a, b, data=data), a, b),
        needs=("ensemble",)) for a, b in shard_ranges(p.transfer_epochs)]
    units += [Unit("ensemble", "ensemble", ensemble, needs=teachers), *shards,
              Unit("transfer", "transfer", lambda: merge_shards(transfer_cfg(), out / "ensemble", tdir, data=data),
                   needs=tuple(u.name for u in shards))]
    student_teachers = Teachers()
    cells = []  # (unit name, the cell's run_cell arguments)
    for kind, stage, fams, budgets, n, base, extra, tch, needs in (
            ("baseline", "baselines", p.baseline_families, p.baseline_budgets, p.baseline_trials, p.baseline_base,
             {}, None, ()),
            ("student", "students", p.student_families, p.student_budgets, p.student_trials, p.student_base,
             {"loss": "l2-logits", "transfer": str(tdir)}, student_teachers, ("transfer",))):
        for budget, fam in cell_list(fams, budgets):
            args = (st, kind, fam, budget, n, base, extra, data, tch)
            name = f"{make_space(kind, fam, budget).name}:{n}"
            units.append(Unit(name, stage, partial(run_cell, *args), needs=needs,
                              join=partial(run_cell, *args, join=True)))
            cells.append((name, args))
    seeds = []
    if p.teacher_mode == "search":  # the best teacher's config as a seed sample too (the ensemble's claim)
        seeds.append(Unit(f"seeds/teacher:{p.teacher_trials}:{p.seeds}", "seeds", lambda: run_seeds(
            st, get_space("teacher"), train_cfg(p, p.teacher_base), run_teachers(st, data)[1], None, data),
            needs=teachers))
    seeds += [Unit(f"seeds/{name}:{p.seeds}", "seeds", partial(_cell_seeds, args), needs=(name,))
              for name, args in cells]
    units += seeds
    plan = hashlib.sha256(" ".join(u.name for u in units).encode()).hexdigest()[:8]  # more work: a new report
    units.append(Unit(f"report:{plan}", "report", finish or (lambda: None), needs=tuple(u.name for u in units)))
    return units


def _cell_seeds(args: tuple) -> None:
    """A finished cell's seed reruns (its search, run again, returns the finished study at once)."""
    space, cfg, study, teachers = run_cell(*args, join=True)
    run_seeds(args[0], space, cfg, study, teachers, args[7])


def best_teacher_hsv(teacher_dirs: list[Path]) -> tuple[tuple, str | None]:
    """(HSV ranges (Dh, Ds, Dv, As, Av), the teacher folder's name they come from): the ranges the transfer set
    is augmented with are those of the best single teacher by validation, as Urban et al. §2.5 did ("we chose to
    use the settings found with the best single model"; their numbers, S1's fixed setting, are what a teacher
    that does not search them trains with). (S1's ranges, None) when no teacher's record can be read."""
    best, hsv, src = -1.0, TransferConfig.hsv, None
    for d in teacher_dirs:
        try:
            val = float(artifacts.read_json(Path(d) / "results.json")["val_acc"])
            cfg = TrainConfig.from_dict(artifacts.read_json(Path(d) / "config.json")["config"])
        except (OSError, KeyError, TypeError, ValueError, artifacts.CheckpointError):
            continue
        if val > best:
            best, a, src = val, cfg.data.augmentation, Path(d).name
            hsv = (a.dh, a.ds, a.dv, a.as_, a.av)
    return tuple(hsv), src


def record_stage_time(out: Path, name: str, seconds: float) -> None:
    """Add a stage run after the study (its report) to the stage times in reproduce.json."""
    path = Path(out) / "reproduce.json"
    record = artifacts.read_json(path)
    record.setdefault("stages", {})[name] = round(record["stages"].get(name, 0) + seconds, 1)
    artifacts.write_json(path, record)
