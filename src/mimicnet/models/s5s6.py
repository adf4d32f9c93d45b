"""The families of the other two studies (SPEC S5 Ba & Caruana, S6 Ratusznik et al.): the SNN-MIMIC net, the
shallow and deep MLPs, S6's 3×3-conv students and the CIFAR ResNets, and S6's named models. None has student
bounds, so the main study's search never sees them; solving their budget needs explicit bounds."""
from __future__ import annotations

from typing import Sequence

from .layers import (
    _Builder,
    _check_widths,
    _dropout_rates,
    _finish,
    bottleneck_mlp,
    conv_student,
    make_resnet,
)
from .paper import sup
from .registry import FAMILIES, Family, register, register_family


def _runs_of(tag: str):
    """Equal widths as powers: (256, 256, 512) -> '256{tag}²-512{tag}'."""
    def fmt(w) -> str:
        runs: list[list[int]] = []
        for x in w:
            if runs and runs[-1][0] == x:
                runs[-1][1] += 1
            else:
                runs.append([x, 1])
        return "-".join(f"{x}{tag}{sup(n) if n > 1 else ''}" for x, n in runs)
    return fmt


def _s6_conv(w) -> str:
    return "-".join([f"{x}c" for x in w[:-1]] + ["mp", f"{w[-1]}fc"])


def _resnet_arch(blocks: tuple[int, ...]):
    """S6 counts convs per stage, two per basic block (the stem is not shown)."""
    return lambda w: "-".join(f"{x}c{sup(2 * n)}" for x, n in zip(w, blocks))


@register_family("snn", width_names=("c", "k", "h"), dependent=1, n_dropout=2, description="c-mp-lfc-fc",
                 constants=((0,), (2,)), arch=lambda w: f"{w[0]}c-p-{w[1]}L-{w[2]}")  # 128c-p-1200L-30000
def snn(widths, *, num_classes=10, dropout=(), batchnorm=False, in_shape=(3, 32, 32),
               init_scale=1.0, generator=None):
    # SNN-MIMIC, Kc-p-Lk-Hk (S5): one 5×5 conv, a 2×2/2 max-pool, L linear units, H ReLU units. The pool
    # is 2×2 (not conv1's 3×3/3) because that reproduces Ba & Caruana's Table 2 counts: 128c-p-1200L-30k
    # = 75.7M ("~70M"), 64c-p-1200L-30k = 56.0M ("~54M"); the 3×3/3 pool would give 54.9M / 45.6M.
    # Their hidden-unit counts (~190k, ~110k) also need the 16×16 map. The paper gives no kernel size.
    fam = FAMILIES["snn"]
    c, k, h = _check_widths(fam, widths)
    d = _dropout_rates(dropout, fam.n_dropout, fam.name)
    b = _Builder(in_shape, batchnorm)
    b.conv(c, 5)
    b.pool(2, 2, rate=d[0])
    b.flatten()
    b.linear("lfc", k)
    b.fc(h, d[1])
    return _finish(b, fam.name, (c, k, h), num_classes, d, batchnorm, in_shape, init_scale, generator)


@register_family("mlp_lin", width_names=("k", "h"), dependent=1, n_dropout=1, description="lfc-fc",
                 constants=((0,),), arch=lambda w: f"{w[0]}L-{w[1]}")
def mlp_lin(widths, *, num_classes=10, dropout=(), batchnorm=False, in_shape=(3, 32, 32),
                   init_scale=1.0, generator=None):
    # Shallow mimic MLP "250L-8k" (S5, TIMIT): conv0's layers, but H is the dependent width (Ba & Caruana
    # fix L=250 and name nets by H).
    return bottleneck_mlp("mlp_lin", widths, num_classes, dropout, batchnorm, in_shape, init_scale, generator)


@register_family("mlp", width_names=("h",), dependent=-1, n_dropout=-1, description="fc^n", variable_widths=True,
                 arch=_runs_of("fc"))
def mlp(widths, *, num_classes=10, dropout=(), batchnorm=False, in_shape=(3, 32, 32),
               init_scale=1.0, generator=None):
    # Any depth of ReLU fc layers (deep MLP teachers of S5; S6's 2048fc², 1200fc-2400fc-1800fc).
    fam = FAMILIES["mlp"]
    ws = _check_widths(fam, widths)
    d = _dropout_rates(dropout, fam.dropout_count(ws), fam.name)
    b = _Builder(in_shape, batchnorm)
    b.flatten()
    for w, rate in zip(ws, d):
        b.fc(w, rate)
    return _finish(b, fam.name, ws, num_classes, d, batchnorm, in_shape, init_scale, generator)


