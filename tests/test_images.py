"""Your own images (issue 28, data.images): a folder of class subfolders of PNG/JPEG files read as the same
tensors as the CIFAR archive they were written from (pixel for pixel, same splits, same compress result); the
splits fixed by file name and recorded; grey-scale and palette images converted (lossless, said), bad files one
line naming the file."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from mimicnet.core import artifacts
from mimicnet.data.cifar import DataError, load_cifar
from mimicnet.data.images import TEST_EVERY, is_image_folder, load_image_folder
from mimicnet.data.splits import load_train_data

from conftest import CIFAR_SUBSET
from synth import write_cifar_archive
from test_compress import c10, one_line_error, run, teacher_ts  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")


def write_pngs(archive, dest, max_train: int | None = None):
    """The archive's training and test images as DEST/train/<class>/<index>.png and DEST/test/<class>/..."""
    c = load_cifar(archive)
    for split, x, y in (("train", c.x_train, c.y_train), ("test", c.x_test, c.y_test)):
        n = len(x) if max_train is None or split == "test" else max_train
        for i in range(n):  # i indexes the image (not the split): x[i] is one image
            p = dest / split / c.classes[int(y[i])] / f"{i:05d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(x[i]).transpose(1, 2, 0)).save(p)
    assert sorted(c.classes) == list(c.classes)  # the folders' sorted names give the archive's label numbers
    return dest


def assert_same_tensors(a, b):
    for s in ("train", "val", "test"):
        sa, sb = getattr(a, s), getattr(b, s)
        assert sa.x.dtype == sb.x.dtype == torch.uint8 and sa.x.shape == sb.x.shape
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y), s
    assert a.num_classes == b.num_classes and a.in_shape == b.in_shape


def test_an_archive_written_as_pngs_reads_as_the_same_tensors(c10, tmp_path):  # noqa: F811
    folder = write_pngs(c10, tmp_path / "pngs")
    assert is_image_folder(folder) and not is_image_folder(tmp_path / "nothing")
    d, e = load_train_data(c10), load_train_data(folder)
    assert_same_tensors(d, e)
    assert e.files["rule"].startswith("test: the folder test/")
    assert len(e.files["val"]) == len(e.val.y) and e.files["val"][0].startswith("train/")
    # the same content is the same data (hash of names and pixels, not of the files' bytes)
    assert load_image_folder(folder, log=lambda s: None).sha256 == e.sha256
    assert load_train_data(folder, max_train=50).train.x.shape[0] == 50


def test_the_real_subset_as_pngs_is_pixel_identical(cifar_subset_path, tmp_path):
    assert_same_tensors(load_train_data(cifar_subset_path), load_train_data(write_pngs(cifar_subset_path,
                                                                                       tmp_path / "pngs")))


@pytest.fixture
def slice_archive(c10, tmp_path):  # noqa: F811
    """A slice of the real CIFAR-10 subset (its first 300 training and 100 test images, as a CIFAR archive) when
    it is there (always under CI), else the synthetic archive: compress on either, twice, stays fast."""
    if not CIFAR_SUBSET.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the real CIFAR-10 subset is missing: {CIFAR_SUBSET}")
        return c10
    c = load_cifar(CIFAR_SUBSET)
    batch = lambda x, y, name: {b"data": x.reshape(len(x), 3072).numpy(), b"labels": y.tolist(),  # noqa: E731
                                b"batch_label": name}
    return write_cifar_archive(tmp_path / "slice.tar.gz", {
        "batches.meta": {b"label_names": [n.encode() for n in c.classes], b"num_vis": 3072},
        "data_batch_1": batch(c.x_train[:300], c.y_train[:300], b"slice"),
        "test_batch": batch(c.x_test[:100], c.y_test[:100], b"test")})


