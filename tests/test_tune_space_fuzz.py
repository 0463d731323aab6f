"""A search-space fuzzer: hypothesis draws space files (valid dimensions, wrong types, unknown keys, odd names,
conditions of every shape, huge choice lists, deep nesting) and each must either load into a :class:`Space` that
can be searched (grid, unit-cube points, Optuna distributions) or be refused with one :class:`UserError`; never
another exception, never a hang (the test's timeout), as recipes already are (tests/test_recipe_fuzz.py)."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import tomli_w
import tomllib
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from descend.errors import UserError
from descend.tune import space as spaces
from descend.tune.study import Plan, canonical, points

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
LONG = settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
PROFILES = [
    pytest.param(FAST, id="fast"),
    pytest.param(LONG, id="long", marks=[pytest.mark.slow, pytest.mark.timeout(1800)]),
]

EXTREME = st.sampled_from(
    [
        0,
        -1,
        1,
        2,
        2**63 - 1,
        -(2**63),
        10**9,
        0.0,
        -0.0,
        1e-308,
        1e308,
        -1e308,
        math.inf,
        -math.inf,
        math.nan,
        0.5,
        1e-4,
        0.1,
    ]
)
SCALAR = st.one_of(EXTREME, st.booleans(), st.text(max_size=6), st.sampled_from(["adam", "momentum", "1"]))
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    ),
    max_leaves=6,
)
NAMES = st.one_of(
    st.sampled_from(["optimizer", "lr", "model", "hidden", "x", "y", "train", "batch_size"]),
    st.sampled_from(["a b", "", "é", "1x", "when", "grid", "float"]),
)
PATHS = st.sampled_from(["optimizer.name", "model.x", "x.y", "optimizer", "nope", "a.b.c"])


def sized(size: int) -> list:
    return list(range(size))


def deep(depth: int) -> object:
    value: object = [1.0]
    for _ in range(depth):
        value = [value]
    return value


BIG = st.sampled_from([1, 2, 255, 256, 257, 5000, 100_000]).map(sized)
WHEN = st.one_of(
    st.just("optimizer.name = 'momentum'"),
    SCALAR,
    st.lists(SCALAR, max_size=2),
    st.dictionaries(PATHS, st.one_of(SCALAR, st.lists(SCALAR, max_size=3), VALUE), max_size=2),
)


def often(likely: st.SearchStrategy, rarely: st.SearchStrategy, times: int = 4) -> st.SearchStrategy:
    """``likely`` about ``times`` times as often as ``rarely``."""
    return st.sampled_from([True] * times + [False]).flatmap(lambda usual: likely if usual else rarely)


GOOD_BOUNDS = st.one_of(
    st.sampled_from([[1e-4, 1e-1], [16, 256], [0, 1], [0.0, 1.0], [-5, 5], [1, 2**62]]),
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=2, max_size=2, unique=True).map(sorted),
)
BOUNDS = often(
    GOOD_BOUNDS,
    st.one_of(st.lists(EXTREME, min_size=2, max_size=2), st.lists(st.integers(-5, 300), min_size=2, max_size=2), VALUE),
)
STEP = st.one_of(EXTREME, st.integers(-2, 64), st.just(1e-300))


@st.composite
def dimension(draw) -> dict:
    kind = draw(st.sampled_from(["float", "int", "categorical", "none", "two"]))
    table: dict = {}
    if kind in ("float", "int", "two"):
        table["int" if kind == "int" else "float"] = draw(BOUNDS)
    if kind in ("categorical", "two"):
        good = st.one_of(st.lists(VALUE, min_size=1, max_size=4), st.just(["adam", "momentum"]))
        table["categorical"] = draw(often(good, st.one_of(BIG, st.just(deep(12)), SCALAR, st.just([]))))
    for key, strategy in (
        ("log", st.one_of(st.booleans(), SCALAR)),
        ("step", STEP),
        ("grid", st.one_of(st.integers(-1, 12), st.sampled_from([101, 10**6, 2**63 - 1]), SCALAR)),
        ("when", WHEN),
        ("lgo", SCALAR),
    ):
        if draw(st.integers(0, 5)) == 0:
            table[key] = draw(strategy)
    return table


def nest(path: list[str], leaf: object) -> dict:
    tree: object = leaf
    for name in reversed(path):
        tree = {name: tree}
    return tree  # type: ignore[return-value]


@st.composite
def space_tree(draw) -> dict:
    tree: dict = {}
    for _ in range(draw(st.integers(0, 6))):
        path = draw(st.lists(NAMES, min_size=1, max_size=3))  # mostly valid names, now and then not
        leaf = draw(often(dimension(), VALUE))
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = leaf
    if draw(st.integers(0, 9)) == 0:  # many dimensions at once
        tree["many"] = {f"d{i}": {"categorical": [1, 2]} for i in range(draw(st.sampled_from([8, 64, 65, 500])))}
    if draw(st.integers(0, 9)) == 0:  # a path nested deep
        tree.update(nest(["a"] * draw(st.sampled_from([7, 9, 11, 3000])), {"float": [0.0, 1.0]}))
    return tree


def exercise(space: spaces.Space) -> None:
    """What a search does with a space: canonical form, distributions, probes, unit points, grid, queued points."""
    canonical(space)
    for d in space.dims:
        d.distribution()
        for u in (0.0, 0.37, 0.999999):
            param = d.from_unit(u)
            assert d.distribution()._contains(d.distribution().to_internal_repr(param))
            d.value(param)
        d.probes()
        d.grid_values()
    space.point(np.full(len(space), 0.5))
    try:
        grid = space.grid()
    except UserError as e:
        assert "grid has more than" in str(e)
    else:
        assert 1 <= len(grid) <= spaces.MAX_GRID
    plan = Plan("qmc", 0, 3, space=canonical(space))
    assert len(points(space, plan, 0, 3)) == 3


def loads_or_refuses(tree: dict) -> None:
    try:
        space = spaces.parse(tree, source="space.toml")
    except UserError as e:
        assert str(e).startswith("space.toml") and len(str(e)) < 1000
        event("refused")
        return
    event("loaded")
    assert 1 <= len(space) <= spaces.MAX_DIMS
    exercise(space)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.timeout(600)
def test_any_space_loads_or_is_refused_with_one_message(profile, tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    @profile
    @given(tree=space_tree())
    def check(tree):
        loads_or_refuses(tree)
        try:
            text = tomli_w.dumps(tree)  # the same tree through a file, where TOML can hold it
        except (TypeError, ValueError, RecursionError):
            return
        (tmp_path / "space.toml").write_text(text)
        try:
            spaces.load(tmp_path / "space.toml")
        except UserError:
            pass

    check()


@pytest.mark.parametrize(
    "text, message",
    [
        ("[optimizer.name]\ncategorical = [" + ", ".join(map(str, range(100_000))) + "]", "100,000 choices"),
        ("[" + ".".join(["a"] * 3000) + "]\nfloat = [0.0, 1.0]", "nests deeper than"),
        ("[x.y]\ncategorical = " + "[" * 3000 + "]" * 3000, "nest too deeply"),
        (
            "[optimizer.name]\ncategorical = ['adam', 'momentum']\n[optimizer.momentum]\nfloat = [0.8, 0.99]\n"
            "when = 'optimizer.name = momentum'",
            "when must be a table",
        ),
        ("[optimizer.lr]\nfloat = [0.0, inf]", "finite bounds"),
        ("[optimizer.x]\nint = [-18014398509481983, 0]", "within ±2**53"),  # float64 rounds the low bound below
        ("[optimizer.lr]\nfloat = [1e-4, 1e-1]\ngrid = 1000000", "option 'grid' must be an integer in [1, 100]"),
        ("".join(f"[m.x{i}]\ncategorical = [1, 2, 3]\n" for i in range(65)), "at most 64"),
        ("[model.hidden]\ncategorical = [1, 1.0]", "a choice twice"),
        ('["optimizer.lr"]\nfloat = [1e-4, 1e-1]', "is not a recipe field name"),
    ],
)
def test_the_hostile_spaces_that_hung_or_crashed_are_refused(tmp_path, text, message):
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(UserError, match="space.toml") as e:
        spaces.load(path)
    assert message in str(e.value) and len(str(e.value)) < 1000


def test_a_grid_too_large_is_refused_before_it_is_built():
    tree = {"m": {f"x{i}": {"int": [0, 99], "grid": 10} for i in range(8)}}  # 10^8 points, and every prefix beyond 10^4
    space = spaces.parse(tree, source="space.toml")
    with pytest.raises(UserError, match="more than 10,000 points"):
        space.grid()
    tomllib.loads(tomli_w.dumps(tree))  # and it is a space a user can write
