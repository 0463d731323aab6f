"""Recipes are typed: a string where a number or boolean belongs is refused (TOML says what it means), while
``--set`` still reads its values as TOML; nesting that would exhaust a parser is refused with one message."""

import pytest

from descend import config
from descend.errors import UserError


def _error(raw: dict) -> str:
    with pytest.raises(UserError) as err:
        config.validate({"data": {"name": "iris"}, **raw})
    return str(err.value)


@pytest.mark.parametrize(("raw", "message"), [
    ({"seed": "0"}, "config: seed = '0': must be an integer >= 0"),
    ({"train": {"epochs": "1"}}, "config: train.epochs = '1': must be an integer in [1, 1e+06]"),
    ({"train": {"epochs": 2.0}}, "config: train.epochs = 2.0: must be an integer in [1, 1e+06]"),
    ({"train": {"shuffle": "yes"}}, "config: train.shuffle = 'yes': must be true or false"),
    ({"train": {"deterministic": 1}}, "config: train.deterministic = 1: must be true or false"),
    ({"train": {"clip_grad_norm": "1.0"}}, "config: train.clip_grad_norm = '1.0': must be a number > 0 or none"),
    ({"train": {"batch_size": "32"}}, "config: train.batch_size = '32': "),
    ({"data": {"name": "iris", "val_fraction": "0.1"}}, "config: data.val_fraction = '0.1': "),
    ({"data": {"name": "iris", "target": True}}, "config: data.target = True: "),
    ({"early_stopping": {"restore_best": "no"}}, "config: early_stopping.restore_best = 'no': must be true or false"),
    ({"seed": -1}, "config: seed = -1: must be an integer >= 0"),
])
def test_a_string_or_wrong_type_is_not_coerced(raw, message):
    assert _error(raw).startswith(message) or message in _error(raw)


def test_numbers_still_widen_to_floats_and_overrides_are_read_as_toml(tmp_path):
    assert config.validate({"data": {"name": "iris", "val_fraction": 0}}).data.val_fraction == 0.0
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nname = "iris"\n')
    loaded = config.load(recipe, ["train.epochs=3", "train.shuffle=false", "optimizer.lr=3e-3", "seed=7"])
    assert (loaded.train.epochs, loaded.train.shuffle, loaded.optimizer.options["lr"], loaded.seed) == (
        3, False, 3e-3, 7)
    with pytest.raises(UserError, match=r"train.shuffle = 'yes': must be true or false"):
        config.load(recipe, ["train.shuffle=yes"])
    with pytest.raises(UserError, match=r"train.epochs = '3': must be an integer in \[1, 1e\+06\]"):
        config.load(recipe, ["train.epochs='3'"])


@pytest.mark.parametrize("text", [
    "a = " + "[" * 2000 + "]" * 2000,
    "a = " + "{b = " * 2000 + "1" + "}" * 2000,
])
def test_nesting_that_exhausts_the_parser_is_one_message(tmp_path, text):
    recipe = tmp_path / "deep.toml"
    recipe.write_text(text)
    with pytest.raises(UserError, match="is not valid TOML: values nest too deeply"):
        config.load(recipe)


def test_nesting_deeper_than_any_field_is_refused_before_the_parts_see_it():
    deep = [1]
    for _ in range(12):
        deep = [deep]
    assert _error({"model": {"hidden": deep}}) == (
        "config: model.hidden[0][0][0][0][0][0][0] nests deeper than 8 levels; no recipe field does")


def test_a_deep_value_that_parses_is_refused_by_depth_not_by_a_recursion(tmp_path):
    recipe = tmp_path / "deep.toml"
    recipe.write_text('[data]\nname = "iris"\n[model]\nhidden = ' + "[" * 300 + "]" * 300)
    with pytest.raises(UserError, match=r"deep.toml: model.hidden(\[0\])+ nests deeper than 8 levels"):
        config.load(recipe)


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "mnist1d", "cache": "yes"}, "dataset 'mnist1d': option 'cache' must be true or false; got 'yes'."),
    ({"name": "fashion_mnist", "download": 1}, "dataset 'fashion_mnist': option 'download' must be true or false"),
    ({"name": "sine", "n_train": "20"}, "dataset 'sine': option 'n_train' must be an integer >= 2; got '20'."),
    ({"name": "x.npz", "kind": "rows"}, "npz file: option 'kind' must be one of 'image', 'signal', 'tabular'"),
])
def test_dataset_options_of_the_wrong_type_are_refused_when_the_recipe_loads(data, message):
    assert message in _error({"data": data})


@pytest.mark.parametrize("name", ["../../elsewhere/x", "a/b", "a\\b", "a\x00b", "", "  ", "..", "x" * 201])
def test_a_run_name_that_is_not_a_plain_directory_name_is_refused(name):
    """The name becomes runs/<name>-<time>: a path in it would write the run outside runs/ (or crash mkdir)."""
    assert "name = " in _error({"name": name}) and "must be a plain name" in _error({"name": name})


def test_a_plain_run_name_is_kept():
    assert config.validate({"data": {"name": "iris"}, "name": "wine try 2.1_a"}).name == "wine try 2.1_a"


@pytest.mark.parametrize(("raw", "message"), [
    ({"train": {"epochs": 10**400}}, "train.epochs = 1000000000"),
    ({"seed": -(2**63) - 1}, "seed = -9223372036854775809"),
    ({"model": {"hidden": [4, 2**64]}}, "model.hidden[1] = 18446744073709551616"),
])
def test_integers_beyond_tomls_64_bits_are_refused(raw, message):
    assert message in _error(raw) and "beyond TOML's 64-bit integers" in _error(raw)


def test_a_data_path_the_system_refuses_is_one_message(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nname = "a\\u0000b.csv"\n')
    with pytest.raises(UserError, match=r"data.name: cannot use the path 'a\\x00b.csv': embedded null byte"):
        config.load(recipe)


@pytest.mark.parametrize("override", ["model.hidden=" + "x" * 100_000, "model." + "k" * 100_000 + "=1",
                                      "train." + "k" * 100_000 + "=1", "seed='" + "s" * 100_000 + "'"])
def test_a_huge_value_or_name_is_cut_short_in_the_message(tmp_path, override):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nname = "iris"\n')
    with pytest.raises(UserError) as err:
        config.load(recipe, [override])
    assert len(str(err.value)) < 600 and "..." in str(err.value)