def test_compress_on_the_pngs_gives_the_archives_result(slice_archive, teacher_ts, tmp_path):  # noqa: F811
    folder = write_pngs(slice_archive, tmp_path / "pngs")
    assert_same_tensors(load_train_data(slice_archive), load_train_data(folder))
    results = []
    for data, out in ((slice_archive, tmp_path / "a"), (folder, tmp_path / "f")):
        rc, _, err = run(["compress", "--teacher", teacher_ts, "--data", data, "--out", out, "--budget", "20k",
                          "--families", "conv2", "--trials", "2", "--seeds", "0", "--epochs", "1",
                          "--transfer-epochs", "1", "--batch-size", "64", "--device", "cpu", "--no-latency", "--no-onnx"])
        assert rc == 0, err
        results.append(artifacts.read_json(out / "results.json"))
    a, f = results
    assert a["teacher"]["val_acc"] == f["teacher"]["val_acc"] and a["teacher"]["test_acc"] == f["teacher"]["test_acc"]
    assert a["families"][0]["val_mean"] is not None and a["families"][0]["test_mean"] is not None
    keys = ("family", "widths", "params", "val_mean", "test_mean", "agree_mean", "best_trial")
    assert [{k: r.get(k) for k in keys} for r in a["families"]] == [{k: r.get(k) for k in keys} for r in f["families"]]
    assert a["student"]["widths"] == f["student"]["widths"] and a["student"]["test_acc"] == f["student"]["test_acc"]
    # the student scored on the folder by `mimicnet evaluate`: the test accuracy compress reported
    rc, stdout, err = run(["evaluate", tmp_path / "f" / "student", "--data", folder, "--device", "cpu"])
    assert rc == 0, err
    assert f"accuracy {f['student']['test_acc']:.4f} on the test split" in stdout
    split = artifacts.read_json(tmp_path / "f" / "split.json")
    assert len(split["val"]) == f["data"]["n_val"] and f["data"]["kind"] == "image folder"


