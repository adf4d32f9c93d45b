"""Your own images: a folder of class subfolders of PNG/JPEG files, read with Pillow into the tensors every stage
takes (uint8 N×3×S×S RGB, S = ``image_size``, 32 by default).

Layout (class names are the subfolders' names, sorted; label i is the i-th):

    DIR/<class>/*.png|*.jpg|*.jpeg             training images; the test split held out (the rule below)
    DIR/train/<class>/... + DIR/test/<class>/...  training images and a test split of their own

Splits, fixed by file name so every teacher, student and seed sees the same ones:
- order: the training files sorted by (file name, class), so files named by their index (00000.png ...) keep it;
- test: DIR/test/ when it exists; else held out by this rule: in every class, the files sorted by name, each
  sixth (the 6th, 12th, ...: a sixth, as CIFAR's 10,000 of 60,000);
- validation: the last 20% of the training order (data.cifar.split_train_val, as for a CIFAR subset).
``TrainData.files`` records the rule and the file names of each split (compress writes it to OUT/split.json).

Each image is decoded and converted to RGB where that loses nothing, and said once per kind (grey-scale:
the grey channel three times; a palette image: its colours; RGBA or LA whose alpha is fully opaque: without
it). Anything else is one line naming the file: not an image, truncated or damaged, CMYK, 16-bit or
float, transparent pixels. An image of another size is resized to S×S (bicubic, the aspect ratio not kept)
and the number resized is said. ``sha256`` hashes the class names, the file names and the decoded pixels:
the content, not the files' bytes (a PNG re-encoded without change is the same data).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .cifar import Cifar, DataError, split_train_val
from .trainset import Split, TrainData

__all__ = ["IMAGE_SUFFIXES", "is_image_folder", "load_image_folder", "image_folder_as_cifar", "TEST_EVERY"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TEST_EVERY = 6          # without DIR/test: every 6th file of each class (by name) is a test image


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_image_folder(path) -> bool:
    """Does `path` look like a folder of class subfolders of images (or of train/ and test/ ones)?"""
    path = Path(path)
    if not path.is_dir():
        return False
    for sub in _class_dirs(path)[:50]:
        inner = [sub] + (_class_dirs(sub)[:5] if sub.name in ("train", "test") else [])
        if any(any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.iterdir() if p.is_file()) for d in inner):
            return True
    return False


def _decode(path: Path, size: int, said: dict) -> np.ndarray:
    """One file as uint8 3×S×S RGB; a DataError naming the file where that is not lossless."""
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode == "RGB":
                rgb = im
            elif mode in ("L", "P", "1"):
                rgb = im.convert("RGB")
                if mode == "P" and "transparency" in im.info:
                    alpha = np.asarray(im.convert("RGBA"))[..., 3]
                    if alpha.min() < 255:
                        raise DataError(f"{path}: a palette image with transparent pixels (converting to RGB would "
                                        "lose them); save it as RGB")
                said.setdefault({"L": "grey-scale", "1": "black-and-white", "P": "palette"}[mode], path)
            elif mode in ("RGBA", "LA"):
                alpha = np.asarray(im)[..., -1]
                if alpha.min() < 255:
                    raise DataError(f"{path}: {mode} with transparent pixels (converting to RGB would lose them); "
                                    "save it as RGB")
                rgb = im.convert("RGB")
                said.setdefault(f"{mode} fully opaque", path)
            elif mode == "CMYK":
                raise DataError(f"{path}: a CMYK image (its conversion to RGB is not lossless); save it as RGB")
            else:
                raise DataError(f"{path}: image mode {mode} (16-bit, float or another colour space) is not 8-bit "
                                "RGB; save it as 8-bit RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
                said["resized"] = said.get("resized", 0) + 1
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1).copy()
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read (PNG or JPEG)") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or damaged
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path}: damaged or truncated image ({msg})") from None


def _files_of(root: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[Path, int]]]:
    dirs = _class_dirs(root)
    names = [d.name for d in dirs if d.name not in ("train", "test")] if classes is None else classes
    if classes is not None:
        extra = sorted({d.name for d in dirs} - set(classes))
        if extra:
            raise DataError(f"{root}: class folder {extra[0]!r} is not one of the training classes "
                            f"({', '.join(classes)})")
    files = [(p, i) for i, c in enumerate(names) if (root / c).is_dir() for p in _images_in(root / c)]
    return names, files


def load_image_folder(path, image_size: int = 32, log: Callable[[str], None] = print) -> TrainData:
    """The folder as train / val / test splits (see the module docstring)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    root = root.resolve()
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"--image-size must be an integer >= 1, got {image_size!r}")
    train_root = root / "train" if (root / "train").is_dir() else root
    classes, train = _files_of(train_root)
    if len(classes) < 2:
        raise DataError(f"{train_root}: found {len(classes)} class folder(s); give at least two (one per class)")
    empty = [c for i, c in enumerate(classes) if not any(j == i for _, j in train)]
    if empty:
        raise DataError(f"{train_root / empty[0]}: no PNG or JPEG files in this class folder")
    if (root / "test").is_dir():
        _, test = _files_of(root / "test", classes)
        rule = "test: the folder test/"
    else:
        by_class: dict[int, list[tuple[Path, int]]] = {}
        for f in train:
            by_class.setdefault(f[1], []).append(f)
        test = [f for fs in by_class.values() for k, f in enumerate(fs) if k % TEST_EVERY == TEST_EVERY - 1]
        held = set(test)
        train = [f for f in train if f not in held]
        rule = f"test: every {TEST_EVERY}th file of each class by name (no test/ folder)"
    train.sort(key=lambda f: (f[0].name, f[1]))
    test.sort(key=lambda f: (f[0].name, f[1]))
    said: dict = {}
    h = hashlib.sha256(("\n".join(classes) + f"\n{image_size}\n").encode())

    def read(files: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = np.zeros((len(files), 3, image_size, image_size), dtype=np.uint8)
        for k, (p, label) in enumerate(files):  # k indexes the image; label is its class
            x[k] = _decode(p, image_size, said)
            h.update(f"{p.parent.name}/{p.name}:{label}\n".encode())
            h.update(x[k].tobytes())
        return torch.from_numpy(x), torch.tensor([label for _, label in files], dtype=torch.int64)

    x_all, y_all = read(train)
    x_te, y_te = read(test) if test else (None, None)
    for kind in ("grey-scale", "black-and-white", "palette", "RGBA fully opaque", "LA fully opaque"):
        if kind in said:
            log(f"{root}: {kind} images converted to RGB without loss (first: {said[kind]})")
    if said.get("resized"):
        log(f"{root}: {said['resized']} image(s) resized to {image_size}×{image_size} (bicubic)")
    x_tr, y_tr, x_val, y_val = split_train_val(x_all, y_all)
    rel = lambda fs: [str(p.relative_to(root)) for p, _ in fs]  # noqa: E731
    cut = len(x_tr)
    files = {"rule": f"{rule}; validation: the last 20% of the training files sorted by (file name, class)",
             "classes": classes, "train": rel(train[:cut]), "val": rel(train[cut:]), "test": rel(test)}
    test_split = Split(x_te, y_te) if x_te is not None else None
    return TrainData(Split(x_tr, y_tr), Split(x_val, y_val), test_split, len(classes), h.hexdigest(),
                     (3, image_size, image_size), str(root), labels="fine", dataset="images",
                     label_sets={"fine": (y_tr, y_val, y_te, len(classes))}, files=files)


def image_folder_as_cifar(path, image_size: int = 32) -> Cifar:
    """The folder as `mimicnet evaluate` reads data (data.cifar.Cifar): the training order (train then
    validation, so split_train_val gives back the same validation split) and the test split."""
    d = load_image_folder(path, image_size)
    x_train, y_train = torch.cat([d.train.x, d.val.x]), torch.cat([d.train.y, d.val.y])
    classes = tuple(d.files["classes"])
    x_te, y_te = (d.test.x, d.test.y) if d.test is not None else (None, None)
    return Cifar(x_train, y_train, x_te, y_te, classes, d.source, d.sha256, dataset="images", labels="fine",
                 label_sets={"fine": (y_train, y_te, classes)})
