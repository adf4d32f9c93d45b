"""A fast modern teacher: ``airbench``, after Jordan's description of fast CIFAR-10 training (2024), written
from that description, registered beside S2's ``teacher``.

    whiten 2×2 (24 filters, fixed) - GELU - [c3-mp-BN-GELU-c3-BN-GELU] × 3 (w1, w2, w3) - global max pool - out

What makes it fast and accurate, and where each piece lives here:

- **A whitened first layer.** A 2×2 conv whose 12 filters are the eigenvectors of the training images'
  2×2×3 patch covariance, each scaled by 1/sqrt(eigenvalue), plus their negatives (24 channels, so the
  GELU after it keeps both signs). It is computed from the training images before the first step
  (``whiten_from_data``, called by the training loop through ``Family.data_init``) and never trained:
  the network starts on decorrelated inputs, which is what lets a wide net train in few epochs. (It sees the
  standardised images: with ``preprocess gcn-zca`` the ZCA comes after, and whitening twice adds nothing.)
- **Batch norm** after every conv (after the pool where there is one), before GELU, and then no conv biases
  (BN's shift is one). As in every family it comes with ``batchnorm=True`` (``--batchnorm``), which is how
  airbench is meant to be trained; without it the convs get biases.
- **Test-time flips.** In eval mode the logits are the mean over the image and its mirror image
  (``FlipAveraged``): so every evaluation, transfer-set label and online-distillation target of this
  teacher is flip-averaged, and an export keeps it. Training sees single images.
- Label smoothing and the schedule are training options (``label_smoothing``, ``schedule onecycle``), not
  part of the model. For distillation the study presets train this teacher *without* label smoothing:
  smoothing shrinks the logits' spread (over-regularised, under-confident outputs), and students regress
  those logits. Lookahead / weight EMA are not implemented.

Widths: (w1, w2, w3), the three blocks' channels; airbench's are (64, 256, 256). Parameters (trainable: the
whitening filters are fixed and not counted) = 9·24·w1 + 9·w1² + 9·w1·w2 + 9·w2² + 9·w2·w3 + 9·w3² + 4·(w1+w2+w3)
(BN; 2·(w1+w2+w3) conv biases without it) + w3·classes + classes: 1,972,490 at (64, 256, 256).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .layers import MimicNet, _check_widths, init_weights
from .registry import TEACHER, Family, ModelError, register

WHITEN_CHANNELS = 24   # 12 eigen-filters of the 2×2×3 patches and their negatives
WHITEN_EPS = 5e-4      # added to the eigenvalues: the smallest ones are noise, not signal to amplify


class Whiten(nn.Module):
    """The fixed 2×2 whitening conv: its filters are a buffer (saved with the weights, never trained, not
    counted as parameters), set from the training images by `whiten_from_data`."""

    def __init__(self):
        super().__init__()
        # until set from data: each of the 12 patch pixels as its own filter (and its negative), no whitening
        eye = torch.eye(12).reshape(12, 3, 2, 2)
        self.register_buffer("weight", torch.cat([eye, -eye]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight.to(x.dtype))


class FlipAveraged(MimicNet):
    """A MimicNet whose eval-mode logits are the mean over the input and its horizontal mirror."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return super().forward(x)
        return 0.5 * (super().forward(x) + super().forward(x.flip(-1)))


def _build_airbench(widths, *, num_classes=10, dropout=(), batchnorm=False, in_shape=(3, 32, 32),
                    init_scale=1.0, generator=None):
    fam = _FAMILY
    ws = _check_widths(fam, widths)
    if any(float(d) for d in (dropout or ())):
        raise ModelError("family 'airbench' takes no dropout")
    if tuple(in_shape) != (3, 32, 32):
        raise ModelError(f"family 'airbench' takes 3×32×32 images, not inputs of shape {tuple(in_shape)}")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["whiten"] = Whiten()  # set from the data (whiten_from_data), never trained
    layers["act0"] = nn.GELU()
    c = WHITEN_CHANNELS
    for i, w in enumerate(ws, 1):
        layers[f"conv{2 * i - 1}"] = nn.Conv2d(c, w, 3, padding=1, bias=not batchnorm)  # BN's shift is the bias
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        if batchnorm:
            layers[f"bn{2 * i - 1}"] = nn.BatchNorm2d(w)
        layers[f"act{2 * i - 1}"] = nn.GELU()
        layers[f"conv{2 * i}"] = nn.Conv2d(w, w, 3, padding=1, bias=not batchnorm)
        if batchnorm:
            layers[f"bn{2 * i}"] = nn.BatchNorm2d(w)
        layers[f"act{2 * i}"] = nn.GELU()
        c = w
    layers["gmp"] = nn.AdaptiveMaxPool2d(1)
    layers["flatten"] = nn.Flatten()
    layers["out"] = nn.Linear(c, num_classes)
    model = FlipAveraged(layers, family=fam.name, widths=ws, num_classes=num_classes, dropout=(),
                         batchnorm=batchnorm, in_shape=in_shape)
    return init_weights(model, init_scale, generator)


@torch.no_grad()
def whiten_from_data(model: nn.Module, x: torch.Tensor) -> None:
    """Set the whitening filters from `x` (N×3×32×32, what the network sees: standardised training images).
    Deterministic: the covariance and its eigen-decomposition are computed in float64 on the CPU."""
    s, ss, n = torch.zeros(12, dtype=torch.float64), torch.zeros(12, 12, dtype=torch.float64), 0
    for i in range(0, len(x), 1000):  # 1,000 images' patches at a time (all of CIFAR-10's at once: ~4 GB)
        p = x[i:i + 1000].detach().to("cpu", torch.float64).unfold(2, 2, 1).unfold(3, 2, 1)  # B×3×31×31×2×2
        p = p.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
        s, ss, n = s + p.sum(0), ss + p.T @ p, n + len(p)
    mean = s / n
    cov = ss / n - torch.outer(mean, mean)
    eigval, eigvec = torch.linalg.eigh(cov)
    filters = (eigvec.T / (eigval.clamp_min(0) + WHITEN_EPS).sqrt()[:, None]).reshape(12, 3, 2, 2)
    w = model.whiten.weight
    w.copy_(torch.cat([filters, -filters]).to(w.dtype))


_FAMILY = register(Family(name="airbench", width_names=("w1", "w2", "w3"), dependent=None, build=_build_airbench,
                          n_dropout=0, description="whiten-[c-mp-c]×3-gmp", constants=((0,), (1,), (2,)),
                          role=TEACHER, data_init=whiten_from_data,
                          # whitening, then three conv-pool-conv blocks, global max pool
                          arch=lambda w: "w24-" + "-".join(f"{x}c-mp-{x}c" for x in w) + "-gmp"))
