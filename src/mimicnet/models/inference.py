"""Running a model on images: what the network sees (per-image standardised pixels times input_scale),
logits in large batches, accuracy."""
from __future__ import annotations

import torch

from ..core.errors import ConfigError
from ..data.augment import standardize


def preprocess(x: torch.Tensor, input_scale: float) -> torch.Tensor:
    """uint8 or [0,1] float images -> what the network sees: per-image standardised, times input_scale."""
    return standardize(x) * input_scale


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, input_scale: float, device: torch.device,
                   batch_size: int = 1000) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 images, in eval mode, in large batches."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        out.append(model(preprocess(x[i:i + batch_size].to(device), input_scale)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y.cpu()).float().mean().item() if len(y) else float("nan")


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when torch sees one, else cpu; cuda without a CUDA device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)
