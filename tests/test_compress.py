"""`mimicnet compress`: a teacher of one's own (TorchScript, torch.export, or a mimicnet run) distilled end to
end into a student at a tiny budget on tiny synthetic archives (and the real subset when it is there); the
exports run in a fresh process with only torch; bad teachers and flags are one line and train nothing; a rerun
of a finished compress trains nothing more."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

from mimicnet.core import artifacts
from mimicnet.data.splits import load_train_data
from mimicnet.distill import external
from mimicnet.models.checkpoint import model_from_checkpoint
from mimicnet.models.export import (OnnxError, Standalone, fold_batchnorm, onnxruntime_missing, run_onnx_fresh,
                                    save_onnx)
from mimicnet.models.families import build_model, count_params
from mimicnet.models.inference import predict_logits
from mimicnet.studies.compress import export_student

from synth import one_line_error, run, write_archive, write_cifar100_archive

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = (0.5, 0.45, 0.4), (0.25, 0.25, 0.25)
FAST = ["--epochs", "1", "--transfer-epochs", "1", "--batch-size", "64", "--device", "cpu", "--no-onnx"]  # ONNX: `done`


class TinyTeacher(nn.Module):
    def __init__(self, k: int = 10, scale: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(128, k)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1)) * self.scale


def trained_teacher(archive, k: int = 10, steps: int = 40) -> nn.Module:
    """A TinyTeacher fitted for a few Adam steps on the archive's training split (normalised by MEAN, STD)."""
    torch.manual_seed(0)
    m = TinyTeacher(k)
    d = load_train_data(archive)
    x = (d.train.x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), d.train.y).backward()
        opt.step()
    return m.eval()


