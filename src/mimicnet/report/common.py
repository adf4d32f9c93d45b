"""What every report page and table shares: the error type, reading reproduce.json, atomic CSV and figure
files, LaTeX escaping, and the Jinja2 environment that renders every report page from templates/."""
from __future__ import annotations

import base64
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib
from jinja2 import Environment, PackageLoader, StrictUndefined

from ..core.artifacts import atomic_write, write_text
from ..core.errors import UserError
from ..core.lazy import lazy_module

mpl_figure = lazy_module("matplotlib.figure")  # loaded when a report draws (core/lazy.py)

MISSING = "—"


def _csvnum(v, nd=4):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{round(v, nd):.{nd}f}"
    return v


class ReportError(UserError, ValueError):
    """The results folder cannot be reported on (message names the folder)."""


def load_reproduce(results_dir) -> dict:
    """RESULTS_DIR/reproduce.json, or {} (absent or unreadable: the report says what it lacks)."""
    p = Path(results_dir) / "reproduce.json"
    try:
        d = json.loads(p.read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csvnum(r.get(k)) for k in columns})
    write_text(path, buf.getvalue())


def _write_bytes(path: Path, data: bytes) -> None:
    """Atomic like artifacts.write_text (a reader never sees half a figure)."""
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


_LATEX_MAP = {"²": "$^2$", "³": "$^3$", "⁴": "$^4$", "⁶": "$^6$", "⁸": "$^8$", "¹": "$^1$", "×": "$\\times$",
              "±": "$\\pm$", "Δ": "$\\Delta$", "—": "---", "–": "--", "†": "$^\\dagger$", "·": "$\\cdot$",
              "≈": "$\\approx$", "%": "\\%", "&": "\\&", "#": "\\#", "_": "\\_", "$": "\\$", "{": "\\{",
              "}": "\\}", "~": "\\textasciitilde{}", "^": "\\^{}", "\\": "\\textbackslash{}"}


def tex(s) -> str:
    return "".join(_LATEX_MAP.get(ch, ch) for ch in str(s))


def subplots(nrows: int, ncols: int, figsize: tuple, **kw):
    """(figure, axes) as pyplot.subplots gives them, on a plain Figure: nothing global to close, no GUI
    backend chosen, and matplotlib's figure module loaded only when a report draws."""
    fig = mpl_figure.Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def _save_figure(fig, stem: Path) -> bytes:
    """PNG and SVG beside each other (atomic); returns the PNG bytes for embedding."""
    png, svg = io.BytesIO(), io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "mimicnet", "svg.fonttype": "path"}):
        fig.savefig(png, format="png", dpi=150)
        fig.savefig(svg, format="svg", metadata={"Date": None})
    _write_bytes(stem.with_suffix(".png"), png.getvalue())
    _write_bytes(stem.with_suffix(".svg"), svg.getvalue())
    return png.getvalue()


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return MISSING
    s = float(s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def _data_uri(png: bytes) -> str:
    # base64 and the fixed prefix only: nothing in it for autoescape to change, so no |safe is needed
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _pretty_json(v) -> str:
    return json.dumps(v, indent=1, sort_keys=True)


def _structured(v) -> bool:
    """A value a key/value table shows as indented JSON in a <pre> rather than inline."""
    return isinstance(v, (dict, list))


# Every report page is one of templates/*.html.j2, each extending base.html.j2 (the head and the CSS live
# there once). Autoescape is on for every template: folder names, run ids, teachers and presets come from
# the user's index and reproduce.json and are never trusted as markup. StrictUndefined: a context key the
# template expects but Python forgot fails the report instead of printing an empty cell.
ENV = Environment(loader=PackageLoader("mimicnet.report", "templates"), autoescape=True,
                  undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
ENV.filters.update(seconds=_fmt_seconds, data_uri=_data_uri, pretty_json=_pretty_json)
ENV.tests["structured"] = _structured


def render(template_name: str, **context) -> str:
    """One report page as HTML: templates/TEMPLATE_NAME rendered with CONTEXT."""
    return ENV.get_template(template_name).render(**context)


@dataclass(frozen=True)
class StudyExtra:
    """A fixed study's own table and figure, shown beside the generic ones (report/study.py's EXTRAS): its
    pivot (rows -> (header, rows)) and that pivot in Markdown, its figure, and the heading and caption the
    page gives them."""
    pivot: Callable
    markdown: Callable
    figure: Callable
    heading: str
    caption: str
