"""What every report page and table shares: the error type, reading reproduce.json, atomic CSV and figure
files, LaTeX escaping, and the HTML helpers."""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import matplotlib

from ..core.artifacts import atomic_write, write_text
from ..core.errors import UserError

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


def _save_figure(fig, stem: Path) -> bytes:
    """PNG and SVG beside each other (atomic); returns the PNG bytes for embedding."""
    png, svg = io.BytesIO(), io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "mimicnet", "svg.fonttype": "path"}):
        fig.savefig(png, format="png", dpi=150)
        fig.savefig(svg, format="svg", metadata={"Date": None})
    _write_bytes(stem.with_suffix(".png"), png.getvalue())
    _write_bytes(stem.with_suffix(".svg"), svg.getvalue())
    return png.getvalue()


_CSS = """
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:3px}
h3{font-size:15px;margin-top:20px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #ccc;padding:4px 7px;vertical-align:top}
th{background:#f3f3f3;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.cell{text-align:center;min-width:120px}.best{font-size:15px;font-weight:600}.sub{font-size:11px;color:#555}
.paper{font-size:11px;color:#333;margin-top:2px}.muted{color:#888}.missing{color:#999;font-size:16px}
.d-ok{background:#e3f4e3;color:#1c5e1c;padding:0 4px;border-radius:3px}
.d-mid{background:#fff1d6;color:#7a5200;padding:0 4px;border-radius:3px}
.d-bad{background:#fde2e1;color:#8c1d18;padding:0 4px;border-radius:3px}
.v-agrees{color:#1c5e1c;font-weight:600}.v-differs{color:#8c1d18;font-weight:600}.v-not{color:#888}
.cut{color:#b00;font-weight:700}.foot{font-size:12px;color:#444}
img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px;max-height:420px}
details summary{cursor:pointer;color:#235}.kv td:first-child{font-weight:600;white-space:nowrap}
"""


def _e(s) -> str:
    return html.escape(str(s), quote=True)


def _kv_table(d: dict) -> str:
    rows = []
    for k, v in d.items():
        if isinstance(v, (dict, list)):
            v = json.dumps(v, indent=1, sort_keys=True)
            rows.append(f"<tr><td>{_e(k)}</td><td><pre>{_e(v)}</pre></td></tr>")
        else:
            rows.append(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>")
    return '<table class="kv">' + "".join(rows) + "</table>"


def _fmt_seconds(s: float | None) -> str:
    if s is None:
        return MISSING
    s = float(s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.2f} h"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
