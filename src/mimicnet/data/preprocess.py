"""Global contrast normalisation + ZCA whitening (Ba & Caruana's CIFAR-10 preprocessing, SPEC S5).

GCN is what every run already does: ``augment.standardize`` subtracts each image's mean and divides by
its standard deviation. ZCA then decorrelates the pixels with ``W = U diag(1/sqrt(λ + eps)) Uᵀ`` from
the eigendecomposition ``U diag(λ) Uᵀ`` of the covariance of GCN'd *training* images; it is fitted once
per run, from the training split only (never validation, test or the transfer set), saved in the run
folder (``zca.safetensors``, referenced from the checkpoint meta) and applied at evaluation.

The whitening lives in a thin wrapper module (``Whitened``) put in front of the network, not in the
batch pipeline: the pipeline keeps feeding ``input_scale * standardize(x)`` exactly as before, so the
default path is untouched and every consumer of ``train.model_from_checkpoint`` (``evaluate``, ensembles,
transfer-set teachers) applies the saved state without knowing about it. The wrapped network's own
weights are saved unchanged (the state is not a parameter).

    >>> state = fit_zca(x_train_uint8)            # {"mean": D, "W": D×D, "eps": ()}
    >>> z = apply_zca(x_uint8, state)              # N×C×H×W, whitened
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..core import artifacts
from .augment import standardize

__all__ = ["PREPROCESS", "STANDARDIZE", "GCN_ZCA", "CHECKPOINT_NAME", "OLD_NAMES", "ZCA_FILE", "fit_zca", "apply_zca", "whiten", "Whitened", "save_zca", "load_zca"]

# The one name of each preprocessing in code, configs and flags. A checkpoint's metadata spells per-image
# standardisation "per-image-standardise" (its format, kept byte for byte: an ensemble names its members by
# their checkpoints' sha256): CHECKPOINT_NAME writes it, OLD_NAMES reads it back.
STANDARDIZE, GCN_ZCA = "standardize", "gcn-zca"
PREPROCESS = (STANDARDIZE, GCN_ZCA)
CHECKPOINT_NAME = "per-image-standardise"
OLD_NAMES = {CHECKPOINT_NAME: STANDARDIZE}
ZCA_FILE = "zca.safetensors"
# eps is on the GCN scale (each image has unit variance, so the eigenvalues sum to about D): 1e-2 keeps
# the noise amplification of the weakest directions below 10× (pylearn2's filter_bias 0.1 at GCN scale 55
# would be ~3e-5 here; a larger eps is the safer default for the tiny CPU subsets).
DEFAULT_EPS = 1e-2


@torch.no_grad()
def fit_zca(x_train: torch.Tensor, eps: float = DEFAULT_EPS, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """ZCA state from training images (uint8 or float [0,1], N×...): GCN per image, then the whitening
    matrix of their covariance (float64 accumulation, float32 state)."""
    if x_train.ndim < 2 or len(x_train) < 2:
        raise ValueError(f"fit_zca needs at least 2 training images, got shape {tuple(x_train.shape)}")
    n, d = len(x_train), x_train[0].numel()
    if n <= d:
        return _fit_zca_low_rank(x_train, eps)
    return _fit_zca_full(x_train, eps, chunk)


def _fit_zca_full(x_train: torch.Tensor, eps: float, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Streamed covariance, then a D×D eigh (3072×3072: tens of seconds on a busy CPU, once per run)."""
    n, d = len(x_train), x_train[0].numel()
    s = torch.zeros(d, dtype=torch.float64)
    ss = torch.zeros(d, d, dtype=torch.float64)
    for i in range(0, n, chunk):  # streamed: 50k×3072 float64 would be 1.2 GB at once
        g = standardize(x_train[i:i + chunk]).reshape(-1, d).double()
        s += g.sum(0)
        ss += g.T @ g
    mean = s / n
    cov = ss / n - torch.outer(mean, mean)
    evals, evecs = torch.linalg.eigh(cov)
    w = (evecs * (evals.clamp_min(0) + eps).rsqrt()) @ evecs.T
    return {"mean": mean.float(), "W": w.float(), "eps": torch.tensor(float(eps))}


def _fit_zca_low_rank(x_train: torch.Tensor, eps: float) -> dict[str, torch.Tensor]:
    """The same W when there are no more images than dimensions (tiny subsets, tests): the covariance has
    rank < n, so take its eigenvectors from the n×n Gram matrix (O(n²D), not a D×D eigh) and give the null space
    its exact 1/sqrt(eps): W = U diag(1/sqrt(λ+eps) - 1/sqrt(eps)) Uᵀ + I/sqrt(eps)."""
    n = len(x_train)
    g = standardize(x_train).reshape(n, -1).double()
    mean = g.mean(0)
    xc = g - mean
    # eigenvectors of the n×n Gram matrix give the covariance's: u_i = xcᵀ v_i / sqrt(n λ_i). (An SVD of
    # the n×D matrix gives the same but LAPACK's is ~40× slower here.)
    lam, v = torch.linalg.eigh(xc @ xc.T / n)
    keep = lam > lam.max() * 1e-12  # centring leaves one zero eigenvalue (and round-off)
    lam, v = lam[keep], v[:, keep]
    u = (xc.T @ v) * (n * lam).rsqrt()
    coef = (lam + eps).rsqrt() - eps ** -0.5
    w = (u * coef) @ u.T
    w.diagonal().add_(eps ** -0.5)
    return {"mean": mean.float(), "W": w.float(), "eps": torch.tensor(float(eps))}


def whiten(g: torch.Tensor, state: dict[str, torch.Tensor], scale: float = 1.0) -> torch.Tensor:
    """Whiten already-GCN'd inputs ``g`` (N×..., times ``scale``): ``(g - scale*mean) @ W`` (W is
    symmetric), reshaped back. Linear, so ``whiten(s*g, st, s) == s*whiten(g, st)``."""
    mean, w = state["mean"].to(g), state["W"].to(g)
    return ((g.reshape(len(g), -1) - scale * mean) @ w).reshape(g.shape)


def apply_zca(x: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """GCN + ZCA of images (uint8 or float [0,1]): what a ``gcn-zca`` network sees at input_scale 1."""
    return whiten(standardize(x), state)


class Whitened(nn.Module):
    """``net(whiten(x))``: the network of a ``gcn-zca`` run, fed what the pipeline feeds every network
    (``input_scale * standardize(images)``). The state is held in non-persistent buffers (they follow
    ``.to(device)`` but stay out of ``state_dict``: the run's weights are the inner network's)."""

    def __init__(self, net: nn.Module, state: dict[str, torch.Tensor], input_scale: float = 1.0):
        super().__init__()
        self.net = net
        self.register_buffer("mean", state["mean"].float(), persistent=False)
        self.register_buffer("W", state["W"].float(), persistent=False)
        self.input_scale = float(input_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(whiten(x, {"mean": self.mean, "W": self.W}, self.input_scale))

    def extra_repr(self) -> str:
        return f"zca dim={self.mean.numel()}, input_scale={self.input_scale}"


def save_zca(path, state: dict[str, torch.Tensor], meta: dict | None = None) -> None:
    artifacts.save_checkpoint(path, {k: v for k, v in state.items()}, {"kind": "zca", **(meta or {})})


def load_zca(path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.exists():
        raise artifacts.CheckpointError(f"{path}: the run's ZCA state is missing (a gcn-zca run saves it "
                                        f"beside its checkpoints)")
    tensors, _ = artifacts.load_checkpoint(path)
    return tensors
