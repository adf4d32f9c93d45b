"""The paper's families (Urban et al., SPEC S2 and S4): the deep teacher and the students of 0-4 conv layers, each
registered beside its builder with its widths, roles, the paper's search bounds (Table 3, §6.2) and its
architecture string. Where the two copies of the paper differ we follow SPEC's main value: conv0 @10M 5000-30000
(001 has 1000-30000); conv1 fc @31.6M 1000-41000 (000 has 1000-4100)."""
from __future__ import annotations

from .layers import (
    _Builder,
    _check_widths,
    _dropout_rates,
    _finish,
    bottleneck_mlp,
    conv_student,
)
from .registry import (
    FAMILIES,
    STUDENT,
    TEACHER,
    Bounds,
    Family,
    register,
    register_family,
)

_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def sup(n: int) -> str:
    return str(n).translate(_SUPERSCRIPT)


# Teacher: one (lo, hi) per constant C1, C2, C3, H1 (S2 / §2.7).
TEACHER_BOUNDS: Bounds = ((32, 96), (64, 192), (128, 384), (512, 1536))
BASELINE_BUDGET = 10_000_000


@register_family("teacher", width_names=("g1", "g2", "g3", "h"), dependent=None, n_dropout=5,
                 description="c3²-mp-c3²-mp-c3⁴-mp-fc²", constants=((0,), (1,), (2,), (3,)), role=TEACHER,
                 arch=lambda w: f"{w[0]}c{sup(2)}-mp-{w[1]}c{sup(2)}-mp-{w[2]}c{sup(4)}-mp-{w[3]}fc{sup(2)}")
def teacher(widths, *, num_classes=10, dropout=(), batchnorm=False, in_shape=(3, 32, 32),
                   init_scale=1.0, generator=None):
    fam = FAMILIES["teacher"]
    g1, g2, g3, h = _check_widths(fam, widths)
    d = _dropout_rates(dropout, fam.n_dropout, fam.name)
    b = _Builder(in_shape, batchnorm)
    for width, reps, rate in ((g1, 2, d[0]), (g2, 2, d[1]), (g3, 4, d[2])):  # groups 2-2-4 (S2)
        for _ in range(reps):
            b.conv(width, 3)
        b.pool(2, 2, rate=rate)
    b.flatten()
    b.fc(h, d[3])
    b.fc(h, d[4])
    return _finish(b, fam.name, (g1, g2, g3, h), num_classes, d, batchnorm, in_shape,
                   init_scale, generator)


@register_family("conv0", width_names=("k", "h"), dependent=0, n_dropout=1, description="lfc-fc", constants=((1,),),
                 role=STUDENT, student_bounds={1_000_000: ((500, 5000),), 3_160_000: ((1000, 20000),),
                                               10_000_000: ((5000, 30000),), 31_600_000: ((5000, 45000),)},
                 arch=lambda w: f"{w[0]}lfc-{w[1]}fc")
def conv0(widths, *, num_classes=10, dropout=(), batchnorm=False, in_shape=(3, 32, 32),
                 init_scale=1.0, generator=None):
    return bottleneck_mlp("conv0", widths, num_classes, dropout, batchnorm, in_shape, init_scale, generator)


# Hard-target baselines, 10M only (§6.2): conv1 c / fc (bottleneck dependent); conv2 c1 / c2;
# conv3 c1 / (c2, c3); conv4 (c1, c2) / (c3, c4); fc width dependent.
@register_family("conv1", width_names=("c", "k", "h"), dependent=1, n_dropout=2, description="c-mp3-lfc-fc",
                 constants=((0,), (2,)), role=STUDENT,
                 student_bounds={1_000_000: ((40, 150), (200, 1600)), 3_160_000: ((50, 300), (100, 4000)),
                                 10_000_000: ((50, 450), (500, 20000)), 31_600_000: ((200, 600), (1000, 41000))},
                 baseline_bounds=((50, 500), (200, 2000)), arch=lambda w: f"{w[0]}c-mp3-{w[1]}lfc-{w[2]}fc")
def conv1(widths, *, num_classes=10, dropout=(), batchnorm=False, in_shape=(3, 32, 32),
                 init_scale=1.0, generator=None):
    fam = FAMILIES["conv1"]
    c, k, h = _check_widths(fam, widths)
    d = _dropout_rates(dropout, fam.n_dropout, fam.name)
    b = _Builder(in_shape, batchnorm)
    b.conv(c, 5)
    # 3×3 pooling (§6.2); stride 3 + padding 1 -> 32×32 becomes 11×11 (non-overlapping windows).
    b.pool(3, 3, 1, rate=d[0])
    b.flatten()
    b.linear("lfc", k)
    b.fc(h, d[1])
    return _finish(b, fam.name, (c, k, h), num_classes, d, batchnorm, in_shape, init_scale,
                   generator)


register(Family(name="conv2", width_names=("c1", "c2", "h"), dependent=2, build=conv_student("conv2", "cpcp"),
                n_dropout=3, description="c-mp-c-mp-fc", constants=((0,), (1,)), role=STUDENT,
                student_bounds={1_000_000: ((20, 120),) * 2, 3_160_000: ((50, 250),) * 2,
                                10_000_000: ((50, 350),) * 2, 31_600_000: ((50, 800),) * 2},
                baseline_bounds=((50, 500), (100, 400))))
register(Family(name="conv3", width_names=("c1", "c2", "c3", "h"), dependent=3, build=conv_student("conv3", "cpcpcp"),
                n_dropout=4, description="c-mp-c-mp-c-mp-fc", constants=((0,), (1, 2)), role=STUDENT,
                student_bounds={1_000_000: ((20, 110),) * 2, 3_160_000: ((40, 200),) * 2,
                                10_000_000: ((50, 350),) * 2, 31_600_000: ((50, 650),) * 2},
                baseline_bounds=((50, 500), (100, 300))))
register(Family(name="conv4", width_names=("c1", "c2", "c3", "c4", "h"), dependent=4,
                build=conv_student("conv4", "cpccpcp"), n_dropout=4, description="c-mp-c-c-mp-c-mp-fc",
                constants=((0, 1), (2, 3)), role=STUDENT,
                student_bounds={1_000_000: ((25, 100), (25, 100)), 3_160_000: ((50, 150), (50, 200)),
                                10_000_000: ((50, 300), (50, 350)), 31_600_000: ((50, 500), (50, 650))},
                baseline_bounds=((50, 300), (100, 300))))
MAIN_FAMILIES = ("teacher", "conv0", "conv1", "conv2", "conv3", "conv4")
