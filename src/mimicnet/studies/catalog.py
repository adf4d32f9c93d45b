"""Every fixed-arm study preset by name (and its few-minute smoke version), and the preset a results
folder's reproduce.json was written for."""
from __future__ import annotations

from ..core import artifacts
from ..core.errors import ConfigError
from .ba_caruana import BA_CARUANA
from .features import FEATURES
from .modern import MODERN_PRESET
from .fixed import Arm, EnsembleSpec, ModelSpec, StudyPreset, smoke_version
from .ratusznik import RATUSZNIK

STUDY_PRESETS: dict[str, StudyPreset] = {p.name: p for p in (BA_CARUANA, RATUSZNIK, FEATURES, MODERN_PRESET)}
STUDY_PRESETS.update({f"{k}-smoke": smoke_version(v) for k, v in list(STUDY_PRESETS.items())})


def preset_from_record(repro: dict) -> StudyPreset:
    """The StudyPreset a reproduce.json was written for (its stored config, arms included). Records written
    before presets named their study and inputs get them from the preset of the same name."""
    cfg = dict(repro.get("config") or {})
    if not cfg or cfg.get("name") is None:
        raise ConfigError("reproduce.json holds no study preset")
    known = STUDY_PRESETS.get(cfg["name"])
    if known is not None:
        cfg.setdefault("study", known.study)
        cfg.setdefault("inputs", known.inputs)
        # reproduce.json is written with sorted keys: give the named dicts the preset's order back (table rows)
        for key in ("teachers", "teacher_paper", "ensembles", "ensemble_paper", "models"):
            order = list(getattr(known, key))
            d = cfg.get(key) or {}
            cfg[key] = dict(sorted(d.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    cfg["arms"] = [artifacts.dataclass_from_dict(Arm, a, ConfigError, "arm") for a in cfg.get("arms", [])]
    cfg["models"] = {k: artifacts.dataclass_from_dict(ModelSpec, m, ConfigError, "model")
                     for k, m in cfg.get("models", {}).items()}
    cfg["ensembles"] = {k: artifacts.dataclass_from_dict(EnsembleSpec, e, ConfigError, "ensemble")
                        for k, e in cfg.get("ensembles", {}).items()}
    cfg["seeds"] = tuple(cfg.get("seeds", (0,)))
    cfg["lrs"] = tuple(cfg.get("lrs", ()))
    return artifacts.dataclass_from_dict(StudyPreset, cfg, ConfigError, "study preset")


def is_study_record(repro: dict) -> bool:
    return repro.get("study") == "fixed" or repro.get("preset") in STUDY_PRESETS
