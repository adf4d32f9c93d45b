"""`mimicnet report RESULTS_DIR`: tables, figures and one HTML page from a results folder."""
from __future__ import annotations

import sys
from pathlib import Path

from ..report.common import ReportError, load_reproduce
from ..report.records import export_record
from ..report.cells import _Schedules, load_runs, planned_trials
from ..report.report import build_report, check_index
from ..report.tables import table2, table2_markdown
from ..studies.catalog import is_study_record
from ..studies.reindex import rebuild_index
from .common import out_folder


# ============================================================================================ CLI

def cmd_report(args) -> int:
    if args.rebuild_index:
        r = rebuild_index(args.results_dir)
        print(f"index rebuilt from the run folders: {r['rows']} row(s) in {r['index']}", file=sys.stderr)
    if args.record is not None:
        try:
            check_index(args.results_dir)  # a record of a partial index would be a partial table for good
            files = export_record(args.results_dir, args.record,
                                  lambda d: build_report(d, teacher=args.teacher, out_dir=d))
        except ReportError as e:
            print(f"mimicnet: error: {e}", file=sys.stderr)
            return 2
        print(f"record: {args.record} ({', '.join(files)} and the report; no path of this machine in them)")
        return 0
    try:
        path = build_report(args.results_dir, teacher=args.teacher, out_dir=args.out)
    except ReportError as e:
        print(f"mimicnet: error: {e}", file=sys.stderr)
        return 2
    repro = load_reproduce(args.results_dir)
    if is_study_record(repro):
        print((path.parent / "table.md").read_text(), end="")
        print(f"report: {path}")
        return 0
    runs = load_runs(args.results_dir)
    t2 = table2(runs, planned_trials(repro), _Schedules(Path(args.results_dir)), args.teacher)
    print(table2_markdown(t2, compact=True), end="")
    print(f"report: {path}")
    return 0


def register(subparsers) -> None:
    """Add `mimicnet report RESULTS_DIR` to the CLI's subparsers."""
    r = subparsers.add_parser("report", help="tables, figures and one HTML page from a results folder",
                              description="Build Table 1, Table 2, Figure 1 and the teacher → student curve from "
                              "RESULTS_DIR/index.csv, beside the paper's numbers, into RESULTS_DIR/report/ "
                              "(report.html is one self-contained file). Prints Table 2 and the page's path.")
    r.add_argument("results_dir", type=Path, help="the folder holding index.csv (and reproduce.json, if any)")
    r.add_argument("--teacher", default=None, help="Table 2 uses students of this teacher (its id in the index's "
                   "teacher column); default: the teacher most trials of each cell mimicked")
    r.add_argument("--out", type=out_folder, default=None, help="report folder (default RESULTS_DIR/report)")
    r.add_argument("--record", type=out_folder, default=None, metavar="DEST",
                   help="copy the folder's record (index.csv, reproduce.json, ensemble and transfer-set records) "
                   "into DEST with this machine's paths taken out, and build the report there from those copies "
                   "(what docs/results/ holds)")
    r.add_argument("--rebuild-index", dest="rebuild_index", action="store_true",
                   help="first write RESULTS_DIR/index.csv anew from its run folders (for a damaged or lost "
                   "index; the old one is kept as index.csv.old)")
    r.set_defaults(func=cmd_report)
