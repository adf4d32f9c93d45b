"""A property over the whole command line (issue 27), by Hypothesis: random flags and values, random --config
JSON and --set values, random bytes as archives, checkpoints, transfer sets, ensembles and index files (not `estimate`: it times real
training steps by design, minutes per example). Whatever
it is given, `mimicnet` ends with exit status 0 or 2, never a traceback, and writes nothing when it ends with 2
(but the index that `report --rebuild-index` was asked to mend, when the report after it fails).

The CLI runs in this process (main(argv), SystemExit caught) for speed; the examples are fixed (derandomize) and
bounded (EXAMPLES), so the test takes the same inputs and about the same time on every run.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from synth import run  # noqa: E402

EXAMPLES = 50

# values a flag may get: numbers of every sign and size, words, JSON, paths that are not there
VALUE = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", "0", "-1", "1e3", "nan", "inf", "1M", "0.1M", "3,4,5", "a,b", "conv2", "teacher", "onecycle",
                     "plateau", "sgd", "adam", "l2-logits", "kl", "ce", "online", "fixed", "mixup", "gcn-zca",
                     "cpu", "cuda:7", "auto", "fine", "coarse", "/proc/x", "no/such/file", "x" * 300]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
)
JSON = st.recursive(st.none() | st.booleans() | st.integers(-1000, 1000) | st.floats(allow_nan=False)
                    | st.text(max_size=8), lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c,
                                                                                             max_size=4), max_leaves=8)
CONFIG_FIELDS = ["family", "widths", "constants", "budget", "lr", "momentum", "batch_size", "max_epochs", "seed",
                 "loss", "transfer", "schedule", "dropout", "hsv", "scale_min", "optimizer", "preprocess",
                 "label_smoothing", "grad_clip", "teacher", "distill_mode", "mix", "no_such_field"]
TRAIN_FLAGS = ["--family", "--widths", "--constants", "--budget", "--lr", "--momentum", "--batch-size",
               "--max-epochs", "--seed", "--loss", "--schedule", "--dropout", "--hsv", "--scale-min", "--optimizer",
               "--preprocess", "--label-smoothing", "--grad-clip", "--distill", "--mix", "--labels", "--max-train",
               "--device"]
SET_FIELDS = ["student_trials", "teacher_trials", "seeds", "max_train", "student_budgets", "student_families",
              "pruner", "pruner_min_epochs", "sampler", "ensemble_size", "transfer_epochs", "teachers",
              "teacher_base", "student_base", "data", "nope"]
INDEX_HEADER = ("kind,family,budget,params,widths,seed,val_acc,test_acc,teacher,teacher_val_acc,teacher_test_acc,"
                "loss,mimic_mse,mimic_agreement,study,trial,status,epochs,best_epoch,max_epochs,seconds,run_id,"
                "config_hash,path,data_sha256,code_version,finished_at,repeat_of\n")


def _files(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            try:
                st_ = p.lstat()
            except OSError:
                continue
            out[str(p.relative_to(root))] = (st_.st_size, st_.st_mtime_ns) if name in filenames else (0, 0)
    return out


@st.composite
def commands(draw):
    """(argv with '{W}' for the work folder, {file name: bytes} to put in it first)."""
    files: dict[str, bytes] = {}

    def blob(name: str) -> str:
        """A file of random bytes (or, half the time, a damaged JSON or CSV) named `name` in the work folder."""
        kind = draw(st.sampled_from(["bytes", "json", "index"]))
        if kind == "bytes":
            files[name] = draw(st.binary(max_size=300))
        elif kind == "json":
            files[name] = json.dumps(draw(JSON)).encode()[: draw(st.integers(0, 200))]
        else:
            body = INDEX_HEADER + ",".join(draw(st.lists(VALUE, min_size=0, max_size=30)).__iter__()) + "\n"
            files[name] = body.encode()[: draw(st.integers(0, 600))]
        return "{W}/" + name

    def flags(names, k):
        argv = []
        for f in draw(st.lists(st.sampled_from(names), max_size=k, unique=True)):
            argv += [f, draw(VALUE)]
        return argv

    out = ["--out", "{W}/out"]
    cmd = draw(st.sampled_from(["train", "reproduce", "evaluate", "report", "ensemble", "transfer", "model",
                                "features", "data", "search", "compress"]))
    if cmd == "train":
        argv = ["train", "--data", blob("a.tar.gz"), *flags(TRAIN_FLAGS, 5), *out, "--device", "cpu"]
        if draw(st.booleans()):
            cfg = draw(st.dictionaries(st.sampled_from(CONFIG_FIELDS), JSON | VALUE, max_size=5))
            files["c.json"] = json.dumps(cfg).encode()
            argv += ["--config", "{W}/c.json"]
        if draw(st.booleans()):
            blob("t/manifest.json")
            argv += ["--loss", "l2-logits", "--transfer", "{W}/t"]
        return argv, files
    if cmd == "reproduce":
        sets = [f"{draw(st.sampled_from(SET_FIELDS))}={draw(VALUE | JSON.map(json.dumps))}"
                for _ in range(draw(st.integers(0, 3)))]
        return (["reproduce", "--preset", draw(st.sampled_from(["smoke", "cpu", "ba-caruana", "ratusznik", "x"])),
                 "--data", blob("a.tar.gz"), *[a for s in sets for a in ("--set", s)], *flags(["--max-train", "--seed"], 2),
                 *out, "--device", "cpu"], files)
    if cmd == "evaluate":
        return ["evaluate", blob("best.safetensors"), "--data", blob("a.tar.gz"),
                *flags(["--split", "--labels"], 2), "--json", "{W}/e.json", "--device", "cpu"], files
    if cmd == "report":
        blob("r/index.csv")
        if draw(st.booleans()):
            blob("r/reproduce.json")
        if draw(st.booleans()):
            blob("r/trials/0/results.json"), blob("r/trials/0/config.json")
        return ["report", "{W}/r", *draw(st.sampled_from([[], ["--rebuild-index"], ["--record", "{W}/rec"]]))], files
    if cmd == "ensemble":
        blob("run/best.safetensors"), blob("run/results.json")
        return ["ensemble", "{W}/run", "--data", blob("a.tar.gz"), *out, "--device", "cpu"], files
    if cmd == "transfer":
        blob("e/ensemble.json")
        if draw(st.booleans()):
            blob("set/manifest.json")
            return ["transfer", "--verify", "{W}/set"], files
        return ["transfer", "--teacher", "{W}/e", "--data", blob("a.tar.gz"), *flags(["--epochs", "--max-train",
                "--chunk", "--batch-size", "--seed"], 3), *out, "--device", "cpu"], files
    if cmd == "model":
        return ["model", "fold", blob("m.safetensors"), "--out", "{W}/f.safetensors"], files
    if cmd == "features":
        return ["features", "make-npz", "--from", blob("a.tar.gz"), "--out", "{W}/f.npz"], files
    if cmd == "search":
        return ["search", "run", draw(st.sampled_from(["student-conv1-10k", "baseline-conv2-0.1M", "teacher", "x"])),
                "--data", blob("a.tar.gz"), "--trials", draw(VALUE), *flags(TRAIN_FLAGS[:8], 2), *out,
                "--device", "cpu"], files
    if cmd == "compress":
        return ["compress", "--teacher", blob("t.ts"), "--data", blob("a.tar.gz"), "--budget", draw(VALUE),
                *flags(["--trials", "--seeds", "--epochs", "--families"], 2), *out, "--device", "cpu"], files
    return ["data", "info", blob("a.tar.gz")], files


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(commands())
def test_any_command_ends_with_0_or_2_one_line_and_writes_nothing_on_2(command):
    argv, files = command
    with tempfile.TemporaryDirectory() as w:
        work = Path(w)
        for name, data in files.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).write_bytes(data)
        before = _files(work)
        cwd = os.getcwd()
        os.chdir(work)  # any default output folder lands here, where it is seen
        t0 = time.perf_counter()
        try:
            rc, _, err = run([a.replace("{W}", w) for a in argv])
        finally:
            os.chdir(cwd)
        if os.environ.get("MIMICNET_PROPERTY_LOG"):
            with open(os.environ["MIMICNET_PROPERTY_LOG"], "a") as f:
                f.write(json.dumps([round(time.perf_counter() - t0, 2), rc, argv[:2], err.strip()[-150:]]) + "\n")
        assert "Traceback" not in err, err
        assert rc in (0, 2), (rc, err)
        if rc == 2:
            lines = [line for line in err.splitlines() if "error" in line]
            assert len(lines) == 1, err
            after = _files(work)
            if "index rebuilt from the run folders" in err:  # --rebuild-index mended the index, as asked, before
                mended = {k for k in set(after) | set(before) if Path(k).name.startswith("index.csv")}
                after, before = ({k: v for k, v in d.items() if k not in mended} for d in (after, before))
            assert after == before, err
