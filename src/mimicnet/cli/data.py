"""`mimicnet data download|info`: fetch the official archive, describe one."""
from __future__ import annotations

from pathlib import Path

from ..data.cifar import download_cifar, load_cifar, split_train_val


def cmd_data_download(args) -> int:
    path = download_cifar(args.dir)
    print(path)
    return 0


def cmd_data_info(args) -> int:
    c = load_cifar(args.path)
    n_tr = 0 if c.x_train is None else len(c.x_train)
    print(f"{c.source}\n  sha256 {c.sha256}\n  classes {', '.join(c.classes)}")
    if n_tr:
        x_tr, _, x_val, _ = split_train_val(c.x_train, c.y_train)
        print(f"  train {n_tr} images -> {len(x_tr)} train + {len(x_val)} validation")
    print(f"  test {0 if c.x_test is None else len(c.x_test)} images")
    return 0


def register(sub) -> None:
    d = sub.add_parser("data", help="CIFAR-10: download, inspect").add_subparsers(dest="data_cmd", required=True)
    dd = d.add_parser("download", help="fetch the official CIFAR-10 archive (md5-checked)")
    dd.add_argument("dir", type=Path)
    dd.set_defaults(func=cmd_data_download)
    di = d.add_parser("info", help="sizes, split and checksum of an archive")
    di.add_argument("path")
    di.set_defaults(func=cmd_data_info)
