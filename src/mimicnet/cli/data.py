"""`mimicnet data download|info`: fetch an official archive (CIFAR-10, CIFAR-100), describe one."""
from __future__ import annotations


from ..data.cifar import DATASETS, download_dataset, load_cifar, split_train_val
from .common import in_path, labels_arg, out_folder


def cmd_data_download(args) -> int:
    path = download_dataset(args.dir, args.dataset)
    print(path)
    return 0


def cmd_data_info(args) -> int:
    c = load_cifar(args.path, args.labels)
    n_tr = 0 if c.x_train is None else len(c.x_train)
    print(f"{c.source}\n  sha256 {c.sha256}")
    if c.dataset != "cifar10":  # (CIFAR-10's lines stay as they were)
        print(f"  dataset {c.name}, {c.labels} labels: {len(c.classes)} classes")
    print(f"  classes {', '.join(c.classes)}")
    if n_tr:
        x_tr, _, x_val, _ = split_train_val(c.x_train, c.y_train)
        print(f"  train {n_tr} images -> {len(x_tr)} train + {len(x_val)} validation")
    print(f"  test {0 if c.x_test is None else len(c.x_test)} images")
    return 0


def register(sub) -> None:
    d = sub.add_parser("data", help="CIFAR-10, CIFAR-100: download, inspect").add_subparsers(dest="data_cmd",
                                                                                            required=True)
    dd = d.add_parser("download", help="fetch the official CIFAR-10 (or CIFAR-100) archive (md5-checked)")
    dd.add_argument("dir", type=out_folder)
    dd.add_argument("--dataset", choices=tuple(DATASETS), default="cifar10",
                    help="cifar10 (default) or cifar100 (cifar-100-python.tar.gz)")
    dd.set_defaults(func=cmd_data_download)
    di = d.add_parser("info", help="dataset, classes, sizes, split and checksum of an archive")
    di.add_argument("path", type=in_path)
    labels_arg(di)
    di.set_defaults(func=cmd_data_info)
