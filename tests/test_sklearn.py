"""descend's scikit-learn estimators: scikit-learn's own estimator checks, nested parameters, and the tools that drive
estimators (Pipeline, GridSearchCV, cross_val_score in two processes, clone), with reproducible folds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.datasets import load_diabetes, load_iris
from sklearn.feature_selection import SelectKBest
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from descend.sklearn import DescendClassifier, DescendRegressor, expected_failed_checks

FAST = {"train": {"epochs": 5, "batch_size": 16}, "optimizer": {"name": "adam", "lr": 0.01}}


@parametrize_with_checks(
    [DescendClassifier(**FAST), DescendRegressor(**FAST)], expected_failed_checks=expected_failed_checks
)
def test_scikit_learns_estimator_checks(estimator, check):
    check(estimator)


def _iris():
    x, y = load_iris(return_X_y=True)
    return x, np.array(["setosa", "versicolor", "virginica"])[y]


def _net(**params):
    return DescendClassifier(
        model={"name": "mlp", "hidden": [16]},
        train={"epochs": 15, "batch_size": 16},
        optimizer={"name": "adam", "lr": 0.01},
        **params,
    )


def test_nested_parameters_are_recipe_fields():
    net = _net()
    params = net.get_params()
    assert params["optimizer__lr"] == 0.01 and params["model__hidden"] == [16] and params["train__epochs"] == 15
    given = net.optimizer
    net.set_params(optimizer__lr=0.05, train__batch_size=8, random_state=3)
    assert net.optimizer == {"name": "adam", "lr": 0.05} and given == {"name": "adam", "lr": 0.01}  # copied
    assert net.train == {"epochs": 15, "batch_size": 8} and net.random_state == 3
    twin = clone(net)
    assert twin.get_params() == net.get_params() and twin.optimizer is not net.optimizer
    config = net.set_params(schedule__name="cosine").recipe_config()
    assert config.optimizer.options["lr"] == 0.05 and config.schedule.name == "cosine" and config.seed == 3
    with pytest.raises(ValueError, match="optimizer"):
        _net().set_params(optimizer__lr=-1.0).fit(*_iris())


def test_text_labels_feature_names_and_probabilities():
    x, y = _iris()
    frame = pd.DataFrame(x, columns=["sepal_l", "sepal_w", "petal_l", "petal_w"])
    net = _net().fit(frame, y)
    assert net.classes_.tolist() == ["setosa", "versicolor", "virginica"] and net.n_features_in_ == 4
    assert net.feature_names_in_.tolist() == ["sepal_l", "sepal_w", "petal_l", "petal_w"]
    proba = net.predict_proba(frame)
    assert proba.shape == (150, 3) and np.allclose(proba.sum(1), 1)
    assert (net.predict(frame) == net.classes_[proba.argmax(1)]).all() and net.score(frame, y) > 0.8
    assert len(net.history_) == net.n_iter_ == 15


def test_every_fit_starts_afresh_and_warm_start_trains_on():
    x, y = _iris()
    first, second = _net().fit(x, y), _net().fit(x, y)
    np.testing.assert_array_equal(first.predict_proba(x), second.predict_proba(x))  # same seed: same network
    again = first.fit(x, y)  # a second fit re-initialises (skorch #689): the same network again
    np.testing.assert_array_equal(again.predict_proba(x), second.predict_proba(x))
    warm = _net(warm_start=True).fit(x, y)
    before = warm.predict_proba(x)
    warm.fit(x, y)
    assert warm.n_iter_ == 30 and not np.array_equal(warm.predict_proba(x), before)
    assert [row["epoch"] for row in warm.history_] == list(range(1, 31))


def test_partial_fit_trains_one_epoch_per_call():
    x, y = _iris()
    net = _net()
    with pytest.raises(ValueError, match="classes="):
        net.partial_fit(x[:50], y[:50])
    for rows in (slice(0, 150, 2), slice(1, 150, 2), slice(0, 150, 3)):
        net.partial_fit(x[rows], y[rows], classes=["setosa", "versicolor", "virginica"])
    assert net.n_iter_ == 3 and net.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    with pytest.raises(ValueError, match="not in classes_"):
        net.partial_fit(x[:3], np.array(["setosa", "rose", "setosa"]))
    reg = DescendRegressor(**FAST)
    xd, yd = load_diabetes(return_X_y=True)
    reg.partial_fit(xd[:200], yd[:200]).partial_fit(xd[200:], yd[200:])
    assert reg.n_iter_ == 2 and reg.predict(xd[:4]).shape == (4,)


def test_a_pipeline_in_a_grid_search():
    x, y = _iris()
    pipe = make_pipeline(SelectKBest(k=3), _net())
    search = GridSearchCV(pipe, {"descendclassifier__optimizer__lr": [0.003, 0.03]}, cv=3).fit(x, y)
    assert search.best_params_["descendclassifier__optimizer__lr"] in (0.003, 0.03) and search.best_score_ > 0.6
    assert search.best_estimator_[-1].optimizer == {
        "name": "adam",
        "lr": search.best_params_["descendclassifier__optimizer__lr"],
    }


@pytest.mark.slow
def test_cross_validation_in_two_processes_gives_the_scores_of_one():
    x, y = _iris()
    in_two = cross_val_score(_net(), x, y, cv=3, n_jobs=2)
    in_one = cross_val_score(_net(), x, y, cv=3, n_jobs=1)
    np.testing.assert_array_equal(in_two, in_one)  # every fold seeded: the same scores in any process


def test_a_recipe_file_is_the_base(tmp_path):
    (tmp_path / "r.toml").write_text(
        'seed = 5\n[data]\nname = "iris"\n[model]\nname = "mlp"\nhidden = [8]\n'
        '[train]\nepochs = 4\nbatch_size = 32\n[optimizer]\nname = "sgd"\nlr = 0.1\n'
    )
    net = DescendRegressor(tmp_path / "r.toml", optimizer={"lr": 0.01})
    config = net.recipe_config()
    assert config.model.options["hidden"] == [8] and config.optimizer.name == "sgd"
    assert config.optimizer.options["lr"] == 0.01 and config.train.epochs == 4 and config.seed == 0
    x, y = load_diabetes(return_X_y=True)
    assert net.fit(x, np.c_[y, -y] / 100).predict(x[:3]).shape == (3, 2)  # two targets
