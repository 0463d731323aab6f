"""A recipe fuzzer: hypothesis draws recipes (valid sections with valid and invalid values, unknown fields, wrong
types, extreme numbers, odd strings) and ``--set`` overrides on tiny built-in data, and runs each through the
command. Every recipe must end in exit 0 (a run directory with its summary), exit 2 (one ``descend: error:``
line, warnings only as ``descend: warning:`` lines, no traceback, nothing written) or exit 3 (training diverged,
one line: a valid recipe with, say, lr = 1e30 may do that).

Every run trains at most one epoch whatever ``train.epochs`` says (a callback stops it), so ``epochs = 10**9``
still goes through every check and the schedule figure, and models and data are held under a 256 MiB memory
limit, so a recipe asking for more is refused rather than allocated.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from descend.cli import main
from descend.runs import experiment
from descend.train.callbacks import Callback

FAST = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
LONG = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
PROFILES = [pytest.param(FAST, id="fast"),
            pytest.param(LONG, id="long", marks=[pytest.mark.slow, pytest.mark.timeout(7200)])]


class _OneEpoch(Callback):
    def on_epoch_end(self, trainer, logs):
        trainer.stop_training = True


@pytest.fixture(scope="module", autouse=True)
def _small_and_short(tmp_path_factory):
    build = experiment.build

    def one_epoch(config, data=None):
        built = build(config, data)
        built.trainer.callbacks.append(_OneEpoch())
        return built

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiment, "build", one_epoch)
        mp.setenv("DESCEND_MEMORY_LIMIT", "256M")
        mp.setenv("DESCEND_CACHE", str(tmp_path_factory.mktemp("cache")))
        mp.delenv("DESCEND_DATA", raising=False)
        mp.delenv("DESCEND_DOWNLOAD", raising=False)
        yield


# ---------------------------------------------------------------------------------------------- strategies

EXTREME = st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, -(2**63), 10**9, 0.0, -0.0, 1e-308, 1e308, -1e308,
                           math.inf, -math.inf, math.nan, 0.5, 1.5])
ODD_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "a" * 300 + ".csv", "../../x.npz", "nul\x00",
                                                            "é.idx", "iris", "yes", "true", "1", "[1]"]))
WRONG = st.one_of(EXTREME, ODD_TEXT, st.booleans(), st.lists(st.integers(-3, 3), max_size=3),
                  st.dictionaries(st.sampled_from(["a", "name"]), st.integers(0, 3), max_size=2))


def often(likely: st.SearchStrategy, rarely: st.SearchStrategy, times: int = 9) -> st.SearchStrategy:
    """``likely`` about ``times`` times as often as ``rarely``."""
    return st.sampled_from([True] * times + [False]).flatmap(lambda usual: likely if usual else rarely)


def field(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly a valid value, sometimes anything."""
    return often(valid, WRONG)


def section(fields: dict[str, st.SearchStrategy], required: tuple[str, ...] = ()) -> st.SearchStrategy:
    """A table with some of ``fields`` (``required`` ones mostly present) and now and then an unknown field."""
    optional = {k: v for k, v in fields.items() if k not in required}
    return st.fixed_dictionaries({k: fields[k] for k in required}, optional=optional).flatmap(
        lambda d: often(st.just(d), st.tuples(ODD_TEXT, WRONG).map(lambda kv: {**d, kv[0]: kv[1]})))


DATA = often(st.one_of(
    st.fixed_dictionaries({"name": st.sampled_from(["iris", "wine"])}),
    st.fixed_dictionaries({"name": st.just("sine")}, optional={
        "n_train": field(st.integers(2, 40)), "n_test": field(st.integers(0, 20)),
        "noise_std": field(st.floats(0, 2)), "x_range": field(st.sampled_from([[0.0, 1.0], [-5, 5], [3, 1]]))}),
    st.fixed_dictionaries({"name": st.just("mnist1d"), "num_samples": field(st.integers(10, 80)),
                           "cache": st.just(False)})),
    st.fixed_dictionaries({"name": ODD_TEXT}), times=6,
).flatmap(lambda d: section({"val_fraction": field(st.sampled_from([0.0, 0.1, 0.3, 0.99])),
                             "test_fraction": field(st.sampled_from([0.1, 0.5])),
                             "scale": field(st.sampled_from(["standardize", "minmax", "none"])),
                             "task": field(st.sampled_from(["classification", "regression"]))}).map(
    lambda extra: {**d, **extra}))
