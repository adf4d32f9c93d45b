"""Losses, registered by name. A loss is built from the run's config and scores a batch:
`loss(outputs, targets)`. Hard-label losses take the labels; mimic losses take (teacher logits, labels)
and mark the run as a student (it needs a teacher: a transfer set or given logits).

    ce          cross-entropy on the true labels (teachers, hard-target baselines), with label smoothing
    l2-logits   (1/2) sum ||g - z||^2 over the logits, batch mean (Ba & Caruana; Urban et al.): the default
    l2-probs    the same on softmax probabilities
    kl          T^2 KL(softmax(z/T) || softmax(g/T))  (Hinton et al.)
    softmax-mse mean squared error between softmax(g/T) and softmax(z/T)  (Ratusznik et al.)
Every mimic loss adds hard_weight * cross-entropy on the true labels (the rest weighted 1 - hard_weight).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError


@dataclass(frozen=True)
class Loss:
    name: str
    mimic: bool                      # True: targets are (teacher logits, labels); the run is a student
    build: Callable                  # build(cfg) -> loss(outputs, targets)


LOSSES: dict[str, Loss] = {}


def register_loss(name: str, mimic: bool):
    def deco(build):
        LOSSES[name] = Loss(name, mimic, build)
        return build
    return deco


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"loss must be one of {', '.join(LOSSES)}; not {name!r}") from None


@register_loss("ce", mimic=False)
def cross_entropy(cfg):
    return lambda out, y: F.cross_entropy(out, y, label_smoothing=cfg.optim.label_smoothing)


def _with_labels(cfg, soft):
    """soft(g, z) on float32, plus hard_weight * cross-entropy on the labels."""
    a = cfg.distill.hard_weight

    def loss(g, target):
        z, y = target
        out = soft(g.float(), z.float())
        return out if a == 0 else (1 - a) * out + a * F.cross_entropy(g, y)
    return loss


@register_loss("l2-logits", mimic=True)
def l2_logits(cfg):
    return _with_labels(cfg, lambda g, z: 0.5 * (g - z).pow(2).sum(1).mean())


@register_loss("l2-probs", mimic=True)
def l2_probs(cfg):
    return _with_labels(cfg, lambda g, z: 0.5 * (g.softmax(1) - z.softmax(1)).pow(2).sum(1).mean())


@register_loss("kl", mimic=True)
def kl(cfg):
    T = cfg.distill.temperature
    return _with_labels(cfg, lambda g, z: F.kl_div(F.log_softmax(g / T, 1), F.log_softmax(z / T, 1),
                                                   log_target=True, reduction="batchmean") * T * T)


@register_loss("softmax-mse", mimic=True)
def softmax_mse(cfg):
    T = cfg.distill.temperature
    return _with_labels(cfg, lambda g, z: F.mse_loss((g / T).softmax(1), (z / T).softmax(1)))


def make_loss(cfg):
    """The loss of a run's config (`cfg.optim.loss`, with its temperature, label smoothing, hard weight)."""
    return get_loss(cfg.optim.loss).build(cfg)


@torch.no_grad()
def mimic_metrics(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> dict:
    """How well a student mimics: mean squared logit error and argmax agreement (on the test set)."""
    return {"mimic_mse": (student_logits - teacher_logits).pow(2).mean().item(),
            "mimic_agreement": (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item()}
