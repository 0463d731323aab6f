"""Recipe sections and the option tables: [model] and [data] are checked when the recipe loads, [train] and
[early_stopping] take their defaults from the parts, and an error names the field path, not a union member."""

import inspect

import pytest

from descend import config
from descend.data import registry
from descend.errors import UserError
from descend.train import Trainer
from descend.train.callbacks import EarlyStopping
from descend.train.state import Checkpoints


def _error(raw: dict) -> str:
    with pytest.raises(UserError) as err:
        config.validate({"data": {"name": "iris"}, **raw})
    return str(err.value)


@pytest.fixture
def no_generation(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("checking a recipe generated data")

    monkeypatch.setattr(registry, "generate_mnist1d", forbidden)


def test_data_options_are_checked_when_the_recipe_loads(no_generation):
    assert config.validate({"data": {"name": "mnist1d", "num_samples": 500}}).data.options == {"num_samples": 500}
    assert _error({"data": {"name": "mnist1d", "num_samples": 5}}) == (
        "config: [data] dataset 'mnist1d': option 'num_samples' must be an integer >= 10; got 5.")
    assert "dataset 'sine': unknown option 'n_trian'; valid options: n_train" in _error(
        {"data": {"name": "sine", "n_trian": 3}})
    assert "csv file: option 'delimiter' must be a single character; got ';;'." in _error(
        {"data": {"name": "missing.csv", "delimiter": ";;"}})


def test_model_options_are_checked_when_the_recipe_loads():
    assert _error({"model": {"name": "cnn1d", "channels": []}}) == (
        "config: [model] model 'cnn1d': option 'channels' must be a non-empty list of integers >= 1; got [].")
    assert "model 'mlp': unknown option 'input_shape'" in _error({"model": {"name": "mlp", "input_shape": [4]}})
    assert "this model has 1 blocks, the list has 2" in _error({"model": {"dropout": [0.1, 0.2]}})


def test_train_and_early_stopping_defaults_are_the_parts_own():
    def default(function, name):
        return inspect.signature(function).parameters[name].default

    train = config.TrainConfig()
    assert (train.epochs, train.batch_size) == (default(Trainer.fit, "epochs"), default(Trainer.fit, "batch_size"))
    assert (train.log_every, train.max_rollbacks) == (default(Trainer, "log_every"), default(Trainer, "max_rollbacks"))
    assert train.checkpoint_every == default(Checkpoints, "every")
    stopping = config.EarlyStoppingConfig()
    for name in ("monitor", "mode", "patience", "min_delta", "start_from_epoch", "restore_best"):
        assert getattr(stopping, name) == default(EarlyStopping, name), name


def test_early_stopping_section_is_checked_by_early_stoppings_table():
    assert _error({"early_stopping": {"patience": 2.5}}) == (
        "config: early_stopping.patience = 2.5: must be an integer >= 0")
    assert _error({"early_stopping": {"patient": 3}}).startswith(
        "config: unknown field 'early_stopping.patient'; allowed here: monitor, mode, patience")


@pytest.mark.parametrize(("raw", "start"), [
    ({"data": {"name": "iris", "features": [1.5]}}, "config: data.features.0 = 1.5: "),
    ({"train": {"batch_size": "lots"}}, "config: train.batch_size = 'lots': "),
    ({"train": {"loss": "hinge"}}, "config: train.loss = 'hinge': "),
    ({"train": {"epoch": 3}}, "config: unknown field 'train.epoch'; allowed here: epochs, batch_size"),
])
def test_the_error_path_names_fields_not_union_members(raw, start):
    assert _error(raw).startswith(start)
