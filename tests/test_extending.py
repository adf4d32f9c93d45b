"""README's "Extending mimicnet", as a user would do it: a family, a loss and a study preset registered in this
module alone (no other file edited) go through `train`, `search run`, `estimate` and `report`; and every
registry's entries are tested by parametrising over the registry itself (timm's list_models()), so a new
entry is tested the moment it is registered."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from mimicnet.cli import main
from mimicnet.models.families import FAMILIES, STUDENT, build_model, count_params, register_family
from mimicnet.models.layers import _Builder, _check_widths, _dropout_rates, _finish
from mimicnet.search.pruners import PRUNERS, make_pruner
from mimicnet.search.spaces import SPACES, get_space
from mimicnet.studies.catalog import STUDY_PRESETS
from mimicnet.studies.main import PRESETS, check_preset
from mimicnet.train.config import TrainConfig
from mimicnet.train.losses import LOSSES, get_loss, register_loss
from mimicnet.train.optim import OPTIMIZERS, make_optimizer
from mimicnet.train.schedules import SCHEDULES

from synth import write_archive


# ------------------------------------------------------------------------------------ a user's extensions
def toy_mlp(widths, *, num_classes=10, dropout=(), batchnorm=False, in_shape=(3, 32, 32), init_scale=1.0,
            generator=None):
    """flatten -> k ReLU units -> h ReLU units -> out: a 2-hidden-layer MLP, k set by a constant, h by the budget."""
    fam = FAMILIES["toy_mlp"]
    k, h = _check_widths(fam, widths)
    d = _dropout_rates(dropout, fam.n_dropout, fam.name)
    b = _Builder(in_shape, batchnorm)
    b.flatten()
    b.fc(k, d[0])
    b.fc(h, d[1])
    return _finish(b, fam.name, (k, h), num_classes, d, batchnorm, in_shape, init_scale, generator)


def smooth_ce(cfg):
    """Cross-entropy against labels smoothed by 0.2, whatever the config says (a loss on hard labels)."""
    return lambda out, y: F.cross_entropy(out, y, label_smoothing=0.2)


@pytest.fixture()
def extended():
    """Register the toy family, loss and preset for one test, then take them out again (the registries are
    module-level: other tests must not see them)."""
    register_family("toy_mlp", width_names=("k", "h"), dependent=1, n_dropout=2, description="fc-fc",
                    constants=((0,),), role=STUDENT, student_bounds={1_000_000: ((20, 200),)},
                    baseline_bounds=((20, 200),), arch=lambda w: f"{w[0]}fc-{w[1]}fc")(toy_mlp)
    register_loss("toy-smooth-ce", mimic=False)(smooth_ce)
    PRESETS["toy"] = dataclasses.replace(PRESETS["smoke"], name="toy", student_families=("toy_mlp", "conv1"),
                                         student_budgets=(200_000,), baseline_families=("toy_mlp",),
                                         baseline_budgets=(200_000,))
    try:
        yield
    finally:
        FAMILIES.pop("toy_mlp", None)
        LOSSES.pop("toy-smooth-ce", None)
        PRESETS.pop("toy", None)


def test_a_family_loss_and_preset_registered_here_run_through_every_stage(extended, tmp_path, capsys):
    arc = write_archive(tmp_path / "a.tar.gz", n_train=120, n_test=40)
    assert count_params("toy_mlp", (30, 40)) == 3072 * 30 + 30 + 30 * 40 + 40 + 40 * 10 + 10  # by hand
    # train: the family, solved to a budget, with the loss
    out = tmp_path / "train"
    assert main(["train", "--family", "toy_mlp", "--constants", "0.5", "--budget", "200k", "--loss", "toy-smooth-ce",
                 "--data", str(arc), "--max-epochs", "1", "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert abs(res["params"] - 200_000) / 200_000 < 0.01 and 0.0 <= res["test_acc"] <= 1.0
    # search: its baseline and student spaces exist by name, from its bounds
    assert get_space("student-toy_mlp-0.2M").family == "toy_mlp"
    search = tmp_path / "search"
    assert main(["search", "run", "baseline-toy_mlp-200k", "--trials", "1", "--sampler", "random",
                 "--data", str(arc), "--max-epochs", "1", "--device", "cpu", "--out", str(search)]) == 0
    # report: the runs in a table, the family's own architecture string
    assert main(["report", str(search)]) == 0
    table1 = (search / "report" / "table1.md").read_text()
    assert "toy_mlp" in table1 or "fc-" in table1
    # the preset: checked like every preset and planned by estimate
    check_preset(PRESETS["toy"])
    capsys.readouterr()
    assert main(["estimate", "--preset", "toy", "--steps", "2", "--device", "cpu"]) == 0
    assert "toy_mlp" in capsys.readouterr().out


# ------------------------------------------------------------------------- every entry of every registry
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_builds_counts_and_names_itself(name):
    from mimicnet.models.families import arch_string
    fam = FAMILIES[name]
    widths = (8,) * (3 if fam.variable_widths else len(fam.width_names))
    model = build_model(name, widths)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert count_params(name, widths) == sum(p.numel() for p in model.parameters())
    assert arch_string(name, widths)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_gives_a_finite_scalar_with_a_gradient(name):
    loss = get_loss(name)
    cfg = TrainConfig.of(loss=name)
    out = torch.randn(4, 10, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    target = (torch.randn(4, 10), y) if loss.mimic else y
    value = loss.build(cfg)(out, target)
    value.backward()
    assert value.dim() == 0 and torch.isfinite(value) and out.grad is not None


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_takes_a_step(name):
    w = torch.nn.Parameter(torch.ones(3))
    opt = make_optimizer([w], TrainConfig.of(optimizer=name))
    (w ** 2).sum().backward()
    opt.step()
    assert not torch.equal(w.detach(), torch.ones(3))


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_gives_finite_rates(name):
    cfg = TrainConfig.of(schedule=name, max_epochs=10)
    s = SCHEDULES[name](cfg)
    rates = [s.lr_at(e, 0.5) for e in range(10)]
    assert all(r >= 0 and r == r for r in rates) and max(rates) > 0


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_pruner_is_made(name):
    make_pruner(name, 1, 10, 3, 2)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_main_preset_checks(name):
    check_preset(PRESETS[name])


@pytest.mark.parametrize("name", sorted(STUDY_PRESETS))
def test_every_study_preset_checks(name):
    from mimicnet.studies.fixed import check_preset as check_study_preset
    check_study_preset(STUDY_PRESETS[name])


@pytest.mark.parametrize("name", sorted(SPACES))
def test_every_search_space_gives_a_config(name):
    from mimicnet.search.spaces import apply
    space = SPACES[name]
    params = {p.name: (p.low * p.high) ** 0.5 if p.log else (p.low + p.high) / 2 for p in space.params}
    cfg = apply(space, params, TrainConfig.of(max_epochs=1))
    assert cfg.model.family == space.family
