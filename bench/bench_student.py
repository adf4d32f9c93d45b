"""Student training throughput: mimicnet's path (contiguous slices of a stored transfer set, batched on
the device) vs the usual one (a torch DataLoader over a per-sample Dataset that augments each image on
the fly and pairs it with its teacher logits). Same model, same batch size, same images and targets.

    python bench/bench_student.py [--transfer DIR] [--family conv2 --budget 300k] [--steps 30]

Without --transfer, two small transfer sets are made first from a synthetic archive (teacher: a 1-epoch
conv2), one per mode -- images (the augmented images stored) and replay (only each image's augmentation
parameters stored, the images rebuilt on the training device) -- so the table also compares the two
modes' throughput and bytes on disk per row.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from common import save
from mimicnet.data.augment import apply_params, standardize, to_uint8
from mimicnet.models.families import build_model, solve_budget
from mimicnet.train.config import TrainConfig
from mimicnet.train.losses import mimic_loss
from mimicnet.distill.student import transfer_batches
from mimicnet.distill.transfer import TransferConfig, TransferSet, generate
from mimicnet.distill.transfer_format import _array_to_params


class PerSample(Dataset):
    """The plain way: one image at a time, augmented in __getitem__ from its source image and params."""

    def __init__(self, ts: TransferSet, x_train: torch.Tensor, rows: int):
        self.ts, self.x, self.rows = ts, x_train, rows

    def __len__(self):
        return self.rows

    def __getitem__(self, i):
        src = int(torch.from_numpy(self.ts._read("source", i, 1).astype("int64"))[0])
        p = _array_to_params(torch.from_numpy(self.ts._read("params", i, 1)))
        img = to_uint8(apply_params(self.x[src:src + 1], p))[0]
        z = torch.from_numpy(self.ts._read("logits", i, 1).astype("float32"))[0]
        return standardize(img[None])[0], z


def make_transfer(tmp: Path, epochs: int, mode: str = "images") -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from synth import write_archive
    from mimicnet.train.loop import fit
    archive = tmp / "a.tar.gz"
    if not archive.exists():
        write_archive(archive, n_train=2500, n_test=100)
    fit(TrainConfig.of(family="conv2", widths=(8, 8, 16), data=str(archive), max_epochs=1, device="cpu"),
        tmp / "teacher", log=lambda s: None)
    generate(TransferConfig(data=str(archive), epochs=epochs, seed=0, device="cpu", mode=mode), tmp / "teacher",
             tmp / f"transfer-{mode}", log=lambda s: None, progress=False)
    return tmp / f"transfer-{mode}"


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def steps_per_second(batches, model, loss_fn, opt, steps: int, device) -> float:
    it = iter(batches)
    for _ in range(3):  # warm-up
        x, t = next(it)
        loss_fn(model(x.to(device)), t).backward()
    t0, n = time.perf_counter(), 0
    for _ in range(steps):
        x, t = next(it)
        loss = loss_fn(model(x.to(device)), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--transfer")
    ap.add_argument("--family", default="conv2")
    ap.add_argument("--budget", type=float, default=300_000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers for the baseline")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tdir = Path(args.transfer) if args.transfer else make_transfer(Path(tmp), epochs=2)
        rdir = None if args.transfer else make_transfer(Path(tmp), epochs=2, mode="replay")
        ts = TransferSet(tdir, device="cpu")
        x_train = TransferSet(tdir, device="cpu")._source_images(None) if ts.mode == "images" else ts._x
        widths = solve_budget(args.family, int(args.budget), (0.5,) * 2 if args.family != "conv0" else (0.5,))
        cfg = TrainConfig.of(family=args.family, widths=widths, loss="l2-logits", batch_size=args.batch_size, lr=1e-3)
        loss_fn = mimic_loss(cfg)
        rows = min(ts.rows, args.batch_size * (args.steps + 4))

        def fresh():
            torch.manual_seed(0)
            m = build_model(args.family, widths).to(device)
            return m, torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9, nesterov=True)

        def ours_on(t: TransferSet) -> float:
            batches = (b for e in range(10 ** 6) for b in transfer_batches(cfg, t, device)(e))
            m, opt = fresh()
            return steps_per_second(((x, (z.to(device), y)) for x, (z, y) in batches), m, loss_fn, opt,
                                    args.steps, device)

        ours = ours_on(TransferSet(tdir, device=device))
        replay = ours_on(TransferSet(rdir, device=device)) if rdir is not None else None
        dl = DataLoader(PerSample(ts, x_train, rows), batch_size=args.batch_size, shuffle=False,
                        num_workers=args.workers)
        m, opt = fresh()
        base = steps_per_second(((x, (z.to(device), None)) for x, z in dl), m, loss_fn, opt, args.steps, device)
        sizes = {"images": disk_bytes(tdir) / ts.rows}
        if rdir is not None:
            sizes["replay"] = disk_bytes(rdir) / TransferSet(rdir, device="cpu").rows
    print(f"student {args.family} {widths} batch {args.batch_size} on {device}")
    print(f"{'path':50s} {'images/s':>10s} {'ratio':>7s}")
    print(f"{'DataLoader, per-sample Dataset (' + str(args.workers) + ' workers)':50s} {base:10,.0f} {1:7.2f}")
    print(f"{'transfer-set slices, batched on device (images)':50s} {ours:10,.0f} {ours / base:7.2f}")
    if replay is not None:
        print(f"{'the same, replay mode (images rebuilt on device)':50s} {replay:10,.0f} {replay / base:7.2f}")
    print("bytes on disk per row: " + ", ".join(f"{k} {v:,.0f}" for k, v in sizes.items())
          + (f" ({sizes['images'] / sizes['replay']:.0f}x smaller in replay mode)" if "replay" in sizes else ""))
    print(f"ratio: {ours / base:.2f}x")
    print("wrote", save("student", {"device": str(device), "family": args.family, "widths": list(widths),
                                    "batch_size": args.batch_size,
                                    "images_per_s": {"dataloader": base, "ours": ours, "ours_replay": replay},
                                    "ratio": ours / base, "replay_ratio": None if replay is None else replay / base,
                                    "bytes_per_row": sizes, "workers": args.workers}))


if __name__ == "__main__":
    main()
