"""mimicnet.data: loading, validation, splits and download, on tiny synthetic archives (+ the real subset)."""
from __future__ import annotations

import hashlib
import http.server
import pickle
import socket
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from mimicnet.data.cifar import CLASSES, Cifar, DataError, default_cache_dir, download_cifar, file_md5, file_sha256, load_cifar, load_split, split_train_val


def expect_error(path, *phrases):
    """load_cifar(path) must fail with ONE line naming the file and containing every phrase."""
    with pytest.raises(DataError) as e:
        load_cifar(path)
    msg = str(e.value)
    assert "\n" not in msg
    assert path.name in msg
    for p in phrases:
        assert p in msg, msg
    return msg


# ---- loading

def test_load_archive_shapes_dtypes(tiny_cifar_archive, make_cifar_batch):
    d = load_cifar(tiny_cifar_archive)
    assert isinstance(d, Cifar)
    assert d.x_train.shape == (60, 3, 32, 32) and d.x_train.dtype == torch.uint8
    assert d.y_train.shape == (60,) and d.y_train.dtype == torch.int64
    assert d.x_test.shape == (20, 3, 32, 32) and d.y_test.dtype == torch.int64
    assert d.classes == CLASSES
    assert d.source == str(tiny_cifar_archive.resolve())
    assert d.sha256 == file_sha256(tiny_cifar_archive)
    # batches concatenated in order 1, 2
    b1, b2 = make_cifar_batch(30, seed=1), make_cifar_batch(30, seed=2)
    expected = np.concatenate([b1[b"data"], b2[b"data"]]).reshape(-1, 3, 32, 32)
    assert torch.equal(d.x_train, torch.from_numpy(expected))
    assert d.y_train.tolist() == b1[b"labels"] + b2[b"labels"]


def test_batches_concatenated_in_numeric_order_not_member_order(make_cifar_archive, make_cifar_batch):
    b1, b2 = make_cifar_batch(4, seed=1), make_cifar_batch(4, seed=2)
    path = make_cifar_archive({"data_batch_2": b2, "data_batch_1": b1})
    d = load_cifar(path)
    assert torch.equal(d.x_train[:4].reshape(4, -1), torch.from_numpy(b1[b"data"]))


def test_channel_order_and_row_major(make_cifar_archive):
    # R plane = 0..255 pattern, G = 100, B = 200: x[i, 0] must be the R plane, rows of 32 pixels.
    n = 3
    data = np.empty((n, 3072), np.uint8)
    data[:, :1024] = np.arange(1024) % 256
    data[:, 1024:2048] = 100
    data[:, 2048:] = 200
    path = make_cifar_archive({"test_batch": {b"data": data, b"labels": [0, 1, 2]}})
    x = load_cifar(path).x_test
    assert (x[:, 1] == 100).all() and (x[:, 2] == 200).all()
    assert x[0, 0, 0, 1] == 1 and x[0, 0, 1, 0] == 32 and x[0, 0, 2, 3] == (2 * 32 + 3)


def test_folder_and_parent_folder_match_archive(tiny_cifar_archive, tmp_path):
    out = tmp_path / "extracted"
    with tarfile.open(tiny_cifar_archive) as tf:
        tf.extractall(out, filter="data")
    a = load_cifar(tiny_cifar_archive)
    for folder in (out, out / "cifar-10-batches-py"):
        d = load_cifar(folder)
        for name in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(a, name), getattr(d, name)), name
        assert d.classes == a.classes
        assert d.source == str((out / "cifar-10-batches-py").resolve())
    # folder hash: the batch files concatenated in data_batch_1.., test_batch, batches.meta order
    h = hashlib.sha256()
    for name in ("data_batch_1", "data_batch_2", "test_batch", "batches.meta"):
        h.update((out / "cifar-10-batches-py" / name).read_bytes())
    assert load_cifar(out).sha256 == h.hexdigest()


def test_plain_tar_and_meta_class_names(make_cifar_archive, make_cifar_batch):
    names = [f"c{i}".encode() for i in range(10)]
    path = make_cifar_archive({"test_batch": make_cifar_batch(5), "batches.meta": {b"label_names": names}},
                              name="plain.tar")
    assert load_cifar(path).classes == tuple(f"c{i}" for i in range(10))


def test_test_only_archive(make_cifar_archive, make_cifar_batch):
    path = make_cifar_archive({"test_batch": make_cifar_batch(7)})
    d = load_cifar(path)
    assert d.x_train is None and d.y_train is None
    assert d.x_test.shape == (7, 3, 32, 32)
    assert d.classes == CLASSES  # no batches.meta: default names
    x, y = load_split(path, "test")
    assert x.shape == (7, 3, 32, 32) and y.dtype == torch.int64
    for split in ("train", "val"):
        with pytest.raises(DataError, match="data_batch"):
            load_split(path, split)


