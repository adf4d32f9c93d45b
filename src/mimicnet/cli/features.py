"""`mimicnet features make-npz`: a fixed-length feature data set from a CIFAR archive."""
from __future__ import annotations

import argparse

from ..data.features import make_npz
from .common import in_path, out_file


def cmd_make_npz(args) -> int:
    shapes = make_npz(args.source, args.out, args.size, args.grey, args.transfer_mirror)
    print(" ".join(f"{k} {'x'.join(map(str, s)) or '()'}" for k, s in shapes.items()))
    print(f"wrote {args.out}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("features", help="fixed-length feature data (.npz): make one from CIFAR")
    sub = p.add_subparsers(dest="features_cmd", required=True)
    m = sub.add_parser("make-npz", help="a feature .npz of downsampled pixels from a CIFAR archive",
                       description="Write x_train/y_train, x_val/y_val (the archive's own split), x_test/y_test "
                       "of area-downsampled, flattened pixels: a stand-in for licensed speech features.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m.add_argument("--from", dest="source", type=in_path, required=True, help="CIFAR archive (.tar.gz) or folder")
    m.add_argument("--out", required=True, type=out_file, help="the .npz to write")
    m.add_argument("--size", type=int, default=8, help="downsample to SIZE×SIZE pixels")
    m.add_argument("--grey", action="store_true", help="one grey channel instead of three colours")
    m.add_argument("--transfer-mirror", action="store_true",
                   help="add an unlabeled x_transfer: the training rows and their mirror images")
    m.set_defaults(func=cmd_make_npz)
