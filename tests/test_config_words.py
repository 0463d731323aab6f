"""One word for "which implementation" in every recipe section (``name``), the older words still read with one
warning, and ``[train]`` made of declared options: the Trainer's own, the checkpoint policy's and the recipe's."""

import warnings

import pytest

from descend import config
from descend import data as datasets
from descend.config import sections
from descend.errors import UserError
from descend.runs import directory, experiment
from descend.train import Trainer
from descend.train.checkpointing import Checkpoints
from descend.tune.space import set_path

OLD_WORDS = [
    ("regularization", "kind", {"name": "l1", "strength": 1e-3}),
    ("averaging", "method", {"name": "swa", "first_epoch": 2}),
]


def _recipe(section: str, table: dict) -> dict:
    return {"data": {"name": "iris"}, "train": {"epochs": 3}, section: table}


def _validate_warned(raw: dict) -> tuple[config.Config, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = config.validate(raw)
    return loaded, [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize(("section", "old", "table"), OLD_WORDS)
def test_an_old_word_gives_the_same_config_as_name_with_one_warning(section, old, table):
    new, said = _validate_warned(_recipe(section, table))
    assert said == []
    aliased = {old: table["name"], **{k: v for k, v in table.items() if k != "name"}}
    before, said = _validate_warned(_recipe(section, aliased))
    assert before == new and before.model_dump() == new.model_dump()
    assert said == [
        f"[{section}] {old} is the old word for name: write name = {table['name']!r} instead (every "
        "section picks its implementation with name)"
    ]
    assert f"\n{old} = " not in config.dump(before) and f'[{section}]\nname = "{table["name"]}"' in config.dump(before)


@pytest.mark.parametrize(("section", "old", "table"), OLD_WORDS)
def test_both_words_in_one_section_is_one_error(section, old, table):
    with pytest.raises(UserError, match=f"{old} is the old word for name: give name alone"):
        config.validate(_recipe(section, {**table, old: table["name"]}))


def test_overrides_take_either_word_and_the_override_wins(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nname = "iris"\n[regularization]\nkind = "l1"\n')
    with pytest.warns(FutureWarning, match=r"\[regularization\] kind is the old word for name"):
        assert config.load(recipe, ["regularization.name=l2"]).regularization.name == "l2"
    recipe.write_text('[data]\nname = "iris"\n[regularization]\nname = "l1"\n')
    with pytest.warns(FutureWarning, match=r"write name = 'elastic_net'"):
        assert config.load(recipe, ["regularization.kind=elastic_net"]).regularization.name == "elastic_net"
    assert config.load(recipe, ["averaging.name=swa"]).averaging.name == "swa"


def test_a_run_recorded_with_the_old_word_resumes_with_the_new(tmp_path):
    raw = {**_recipe("averaging", {"name": "ema", "decay": 0.9}), "name": "config"}  # the file stem
    recorded = dict(raw, averaging={"method": "ema", "decay": 0.9})
    (tmp_path / "config.toml").write_text(config.dump(config.validate(raw)).replace('name = "ema"', 'method = "ema"'))
    assert 'method = "ema"' in (tmp_path / "config.toml").read_text()
    with pytest.warns(FutureWarning):
        assert directory.check_resume(config.validate(raw), tmp_path) == {}
        assert directory.check_resume(config.validate(recorded), tmp_path) == {}


def test_train_is_the_trainers_checkpoints_and_the_recipes_declared_options():
    fields = config.TrainConfig.model_fields
    for option in Trainer.__init__.options:
        if option.name != "seed":  # the recipe's top-level seed
            assert fields[option.name].default == option.default, option.name
    for option in Checkpoints.__init__.options:
        if option.name in ("every", "unit"):
            assert fields[f"checkpoint_{option.name}"].default == option.default
    assert list(fields) == [o.name for o in config.TrainConfig.table]
    train = config.validate({"data": {"name": "iris"}, "train": {"clip_grad_norm": 1, "threads": 2}}).train
    assert train.clip_grad_norm == 1.0 and isinstance(train.clip_grad_norm, float)  # the option's canonical form
    assert train.trainer_options() == {o.name: getattr(train, o.name) for o in sections.TRAINER_OPTIONS}
    assert set(train.fit_options()) == {"epochs", "batch_size", "shuffle", "drop_last"}


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"precision": "fp8"}, "config: train.precision = 'fp8': must be one of 'auto', 'fp32', 'bf16', 'fp16'"),
        ({"threads": 0}, "config: train.threads = 0: must be one of 'auto' or an integer in [1, 1024]"),
        ({"batch_size": 0}, "config: train.batch_size = 0: must be one of 'full' or an integer >= 1"),
        ({"checkpoint_unit": "batch"}, "config: train.checkpoint_unit = 'batch': must be one of 'epoch', 'step'"),
        ({"max_rollbacks": -1}, "config: train.max_rollbacks = -1: must be an integer >= 0"),
        ({"metrics": ["f1", ""]}, "config: train.metrics = ['f1', '']: must be a list of metric names (at most 64)"),
    ],
)
def test_a_bad_train_value_is_one_line_naming_field_value_and_what_is_allowed(train, message):
    with pytest.raises(UserError) as err:
        config.validate({"data": {"name": "iris"}, "train": train})
    assert str(err.value) == message


def test_the_experiment_hands_the_trainer_every_train_option():
    raw = {
        "data": {"name": "iris"},
        "train": {"epochs": 1, "log_every": 7, "max_rollbacks": 5, "on_divergence": "rollback", "clip_grad_value": 0.5},
    }
    trainer = experiment.build(config.validate(raw)).trainer
    assert (trainer.log_every, trainer.max_rollbacks, trainer.on_divergence) == (7, 5, "stop")  # no checkpoints yet


def test_data_is_the_loaders_declared_options():
    fields = config.DataConfig.model_fields
    for option in datasets.load.options:
        if option.name != "seed":  # the recipe's top-level seed
            assert fields[option.name].default == option.default, option.name
    assert config.validate({"data": {"name": "iris", "test_fraction": 0}}).data.test_fraction == 0.0  # as load()


def test_a_search_space_may_name_the_old_word():
    raw = config.validate(_recipe("regularization", {"name": "l1"})).model_dump(exclude_none=True)
    set_path(raw, "regularization.kind", "l2")
    assert raw["regularization"] == {"kind": "l2"}
    with pytest.warns(FutureWarning, match=r"\[regularization\] kind is the old word for name"):
        assert config.validate(raw).regularization.name == "l2"
