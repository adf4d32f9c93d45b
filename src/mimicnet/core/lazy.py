"""Modules loaded on their first use, not at import: scipy.stats and matplotlib's figure modules took 1.7 s of
every command's 5.0 s start (measured with `python -X importtime -m mimicnet.cli --help`), and most commands
never run a test or draw a figure. The import stays at the top of the module that uses it, by name."""
from __future__ import annotations

import importlib.util
import sys
import types


def lazy_module(name: str) -> types.ModuleType:
    """`name`, imported when one of its attributes is first read (the standard library's LazyLoader). Its
    parent packages are imported now (cheap for scipy and matplotlib); a module already imported is returned."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
