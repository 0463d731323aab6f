"""Search spaces: parsing, every error a user can make, unit-cube points, grids with conditions, recipe checks."""

import math

import numpy as np
import optuna
import pytest

from descend import config as cfg
from descend import models
from descend.errors import UserError
from descend.tune import space as spaces
from descend.tune.study import Plan, points

RECIPE = {"name": "t", "data": {"name": "iris"}, "model": {"name": "mlp", "hidden": [8]},
          "optimizer": {"name": "adam", "lr": 1e-3}}


def parse(text: str) -> spaces.Space:
    import tomllib

    return spaces.parse(tomllib.loads(text), source="space.toml")


FULL = """
[optimizer.lr]
float = [1e-4, 1e-1]
log = true
grid = 4
[optimizer.name]
categorical = ["adam", "momentum"]
[optimizer.momentum]
float = [0.8, 0.99]
when = { "optimizer.name" = "momentum" }
[model.hidden]
categorical = [[8], [16, 16]]
[train.batch_size]
int = [16, 64]
step = 16
grid = 4
"""


def test_parse_kinds_paths_and_order():
    s = parse(FULL)
    assert s.paths == ("optimizer.lr", "optimizer.name", "model.hidden", "train.batch_size", "optimizer.momentum")
    lr, hidden, batch = s["optimizer.lr"], s["model.hidden"], s["train.batch_size"]
    assert (lr.kind, lr.low, lr.high, lr.log, lr.grid) == ("float", 1e-4, 1e-1, True, 4)
    assert hidden.labels == ("[8]", "[16, 16]") and hidden.value("[16, 16]") == [16, 16]
    assert batch.grid_values() == [16, 32, 48, 64]
    assert s["optimizer.momentum"].when == {"optimizer.name": ("momentum",)}


def test_grid_crosses_conditional_axis_only_where_active():
    s = parse(FULL)
    grid = s.grid()
    # lr 4 × (adam 1 + momentum 3) × hidden 2 × batch 4
    assert len(grid) == 4 * (1 + 3) * 2 * 4
    assert all(("optimizer.momentum" in p) == (p["optimizer.name"] == "momentum") for p in grid)
    assert len({tuple(sorted(p.items())) for p in grid}) == len(grid)
    lrs = sorted({p["optimizer.lr"] for p in grid})
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-1)
    assert all(1e-4 <= lr <= 1e-1 for lr in lrs)


@pytest.mark.parametrize("u", [0.0, 0.3, 0.5, 0.999999])
def test_unit_points_stay_inside_their_distributions(u):
    s = parse(FULL)
    for d in s.dims:
        value = d.from_unit(u)
        dist = d.distribution()
        assert dist._contains(dist.to_internal_repr(value)), (d.path, value)


def test_log_scale_is_uniform_in_the_logarithm():
    d = parse("[optimizer.lr]\nfloat = [1e-4, 1e-0]\nlog = true")["optimizer.lr"]
    assert d.from_unit(0.5) == pytest.approx(1e-2)
    assert math.log10(d.from_unit(0.25)) == pytest.approx(-3)


def test_int_log_and_linear():
    s = parse("[a.b]\nint = [1, 100]\nlog = true\n[a.c]\nint = [0, 9]")
    assert s["a.b"].from_unit(0.5) == 10
    assert [s["a.c"].from_unit(u) for u in (0.0, 0.099, 0.1, 0.95)] == [0, 0, 1, 9]


def test_suggest_follows_conditions():
    s = parse(FULL)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        params = s.suggest(trial)
        assert ("optimizer.momentum" in params) == (params["optimizer.name"] == "momentum")
        study.tell(trial, 0.0)


def test_apply_sets_recipe_values():
    s = parse(FULL)
    raw = s.apply(RECIPE, {"model.hidden": "[16, 16]", "optimizer.lr": 0.01, "train.batch_size": 32})
    assert raw["model"]["hidden"] == [16, 16] and raw["optimizer"]["lr"] == 0.01 and raw["train"]["batch_size"] == 32
    assert RECIPE["model"]["hidden"] == [8]  # the original is untouched


