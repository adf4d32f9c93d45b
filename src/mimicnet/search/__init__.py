"""Bayesian hyperparameter search (SPEC S2, S4) with Optuna: spaces as data, samplers, storage, running a
study of trials (each an ordinary run folder), and its summary. Imports core .. distill."""

from .pruners import PRUNERS, make_pruner
from .run import CHANCE, Sharing, Strategy, best_trial, create_or_load, progress, run_search, trial_run_dir
from .samplers import SAMPLERS, make_sampler
from .spaces import SPACES, Param, SearchError, Space, apply, budget_violation, get_space, make_space, space_names
from .storage import default_storage, load_study, open_storage
from .summary import format_report, report, summary

__all__ = ["CHANCE", "PRUNERS", "SAMPLERS", "SPACES", "best_trial", "trial_run_dir", "make_pruner", "Param",
           "SearchError", "Space", "apply", "budget_violation", "create_or_load", "default_storage", "format_report",
           "get_space", "load_study", "make_sampler", "make_space", "open_storage", "progress", "report", "run_search",
           "Sharing", "space_names", "Strategy", "summary"]
