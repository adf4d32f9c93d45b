"""Results in Markdown are generated from records (report/docs.py): every block between
'<!-- mimicnet: KIND ARG -->' and '<!-- /mimicnet -->' is made anew from the record it names, a block that
no longer matches its record fails the suite, and a verdict word outside a block is a verdict typed by hand."""
from __future__ import annotations

from pathlib import Path

import pytest

from mimicnet.cli import main
from mimicnet.core.index import IndexRow, append_index
from mimicnet.report import docs
from mimicnet.report.common import ReportError

ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = [ROOT / "README.md", *sorted((ROOT / "docs" / "results").glob("*/README.md"))]


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_results_are_what_their_records_give(path):
    """No committed sentence states a verdict the judge does not give: every block regenerates to its
    committed text, and no line outside a block uses a verdict word."""
    assert docs.stale(path) == []
    assert docs.stray_verdicts(path) == []


def test_readme_results_come_from_blocks():
    text = (ROOT / "README.md").read_text()
    assert "<!-- mimicnet: claims docs/results/" in text and "<!-- mimicnet: rule -->" in text


def _record(tmp_path) -> Path:
    rec = tmp_path / "rec"
    idx = rec / "index.csv"
    for fam, tests in (("conv1", (0.60, 0.61, 0.62)), ("conv0", (0.40, 0.41, 0.42))):
        append_index(idx, IndexRow(kind="student", family=fam, budget=100_000, params=99_000, val_acc=0.5,
                                   test_acc=tests[0], loss="l2-logits", teacher="ens", study=f"student-{fam}-100k",
                                   trial=0, status="complete", path=str(rec / fam / "t0")))
        for k, t in enumerate(tests):
            append_index(idx, IndexRow(kind="student", family=fam, budget=100_000, params=99_000, val_acc=0.5,
                                       test_acc=t, loss="l2-logits", teacher="ens", study=f"student-{fam}-100k",
                                       seed=k + 1, repeat_of=0, status="complete", path=str(rec / fam / f"s{k}")))
    return rec


def test_blocks_are_rewritten_checked_and_stray_verdicts_found(tmp_path):
    _record(tmp_path)
    md = tmp_path / "README.md"
    md.write_text("# r\n\nThe gap holds, we think.\n\n<!-- mimicnet: claims rec -->\nold text\n<!-- /mimicnet -->\n"
                  "\n```\nholds in code is fine\n<!-- mimicnet: claims shown-in-code -->\n```\n"
                  "<!-- mimicnet: rule -->\n<!-- /mimicnet -->\n")
    assert [s.split(": ", 1)[1] for s in docs.stale(md)] == ["claims rec differs from what the record gives now",
                                                              "rule differs from what the record gives now"]
    assert docs.sync(md) and not docs.sync(md)          # the second time there is nothing to change
    text = md.read_text()
    assert "Convolutional gap" in text and "@100k +20.00" in text and "**holds** |" in text
    assert docs.stale(md) == []
    assert docs.stray_verdicts(md) == [f"{md}:3: The gap holds, we think."]
    # a changed record makes the block stale: the committed verdict cannot outlive its data
    append_index(tmp_path / "rec" / "index.csv", IndexRow(kind="student", family="conv1", budget=100_000,
                 params=99_000, val_acc=0.5, test_acc=0.20, loss="l2-logits", teacher="ens", seed=9, repeat_of=0,
                 study="student-conv1-100k", status="complete", path=str(tmp_path / "rec" / "conv1" / "s9")))
    assert len(docs.stale(md)) == 1
    # the command: --check lists the problems and exits 1; without it, it rewrites
    assert main(["docs", "--check", str(md)]) == 1
    assert main(["docs", str(md)]) == 0 and docs.stale(md) == []


def test_broken_blocks_are_one_line_errors(tmp_path, capsys):
    md = tmp_path / "x.md"
    for text, msg in (("<!-- mimicnet: rule -->\n", "never closed"), ("<!-- /mimicnet -->\n", "closes no block"),
                      ("<!-- mimicnet: nope -->\n<!-- /mimicnet -->\n", "unknown block kind 'nope'"),
                      ("<!-- mimicnet: claims missing -->\n<!-- /mimicnet -->\n", "not a record folder")):
        md.write_text(text)
        with pytest.raises(ReportError, match=msg):
            docs.render(md)
        assert main(["docs", str(md)]) == 2
        assert msg.split("'")[0] in capsys.readouterr().err


RECORDS = sorted(p.parent for p in (ROOT / "docs" / "results").glob("*/index.csv"))


@pytest.mark.parametrize("record", RECORDS, ids=lambda p: p.name)
def test_committed_records_rebuild_their_tables(record, tmp_path):
    """A record's committed tables are what `mimicnet report` makes of its index today: a table that kept a
    verdict or a number the judge no longer gives fails here (the HTML only differs in its build time)."""
    from mimicnet.report.report import build_report
    build_report(record, out_dir=tmp_path)
    tables = sorted(p.name for p in record.glob("table*.*") if p.suffix in (".md", ".csv", ".tex"))
    assert tables
    for name in tables:
        assert (tmp_path / name).read_text() == (record / name).read_text(), f"{record.name}/{name} is stale"


def test_a_record_keeps_no_path_or_password_of_the_machine(tmp_path, capsys, monkeypatch):
    """mimicnet report DIR --record DEST: paths inside the results folder become relative, others their file
    name (also after '--flag=' and '--set key='), a storage URL's password is starred, and the record's report
    builds from the copies alone."""
    import json
    rec = _record(tmp_path)
    secret = tmp_path / "secret-home" / "cifar.tar.gz"
    (rec / "reproduce.json").write_text(json.dumps({
        "command": f"mimicnet reproduce --preset cpu --data={secret} --set data={secret} --out {rec} "
                   "--storage postgresql://me:hunter2@db.example/mimic",
        "preset": "cpu", "config": {"data": str(secret)}, "data": {"path": str(secret), "sha256": "ab" * 32},
        "storage": f"journal:{tmp_path / 'shared' / 'paper.journal'}"}))
    dest = tmp_path / "record"
    monkeypatch.chdir(tmp_path)  # as the records in docs/results were made: relative folders on the command line
    assert main(["report", "rec", "--record", "record"]) == 0
    for f in dest.iterdir():
        text = f.read_text(errors="replace")
        assert str(tmp_path) not in text and "hunter2" not in text, f.name
    repro = json.loads((dest / "reproduce.json").read_text())
    assert f"--data=cifar.tar.gz --set data=cifar.tar.gz --out . " in repro["command"]
    assert "postgresql://me:***@db.example/mimic" in repro["command"] and repro["storage"] == "journal:paper.journal"
    assert "conv1/t0" in (dest / "index.csv").read_text()
