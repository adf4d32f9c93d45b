"""The layers every family is built from: the flat ``MimicNet`` container, ``_Builder`` (named layers with the
activation shape tracked analytically), the ResNet basic block, the shared builders (a bottleneck MLP, a conv
student from a plan, a CIFAR ResNet), initialisation, and ``fold_linear``."""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from .registry import FAMILIES, Family, ModelError


class MimicNet(nn.Sequential):
    """A flat ``nn.Sequential`` that remembers how it was built (for checkpoints, reports, describe)."""

    def __init__(self, layers: "OrderedDict[str, nn.Module]", *, family: str, widths: Sequence[int],
                 num_classes: int, dropout: Sequence[float], batchnorm: bool,
                 in_shape: Sequence[int]):
        super().__init__(layers)
        self.family = family
        self.widths = tuple(int(w) for w in widths)
        self.num_classes = int(num_classes)
        self.dropout = tuple(float(d) for d in dropout)
        self.batchnorm = bool(batchnorm)
        self.in_shape = tuple(int(s) for s in in_shape)

    def config(self) -> dict:
        """Everything ``build_model`` needs to rebuild this architecture (JSON-serialisable)."""
        return {"family": self.family, "widths": list(self.widths), "num_classes": self.num_classes,
                "dropout": list(self.dropout), "batchnorm": self.batchnorm,
                "in_shape": list(self.in_shape)}

    def extra_repr(self) -> str:
        return f"family={self.family!r}, widths={self.widths}"