WIDTHS = st.lists(st.sampled_from([1, 4, 8, 10**6, 10**9]), max_size=3)
MODEL = st.one_of(
    section({"name": st.just("mlp"), "hidden": field(WIDTHS), "activation": field(st.sampled_from(
        ["relu", "tanh", "maxout", "gelu"])), "batch_norm": field(st.booleans()),
        "dropout": field(st.sampled_from([0.0, 0.5, [0.1]])), "init": field(st.sampled_from(["normal", "he_normal"]))},
        ("name",)),
    section({"name": st.sampled_from(["cnn1d", "cnn2d"]), "channels": field(WIDTHS.filter(bool)),
             "kernel_size": field(st.integers(1, 5)), "pool": field(st.sampled_from(["none", "max", "avg"])),
             "head": field(st.sampled_from(["flatten", "avg"]))}, ("name",)),
)
TRAIN = section({"epochs": field(st.sampled_from([1, 2, 10**9])), "batch_size": field(st.sampled_from(
    [1, 16, "full", 10**12])), "shuffle": field(st.booleans()), "drop_last": field(st.booleans()),
    "loss": field(st.sampled_from(["cross_entropy", "mse", "binary_cross_entropy"])), "device": field(st.just("cpu")),
    "clip_grad_norm": field(st.sampled_from([0.1, 1.0, 1e30])), "log_every": field(st.integers(1, 5)),
    "checkpoint_every": field(st.sampled_from([1, 10**9])), "checkpoint_unit": field(st.sampled_from(
        ["epoch", "step"])), "deterministic": field(st.booleans()), "channels_last": field(st.booleans())})
OPTIMIZER = section({"name": field(st.sampled_from(["sgd", "momentum", "adam", "adamw", "rmsprop", "newton"])),
                     "lr": field(st.sampled_from([1e-3, 0.1, 1e30])), "weight_decay": field(st.sampled_from(
                         [0.0, 0.01]))})
SCHEDULE = section({"name": field(st.sampled_from(["constant", "cosine", "step", "one_cycle", "plateau"])),
                    "warmup_epochs": field(st.integers(0, 3))}, ("name",))
AUGMENT = section({"hflip": field(st.sampled_from([0.5, True])), "noise_std": field(st.sampled_from([0.0, 0.1])),
                   "shift": field(st.integers(0, 3)), "crop_padding": field(st.integers(0, 2))})
STOPPING = section({"patience": field(st.integers(0, 3)), "monitor": field(st.sampled_from(
    ["val_loss", "train_loss", "val_acc"])), "restore_best": field(st.booleans())})
REGULARIZATION = section({"name": field(st.sampled_from(["l1", "l2", "elastic_net", "proximal_l1"])),
                          "strength": field(st.sampled_from([1e-4, 1e10]))}, ("name",))

RECIPES = st.fixed_dictionaries(
    {"data": DATA},
    optional={"seed": field(st.integers(0, 2**63 - 1)), "name": ODD_TEXT, "model": MODEL, "train": TRAIN,
              "optimizer": OPTIMIZER, "schedule": SCHEDULE, "augment": AUGMENT, "early_stopping": STOPPING,
              "regularization": REGULARIZATION},
).flatmap(lambda d: often(st.just(d), st.tuples(ODD_TEXT, WRONG).map(lambda kv: {**d, kv[0]: kv[1]})))

