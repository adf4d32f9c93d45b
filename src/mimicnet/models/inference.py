"""Running a model on images: what the network sees (per-image standardised pixels times input_scale),
logits in large batches, accuracy."""
from __future__ import annotations

import re

import torch

from ..core.errors import ConfigError
from ..data.augment import standardize


def preprocess(x: torch.Tensor, input_scale: float) -> torch.Tensor:
    """uint8 or [0,1] float images -> what the network sees: per-image standardised, times input_scale."""
    return standardize(x) * input_scale


def model_inputs(model: torch.nn.Module, x: torch.Tensor, input_scale: float) -> torch.Tensor:
    """What `model` is fed for uint8 (or [0,1] float) images: preprocess(x, input_scale), or, for a model that
    does its own preprocessing (`takes_images = True`: an external teacher, a standalone export), the images
    as float in [0, 1]."""
    if getattr(model, "takes_images", False):
        return x.to(torch.float32) / 255.0 if x.dtype == torch.uint8 else x.to(torch.float32)
    return preprocess(x, input_scale)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, input_scale: float, device: torch.device,
                   batch_size: int = 1000) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 images, in eval mode, in large batches."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        out.append(model(model_inputs(model, x[i:i + batch_size].to(device), input_scale)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, getattr(model, "num_classes", 10))


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y.cpu()).float().mean().item() if len(y) else float("nan")


DEVICES = "auto, cpu, cuda, cuda:N or mps"


def check_device_name(name) -> str:
    """A device as configs and --device spell it (DEVICES); ConfigError on anything else. Says nothing about
    this machine: a config written on a GPU machine stays valid where there is none."""
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", name):
        raise ConfigError(f"device must be one of {DEVICES}, got {name!r}")
    return name


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when torch sees one, else cpu; a device this machine does not have is an error."""
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for, but torch sees no CUDA device")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ConfigError(f"--device {name} asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps asked for, but torch sees no MPS (Apple GPU) device")
    return torch.device(name)
