"""CIFAR-100: read by its contents (fine labels, 100 classes; coarse, 20), through data info, train, evaluate,
transfer and download, on tiny archives written here (300 train / 60 test images)."""
from __future__ import annotations

import hashlib
import http.server
import json
import pickle
import tarfile
import threading
from functools import partial

import numpy as np
import pytest
import torch

from mimicnet.cli import main
from mimicnet.core.errors import ConfigError
from mimicnet.data import cifar
from mimicnet.data.cifar import (CIFAR100_MD5, CIFAR100_URL, COARSE_CLASSES, FINE_CLASSES, DataError, download_cifar100,
                                 file_md5, file_sha256, load_cifar, load_split)
from mimicnet.data.cifar101 import load_test_source
from mimicnet.data.splits import Split, TrainData, load_train_data
from mimicnet.distill.student import train_run
from mimicnet.distill.transfer import TransferConfig, TransferError, generate
from mimicnet.distill.transfer_format import _identity
from mimicnet.models.checkpoint import model_from_checkpoint
from mimicnet.models.families import solve_budget
from mimicnet.core import artifacts
from mimicnet.train.config import TrainConfig, resolve_widths

from synth import write_archive, write_cifar100_archive, write_cifar_archive


@pytest.fixture(scope="module")
def c100(tmp_path_factory):
    d = tmp_path_factory.mktemp("c100")
    return write_cifar100_archive(d / "cifar-100-python.tar.gz")


@pytest.fixture(scope="module")
def c10(tmp_path_factory):
    d = tmp_path_factory.mktemp("c10")
    return write_archive(d / "c10.tar.gz", n_train=100, n_test=20)