def _png(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return path


def small_folder(root, n=12):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        for i in range(n):
            _png(root / c / f"{i:03d}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return root


def test_without_a_test_folder_every_sixth_file_of_a_class_is_held_out(tmp_path):
    root = small_folder(tmp_path / "imgs", n=12)
    d = load_image_folder(root, log=lambda s: None)
    held = sorted(d.files["test"])
    assert held == sorted(f"{c}/{i:03d}.png" for c in ("cat", "dog") for i in range(TEST_EVERY - 1, 12, TEST_EVERY))
    assert len(d.test.y) == 4 and len(d.train.y) + len(d.val.y) == 20 and "every 6th" in d.files["rule"]
    assert d.files["classes"] == ["cat", "dog"]
    # the split is the files' names, not their order on disk: the same folder again gives the same split
    assert load_image_folder(root, log=lambda s: None).files == d.files


def test_lossless_conversions_are_made_and_said(tmp_path):
    root = small_folder(tmp_path / "imgs", n=6)
    grey = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    _png(root / "cat" / "grey.png", grey)
    _png(root / "dog" / "big.png", np.full((64, 48, 3), 7, dtype=np.uint8))
    said = []
    d = load_image_folder(root, log=said.append)
    k = d.files["train"].index("cat/grey.png") if "cat/grey.png" in d.files["train"] else None
    x = d.train.x[k] if k is not None else d.val.x[d.files["val"].index("cat/grey.png")]
    assert all(torch.equal(x[c], torch.from_numpy(grey)) for c in range(3))  # the grey channel, three times
    assert any("grey-scale images converted to RGB without loss" in s and "grey.png" in s for s in said)
    assert any("1 image(s) resized to 32×32" in s for s in said)


@pytest.mark.parametrize("make, phrase", [
    (lambda p: p.write_bytes(b"this is not a PNG"), "not an image Pillow can read"),
    (lambda p: p.write_bytes(_truncated()), "damaged or truncated image"),
    (lambda p: Image.new("CMYK", (32, 32), (0, 50, 100, 0)).save(p.with_suffix(".jpg")), "a CMYK image"),
    (lambda p: Image.new("RGBA", (32, 32), (9, 9, 9, 100)).save(p), "transparent pixels"),
    (lambda p: Image.new("I;16", (32, 32)).save(p), "is not 8-bit RGB"),
], ids=["not-an-image", "truncated", "cmyk", "transparent", "16-bit"])
def test_a_bad_file_is_one_line_naming_it(tmp_path, make, phrase):
    root = small_folder(tmp_path / "imgs", n=6)
    bad = root / "dog" / "bad.png"
    make(bad)
    with pytest.raises(DataError, match=phrase) as e:
        load_image_folder(root, log=lambda s: None)
    assert "bad." in str(e.value) and len(str(e.value).splitlines()) == 1


def _truncated() -> bytes:
    import io
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()[:200]


def test_compress_says_a_bad_file_and_other_sizes_in_one_line(teacher_ts, tmp_path):  # noqa: F811
    root = small_folder(tmp_path / "imgs", n=6)
    (root / "cat" / "oops.png").write_bytes(b"nope")
    argv = ["compress", "--teacher", teacher_ts, "--data", root, "--out", tmp_path / "o", "--budget", "20k"]
    one_line_error(argv, "oops.png", "not an image")
    one_line_error(["compress", "--teacher", teacher_ts, "--data", tmp_path / "imgs" / "cat", "--out", tmp_path / "o",
                    "--budget", "20k"], "cat")
    assert not (tmp_path / "o").exists()


def test_compress_on_16_pixel_images_trains_exports_and_evaluates_at_that_size(c10, teacher_ts, tmp_path):  # noqa: F811
    """--image-size 16: the folder read at 16×16, the transfer set stored at 16×16, the budget solved for 16×16
    inputs (conv0's first layer is 4× smaller than at 32), the student exported for 3×16×16 and scored by
    `mimicnet evaluate` at its own size; families whose pools leave nothing of the image are one line."""
    from mimicnet.models.export import onnxruntime_missing
    from mimicnet.models.families import count_params
    folder = write_pngs(c10, tmp_path / "pngs")
    out = tmp_path / "o"
    argv = ["compress", "--teacher", teacher_ts, "--data", folder, "--image-size", "16", "--out", out, "--budget", "20k",
            "--families", "conv0,conv2", "--trials", "2", "--seeds", "0", "--epochs", "1", "--transfer-epochs", "1",
            "--batch-size", "64", "--device", "cpu"]
    rc, _, err = run(argv)
    assert rc == 0, err
    res = artifacts.read_json(out / "results.json")  # latency timed on 16×16 inputs, each model and export
    assert all(isinstance(v, float) for r in res["families"] for v in r["latency"]["cpu"].values())
    assert all(isinstance(v, float) for v in res["teacher"]["latency"]["cpu"].values())
    assert onnxruntime_missing() or res["student"]["latency_onnx"]["1"] > 0
    assert artifacts.read_json(out / "transfer" / "manifest.json")["files"]["images"]["shape"][1:] == [3, 16, 16]
    res = artifacts.read_json(out / "results.json")
    for r in res["families"]:
        if r.get("widths"):
            n = count_params(r["family"], tuple(r["widths"]), in_shape=(3, 16, 16))
            assert n == r["params"] and abs(n - 20_000) < 600  # at the budget (the dependent width is rounded)
            assert count_params(r["family"], tuple(r["widths"])) != n   # these widths count otherwise at 32×32
    rec = artifacts.read_json(out / "student" / "student.json")
    assert "3×16×16" in rec["input"] and max(rec["max_abs_diff"].values()) <= 1e-4 * max(rec["max_abs_logit"], 1.0)
    ts = torch.jit.load(str(out / "student" / "student.ts"))
    assert ts(torch.rand(3, 3, 16, 16)).shape == (3, 10)
    rc, stdout, err = run(["evaluate", out / "student", "--data", folder, "--device", "cpu"])
    assert rc == 0, err
    assert f"accuracy {res['student']['test_acc']:.4f} on the test split" in stdout
    one_line_error(["evaluate", out / "student", "--data", c10, "--device", "cpu"], "takes 3×16×16 inputs", "3×32×32")
    small = [*argv[:argv.index("--image-size")], "--image-size", "4", "--out", tmp_path / "o4", "--budget", "20k",
             "--families", "conv3"]
    one_line_error(small, "--families conv3", "3×4×4")
    one_line_error(["compress", "--teacher", teacher_ts, "--data", c10, "--image-size", "16", "--out", tmp_path / "o5",
                    "--budget", "20k"], "--image-size 16", "32×32")
    assert not (tmp_path / "o4").exists() and not (tmp_path / "o5").exists()
