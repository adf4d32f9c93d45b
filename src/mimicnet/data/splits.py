"""The data a run trains on, held as tensors (uint8 images or float feature rows): train / val / test.

Loaded once per process and passed to every run, search trial and stage that needs it: the archive is
parsed and hashed once, not once per trial.
"""
from __future__ import annotations

from pathlib import Path


from .cifar import DataError, load_cifar, split_train_val
from .images import is_image_folder, load_image_folder
from .trainset import Split, TrainData



def load_train_data(path, max_train: int | None = None, labels: str = "fine", image_size: int = 32) -> TrainData:
    """A CIFAR-10 or CIFAR-100 archive or folder as train (first N after the validation split) / val / test
    splits, with the labels of set `labels` (fine | coarse: CIFAR-100's 20 superclasses); or a folder of class
    subfolders of PNG/JPEG images (data.images), resized to `image_size` × `image_size`."""
    if not path:
        raise DataError("no data: pass --data ARCHIVE (a CIFAR-10 or CIFAR-100 .tar.gz or folder)")
    if is_image_folder(path):
        return load_image_folder(path, image_size).with_labels(labels).limited(max_train)
    if image_size != 32:
        raise DataError(f"--image-size {image_size}: {path} is a CIFAR archive, whose images are 32×32; "
                        "--image-size applies to a folder of class subfolders of images")
    c = load_cifar(path, labels)
    if c.x_train is None:
        what = "train" if c.dataset == "cifar100" else "data_batch_*"
        raise DataError(f"{path}: holds no training batches ({what}), only test data")
    sets = {}
    for name, (y_train, y_test, classes) in c.label_sets.items():
        _, y_tr, _, y_val = split_train_val(c.x_train, y_train)
        sets[name] = (y_tr, y_val, y_test, len(classes))
    x_tr, y_tr, x_val, y_val = split_train_val(c.x_train, c.y_train)
    test = Split(c.x_test, c.y_test) if c.x_test is not None else None
    data = TrainData(Split(x_tr, y_tr), Split(x_val, y_val), test, len(c.classes), c.sha256, source=str(Path(c.source)),
                     labels=c.labels, dataset=c.dataset, label_sets=sets)
    return data.limited(max_train)