def save_script(model: nn.Module, path, meta: dict | None = None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        extra = {"mimicnet.json": json.dumps(meta)} if meta is not None else {}
        torch.jit.save(torch.jit.script(model), str(path), _extra_files=extra)
    return path


def html_of(out) -> str:
    return (out / "report.html").read_text()


def table(stdout: str) -> str:
    """The result table printed at the end (from its heading to the student line)."""
    return stdout[stdout.index("\nbudget "):stdout.index("\nreport: ")]


@pytest.fixture(scope="module")
def c10(tmp_path_factory):
    return write_archive(tmp_path_factory.mktemp("c10") / "c10.tar.gz", n_train=200, n_test=100)


@pytest.fixture(scope="module")
def teacher_ts(c10, tmp_path_factory):
    return save_script(trained_teacher(c10), tmp_path_factory.mktemp("t") / "teacher.ts",
                       {"mean": list(MEAN), "std": list(STD)})


@pytest.fixture(scope="module")
def done(c10, teacher_ts, tmp_path_factory):
    """A finished compress of the TorchScript teacher: 2 families, 2 trials each, 1 seed, 2 epochs."""
    out = tmp_path_factory.mktemp("compress") / "out"
    argv = ["compress", "--teacher", teacher_ts, "--budget", "20k", "--data", c10, "--out", out,
            "--families", "conv0,conv2", "--trials", "2", "--seeds", "1", "--epochs", "2", "--transfer-epochs", "2",
            "--batch-size", "64", "--device", "cpu"]
    rc, stdout, err = run(argv)
    assert rc == 0, err
    return out, argv, stdout


# ---- end to end

def test_compress_writes_student_exports_and_report(done, teacher_ts):
    out, _, stdout = done
    assert "teacher: TorchScript" in stdout and "validation accuracy" in stdout and "(from metadata)" in stdout
    res = artifacts.read_json(out / "results.json")
    assert [r["family"] for r in res["families"]] == ["conv0", "conv2"]
    best = max((r for r in res["families"] if r.get("val_mean") is not None), key=lambda r: r["val_mean"])
    assert res["best_family"] == best["family"]       # chosen by the seed mean of validation
    for r in res["families"]:
        assert r["trials"] == 2 and r["n"] == 1 and r["stats_over"] == "seed reruns"
        assert 0 <= r["test_mean"] <= 1 and 0 <= r["agree_mean"] <= 1
        assert 0 < r["params"] <= 20_000 * 1.1
        assert set(r["latency"]["cpu"]) == {"1", "256"}
    assert res["teacher"]["val_acc"] > 0.3 and set(res["teacher"]["latency"]["cpu"]) == {"1", "256"}
    # the config and the code version, exactly
    rec = artifacts.read_json(out / "compress.json")
    assert rec["config"]["budget"] == 20_000 and rec["config"]["families"] == ["conv0", "conv2"]
    trial = artifacts.read_json(out / "studies" / "student-conv2-20k" / "trials" / "0" / "config.json")
    assert trial["config"]["grad_clip"] == 20.0   # as the cpu preset's students
    assert rec["code_version"] and rec["teacher"]["file_sha256"] == artifacts.file_sha256(teacher_ts)
    # the transfer set names the teacher file's sha256
    man = artifacts.read_json(out / "transfer" / "manifest.json")
    assert man["teacher"]["file_sha256"] == artifacts.file_sha256(teacher_ts)
    assert man["teacher"]["kind"] == "external" and man["teacher"]["normalize"]["normalize"] == "mean-std"
    # the student: a mimicnet checkpoint with its config, and both exports
    s = artifacts.read_json(out / "student" / "student.json")
    for name in ("best.safetensors", "config.json", "student.ts", "student.pt2"):
        assert (out / "student" / name).is_file()
    assert s["family"] == res["best_family"] and s["normalize"] == "none"
    assert s["fold"]["bottleneck"] in ("none", "kept", "folded")
    assert max(v for k, v in s["max_abs_diff"].items() if k != "student.onnx") <= 1e-4
    if onnxruntime_missing():
        print(f"ONNX parity not checked: {onnxruntime_missing()}")
    else:  # the ONNX file, run by onnxruntime in a fresh process, matched the checkpoint (batch 256 and 1)
        assert "student.onnx" in s["files"] and s["max_abs_diff"]["student.onnx"] <= 1e-4 * max(1, s["max_abs_logit"])
        assert "fresh process" in s["onnx"]["check"] and "student.onnx" in html_of(out)
    html = (out / "report.html").read_text()
    for phrase in ("conv0", "conv2", "agree %", "cpu b1 ms", "cpu b256 ms", "student.pt2", "[0, 1]"):
        assert phrase in html
    assert "* " + res["best_family"] in table(stdout)


def test_student_checkpoint_evaluates_like_the_run(done, c10):
    out = done[0]
    s = artifacts.read_json(out / "student" / "student.json")
    rc, stdout, err = run(["evaluate", out / "student", "--data", c10, "--device", "cpu"])
    assert rc == 0, err
    assert f"accuracy {s['test_acc']:.4f}" in stdout


def test_exports_run_in_a_fresh_process_with_only_torch(done, c10, tmp_path):
    out = done[0]
    d = load_train_data(c10)
    x = d.test.x[:50]
    model, meta = model_from_checkpoint(out / "student" / "best.safetensors")
    want = predict_logits(model, x, meta["input_scale"], torch.device("cpu"))
    torch.save(x.float() / 255, tmp_path / "x.pt")
    code = ("import sys, torch\n"
            f"x = torch.load({str(tmp_path / 'x.pt')!r})\n"
            f"ts = torch.jit.load({str(out / 'student' / 'student.ts')!r})\n"
            f"ep = torch.export.load({str(out / 'student' / 'student.pt2')!r}).module()\n"
            "with torch.no_grad():\n"
            f"    torch.save({{'ts': ts(x), 'ep': ep(x), 'one': ep(x[:1])}}, {str(tmp_path / 'y.pt')!r})\n"
            "assert not any(m.startswith('mimicnet') for m in sys.modules), 'mimicnet was imported'\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    y = torch.load(tmp_path / "y.pt")
    torch.testing.assert_close(y["ts"], want, atol=1e-4, rtol=0)
    torch.testing.assert_close(y["ep"], want, atol=1e-4, rtol=0)
    torch.testing.assert_close(y["one"], want[:1], atol=1e-4, rtol=0)


def test_a_rerun_trains_nothing_and_prints_the_same_result(done):
    out, argv, first = done
    index = (out / "index.csv").read_text()
    results = {p: p.stat().st_mtime_ns for p in out.rglob("results.json") if p.parent != out}
    exports = {p: p.stat().st_mtime_ns for p in (out / "student").iterdir()}
    rc, stdout, err = run(argv)
    assert rc == 0, err
    assert "epoch " not in stdout and "trial 0:" not in stdout and "again with seed" not in stdout
    assert (out / "index.csv").read_text() == index
    assert {p: p.stat().st_mtime_ns for p in out.rglob("results.json") if p.parent != out} == results
    assert {p: p.stat().st_mtime_ns for p in (out / "student").iterdir()} == exports
    assert table(stdout) == table(first)


def test_another_teacher_in_the_same_folder_is_refused(done, c10, tmp_path):
    out, argv, _ = done
    other = save_script(TinyTeacher(scale=2.0).eval(), tmp_path / "other.ts", {"normalize": "standardize"})
    argv = [other if a == argv[argv.index("--teacher") + 1] else a for a in argv]
    one_line_error(argv, str(out), "another teacher")


# ---- a .pt2 teacher; killed and continued

def test_a_pt2_teacher_with_metadata_beside_it_and_a_killed_run_continues(c10, tmp_path, monkeypatch):
    model = trained_teacher(c10, steps=10)
    ep = torch.export.export(model, (torch.rand(2, 3, 32, 32),),
                             dynamic_shapes={"x": {0: getattr(torch.export.Dim, "DYNAMIC", None)
                                                   or torch.export.Dim("batch")}})
    pt2 = tmp_path / "teacher.pt2"
    torch.export.save(ep, str(pt2))
    artifacts.write_json(tmp_path / "teacher.pt2.json", {"mean": list(MEAN), "std": list(STD)})
    out = tmp_path / "out"
    argv = ["compress", "--teacher", pt2, "--budget", "20k", "--data", c10, "--out", out, "--families", "conv2",
            "--trials", "1", "--seeds", "0", "--no-latency", *FAST]

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr("mimicnet.studies.compress.export_student", killed)
    rc, stdout, _ = run(argv)
    assert rc == 130 and "teacher: torch.export program" in stdout
    trial = out / "studies" / "student-conv2-20k" / "trials" / "0" / "results.json"
    mtime = trial.stat().st_mtime_ns
    monkeypatch.undo()
    rc, stdout, err = run(argv)
    assert rc == 0, err
    assert "epoch " not in stdout and trial.stat().st_mtime_ns == mtime   # continued: nothing trained again
    s = artifacts.read_json(out / "student" / "student.json")
    assert s["family"] == "conv2" and (out / "student" / "student.pt2").is_file()
    assert artifacts.read_json(out / "teacher" / "teacher.json")["kind"] == "export"


# ---- CIFAR-100: a mimicnet run as the teacher

def test_cifar100_train_then_compress(tmp_path):
    c100 = write_cifar100_archive(tmp_path / "c100.tar.gz", n_train=300, n_test=60)
    teacher = tmp_path / "teacher"
    rc, _, err = run(["train", "--data", c100, "--family", "conv1", "--widths", "4,6,16", "--max-epochs", "1",
                      "--batch-size", "64", "--no-augment", "--device", "cpu", "--out", teacher])
    assert rc == 0, err
    out = tmp_path / "out"
    rc, stdout, err = run(["compress", "--teacher", teacher, "--budget", "30k", "--data", c100, "--out", out,
                           "--families", "conv0", "--trials", "1", "--seeds", "0", "--no-latency", *FAST])
    assert rc == 0, err
    assert "100 classes" in stdout
    s = artifacts.read_json(out / "student" / "student.json")
    assert s["num_classes"] == 100 and s["family"] == "conv0"
    assert artifacts.read_json(out / "transfer" / "manifest.json")["num_classes"] == 100
    assert not (out / "teacher").exists()   # a mimicnet run is its own teacher folder
    # the normalisation flags are for teacher files only
    one_line_error(["compress", "--teacher", teacher, "--budget", "30k", "--data", c100, "--out", tmp_path / "o2",
                    "--teacher-normalize", "standardize"], "for TorchScript and .pt2 teachers")


def test_the_real_subset(cifar_subset_path, tmp_path):
    teacher = save_script(TinyTeacher().eval(), tmp_path / "t.ts")
    out = tmp_path / "out"
    rc, stdout, err = run(["compress", "--teacher", teacher, "--teacher-normalize", "standardize", "--budget", "20k",
                           "--data", cifar_subset_path, "--max-train", "300", "--out", out, "--families", "conv1",
                           "--trials", "1", "--seeds", "0", "--no-latency", *FAST])
    assert rc == 0, err
    assert "(from flags)" in stdout
    res = artifacts.read_json(out / "results.json")
    assert res["data"]["n_val"] == 814 and res["families"][0]["test_mean"] is not None


# ---- bad teachers and flags: one line, nothing trained

class WrongShape(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))[:, :1].repeat(1, 7)


class OneChannel(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 10, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)


class NaNs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)).repeat(1, 4)[:, :10] * float("nan")