def one_line_error(capsys, argv, *phrases) -> str:
    """`mimicnet argv` ends with exit status 2 and ONE line on stderr holding every phrase."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for p in phrases:
        assert p in err, err
    return err


# ---- reading

def test_constants_are_the_official_archive():
    assert CIFAR100_URL == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert CIFAR100_MD5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert len(FINE_CLASSES) == len(set(FINE_CLASSES)) == 100 and len(COARSE_CLASSES) == len(set(COARSE_CLASSES)) == 20
    assert FINE_CLASSES[:3] == ("apple", "aquarium_fish", "baby") and COARSE_CLASSES[-1] == "vehicles_2"


def test_fine_labels_by_default_coarse_on_request(c100):
    raw = pickle.loads(tarfile.open(c100).extractfile("cifar-100-python/train").read())
    fine = load_cifar(c100)
    assert fine.dataset == "cifar100" and fine.name == "CIFAR-100" and fine.labels == "fine"
    assert fine.x_train.shape == (300, 3, 32, 32) and fine.x_train.dtype == torch.uint8
    assert fine.x_test.shape == (60, 3, 32, 32)
    assert fine.classes == tuple(f"fine{i}" for i in range(100))  # from meta
    assert fine.y_train.tolist() == raw[b"fine_labels"] and fine.y_train.dtype == torch.int64
    assert torch.equal(fine.x_train.reshape(300, -1), torch.from_numpy(raw[b"data"]))
    assert fine.sha256 == file_sha256(c100)
    coarse = load_cifar(c100, labels="coarse")
    assert coarse.labels == "coarse" and coarse.classes == tuple(f"coarse{i}" for i in range(20))
    assert coarse.y_train.tolist() == raw[b"coarse_labels"] and torch.equal(coarse.y_test, fine.y_test // 5)
    assert torch.equal(coarse.x_train, fine.x_train) and coarse.sha256 == fine.sha256
    x, y = load_split(c100, "val", labels="coarse")
    assert len(x) == 60 and torch.equal(y, coarse.y_train[240:])


def test_train_data_carries_the_class_count_and_switches_labels(c100):
    fine = load_train_data(c100)
    assert fine.num_classes == 100 and fine.labels == "fine" and fine.dataset == "cifar100"
    assert (len(fine.train.x), len(fine.val.x), len(fine.test.x)) == (240, 60, 60)
    coarse = load_train_data(c100, labels="coarse")
    assert coarse.num_classes == 20 and int(coarse.train.y.max()) < 20
    switched = fine.with_labels("coarse")
    assert switched.num_classes == 20 and switched.labels == "coarse"
    for a, b in ((switched.train, coarse.train), (switched.val, coarse.val), (switched.test, coarse.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert switched.with_labels("fine").num_classes == 100 and fine.with_labels("fine") is fine
    few = load_train_data(c100, max_train=50, labels="coarse")
    assert len(few.train.y) == 50 and torch.equal(few.with_labels("fine").train.y, fine.train.y[:50])
    # data with one label set (a feature file, a hand-made TrainData): coarse is a one-line error
    plain = TrainData(Split(fine.train.x, fine.train.y), Split(fine.val.x, fine.val.y), None, 100, source="feats.npz")
    with pytest.raises(DataError, match="feats.npz: a feature file has no coarse labels"):
        plain.with_labels("coarse")
    with pytest.raises(DataError, match="labels must be one of fine, coarse"):
        fine.with_labels("medium")


def test_recognised_by_contents_not_name(tmp_path, c100):
    # a CIFAR-100 archive under CIFAR-10's name, members at the top level, a plain .tar, a test-only one
    renamed = tmp_path / "cifar-10-python.tar.gz"
    renamed.write_bytes(c100.read_bytes())
    assert load_cifar(renamed).dataset == "cifar100"
    flat = write_cifar100_archive(tmp_path / "flat.tar", n_train=20, n_test=10, folder="")
    assert load_cifar(flat).classes[0] == "fine0" and load_cifar(flat).x_train.shape[0] == 20
    test_only = write_cifar100_archive(tmp_path / "t.tar.gz", n_test=10, train=False, meta=False)
    d = load_test_source(test_only, labels="coarse")
    assert d.x_train is None and d.classes == COARSE_CLASSES  # no meta: the official names
    with pytest.raises(DataError, match="no train: split 'val' is not available"):
        load_split(test_only, "val")
    with pytest.raises(DataError, match=r"holds no training batches \(train\)"):
        load_train_data(test_only)


def test_folder_and_parent_folder_match_archive(tmp_path, c100):
    out = tmp_path / "x"
    with tarfile.open(c100) as tf:
        tf.extractall(out, filter="data")
    a = load_cifar(c100, "coarse")
    for folder in (out, out / "cifar-100-python"):
        d = load_cifar(folder, "coarse")
        assert d.dataset == "cifar100" and d.classes == a.classes
        assert torch.equal(d.x_train, a.x_train) and torch.equal(d.y_test, a.y_test)
        assert d.source == str((out / "cifar-100-python").resolve())
    h = hashlib.sha256()
    for name in ("train", "test", "meta"):
        h.update((out / "cifar-100-python" / name).read_bytes())
    assert load_cifar(out).sha256 == h.hexdigest()
    (out / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match="holds both cifar-10-batches-py and cifar-100-python"):
        load_cifar(out)


BATCH = {b"data": np.zeros((4, 3072), np.uint8), b"fine_labels": [0, 1, 2, 99], b"coarse_labels": [0, 0, 0, 19],
         b"filenames": [b"a", b"b", b"c", b"d"], b"batch_label": b"x"}
META = {b"fine_label_names": [b"f"] * 100, b"coarse_label_names": [b"c"] * 20}


def _archive(tmp_path, **members):
    """A CIFAR-100 archive of valid train, test and meta, but for the members given."""
    return write_cifar_archive(tmp_path / "bad.tar.gz", {"train": BATCH, "test": BATCH, "meta": META, **members},
                               "cifar-100-python")


@pytest.mark.parametrize("name, change, phrase", [
    ("train", lambda b: b"\x00garbage", "not a readable pickle"),
    ("train", lambda b: {k: v for k, v in b.items() if k != b"coarse_labels"}, "no b'coarse_labels' key"),
    ("train", lambda b: {**b, b"fine_labels": [0, 1, 100, 3]}, "fine_labels outside 0..99 (found 100)"),
    ("test", lambda b: {**b, b"coarse_labels": [0, 20, 1, 1]}, "coarse_labels outside 0..19 (found 20)"),
    ("test", lambda b: {**b, b"fine_labels": [0, 1]}, "2 fine_labels for 4 images"),
    ("meta", lambda b: {b"fine_label_names": [b"x"] * 100}, "not a CIFAR-100 meta"),
], ids=["garbage", "no-coarse", "fine-100", "coarse-20", "n-labels", "meta"])
def test_bad_member_is_one_line_naming_file_and_member(tmp_path, name, change, phrase):
    path = _archive(tmp_path, **{name: change(META if name == "meta" else BATCH)})
    with pytest.raises(DataError) as e:
        load_cifar(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path.resolve())) and f"member cifar-100-python/{name}" in msg
    assert phrase in msg, msg


def test_mixed_or_empty_archive_is_one_line(tmp_path, make_cifar_batch):
    with pytest.raises(DataError, match="holds both CIFAR-10 batches .* and CIFAR-100 files"):
        load_cifar(_archive(tmp_path, data_batch_1=make_cifar_batch(4)))
    empty = write_cifar_archive(tmp_path / "e.tar.gz", {"readme": b"hi"})
    with pytest.raises(DataError, match="no CIFAR-10 batches found .* nor CIFAR-100 files"):
        load_cifar(empty)


def test_coarse_labels_of_cifar10_are_one_line(c10, capsys, tmp_path):
    for load in (lambda: load_cifar(c10, "coarse"), lambda: load_train_data(c10, labels="coarse"),
                 lambda: load_train_data(c10).with_labels("coarse"), lambda: load_test_source(c10, "coarse")):
        with pytest.raises(DataError) as e:
            load()
        msg = str(e.value)
        assert "\n" not in msg and "c10.tar.gz" in msg and "CIFAR-10 has no coarse labels" in msg, msg
    one_line_error(capsys, ["data", "info", c10, "--labels", "coarse"], "c10.tar.gz", "no coarse labels")
    one_line_error(capsys, ["train", "--data", c10, "--labels", "coarse", "--family", "conv1", "--widths", "4,4,8",
                            "--max-epochs", "1", "--device", "cpu", "--out", tmp_path / "never"],
                   "c10.tar.gz", "CIFAR-10 has no coarse labels")
    one_line_error(capsys, ["train", "--data", c10, "--labels", "medium", "--family", "conv1", "--widths", "4,4,8"],
                   "labels must be one of fine, coarse")


# ---- the command line

def test_data_info(c100, capsys):
    assert main(["data", "info", str(c100)]) == 0
    out = capsys.readouterr().out
    assert "dataset CIFAR-100, fine labels: 100 classes" in out and "classes fine0, fine1," in out
    assert "train 300 images -> 240 train + 60 validation" in out and "test 60 images" in out
    assert main(["data", "info", str(c100), "--labels", "coarse"]) == 0
    out = capsys.readouterr().out
    assert "coarse labels: 20 classes" in out and "coarse19" in out and "fine0" not in out


@pytest.fixture(scope="module")
def trained(c100, tmp_path_factory, one_thread):
    """One epoch of a small conv1 on the fine and on the coarse labels, through `mimicnet train`."""
    d = tmp_path_factory.mktemp("runs")
    runs = {}
    for labels in ("fine", "coarse"):
        runs[labels] = d / labels
        assert main(["train", "--data", str(c100), "--labels", labels, "--family", "conv1", "--widths", "4,6,16",
                     "--max-epochs", "1", "--batch-size", "64", "--no-augment", "--device", "cpu",
                     "--out", str(runs[labels])]) == 0
    return runs


@pytest.mark.parametrize("labels, n", [("fine", 100), ("coarse", 20)])
def test_train_end_to_end_gives_one_logit_per_class(trained, labels, n):
    model, meta = model_from_checkpoint(trained[labels] / "best.safetensors")
    assert meta["num_classes"] == n
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, n)
    saved = json.loads((trained[labels] / "config.json").read_text())
    # the default label set is not written (CIFAR-10 runs keep their config.json), another one is
    assert saved["config"].get("labels", "fine") == labels and ("labels" in saved["config"]) == (labels == "coarse")
    res = json.loads((trained[labels] / "results.json").read_text())
    assert 0 <= res["test_acc"] <= 1 and res["data_sha256"]


def test_evaluate_takes_labels_and_refuses_a_class_mismatch(trained, c100, capsys):
    assert main(["evaluate", str(trained["coarse"]), "--data", str(c100), "--labels", "coarse",
                 "--device", "cpu"]) == 0
    assert "on the test split" in capsys.readouterr().out
    one_line_error(capsys, ["evaluate", trained["fine"], "--data", c100, "--labels", "coarse", "--device", "cpu"],
                   "has 100 outputs", "20 classes")


def test_a_budget_counts_the_data_classes(c100, tmp_path, one_thread):
    cfg = TrainConfig.of(family="conv1", budget=30_000, constants=(0.5, 0.5), data=str(c100), max_epochs=1,
                         batch_size=128, augment=False, device="cpu")
    for labels, n in (("fine", 100), ("coarse", 20)):
        res = train_run(cfg.replace(labels=labels), tmp_path / labels, log=lambda s: None)
        want = solve_budget("conv1", 30_000, (0.5, 0.5), num_classes=n)
        assert tuple(res["widths"]) == want == resolve_widths(cfg, n)
        assert abs(res["params"] - 30_000) / 30_000 < 0.05
    assert resolve_widths(cfg, 100) != resolve_widths(cfg)  # 10 classes: another dependent width


def test_transfer_set_and_student_on_coarse_labels(trained, c100, tmp_path, capsys, one_thread):
    tdir = tmp_path / "ts"
    assert main(["transfer", "--teacher", str(trained["coarse"]), "--data", str(c100), "--labels", "coarse",
                 "--epochs", "1", "--out", str(tdir), "--device", "cpu"]) == 0
    man = json.loads((tdir / "manifest.json").read_text())
    assert man["num_classes"] == 20 and man["config"]["labels"] == "coarse"
    assert int(np.fromfile(tdir / "train_labels.i32", "<i4").max()) < 20
    # the fine teacher cannot label coarse classes, nor a coarse set teach a fine student
    with pytest.raises(TransferError, match="teacher has 100 outputs"):
        generate(TransferConfig(data=str(c100), labels="coarse", epochs=1, device="cpu"), trained["fine"],
                 tmp_path / "no", log=lambda s: None)
    student = TrainConfig.of(family="conv1", widths=(4, 6, 16), data=str(c100), transfer=str(tdir), loss="l2-logits",
                             max_epochs=1, batch_size=64, lr=0.001, augment=False, device="cpu")
    with pytest.raises(ConfigError, match="20 outputs .* 100 classes"):
        train_run(student, tmp_path / "s-fine", log=lambda s: None)
    res = train_run(student.replace(labels="coarse"), tmp_path / "s", log=lambda s: None)
    assert model_from_checkpoint(tmp_path / "s" / "best.safetensors")[1]["num_classes"] == 20
    assert res["mimic_agreement"] is not None


def test_transfer_identity_of_existing_sets_is_unchanged():
    cfg = TransferConfig(data="a.tar.gz", epochs=3)
    old = {k: v for k, v in artifacts.to_jsonable(cfg).items() if k not in ("device", "data", "labels")}
    want = hashlib.sha256(json.dumps({"config": old, "teacher_sha256": "t", "data_sha256": "d"},
                                     sort_keys=True).encode()).hexdigest()[:16]
    assert _identity(cfg, "t", "d") == want
    assert _identity(TransferConfig(data="a.tar.gz", epochs=3, labels="coarse"), "t", "d") != want
    with pytest.raises(TransferError, match="labels must be one of fine, coarse"):
        TransferConfig(data="a", labels="x").validate()


# ---- the config field

def test_labels_config_field():
    base = TrainConfig.of(family="conv2", widths=(8, 8, 32))
    assert base.data.labels == "fine" and "labels" not in base.to_dict()
    assert base.replace(labels="fine").legacy_run_id() == base.legacy_run_id()  # the default: old runs keep ids
    assert base.replace(labels="fine").run_id() == base.run_id()
    coarse = base.replace(labels="coarse")
    assert coarse.run_id() != base.run_id() and coarse.to_dict()["labels"] == "coarse"
    assert TrainConfig.from_dict(coarse.to_dict()) == coarse
    with pytest.raises(ConfigError, match='labels must be one of fine, coarse, got "medium"'):
        base.replace(labels="medium")


# ---- download

@pytest.fixture
def server(tmp_path, c100):
    root = tmp_path / "www"
    root.mkdir()
    (root / "cifar-100-python.tar.gz").write_bytes(c100.read_bytes())
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/cifar-100-python.tar.gz", requests, file_md5(c100)
    finally:
        srv.shutdown()
        srv.server_close()


def test_download_checks_md5(server, tmp_path):
    url, requests, md5 = server
    path = download_cifar100(tmp_path / "cache", url=url, md5=md5, progress=False)
    assert path.name == "cifar-100-python.tar.gz" and file_md5(path) == md5 and len(requests) == 1
    assert load_cifar(path).dataset == "cifar100"
    assert download_cifar100(tmp_path / "cache", url=url, md5=md5, progress=False) == path and len(requests) == 1
    with pytest.raises(DataError) as e:
        download_cifar100(tmp_path / "other", url=url, md5="0" * 32, progress=False)
    assert "\n" not in str(e.value) and "md5 mismatch" in str(e.value) and md5 in str(e.value)
    assert list((tmp_path / "other").iterdir()) == []


def test_data_download_dataset_flag(server, tmp_path, monkeypatch, capsys):
    url, requests, md5 = server
    monkeypatch.setitem(cifar.DATASETS, "cifar100", (url, md5))
    assert main(["data", "download", str(tmp_path / "d"), "--dataset", "cifar100"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "d" / "cifar-100-python.tar.gz")
    assert len(requests) == 1


def test_a_search_on_cifar100_solves_its_budgets_for_100_outputs(c100, tmp_path):
    # the output layer counts in the budget: the same constants overshoot more with 100 classes, and a
    # search on CIFAR-100 data sizes every trial for 100 outputs (not 10)
    from mimicnet import search
    space = search.make_space("student", "conv1", 20_000)
    params = {p.name: (p.low + p.high) / 2 for p in space.params}
    assert search.budget_violation(space, params, 100) > search.budget_violation(space, params, 10)
    base = TrainConfig.of(data=str(c100), max_epochs=1, batch_size=32, schedule="onecycle", device="cpu")
    st = search.run_search(space, base, tmp_path / "s", trials=1, strategy=search.Strategy(sampler="random"),
                           log=lambda s: None)
    t = search.best_trial(st)
    assert t is not None and abs(t.user_attrs["params"] - 20_000) <= 0.05 * 20_000
    cfg = search.apply(space, t.params, base, 100)
    assert solve_budget("conv1", 20_000, cfg.model.constants, num_classes=100) == tuple(t.user_attrs["widths"])


def test_a_cifar10_folder_ignores_stray_files_named_like_cifar100s(tmp_path, c10):
    # a file called meta, train or test beside CIFAR-10's batches is not data: same hash, still readable
    out = tmp_path / "x"
    with tarfile.open(c10) as tf:
        tf.extractall(out, filter="data")
    before = load_cifar(out)
    folder = out / "cifar-10-batches-py"
    for name in ("meta", "train", "test"):
        (folder / name).write_bytes(b"notes")
    after = load_cifar(out)
    assert after.dataset == "cifar10" and after.sha256 == before.sha256
    assert torch.equal(after.x_train, before.x_train)