@register_family("linear", width_names=("h",), dependent=-1, n_dropout=0, description="linfc^n",
                 variable_widths=True, arch=_runs_of("lin"))
def linear(widths, *, num_classes=10, dropout=(), batchnorm=False, in_shape=(3, 32, 32),
                  init_scale=1.0, generator=None):
    # Deep linear MLP (S6 256fc⁸-512fc⁶-1024fc⁸): fc layers with no activation at all (BN optional).
    fam = FAMILIES["linear"]
    ws = _check_widths(fam, widths)
    d = _dropout_rates(dropout, fam.dropout_count(ws), fam.name)
    b = _Builder(in_shape, batchnorm)
    b.flatten()
    for w in ws:
        b.plain_linear(w)
    return _finish(b, fam.name, ws, num_classes, d, batchnorm, in_shape, init_scale, generator)


register(Family(name="cnn1", width_names=("c", "h"), dependent=1, build=conv_student("cnn1", "cp", kernel=3),
                n_dropout=2, description="c3-mp-fc", constants=((0,),), arch=_s6_conv))
register(Family(name="cnn2", width_names=("c1", "c2", "h"), dependent=2, build=conv_student("cnn2", "ccp", kernel=3),
                n_dropout=2, description="c3-c3-mp-fc", constants=((0,), (1,)), arch=_s6_conv))


def register_resnet(name: str, blocks: Sequence[int]) -> Family:
    """A ResNet of ``blocks[i]`` basic blocks per stage: ``register_resnet("resnet_x", (2, 2, 2))`` -> widths
    (c1, c2, c3). The dependent width (last stage) enters quadratically: solve_budget searches instead."""
    blocks = tuple(int(n) for n in blocks)
    return register(Family(name=name, width_names=tuple(f"c{i + 1}" for i in range(len(blocks))),
                           dependent=len(blocks) - 1, build=make_resnet(name, blocks), n_dropout=0,
                           description="-".join(f"res(c{i + 1}×{n})" for i, n in enumerate(blocks)) + "-gap",
                           constants=tuple((i,) for i in range(len(blocks) - 1)), arch=_resnet_arch(blocks)))


register_resnet("resnet_deep", (4, 6, 8))
register_resnet("resnet_shallow", (1, 2))


def s6_students() -> dict[str, tuple[str, tuple[int, ...]]]:
    """Ratusznik et al.'s Table 2 students (S6), name -> (family, widths). All convs 3×3, pools 2×2;
    "all linear" in their names means fully connected with ReLU (their §4.6: ReLU at every layer).
    Parameter counts (batchnorm=False / True), against their "10M":
      3-layer-1-CONV 64c-mp-640fc         10,494,602 / 10,496,010
      4-layer-2-CONV 64c²-mp-600fc         9,875,730 /  9,877,186
      3-layer-linear 2048fc²              10,510,346 / 10,518,538
      4-layer-linear 1200fc-2400fc-1800fc 10,909,810 / 10,920,610
      Shallow-ResNet 128c²-512c⁴           8,039,690 /  8,045,578  (stem conv + 1 block at 128, 2 at 512;
                                                                   the paper's 10M is "approximate")"""
    return {
        "3-layer-1-CONV": ("cnn1", (64, 640)),
        "4-layer-2-CONV": ("cnn2", (64, 64, 600)),
        "3-layer-linear": ("mlp", (2048, 2048)),
        "4-layer-linear": ("mlp", (1200, 2400, 1800)),
        "Shallow-ResNet": ("resnet_shallow", (128, 512)),
    }


def s6_deep() -> dict[str, tuple[str, tuple[int, ...]]]:
    """Ratusznik et al.'s deep models (S6): the two teachers and the deep linear net.
    Deep-linear uses the ``linear`` family (no activations) as SPEC S6 names it; their §4.6 says ReLU at
    every layer, so ``("mlp", same widths)`` is the other reading (same parameter count)."""
    # Counts (batchnorm=False): Teacher-1 5,339,350 ("5M"); Deep-ResNet 11,184,778 ("10M", with stem);
    # Deep-linear 10,574,858 ("approximately 10M").
    return {
        "Teacher-1": ("teacher", (76, 126, 148, 1200)),
        "Deep-ResNet": ("resnet_deep", (64, 128, 256)),
        "Deep-linear": ("linear", (256,) * 8 + (512,) * 6 + (1024,) * 8),
    }