@pytest.mark.parametrize("make, phrases", [
    (lambda d: save_script(WrongShape(), d / "wrong.ts"), ("7 outputs per image", "10 classes")),
    (lambda d: save_script(NaNs(), d / "nan.ts"), ("not finite",)),
    (lambda d: save_script(OneChannel(), d / "gray.ts"), ("fails on a batch of images 2×3×32×32",)),
    (lambda d: d / "notes.txt" if (d / "notes.txt").write_text("not a model\n") else None, ("not a model file",)),
    (lambda d: torch.save(TinyTeacher(), d / "pickle.pt") or d / "pickle.pt", ("torch.save pickle",)),
    (lambda d: d / "missing.ts", ("no such file",)),
], ids=["wrong-shape", "nan", "crash", "text-file", "pickle", "missing"])
def test_bad_teachers_are_one_line_and_train_nothing(c10, tmp_path, make, phrases):
    teacher = make(tmp_path)
    out = tmp_path / "out"
    err = one_line_error(["compress", "--teacher", teacher, "--teacher-normalize", "none", "--budget", "20k",
                          "--data", c10, "--out", out, *FAST], *phrases)
    assert str(teacher) in err
    assert not out.exists()


def test_a_teacher_file_without_normalisation_says_how_to_give_it(c10, tmp_path):
    teacher = save_script(TinyTeacher().eval(), tmp_path / "t.ts")
    one_line_error(["compress", "--teacher", teacher, "--budget", "20k", "--data", c10, "--out", tmp_path / "o"],
                   "--teacher-mean", "--teacher-normalize", "mimicnet.json")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flags, phrase", [
    (["--budget", "0"], "--budget"),
    (["--budget", "20k", "--families", "conv9"], "unknown student family 'conv9'"),
    (["--budget", "100", "--families", "conv4"], "too small for a conv4 student"),
    (["--budget", "20k", "--trials", "0"], "--trials must be an integer >= 1"),
    (["--budget", "20k", "--seeds", "-1"], "--seeds must be an integer >= 0"),
    (["--budget", "20k", "--teacher-mean", "0.5,0.5", "--teacher-std", "0.2,0.2,0.2"], "3 numbers"),
    (["--budget", "20k", "--teacher-mean", "125,123,114", "--teacher-std", "63,62,66"], "[0, 1] scale"),
    (["--budget", "20k", "--teacher-mean", "0.5,0.5,0.5"], "a mean needs a std"),
    (["--budget", "20k", "--teacher-mean", "0.5,0.5,0.5", "--teacher-std", "0.2,0.2,0.2",
      "--teacher-normalize", "none"], "not both"),
    (["--budget", "20k", "--epochs", "30"], "--pruner-min-epochs 5: the first rung falls inside"),
    (["--budget", "20k", "--grad-clip", "-1"], "--grad-clip must be a number >= 0"),
], ids=["budget", "family", "tiny-budget", "trials", "seeds", "mean-length", "mean-scale", "mean-alone", "mean-and-normalize",
        "rung-in-warmup", "grad-clip"])