@pytest.mark.parametrize("text, message", [
    ("", "the search space is empty"),
    ("[optimizer.lr]\nfloat = [0.1, 0.01]", "the range [0.1, 0.01] is empty"),
    ("[optimizer.lr]\nfloat = [0.0, 0.1]\nlog = true", "a log scale needs positive bounds"),
    ("[optimizer.lr]\nfloat = [1e-3, 1e-1]\nlgo = true", "unknown key 'lgo'"),
    ("[optimizer.lr]\nfloat = [1e-3]", "float = [low, high]"),
    ("[train.epochs]\nint = [1.5, 3]", "two integers"),
    ("[model.hidden]\ncategorical = []", "non-empty list"),
    ("[optimizer.lr]\nfloat = [1e-3, 1e-1]\nlog = true\nstep = 0.01", "step and log cannot be combined"),
    ("[optimizer.lr]\nfloat = [1e-4, 1e-1]\nstep = 1e-300", "more than 1e+09 steps"),
    ("[optimizer.lr]\nfloat = [1e-3, 1e-1]\nint = [1, 2]", "give one of"),
    ("[optimizer.momentum]\nfloat = [0.8, 0.9]\nwhen = { \"optimizer.name\" = \"momentum\" }",
     "a condition must name a categorical dimension"),
    ("[optimizer.name]\ncategorical = [\"adam\"]\n[optimizer.momentum]\nfloat = [0.8, 0.9]\n"
     "when = { \"optimizer.name\" = \"sgd\" }", "not one of its choices"),
    ("optimizer = 3", "is not a dimension"),
    ("[a.x]\ncategorical = [1, 2]\nwhen = { \"a.y\" = 1 }\n[a.y]\ncategorical = [1, 2]\nwhen = { \"a.x\" = 1 }",
     "form a cycle"),
])
def test_space_errors_name_the_dimension(text, message):
    with pytest.raises(UserError, match="space.toml") as e:
        parse(text)
    assert message in str(e.value)


def _build(raw: dict) -> None:
    """Validate the recipe and build its model for iris (4 features, 3 classes), as a search does."""
    c = cfg.validate(raw, source="recipe")
    models.build(c.model.name, (4,), 3, **c.model.options)


@pytest.mark.parametrize("text, message", [
    ("[model.dropuot]\nfloat = [0.0, 0.5]", "unknown option 'dropuot'"),
    ("[optimizer.lr]\nfloat = [-1.0, 0.1]", "[optimizer.lr] = -1.0 is refused"),
    ("[optimizer.name]\ncategorical = [\"adam\", \"adamm\"]", "'adamm'"),
    ("[train.epoch]\nint = [1, 5]", "unknown field 'train.epoch'"),
])
def test_check_against_the_recipe(text, message):
    with pytest.raises(UserError) as e:
        parse(text).check(RECIPE, _build)
    assert message in str(e.value) and "space.toml" in str(e.value)


def test_check_sets_the_parent_of_a_conditional_dimension():
    recipe = {**RECIPE, "optimizer": {"name": "adam", "lr": 1e-3}}
    space = parse('[optimizer.name]\ncategorical = ["adam", "momentum"]\n[optimizer.momentum]\nfloat = [0.5, 0.9]\n'
                  'when = { "optimizer.name" = "momentum" }')
    space.check(recipe, _build)  # adam refuses momentum, but the probe sets optimizer.name = "momentum"


@pytest.mark.parametrize("sampler", ["grid", "random", "qmc"])
def test_queued_points_are_a_function_of_seed_and_index(sampler):
    s = parse(FULL)
    plan = Plan(sampler, seed=7, trials=40)
    whole = points(s, plan, 0, 40)
    assert points(s, plan, 0, 15) + points(s, plan, 15, 40) == whole  # extending a study keeps the earlier ones
    assert points(s, Plan(sampler, seed=8, trials=40), 0, 40) != whole
    if sampler == "grid":
        assert len({tuple(sorted(p.items())) for p in points(s, plan, 0, len(s.grid()))}) == len(s.grid())


def test_qmc_covers_the_unit_interval_more_evenly_than_random():
    s = parse("[a.x]\nfloat = [0.0, 1.0]")
    gaps = {}
    for sampler in ("random", "qmc"):
        xs = np.sort([p["a.x"] for p in points(s, Plan(sampler, seed=0, trials=64), 0, 64)])
        gaps[sampler] = np.diff(np.concatenate([[0.0], xs, [1.0]])).max()
    assert gaps["qmc"] < gaps["random"]


def test_the_top_of_a_stepped_axis_is_on_the_step():
    s = parse("[a.b]\nint = [16, 100]\nstep = 16\ngrid = 2\n[a.c]\nfloat = [0.0, 1.0]\nstep = 0.3\ngrid = 2")
    assert s["a.b"].grid_values() == [16, 96] and s["a.b"].probes() == [16, 96]
    assert s["a.c"].grid_values() == [0.0, pytest.approx(0.9)]
    with pytest.raises(KeyError):
        s["a.d"]