def test_train_only_archive_has_no_test_split(make_cifar_archive, make_cifar_batch):
    path = make_cifar_archive({"data_batch_1": make_cifar_batch(10)})
    assert load_cifar(path).x_test is None
    with pytest.raises(DataError, match="test_batch"):
        load_split(path, "test")


# ---- splits

def test_split_small():
    x, y = torch.arange(60), torch.arange(60) % 10
    x_tr, y_tr, x_val, y_val = split_train_val(x, y)
    assert len(x_tr) == 48 and len(x_val) == 12
    assert x_val.tolist() == list(range(48, 60))  # the LAST images, unshuffled
    assert torch.equal(y_tr, y[:48]) and torch.equal(y_val, y[48:])


def test_split_full_size_keeps_last_10000():
    x = torch.arange(50_000)
    x_tr, _, x_val, _ = split_train_val(x, x)
    assert len(x_tr) == 40_000 and x_val[0] == 40_000 and x_val[-1] == 49_999
    assert len(split_train_val(torch.arange(60_000), torch.arange(60_000))[2]) == 10_000


def test_split_tiny_never_returns_everything_as_val():
    x_tr, _, x_val, _ = split_train_val(torch.arange(2), torch.arange(2))  # round(0.4) = 0
    assert len(x_tr) == 2 and len(x_val) == 0
    with pytest.raises(ValueError):
        split_train_val(torch.arange(3), torch.arange(4))


def test_load_split_matches_split_train_val(tiny_cifar_archive):
    d = load_cifar(tiny_cifar_archive)
    x_tr, y_tr = load_split(tiny_cifar_archive, "train")
    x_val, y_val = load_split(tiny_cifar_archive, "val")
    assert torch.equal(x_tr, d.x_train[:48]) and torch.equal(y_val, d.y_train[48:])
    assert len(x_val) == 12 and len(y_tr) == 48
    with pytest.raises(ValueError):
        load_split(tiny_cifar_archive, "validation")


# ---- validation

def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.tar.gz", "no such file")


def test_random_bytes(tmp_path):
    path = tmp_path / "random.tar.gz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes())
    expect_error(path, "not a gzip/tar archive")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.tar.gz"
    path.write_bytes(b"")
    expect_error(path, "not a gzip/tar archive")


@pytest.mark.parametrize("name", ["cut.tar.gz", "cut.tar"])
def test_truncated_archive(make_cifar_archive, make_cifar_batch, name):
    path = make_cifar_archive({"data_batch_1": make_cifar_batch(30), "test_batch": make_cifar_batch(30)},
                              name=name)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    expect_error(path, "truncated")


def test_no_batches_in_archive_or_folder(make_cifar_archive, tmp_path):
    expect_error(make_cifar_archive({"readme.txt": b"hello"}), "no CIFAR-10 batches")
    (tmp_path / "emptydir").mkdir()
    expect_error(tmp_path / "emptydir", "no CIFAR-10 batches")


def test_bad_member_in_folder_names_the_file(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"garbage, not a pickle")
    msg = expect_error(tmp_path, "not a readable pickle")
    assert "test_batch" in msg


def _batch(data, labels):
    return {b"data": data, b"labels": labels}


GOOD = np.zeros((4, 3072), np.uint8)


@pytest.mark.parametrize("member, phrase", [
    (b"\x00not a pickle at all", "not a readable pickle"),
    (pickle.dumps([1, 2, 3], protocol=2), "not a CIFAR batch"),
    (pickle.dumps({b"data": GOOD}, protocol=2), "no b'labels' key"),
    (pickle.dumps({"data": GOOD, "labels": [0] * 4}, protocol=2), "no b'data' key"),  # str keys
    (pickle.dumps(print, protocol=2), "refusing to load global"),  # code, not data
    (pickle.dumps(_batch(np.zeros((4, 3000), np.uint8), [0] * 4), protocol=2), "expected (N, 3072)"),
    (pickle.dumps(_batch(np.zeros((4, 3, 32, 32), np.uint8), [0] * 4), protocol=2), "expected (N, 3072)"),
    (pickle.dumps(_batch(GOOD.astype(np.float32), [0] * 4), protocol=2), "dtype float32"),
    (pickle.dumps(_batch(GOOD.astype(np.int32) + 300, [0] * 4), protocol=2), "outside 0..255"),
    (pickle.dumps(_batch(GOOD, [0] * 3), protocol=2), "3 labels for 4 images"),
    (pickle.dumps(_batch(GOOD, [0, 1, 12, 3]), protocol=2), "labels outside 0..9 (found 12)"),
    (pickle.dumps(_batch(GOOD, [0, -1, 2, 3]), protocol=2), "labels outside 0..9 (found -1)"),
    (pickle.dumps(_batch(GOOD, ["a", "b", "c", "d"]), protocol=2), "labels must be a list of ints"),
], ids=["garbage", "list", "no-labels", "str-keys", "global", "shape", "nchw", "float", "range",
        "n-labels", "label-12", "label-neg", "label-str"])
