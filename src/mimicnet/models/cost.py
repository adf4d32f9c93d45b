"""What a network costs to run, from its architecture alone: multiply-adds of one forward pass (``count_macs``)
and the network as it is shipped (``shipped``: the linear bottleneck folded when that lowers the parameter
count, batch norm folded, the preprocessing inside), which is what compress exports, times and counts.

Multiply-adds are counted by torch's own ``torch.utils.flop_counter.FlopCounterMode`` on one image (its FLOPs
are 2 per multiply-add, halved here): convolutions and matrix products; biases, ReLUs, pooling and the
per-image standardisation (a few operations per pixel) are not counted, as is usual for "FLOPs" of a CNN.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .export import Standalone, fold_batchnorm
from .families import count_params, fold_linear

__all__ = ["count_macs", "shipped"]


@torch.no_grad()
def count_macs(model: nn.Module, in_shape=(3, 32, 32)) -> int:
    """Multiply-adds of one forward pass of `model` on one input of shape `in_shape` (on the CPU)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *in_shape, device=next(model.parameters()).device)
    with FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops()) // 2


def shipped(model: nn.Module, input_scale: float = 1.0, in_shape=(3, 32, 32),
            already_folded: bool = False) -> tuple[Standalone, dict]:
    """(`model` as compress ships it: its ``lfc`` bottleneck multiplied into the next layer only when that makes
    fewer parameters, batch norm folded, per-image standardisation inside; what was folded and why).
    The decision depends on the widths alone, so a freshly built model of a shape is timed and counted as its
    trained student will be."""
    model = model.eval()
    fold: dict = {"bottleneck": "none"}
    names = dict(model.named_children())
    if "lfc" in names and not already_folded:
        folded = fold_linear(model).eval()
        before, after = count_params(model), count_params(folded)
        if after < before:
            model, fold = folded, {"bottleneck": "folded", "params_unfolded": before, "params": after}
        else:
            fold = {"bottleneck": "kept", "params": before, "params_if_folded": after,
                    "why": f"folding the {names['lfc'].out_features}-unit linear bottleneck would make {after:,} "
                           f"parameters of {before:,}"}
    elif already_folded:
        fold = {"bottleneck": "folded", "params": count_params(model)}
    if any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules()):
        fold["batchnorm"] = "folded into the conv/linear layer before it"
    return Standalone(fold_batchnorm(model), input_scale, tuple(in_shape)).eval(), fold