OVERRIDES = often(st.just([]), st.lists(st.one_of(
    st.sampled_from(["train.epochs=1", "train.epochs='1'", "train.shuffle=yes", "optimizer.lr=3e-3",
                     "train.batch_size=full", "train.batch_size=\"full\"", "model.hidden=[4]", "seed=-1", "=3",
                     "train", "train.epochs.x=1", "data=iris", "data.name=\"wine\"", "augment.hflip=0.5",
                     "model.hidden=" + "[" * 3000, "x.y.z=1", "train.epochs=inf", "optimizer.lr=nan"]),
    st.tuples(st.sampled_from(["train.epochs", "optimizer.lr", "seed", "data.val_fraction", "model.hidden",
                               "early_stopping.patience"]), st.text(max_size=10)).map("=".join),
), max_size=3), times=3)


# ---------------------------------------------------------------------------------------------- the property


def run_recipe(recipe: dict, overrides: list[str]) -> int:
    """Write ``recipe``, run it with ``overrides`` through the command, check the outcome; the exit code."""
    with tempfile.TemporaryDirectory() as folder:
        path, out = Path(folder) / "fuzz.toml", Path(folder) / "run"
        path.write_text(tomli_w.dumps(recipe))
        stdout, stderr = io.StringIO(), io.StringIO()
        args = ["run", str(path), "--out", str(out), "--quiet", *(a for o in overrides for a in ("--set", o))]
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(args)
        lines = stderr.getvalue().splitlines()
        context = f"recipe {recipe!r}, overrides {overrides!r}, exit {code}, stderr {lines!r}"
        assert "Traceback" not in stderr.getvalue(), context
        assert all(line.startswith("descend: warning: ") for line in lines[:-1]), context
        if code == 0:
            assert (out / "summary.json").is_file(), context
        elif code == 2:
            assert lines and lines[-1].startswith("descend: error: "), context
            assert not out.exists(), context
        else:
            assert code == 3 and lines and lines[-1].startswith("descend: training diverged: "), context
        return code


def _fuzzed(recipe: dict, overrides: list[str]) -> None:
    event(f"exit {run_recipe(recipe, overrides)}")  # what a session reached: --hypothesis-show-statistics


@pytest.mark.parametrize("profile", PROFILES)
def test_every_recipe_runs_or_is_one_line_and_writes_nothing(profile):
    profile(given(RECIPES, OVERRIDES)(_fuzzed))()


@pytest.mark.parametrize(("recipe", "overrides", "code"), [
    ({"data": {"name": "iris"}, "seed": "0"}, [], 2),
    ({"data": {"name": "iris"}, "augment": {"hflip": 0.5}}, [], 2),
    ({"data": {"name": "a" * 300 + ".csv"}}, [], 2),
    ({"data": {"name": "sine", "x_range": [0, 1e308]}}, [], 2),
    ({"data": {"name": "iris"}, "model": {"hidden": [10**6, 10**6]}}, [], 2),
    ({"data": {"name": "iris"}, "train": {"epochs": 10**6}, "schedule": {"name": "cosine"}}, [], 0),
    ({"data": {"name": "iris"}, "train": {"epochs": 10**9}, "schedule": {"name": "cosine"}}, [], 2),  # > 10**6
    ({"data": {"name": "iris"}}, ["model.hidden=" + "[" * 3000 + "]" * 3000], 2),
    ({"data": {"name": "iris"}}, ["train.epochs=3", "train.shuffle=false"], 0),
    ({"data": {"name": "mnist1d", "num_samples": 40, "cache": False}, "augment": {"hflip": True}}, [], 0),
    ({"data": {"name": "iris"}, "optimizer": {"name": "sgd", "lr": 1e30}}, [], 3),  # val loss overflows at the end
    ({"data": {"name": "iris"}, "optimizer": {"name": "sgd", "lr": 1e30}}, ["train.epochs=2"], 3),
])
def test_the_issues_examples(recipe, overrides, code):
    assert run_recipe(recipe, overrides) == code