def test_bad_member(make_cifar_archive, make_cifar_batch, member, phrase):
    path = make_cifar_archive({"data_batch_1": make_cifar_batch(4), "data_batch_2": member},
                              name="bad.tar.gz")
    msg = expect_error(path, phrase, "member cifar-10-batches-py/data_batch_2")
    assert msg.startswith(str(path.resolve()))


def test_int_data_in_byte_range_is_accepted(make_cifar_archive):
    data = np.full((2, 3072), 255, np.int64)
    d = load_cifar(make_cifar_archive({"test_batch": _batch(data, [1, 2])}))
    assert d.x_test.dtype == torch.uint8 and int(d.x_test.max()) == 255


def test_bad_meta(make_cifar_archive, make_cifar_batch):
    path = make_cifar_archive({"test_batch": make_cifar_batch(2), "batches.meta": {b"label_names": [b"a"]}})
    expect_error(path, "batches.meta", "label_names")


# ---- hashing, cache

def test_hashes_and_cache_dir(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert file_md5(p) == hashlib.md5(b"abc").hexdigest()
    assert file_sha256(p) == hashlib.sha256(b"abc").hexdigest()
    monkeypatch.setenv("MIMICNET_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("MIMICNET_CACHE")
    assert default_cache_dir() == Path("~/.cache/mimicnet").expanduser()


# ---- download

@pytest.fixture
def http_server(tmp_path, tiny_cifar_archive):
    """Serve tiny_cifar_archive from a local HTTP server; yields (base_url, request_counter, archive)."""
    root = tmp_path / "www"
    root.mkdir()
    served = root / "cifar.tar.gz"
    served.write_bytes(tiny_cifar_archive.read_bytes())
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests, served
    finally:
        server.shutdown()
        server.server_close()


def test_download_then_reuse(http_server, tmp_path):
    base, requests, served = http_server
    dest = tmp_path / "cache"
    md5 = file_md5(served)
    path = download_cifar(dest, url=f"{base}/cifar.tar.gz", md5=md5, progress=True)
    assert path == dest / "cifar.tar.gz" and file_md5(path) == md5
    assert not (dest / "cifar.tar.gz.part").exists()
    assert len(requests) == 1
    assert load_cifar(path).x_train.shape == (60, 3, 32, 32)
    # second call: verified copy on disk, no request
    assert download_cifar(dest, url=f"{base}/cifar.tar.gz", md5=md5, progress=False) == path
    assert len(requests) == 1


def test_download_replaces_corrupt_file_and_stale_part(http_server, tmp_path):
    base, requests, served = http_server
    md5 = file_md5(served)
    (tmp_path / "cifar.tar.gz").write_bytes(b"half a download")
    (tmp_path / "cifar.tar.gz.part").write_bytes(b"leftover")
    path = download_cifar(tmp_path, url=f"{base}/cifar.tar.gz", md5=md5, progress=False)
    assert len(requests) == 1 and file_md5(path) == md5
    assert not (tmp_path / "cifar.tar.gz.part").exists()


def test_download_md5_mismatch(http_server, tmp_path):
    base, _, served = http_server
    with pytest.raises(DataError) as e:
        download_cifar(tmp_path, url=f"{base}/cifar.tar.gz", md5="0" * 32, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "cifar.tar.gz" in msg and "md5" in msg
    assert "0" * 32 in msg and file_md5(served) in msg
    assert not (tmp_path / "cifar.tar.gz").exists() and not (tmp_path / "cifar.tar.gz.part").exists()


def test_download_404_and_unreachable(http_server, tmp_path):
    base, _, _ = http_server
    with pytest.raises(DataError, match=r"cannot download .*missing\.tar\.gz: .*404") as e:
        download_cifar(tmp_path, url=f"{base}/missing.tar.gz", progress=False)
    assert "\n" not in str(e.value)
    assert list(tmp_path.glob("missing*")) == []
    # a port nobody listens on (bound then released): connection refused, also one DataError line
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match="cannot download") as e:
        download_cifar(tmp_path, url=f"http://127.0.0.1:{port}/x.tar.gz", progress=False)
    assert "\n" not in str(e.value)


# ---- real subset

def test_real_subset(cifar_subset_path):
    d = load_cifar(cifar_subset_path)
    assert d.x_train.shape == (4068, 3, 32, 32) and d.x_test.shape == (1017, 3, 32, 32)
    assert set(d.y_train.tolist()) == set(range(10)) and set(d.y_test.tolist()) == set(range(10))
    assert d.classes == CLASSES
    assert d.sha256 == file_sha256(cifar_subset_path)
    x_tr, y_tr, x_val, y_val = split_train_val(d.x_train, d.y_train)
    assert len(x_tr) == 3254 and len(x_val) == 814  # round(4068 * 0.2) = round(813.6) = 814
    assert torch.equal(x_val, d.x_train[3254:])