class _Builder:
    """Appends named layers to an OrderedDict while tracking the activation shape analytically
    (no dummy forward: a 30M model's convs would cost real compute on CPU)."""

    def __init__(self, in_shape: Sequence[int], batchnorm: bool):
        self.layers: OrderedDict[str, nn.Module] = OrderedDict()
        self.shape = tuple(int(s) for s in in_shape)
        self.batchnorm = batchnorm
        self.n_conv = self.n_pool = self.n_fc = 0

    def _drop(self, name: str, rate: float) -> None:
        if rate > 0:  # rate 0 -> no module at all (cleaner describe(), nothing to toggle)
            self.layers[name] = nn.Dropout(rate)

    def conv(self, out_ch: int, k: int) -> None:
        if len(self.shape) != 3:
            raise ValueError(f"conv layer needs a C×H×W input, got shape {self.shape}")
        self.n_conv += 1
        i = self.n_conv
        c, h, w = self.shape
        self.layers[f"conv{i}"] = nn.Conv2d(c, out_ch, k, padding=k // 2)  # 'same' for odd k
        if self.batchnorm:
            self.layers[f"bn{i}"] = nn.BatchNorm2d(out_ch)
        self.layers[f"relu{i}"] = nn.ReLU()
        self.shape = (out_ch, h, w)

    def pool(self, k: int = 2, stride: int = 2, padding: int = 0, rate: float = 0.0) -> None:
        self.n_pool += 1
        i = self.n_pool
        c, h, w = self.shape
        self.layers[f"pool{i}"] = nn.MaxPool2d(k, stride, padding)
        out = lambda n: (n + 2 * padding - k) // stride + 1  # noqa: E731  (floor, as in MaxPool2d)
        self.shape = (c, out(h), out(w))
        if min(self.shape[1:]) < 1:
            raise ValueError(f"input too small: pooling leaves spatial shape {self.shape[1:]}")
        self._drop(f"drop{i}", rate)

    def flatten(self) -> None:
        if len(self.shape) > 1:
            self.layers["flatten"] = nn.Flatten()
            self.shape = (math.prod(self.shape),)

    def linear(self, name: str, units: int) -> None:
        """Linear bottleneck (lfc): no activation, no BN, no dropout."""
        self.layers[name] = nn.Linear(self.shape[0], units)
        self.shape = (units,)

    def fc(self, units: int, rate: float = 0.0) -> None:
        """Hidden ReLU fully-connected layer."""
        self.n_fc += 1
        i = self.n_fc
        self.layers[f"fc{i}"] = nn.Linear(self.shape[0], units)
        if self.batchnorm:
            self.layers[f"bnf{i}"] = nn.BatchNorm1d(units)
        self.layers[f"reluf{i}"] = nn.ReLU()
        self.shape = (units,)
        self._drop(f"dropf{i}", rate)

    def out(self, num_classes: int) -> None:
        self.layers["out"] = nn.Linear(self.shape[0], num_classes)

    def plain_linear(self, units: int) -> None:
        """A hidden layer of a deep *linear* net: no activation (BN after it when batchnorm)."""
        self.n_fc += 1
        i = self.n_fc
        self.layers[f"lin{i}"] = nn.Linear(self.shape[0], units)
        if self.batchnorm:
            self.layers[f"bnl{i}"] = nn.BatchNorm1d(units)
        self.shape = (units,)

    def block(self, name: str, out_ch: int, stride: int) -> None:
        """A ResNet basic block (two 3×3 convs; 1×1 projection skip when the shape changes)."""
        c, h, w = self.shape
        self.layers[name] = BasicBlock(c, out_ch, stride, self.batchnorm)
        out = lambda n: (n - 1) // stride + 1  # noqa: E731  (3×3, padding 1)
        self.shape = (out_ch, out(h), out(w))

    def global_pool(self) -> None:
        self.layers["gap"] = nn.AdaptiveAvgPool2d(1)
        self.layers["flatten"] = nn.Flatten()
        self.shape = (self.shape[0],)


class BasicBlock(nn.Module):
    """He et al. (2016) basic block: relu(bn(conv3(relu(bn(conv3(x))))) + skip(x)). The skip is the
    identity, or a 1×1 strided conv (+BN) when channels or resolution change (their option B). Conv
    biases are kept, as in every other family, so BN adds exactly 2 parameters per channel."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, batchnorm: bool):
        super().__init__()
        bn = (lambda n: nn.BatchNorm2d(n)) if batchnorm else (lambda n: nn.Identity())  # noqa: E731
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1)
        self.bn1 = bn(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.bn2 = bn(out_ch)
        self.relu = nn.ReLU()
        self.skip = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride), bn(out_ch))
                     if stride != 1 or in_ch != out_ch else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.skip(x))


def _dropout_rates(dropout, n: int, family: str) -> tuple[float, ...]:
    """() / None -> all zeros; a scalar -> the same rate everywhere; else exactly ``n`` rates."""
    if dropout is None or (not isinstance(dropout, (int, float)) and len(dropout) == 0):
        return (0.0,) * n
    if isinstance(dropout, (int, float)):
        rates = (float(dropout),) * n
    else:
        rates = tuple(float(d) for d in dropout)
    if len(rates) != n:
        raise ModelError(f"family {family!r} takes {n} dropout rates, got {len(rates)}: {rates}")
    if any(not 0.0 <= r < 1.0 for r in rates):
        raise ModelError(f"dropout rates must be in [0, 1), got {rates}")
    return rates


def _check_widths(family: "Family", widths) -> tuple[int, ...]:
    widths = tuple(widths)
    if family.variable_widths:
        if len(widths) < 1:
            raise ModelError(f"family {family.name!r} takes one or more widths ({family.width_names[0]}1, "
                             f"{family.width_names[0]}2, ...), got none")
    elif len(widths) != len(family.width_names):
        raise ModelError(f"family {family.name!r} takes {len(family.width_names)} widths "
                         f"{family.width_names}, got {len(widths)}: {widths}")
    if any(w is None for w in widths):
        raise ModelError(f"family {family.name!r}: width(s) left unset in {widths}; "
                         f"fill the dependent width with solve_budget()")
    if any(int(w) != w or w < 1 for w in widths):
        raise ModelError(f"family {family.name!r}: widths must be integers >= 1, got {widths}")
    return tuple(int(w) for w in widths)


def _finish(b: _Builder, name: str, widths, num_classes, rates, batchnorm, in_shape,
            init_scale: float, generator) -> MimicNet:
    b.out(num_classes)
    model = MimicNet(b.layers, family=name, widths=widths, num_classes=num_classes, dropout=rates,
                     batchnorm=batchnorm, in_shape=in_shape)
    return init_weights(model, init_scale, generator)


def bottleneck_mlp(name: str, widths, num_classes, dropout, batchnorm, in_shape, init_scale, generator):
    """flatten -> linear bottleneck of k units -> h ReLU units -> out. No conv layers, so any fixed-length
    input works (e.g. in_shape=(1845,) speech frames, S5). conv0 and mlp_lin differ only in which width
    the budget solves for."""
    fam = FAMILIES[name]
    k, h = _check_widths(fam, widths)
    d = _dropout_rates(dropout, fam.n_dropout, fam.name)
    b = _Builder(in_shape, batchnorm)
    b.flatten()
    b.linear("lfc", k)
    b.fc(h, d[0])
    return _finish(b, fam.name, (k, h), num_classes, d, batchnorm, in_shape, init_scale, generator)


def conv_student(name: str, plan: str, kernel: int = 5):
    """plan: a string of 'c' (kernel×kernel conv, next width) and 'p' (2×2 max-pool), followed by fc h.
    Urban et al.'s students use 5×5 convs; Ratusznik et al.'s (S6) use 3×3 (``kernel=3``)."""

    def build(widths, *, num_classes=10, dropout=(), batchnorm=False, in_shape=(3, 32, 32),
              init_scale=1.0, generator=None):
        fam = FAMILIES[name]
        ws = _check_widths(fam, widths)
        d = _dropout_rates(dropout, fam.n_dropout, fam.name)
        b = _Builder(in_shape, batchnorm)
        convs = iter(ws[:-1])
        rates = iter(d)
        for step in plan:
            if step == "c":
                b.conv(next(convs), kernel)
            else:
                b.pool(2, 2, rate=next(rates))
        b.flatten()
        b.fc(ws[-1], next(rates))
        return _finish(b, fam.name, ws, num_classes, d, batchnorm, in_shape, init_scale,
                       generator)

    build.__name__ = f"_build_{name}"
    return build


def make_resnet(name: str, blocks: tuple[int, ...]):
    """A CIFAR ResNet: a 3×3 stem conv of the first stage's width (+BN, ReLU), then ``blocks[i]`` basic
    blocks at widths[i], stride 2 at the first block of every stage after the first, global average
    pool -> out. In S6's notation a stage of n blocks is ``{width}c^{2n}``; the stem is not counted."""

    def build(widths, *, num_classes=10, dropout=(), batchnorm=False, in_shape=(3, 32, 32),
              init_scale=1.0, generator=None):
        fam = FAMILIES[name]
        ws = _check_widths(fam, widths)
        d = _dropout_rates(dropout, fam.n_dropout, fam.name)
        b = _Builder(in_shape, batchnorm)
        b.conv(ws[0], 3)
        for s, (w, n) in enumerate(zip(ws, blocks)):
            for j in range(n):
                b.block(f"block{s + 1}_{j + 1}", w, 2 if (s > 0 and j == 0) else 1)
        b.global_pool()
        return _finish(b, fam.name, ws, num_classes, d, batchnorm, in_shape, init_scale, generator)

    build.__name__ = f"_build_{name}"
    build.blocks = blocks
    return build


def fold_linear(model: nn.Module) -> nn.Sequential:
    """Multiply a trained net's linear bottleneck ``lfc`` into the layer after it (S5: the bottleneck adds
    no representational power): W = W_H @ W_L, b = W_H b_L + b_H. Returns a plain ``nn.Sequential`` with
    the same layers minus ``lfc`` (fewer layers, usually more parameters), giving the same outputs.
    Works for every family with an ``lfc`` layer (conv0, conv1, snn, mlp_lin); float64 products."""
    children = list(model.named_children())
    names = [n for n, _ in children]
    if "lfc" not in names:
        raise ModelError(f"fold_linear: {type(model).__name__} has no linear bottleneck 'lfc' layer")
    i = names.index("lfc")
    nxt = i + 1
    if nxt >= len(children) or not isinstance(children[nxt][1], nn.Linear):
        raise ModelError("fold_linear: the layer after 'lfc' is not a Linear layer")
    low, high = children[i][1], children[nxt][1]
    with torch.no_grad():
        w = high.weight.double() @ low.weight.double()
        bias = high.weight.double() @ low.bias.double() + high.bias.double()
        folded = nn.Linear(low.in_features, high.out_features, device=high.weight.device,
                           dtype=high.weight.dtype)
        folded.weight.copy_(w.to(high.weight.dtype))
        folded.bias.copy_(bias.to(high.bias.dtype))
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for j, (n, m) in enumerate(children):
        if j == i:
            continue
        layers[n] = folded if j == nxt else m
    out = nn.Sequential(layers)
    out.train(model.training)
    return out


@torch.no_grad()
def init_weights(model: nn.Module, init_scale: float = 1.0,
                 generator: torch.Generator | None = None) -> nn.Module:
    """Glorot-uniform every conv/linear weight, zero its bias, multiply the weight by ``init_scale``;
    BatchNorm back to identity. Meta tensors are skipped (nothing to fill). Returns ``model``."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            w = m.weight
            if w.is_meta:
                continue
            # Same fans as torch.nn.init.xavier_uniform_: fan_in = in * receptive field, etc.
            rf = math.prod(w.shape[2:]) if w.dim() > 2 else 1
            fan_in, fan_out = w.shape[1] * rf, w.shape[0] * rf
            a = math.sqrt(6.0 / (fan_in + fan_out))
            if generator is None:
                w.uniform_(-a, a)
            else:  # draw on the generator's device so a CPU generator also seeds CUDA models
                tmp = torch.empty(w.shape, dtype=w.dtype, device=generator.device)
                w.copy_(tmp.uniform_(-a, a, generator=generator))
            w.mul_(init_scale)
            if m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None and not m.weight.is_meta:
                m.reset_parameters()
    return model
