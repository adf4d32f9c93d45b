"""Model families, parameter counting and the budget solver (SPEC S2, S4)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mimicnet.models import families as M
from mimicnet.models.families import BASELINE_BOUNDS, BUDGETS, FAMILIES, STUDENT_BOUNDS, TEACHER_BOUNDS, BudgetError, build_model, count_params, describe, get_family, init_weights, scaled_bounds, solve_budget, teacher_widths, widths_from_constants

# Tiny widths per family: enough to exercise every layer in milliseconds.
SMALL = {
    "teacher": (8, 8, 8, 16),
    "conv0": (8, 16),
    "conv1": (4, 8, 16),
    "conv2": (4, 4, 16),
    "conv3": (4, 4, 4, 16),
    "conv4": (4, 4, 4, 4, 16),
    # issue 6 (S5, S6)
    "snn": (4, 8, 16),
    "mlp_lin": (8, 16),
    "mlp": (16, 8, 12),
    "linear": (16, 8),
    "cnn1": (4, 16),
    "cnn2": (4, 4, 16),
    "resnet_deep": (4, 6, 8),
    "resnet_shallow": (4, 8),
    "airbench": (4, 6, 8),
}
# The main study's students (the ones with budget bounds, what the search explores).
STUDENTS = list(STUDENT_BOUNDS)


def test_registry_is_what_the_study_needs():
    assert set(M.MAIN_FAMILIES) <= set(FAMILIES)
    assert set(FAMILIES) - set(M.MAIN_FAMILIES) == {"snn", "mlp_lin", "mlp", "linear", "cnn1", "cnn2",
                                                    "resnet_deep", "resnet_shallow", "airbench"}
    assert set(SMALL) == set(FAMILIES)  # a new family must get a SMALL entry (and thus tests)
    assert STUDENTS == ["conv0", "conv1", "conv2", "conv3", "conv4"]
    # students have at most two width constants (S4: C1, C2)
    assert all(FAMILIES[n].n_constants <= 2 for n in STUDENTS)


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("with_dropout", [False, True])
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_forward_backward_count(name, batchnorm, with_dropout):
    fam = get_family(name)
    n_rates = fam.dropout_count(SMALL[name])
    dropout = tuple(0.1 + 0.05 * i for i in range(n_rates)) if with_dropout else ()
    torch.manual_seed(0)
    model = build_model(name, SMALL[name], dropout=dropout, batchnorm=batchnorm)
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    assert y.shape == (2, 10)
    y.square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    real = sum(p.numel() for p in model.parameters())
    assert count_params(name, SMALL[name], dropout=dropout, batchnorm=batchnorm) == real
    assert count_params(model) == real
    n_drop = sum(isinstance(m, nn.Dropout) for m in model.modules())
    assert n_drop == (n_rates if with_dropout else 0)  # zero rate -> no module at all
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert (n_bn > 0) == batchnorm


def test_dropout_rates_validated():
    with pytest.raises(ValueError, match="takes 3 dropout rates"):
        build_model("conv2", SMALL["conv2"], dropout=(0.1, 0.2))
    # a scalar is broadcast to every dropout site
    m = build_model("conv2", SMALL["conv2"], dropout=0.3)
    assert [m.p for m in m.modules() if isinstance(m, nn.Dropout)] == [0.3] * 3


def test_widths_validated():
    with pytest.raises(ValueError, match="unset"):
        build_model("conv2", (4, 4, None))
    with pytest.raises(ValueError, match="takes 3 widths"):
        build_model("conv2", (4, 4))


def test_teacher_hand_counts():
    # 76c²-mp-126c²-mp-148c⁴-mp-1200fc² (S2 "5.3M"), 3×3 convs, 32 -> 16 -> 8 -> 4:
    #   conv 3->76      3*9*76 + 76     =     2,128
    #   conv 76->76    76*9*76 + 76     =    52,060
    #   conv 76->126   76*9*126 + 126   =    86,310
    #   conv 126->126 126*9*126 + 126   =   143,010
    #   conv 126->148 126*9*148 + 148   =   167,980
    #   3 × conv 148->148 3*(148*9*148 + 148) = 591,852
    #   fc 148*4*4=2368 -> 1200  2368*1200 + 1200 = 2,842,800
    #   fc 1200 -> 1200                  = 1,441,200
    #   out 1200 -> 10                   =    12,010
    #   total                            = 5,339,350
    assert count_params("teacher", (76, 126, 148, 1200)) == 5_339_350
    # the other two S2 teachers: "2.5M" and "5.8M" (paper rounds), within 2%
    assert count_params("teacher", (96, 171, 128, 512)) == pytest.approx(2.5e6, rel=0.02)
    assert count_params("teacher", (54, 158, 189, 1044)) == pytest.approx(5.8e6, rel=0.02)


def test_student_hand_counts():
    # conv2 (32, 64, 128), 5×5 convs: 3*25*32+32 = 2,432; 32*25*64+64 = 51,264;
    # 32 -> 16 -> 8: fc 64*8*8=4096 -> 128: 524,416; out 128*10+10 = 1,290. Total 579,402.
    assert count_params("conv2", (32, 64, 128)) == 579_402
    # conv0 (k=100, h=200): 3072*100+100 = 307,300; 100*200+200 = 20,200; 2,010. Total 329,510.
    assert count_params("conv0", (100, 200)) == 329_510
    # conv1 (64, 100, 200): 3*25*64+64 = 4,864; pool3 -> 11×11, 64*121=7744 -> 100: 774,500;
    # 100 -> 200: 20,200; out 2,010. Total 801,574.
    assert count_params("conv1", (64, 100, 200)) == 801_574
    # batchnorm adds 2 per conv channel / fc unit: 2*(32+64+128)
    assert count_params("conv2", (32, 64, 128), batchnorm=True) == 579_402 + 2 * (32 + 64 + 128)


def test_meta_count_of_a_big_model_is_free():
    # 31.6M conv1 at the top of its bounds: counted on the meta device, nothing allocated
    w = solve_budget("conv1", 31_600_000, (1.0, 1.0))
    assert count_params("conv1", w) == pytest.approx(31.6e6, rel=0.01)


def test_describe():
    rows = describe("conv1", (64, 100, 200))
    assert [r["name"] for r in rows][:3] == ["conv1", "relu1", "pool1"]
    assert rows[2]["shape"] == (64, 11, 11)  # 3×3 pool, stride 3, padding 1
    assert rows[-1] == {"name": "out", "type": "Linear", "shape": (10,), "params": 2010}
    assert sum(r["params"] for r in rows) == 801_574
    t = describe("teacher", (76, 126, 148, 1200), batchnorm=True, dropout=(0.1,) * 5)
    assert dict((r["name"], r["shape"]) for r in t)["pool3"] == (148, 4, 4)
    assert sum(r["params"] for r in t) == count_params("teacher", (76, 126, 148, 1200),
                                                       batchnorm=True)
    # a real module is described through a meta twin, with its own counts
    m = build_model("conv4", SMALL["conv4"], batchnorm=True)
    assert describe(m) == describe("conv4", SMALL["conv4"], batchnorm=True)


def test_arch_string():
    assert M.arch_string("teacher", (76, 126, 148, 1200)) == "76c²-mp-126c²-mp-148c⁴-mp-1200fc²"
    assert M.arch_string("conv4", (1, 2, 3, 4, 5)) == "1c-mp-2c-3c-mp-4c-mp-5fc"
    assert M.arch_string("conv1", (128, 1200, 30000)) == "128c-mp3-1200lfc-30000fc"


def test_conv0_takes_feature_vectors():
    # S5: the mimic recipe must run on any fixed-length features with any number of targets
    m = build_model("conv0", (16, 32), in_shape=(1845,), num_classes=183)
    assert m(torch.randn(2, 1845)).shape == (2, 183)


# ------------------------------------------------------------------ budget solver
# Every (family, budget, constant) cell the solver cannot meet within 1%. The SPEC S4 table's bounds
# meet every budget at constants 0, 0.5, 1; the sqrt-scaled 0.1M bounds (cpu preset) miss 1% in three
# cells because one bottleneck unit there is worth > 2% of the budget (3,073 + h parameters in conv0).
INFEASIBLE: set = set()   # every S4 cell (and 0.1M) can be met: nearest integer width, see below


@pytest.mark.parametrize("budget", BUDGETS + (100_000,))
@pytest.mark.parametrize("name", STUDENTS)
def test_solve_budget_grid(name, budget):
    fam = get_family(name)
    for c in (0.0, 0.5, 1.0):
        consts = (c,) * fam.n_constants
        if (name, budget, c) in INFEASIBLE:
            with pytest.raises(BudgetError, match=name):
                solve_budget(name, budget, consts)
            continue
        w = solve_budget(name, budget, consts)
        assert all(isinstance(x, int) and x >= 1 for x in w)
        if budget in BUDGETS:
            assert abs(count_params(name, w) - budget) <= 0.01 * budget, (name, budget, c, w)
        else:  # scaled-down budget: within 1%, or as close as one unit of the dependent width allows
            unit = count_params(name, w[:fam.dependent] + (w[fam.dependent] + 1,) + w[fam.dependent + 1:]) - \
                count_params(name, w)
            assert abs(count_params(name, w) - budget) <= max(0.01 * budget, unit / 2), (name, budget, c, w)
        # fixed widths are exactly the constants' mapping; only the dependent one was solved
        fixed = widths_from_constants(name, consts, scaled_bounds(name, budget))
        assert [x for i, x in enumerate(w) if i != fam.dependent] == \
               [x for x in fixed if x is not None]
        # neighbours of the solved width are no closer to the budget
        for d in (-1, 1):
            nb = list(w)
            nb[fam.dependent] += d
            if nb[fam.dependent] >= 1:
                assert abs(count_params(name, nb) - budget) >= abs(count_params(name, w) - budget)


@pytest.mark.parametrize("name", sorted(BASELINE_BOUNDS))
def test_solve_budget_baselines(name):
    for c in (0.0, 0.5, 1.0):
        w = solve_budget(name, 10_000_000, (c, c), BASELINE_BOUNDS[name])
        assert count_params(name, w) == pytest.approx(10_000_000, rel=0.01)


def test_solve_budget_with_batchnorm_counts_it():
    w = solve_budget("conv3", 1_000_000, (0.5, 0.5), batchnorm=True)
    assert count_params("conv3", w, batchnorm=True) == pytest.approx(1e6, rel=0.01)


def test_budget_error_names_family_and_budget():
    # conv2 with 500 filters in both layers: 500*25*500 alone is 6.25M > 1M, so h would be < 1
    with pytest.raises(BudgetError, match=r"conv2.*1,000,000.*< 1"):
        solve_budget("conv2", 1_000_000, (0.0, 0.0), ((500, 500), (500, 500)))
    assert issubclass(BudgetError, ValueError)
    with pytest.raises(ValueError, match="no dependent width"):
        solve_budget("teacher", 1_000_000, (0.5,) * 4, TEACHER_BOUNDS)


def test_bounds_tables_shape():
    for name, by_budget in STUDENT_BOUNDS.items():
        assert set(by_budget) == set(BUDGETS)
        for bounds in by_budget.values():
            assert len(bounds) == get_family(name).n_constants
            assert all(1 <= lo <= hi for lo, hi in bounds)
    assert STUDENT_BOUNDS["conv1"][31_600_000][1] == (1000, 41000)  # SPEC main value, not 000's
    assert STUDENT_BOUNDS["conv0"][10_000_000] == ((5000, 30000),)
    for name, bounds in BASELINE_BOUNDS.items():
        assert len(bounds) == get_family(name).n_constants


# SPEC S4's student-bounds table, cell by cell (1M, 3.16M, 10M, 31.6M), typed out from SPEC.md by hand:
# conv0 fc; conv1 c / fc; conv2 and conv3 one range for their convs (conv3's second constant sets its
# second and third layer); conv4 c,c / c,c.
_SPEC_S4 = {
    "conv0": [((500, 5000),), ((1000, 20000),), ((5000, 30000),), ((5000, 45000),)],
    "conv1": [((40, 150), (200, 1600)), ((50, 300), (100, 4000)), ((50, 450), (500, 20000)),
              ((200, 600), (1000, 41000))],
    "conv2": [((20, 120),) * 2, ((50, 250),) * 2, ((50, 350),) * 2, ((50, 800),) * 2],
    "conv3": [((20, 110),) * 2, ((40, 200),) * 2, ((50, 350),) * 2, ((50, 650),) * 2],
    "conv4": [((25, 100), (25, 100)), ((50, 150), (50, 200)), ((50, 300), (50, 350)), ((50, 500), (50, 650))],
}


@pytest.mark.parametrize("name", sorted(_SPEC_S4))
def test_student_bounds_are_spec_s4_cell_by_cell(name):
    assert BUDGETS == (1_000_000, 3_160_000, 10_000_000, 31_600_000)
    for budget, spec in zip(BUDGETS, _SPEC_S4[name]):
        assert STUDENT_BOUNDS[name][budget] == spec, (name, budget)


def test_scaled_bounds():
    assert scaled_bounds("conv2", 1_000_000) == STUDENT_BOUNDS["conv2"][1_000_000]
    assert scaled_bounds("conv2", 100_000) == ((6, 38), (6, 38))  # 20-120 × sqrt(0.1)
    assert scaled_bounds("conv2", 100) == ((4, 4), (4, 4))  # floored at 4
    with pytest.raises(ValueError):
        scaled_bounds("teacher", 100_000)


# ------------------------------------------------------------------ constants -> widths
@pytest.mark.parametrize("name", STUDENTS)
def test_widths_from_constants_endpoints(name):
    fam = get_family(name)
    for budget, bounds in STUDENT_BOUNDS[name].items():
        for c, pick in ((0.0, 0), (1.0, 1)):
            w = widths_from_constants(name, (c,) * fam.n_constants, bounds)
            assert w[fam.dependent] is None
            for (lo_hi, idx) in zip(bounds, fam.constants):
                for i in idx:
                    assert w[i] == lo_hi[pick]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        widths_from_constants(name, (1.5,) * fam.n_constants, STUDENT_BOUNDS[name][BUDGETS[0]])


def test_teacher_widths():
    assert teacher_widths(0, 0, 0, 0) == (32, 64, 128, 512)
    assert teacher_widths(1, 1, 1, 1) == (96, 192, 384, 1536)
    assert teacher_widths(0.5, 0.5, 0.5, 0.5) == (64, 128, 256, 1024)


def test_unknown_family():
    with pytest.raises(ValueError, match="conv0.*conv4.*teacher"):
        get_family("nope")


# ------------------------------------------------------------------ init
def test_init_weights_scale_and_glorot():
    model = build_model("conv2", (4, 6, 16), batchnorm=True)
    init_weights(model, 1.0, torch.Generator().manual_seed(0))
    ref = {n: p.detach().clone() for n, p in model.named_parameters()}
    init_weights(model, 2.0, torch.Generator().manual_seed(0))
    for mod_name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w1 = ref[f"{mod_name}.weight"]
            assert torch.equal(m.weight, 2 * w1)  # same draws, doubled
            assert m.weight.std().item() == pytest.approx(2 * w1.std().item(), rel=1e-6)
            assert torch.count_nonzero(m.bias) == 0
            rf = math.prod(m.weight.shape[2:]) if m.weight.dim() > 2 else 1
            bound = math.sqrt(6 / (m.weight.shape[0] * rf + m.weight.shape[1] * rf))
            assert w1.abs().max() <= bound  # Glorot uniform range
        elif isinstance(m, nn.BatchNorm2d):  # BN left at identity, not scaled
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    # build_model passes init_scale / generator through, reproducibly
    a = build_model("conv0", (8, 16), init_scale=0.5, generator=torch.Generator().manual_seed(1))
    b = build_model("conv0", (8, 16), init_scale=0.5, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


# ------------------------------------------------------------------ issue 6 families (S5, S6)
def test_issue6_hand_counts():
    # snn 128c-p-1200L-30k (Ba & Caruana "~70M"): conv 3*25*128+128 = 9,728; 2×2 pool -> 128*16*16 =
    # 32,768 -> 1200: 39,322,800; 1200 -> 30000: 36,030,000; out 30000*10+10 = 300,010.
    assert count_params("snn", (128, 1200, 30000)) == 75_662_538
    # mlp_lin 250L-8k on 1845-dim frames, 183 targets (S5 TIMIT): 461,500 + 2,008,000 + 1,464,183
    assert count_params("mlp_lin", (250, 8000), in_shape=(1845,), num_classes=183) == 3_933_683
    # mlp 2048fc²: 3072*2048+2048 + 2048*2048+2048 + 2048*10+10
    assert count_params("mlp", (2048, 2048)) == 6_293_504 + 4_196_352 + 20_490
    # linear 256fc⁸-512fc⁶-1024fc⁸: 786,688 + 7*65,792 + 131,584 + 5*262,656 + 525,312 + 7*1,049,600 + 10,250
    assert count_params("linear", (256,) * 8 + (512,) * 6 + (1024,) * 8) == 10_574_858
    # cnn1 64c-mp-640fc (3×3 convs): 1,792 + 16,384*640+640 + 6,410
    assert count_params("cnn1", (64, 640)) == 10_494_602
    # resnet_shallow 128c²-512c⁴: stem 3,584; block(128) 2*147,584; block(128->512, /2) 590,336 +
    # 2,359,808 + projection 66,048; block(512) 2*2,359,808; out 5,130
    assert count_params("resnet_shallow", (128, 512)) == 8_039_690
    # batchnorm: +2 per channel everywhere it normalises (stem, 2 per block, projections)
    assert count_params("resnet_shallow", (128, 512), batchnorm=True) == \
        8_039_690 + 2 * (128 + 2 * 128 + 3 * 512 + 2 * 512)


def test_s6_models_are_about_10m():
    # The paper says "10M" for every student and rounds; Shallow-ResNet comes out at 8.0M with our
    # stem + 1 + 2 basic blocks, Deep-ResNet at 11.2M. Everything else is within 10%.
    for name, (fam, w) in {**M.s6_students(), **M.s6_deep()}.items():
        n = count_params(fam, w, batchnorm=True)
        target = 5.3e6 if name == "Teacher-1" else 10e6
        assert n == pytest.approx(target, rel=0.21), (name, n)
    assert M.arch_string(*M.s6_deep()["Deep-ResNet"]) == "64c⁸-128c¹²-256c¹⁶"
    assert M.arch_string(*M.s6_students()["Shallow-ResNet"]) == "128c²-512c⁴"
    assert M.arch_string(*M.s6_deep()["Deep-linear"]) == "256lin⁸-512lin⁶-1024lin⁸"
    assert M.arch_string("snn", (128, 1200, 30000)) == "128c-p-1200L-30000"


def test_resnet_structure():
    m = build_model("resnet_deep", (4, 6, 8), batchnorm=True)
    blocks = [n for n, _ in m.named_children() if n.startswith("block")]
    assert len(blocks) == 4 + 6 + 8
    rows = {r["name"]: r["shape"] for r in describe("resnet_deep", (4, 6, 8))}
    assert rows["block1_4"] == (4, 32, 32) and rows["block2_1"] == (6, 16, 16)
    assert rows["block3_8"] == (8, 8, 8) and rows["gap"] == (8, 1, 1)
    # identity skip inside a stage, projection where the shape changes
    assert isinstance(m.block1_2.skip, nn.Identity) and isinstance(m.block2_1.skip, nn.Sequential)


def test_linear_family_is_linear():
    m = build_model("linear", (16, 8, 4)).double()
    x, y = torch.randn(3, 3, 32, 32, dtype=torch.float64), torch.randn(3, 3, 32, 32, dtype=torch.float64)
    zero = m(torch.zeros_like(x))
    assert torch.allclose(m(x + 2 * y) - zero, (m(x) - zero) + 2 * (m(y) - zero))
    assert not any(isinstance(mod, nn.ReLU) for mod in m.modules())


def test_variable_width_families():
    assert len(build_model("mlp", (8,)).fc1.weight) == 8
    with pytest.raises(ValueError, match="one or more widths"):
        build_model("mlp", ())
    with pytest.raises(ValueError, match="takes 2 dropout rates"):
        build_model("mlp", (8, 8), dropout=(0.1,))
    # solve_budget: one constant per width but the last; the last is solved
    w = solve_budget("mlp", 1_000_000, (0.5,), ((100, 300),))
    assert w[0] == 200 and count_params("mlp", w) == pytest.approx(1e6, rel=0.01)
    w = solve_budget("mlp", 1_000_000, ())
    assert len(w) == 1 and count_params("mlp", w) == pytest.approx(1e6, rel=0.01)


@pytest.mark.parametrize("name,bounds", [("snn", ((16, 64), (1000, 3000))), ("mlp_lin", ((50, 300),)),
                                         ("cnn2", ((16, 64), (16, 64))), ("resnet_deep", ((32, 96), (64, 192)))])
def test_solve_budget_new_families(name, bounds):
    fam = get_family(name)
    for c in (0.0, 1.0):
        w = solve_budget(name, 10_000_000, (c,) * fam.n_constants, bounds, batchnorm=True)
        got = count_params(name, w, batchnorm=True)
        assert got == pytest.approx(10_000_000, rel=0.01), (name, c, w, got)
        for d in (-1, 1):  # neighbours no closer (resnet: the count is quadratic, found by bisection)
            nb = list(w)
            nb[fam.dependent] += d
            assert abs(count_params(name, nb, batchnorm=True) - 1e7) >= abs(got - 1e7)
    with pytest.raises(ValueError, match="no student bounds"):
        solve_budget(name, 10_000_000, (0.5,) * fam.n_constants)  # new families need explicit bounds


@pytest.mark.parametrize("name,widths,in_shape", [("snn", (4, 6, 40), (3, 32, 32)),
                                                  ("conv1", (4, 6, 40), (3, 32, 32)),
                                                  ("mlp_lin", (5, 40), (30,))])
def test_fold_linear_same_outputs(name, widths, in_shape):
    torch.manual_seed(0)
    m = build_model(name, widths, in_shape=in_shape, batchnorm=True, num_classes=7).eval()
    for p in m.parameters():  # non-trivial biases / BN so the bias algebra is exercised
        p.data.add_(0.1 * torch.randn_like(p))
    folded = M.fold_linear(m)
    assert "lfc" not in dict(folded.named_children())
    assert folded.fc1.weight.shape == (40, math.prod(m.lfc.weight.shape[1:]))
    x = torch.randn(5, *in_shape)
    with torch.no_grad():
        assert torch.allclose(folded(x), m(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no linear bottleneck"):
        M.fold_linear(build_model("conv2", SMALL["conv2"]))


@pytest.mark.parametrize("family,widths", [("cnn1", (64, 640)), ("resnet_shallow", (128, 512)),
                                           ("mlp", (1200, 2400, 1800)), ("snn", (128, 1200, 30000))])
def test_scale_to_budget_keeps_the_shape_and_meets_the_budget(family, widths):
    ws = M.scale_to_budget(family, widths, 200_000, batchnorm=True)
    n = count_params(family, ws, batchnorm=True)
    assert abs(n - 200_000) / 200_000 < 0.03
    # one factor s for every width: some s rounds each published width to the solved one
    lo = max((a - 0.5) / w for a, w in zip(ws, widths))
    hi = min((a + 0.5) / w for a, w in zip(ws, widths))
    assert lo <= hi
    with pytest.raises(M.BudgetError, match="below the smallest"):
        M.scale_to_budget(family, widths, 10)
