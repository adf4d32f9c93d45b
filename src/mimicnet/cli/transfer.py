"""`mimicnet transfer`: label augmented training images with a teacher, once, on disk."""
from __future__ import annotations

import time
from pathlib import Path

from ..distill.transfer import TransferConfig, TransferError, generate, verify
from ..distill.transfer_format import _LOGITS, _human
from .common import in_path, in_path_p, labels_arg, out_folder


def cmd_transfer(args) -> int:
    if args.verify is not None:
        t0 = time.perf_counter()
        man = verify(args.verify)
        size = sum(f["bytes"] for f in man["files"].values())
        print(f"{args.verify}: OK, {len(man['files'])} files, {_human(size)} verified in {time.perf_counter() - t0:.1f}s")
        return 0
    missing = [flag for flag, v in (("--teacher", args.teacher), ("--data", args.data), ("--epochs", args.epochs),
                                    ("--out", args.out)) if v is None]
    if missing:
        raise TransferError(f"mimicnet transfer: {', '.join(missing)} required (or --verify DIR)")
    cfg = TransferConfig(data=args.data, max_train=args.max_train, labels=args.labels, epochs=args.epochs,
                         seed=args.seed, logits_dtype=args.logits_dtype, mode=args.mode, chunk=args.chunk,
                         batch_size=args.batch_size, device=args.device or "auto")
    finished_before = (Path(args.out) / "manifest.json").exists()
    man = generate(cfg, args.teacher, args.out)
    size = sum(f["bytes"] for f in man["files"].values())
    t = man["teacher"]
    print(f"transfer set {args.out}: {man['epochs']} epochs × {man['n']:,} images = {man['rows']:,} rows, "
          f"{man['num_classes']} classes, mode {man['mode']}, logits {man['config']['logits_dtype']}")
    print(f"teacher: {t['kind']} {t['path']} (val {t['val_acc']}, test {t['test_acc']})")
    if finished_before:
        print(f"disk {_human(size)}; already complete (generated at {man['images_per_second']:,.0f} images/s)")
    else:
        run = man["this_run"]
        rate = f"{run['images'] / run['seconds']:,.0f} images/s" if run["images"] and run["seconds"] > 0 else "-"
        print(f"disk {_human(size)}; this run: {run['images']:,} images in {run['seconds']:.1f}s ({rate}); "
              f"checksums {man['hash_seconds']:.1f}s")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("transfer", help="label augmented training images with a teacher, once, on disk",
                              description="Generate the transfer set of S1: EPOCHS passes over the training split "
                              "(validation removed), each a seeded permutation with seeded augmentation, labelled "
                              "with the teacher's logits and stored in order. Running the same command again "
                              "continues an interrupted set; --verify DIR rechecks a finished set's checksums.")
    p.add_argument("--teacher", type=in_path_p, help="ensemble folder (mimicnet ensemble) or a training run folder")
    p.add_argument("--data", type=in_path, help="CIFAR-10 or CIFAR-100 archive (.tar.gz) or folder")
    labels_arg(p)
    p.add_argument("--epochs", type=int, help="passes over the training images (S1: 160)")
    p.add_argument("--out", type=out_folder, help="transfer set folder")
    p.add_argument("--max-train", dest="max_train", type=int, default=None, help="use only the first N training images")
    p.add_argument("--mode", choices=("images", "replay"), default="images",
                   help="images: store the augmented images; replay: store only the params (2%% of the disk) "
                   "and rebuild the images when read")
    p.add_argument("--logits-dtype", dest="logits_dtype", choices=tuple(_LOGITS), default="float16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=4096, help="images per write (default 4096)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=1000, help="teacher inference batch (default 1000)")
    p.add_argument("--verify", type=in_path_p, metavar="DIR", help="recompute a finished set's checksums and compare")
    p.add_argument("--device", default=None, help="auto (default: cuda if present), cpu, cuda, cuda:1 ...")
    p.set_defaults(func=cmd_transfer)