def test_bad_flags_are_one_line(c10, teacher_ts, tmp_path, flags, phrase):
    out = tmp_path / "out"
    one_line_error(["compress", "--teacher", teacher_ts, "--data", c10, "--out", out, *flags], phrase)
    assert not out.exists()


# ---- pieces

def test_detect_reads_the_kind_from_the_content(teacher_ts, tmp_path):
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(teacher_ts.read_bytes())
    assert external.detect(renamed) == external.TORCHSCRIPT
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text("{}")
    assert external.detect(tmp_path / "run") == external.MIMICNET
    with pytest.raises(external.TeacherError, match="not a teacher"):
        external.detect(tmp_path)


def test_an_exported_student_is_itself_a_teacher_file(done):
    ts = done[0] / "student" / "student.ts"
    assert external.detect(ts) == external.TORCHSCRIPT
    _, meta = external.load_external(ts, external.TORCHSCRIPT)
    norm, source = external.resolve_normalization(ts, meta)
    assert (norm.kind, source) == ("none", "metadata") and meta["num_classes"] == 10


def test_external_teacher_applies_its_normalisation():
    inner = TinyTeacher().eval()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    t = external.ExternalTeacher(inner, external.normalization(None, MEAN, STD, "test"))
    want = inner((x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    torch.testing.assert_close(predict_logits(t, x, 1.0, torch.device("cpu")), want.detach())
    s = external.ExternalTeacher(inner, external.normalization("standardize", None, None, "test"))
    torch.testing.assert_close(predict_logits(s, x, 1.0, torch.device("cpu")),
                               predict_logits(inner, x, 1.0, torch.device("cpu")))


def test_batchnorm_and_a_wide_bottleneck_are_folded_for_export(c10, tmp_path):
    """A conv0 whose bottleneck is wider than folding costs is shipped folded (fewer parameters); batch norm is
    folded into the layer before it; the exports give the checkpoint's outputs."""
    data = load_train_data(c10)
    for fam, widths, bn in (("conv0", (50, 10), False), ("conv2", (6, 6, 12), True)):
        torch.manual_seed(0)
        net = build_model(fam, widths, batchnorm=bn)
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        run_dir = tmp_path / fam
        meta = {**net.config(), "input_scale": 1.1, "preprocess": "per-image-standardise", "params": count_params(net)}
        artifacts.save_checkpoint(run_dir / "best.safetensors", {f"model.{k}": v for k, v in net.state_dict().items()},
                                  meta)
        artifacts.write_json(run_dir / "config.json", {"config": {}})
        row = {"path": str(run_dir), "what": "trial 0", "val_acc": 0.5, "test_acc": 0.5, "agreement": 0.5}
        s = export_student(row, tmp_path / f"{fam}-student", data, {}, log=lambda m: None, onnx=False)
        x = data.test.x[:20]
        want = predict_logits(net, x, 1.1, torch.device("cpu"))
        shipped, smeta = model_from_checkpoint(tmp_path / f"{fam}-student" / "best.safetensors")
        torch.testing.assert_close(predict_logits(shipped, x, 1.1, torch.device("cpu")), want, atol=1e-4, rtol=0)
        if fam == "conv0":
            assert s["fold"]["bottleneck"] == "folded" and smeta["folded"] and s["params"] < count_params(net)
        else:
            assert "batchnorm" in s["fold"] and s["params"] < count_params(net)
            folded = Standalone(fold_batchnorm(net.eval()), 1.1)
            assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        assert max(s["max_abs_diff"].values()) <= 1e-4


def test_a_latency_that_fails_is_recorded_once_and_shown_as_missing(tmp_path):
    # a teacher that cannot be timed on a device (a traced device, out of memory at batch 256) must not cost
    # the finished run: the failure is kept in latency.json, the page shows "—", and it is not tried again
    from mimicnet.report.compress import MISSING, _latency_cells
    from mimicnet.studies.compress import LatencyCache

    class Fails(nn.Module):
        takes_images = True

        def forward(self, x):
            raise RuntimeError("Expected all tensors to be on the same device\nmore")
    calls = []
    cache = LatencyCache(tmp_path / "latency.json")
    got = cache.get("teacher-x", lambda: calls.append(1) or Fails(), ["cpu"], log=lambda s: None)
    assert got == {"cpu": {"error": "Expected all tensors to be on the same device"}}
    again = LatencyCache(tmp_path / "latency.json").get("teacher-x", lambda: calls.append(1) or Fails(), ["cpu"],
                                                         log=lambda s: None)
    assert again == got and len(calls) == 1
    assert set(_latency_cells(got, ["cpu"])) == {MISSING}


def test_a_failed_run_row_keeps_the_widths_it_trained_with(tmp_path):
    # a pruned or diverged run on 100 classes: its row shows the widths of its checkpoint, not a 10-class solve
    from mimicnet.train.config import TrainConfig
    from mimicnet.train.run import failed_row
    run = tmp_path / "run"
    run.mkdir()
    artifacts.write_json(run / "last.json", {"widths": [11, 22, 33], "num_classes": 100})
    cfg = TrainConfig.of(family="conv1", budget=20_000, constants=(0.5, 0.5))
    assert failed_row(cfg, run).widths == (11, 22, 33)
    assert failed_row(cfg, tmp_path / "none").widths not in (None, (11, 22, 33))


def test_onnx_export_has_a_dynamic_batch_its_metadata_and_the_same_logits(tmp_path):
    if onnxruntime_missing():
        pytest.skip(f"ONNX parity: {onnxruntime_missing()}")
    import onnx
    torch.manual_seed(0)
    net = build_model("conv2", (6, 8, 12), num_classes=10, batchnorm=True)
    for m in net.modules():  # batch-norm statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model = Standalone(fold_batchnorm(net.eval()), 1.1).eval()
    save_onnx(model, tmp_path / "m.onnx", {"format": "x", "num_classes": 10})
    proto = onnx.load(str(tmp_path / "m.onnx"))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert proto.graph.input[0].name == "images" and not dims[0].HasField("dim_value")  # batch is symbolic
    assert [d.dim_value for d in dims[1:]] == [3, 32, 32]
    assert json.loads({p.key: p.value for p in proto.metadata_props}["mimicnet.json"])["num_classes"] == 10
    x = torch.randint(0, 256, (9, 3, 32, 32), dtype=torch.uint8).float() / 255
    y, said = run_onnx_fresh(tmp_path / "m.onnx", x)
    with torch.no_grad():
        want = model(x)
    assert said["metadata"] == ["mimicnet.json"]
    assert float((y - torch.cat([want, want[:1]])).abs().max()) <= 1e-4


def test_onnx_errors_name_the_file(tmp_path):
    if onnxruntime_missing():
        pytest.skip(f"ONNX parity: {onnxruntime_missing()}")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(OnnxError, match="bad.onnx: onnxruntime could not run it"):
        run_onnx_fresh(tmp_path / "bad.onnx", torch.rand(1, 3, 32, 32))
