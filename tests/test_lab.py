"""Each lab's key claim, measured in its quick mode (or on the lab's own building blocks), and the `descend lab`
command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from descend import lab, schedules
from descend.cli import main
from descend.lab import complexity, penalties, rates, surfaces


@pytest.fixture(scope="module")
def quick():
    """Quick lab results, each computed once for this module."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = lab.run(name, quick=True)
        return cache[name]

    return get


def test_polynomial_variance_grows_and_bias_falls_with_degree():
    terms = {d: lab.bias_variance(complexity.polynomial(d), complexity.sampler, x_test=complexity.X_TEST,
                                  target=complexity.target, truth=complexity.truth(complexity.X_TEST),
                                  repetitions=30, bootstrap=50) for d in (1, 5, 9)}
    assert terms[1].bias > terms[5].bias > terms[9].bias
    assert terms[1].variance < terms[5].variance < terms[9].variance
    assert terms[1].noise == pytest.approx(0.2, rel=0.15)   # σ² of N(0, 0.2)


@pytest.mark.slow  # trains 12 networks for 1000 full-batch steps
def test_network_variance_splits_into_initialisation_and_data_over_training():
    """Untrained networks differ by their initialisation only; trained ones mostly by their data sample."""
    terms = complexity.network_terms(6, 2, epochs=1000, snapshots=(1, 1000), decays=(), width=32)
    start, end = terms[("epochs", 1)], terms[("epochs", 1000)]
    assert start.variance_init > 5 * abs(start.variance_data)
    assert end.variance_data > end.variance_init and end.bias < start.bias / 5
    assert end.variance == pytest.approx(end.variance_init + end.variance_data)


def test_l1_gives_exact_zeros_and_ridge_closed_form_equals_gradient_descent(quick):
    m = quick("regularization").measured
    assert m["exact_zeros"]["l1"] > m["exact_zeros"]["l2"] == 0
    assert m["correlated_spread"]["l2"] < m["correlated_spread"]["l1"]      # L2 groups the correlated copies
    assert m["max_abs_difference"] < 1e-8
    np.testing.assert_allclose(m["ridge_gradient_descent"], m["ridge_closed_form"], atol=1e-8)


def test_weight_decay_is_l2_for_sgd_but_not_for_adam(quick):
    m = quick("weight-decay").measured
    assert m["l2_vs_decoupled"]["gd"]["max_abs_weight_difference"] < 1e-4
    assert m["l2_vs_decoupled"]["adam"]["max_abs_weight_difference"] > 0.1
    assert m["test_loss"][0] > 10 * min(m["test_loss"])                     # decay fixes the overfit
    assert m["train_loss"][0] < m["test_loss"][0]


def test_heavy_ball_beats_gradient_descent_in_the_ravine():
    rates_grid = np.logspace(-3, 0, 7)
    ravine = surfaces.SURFACES[0]
    steps = {}
    for name in ("gd", "momentum"):
        paths = surfaces.descend_paths(name, [ravine], rates_grid, 1000)
        hits = [surfaces.steps_to_tolerance(ravine, paths[:, 0, j]) for j in range(len(rates_grid))]
        steps[name] = min(h for h in hits if h is not None)
    assert steps["momentum"] < steps["gd"] / 2


def test_adagrad_steps_shrink_as_one_over_root_t():
    lengths = surfaces.step_lengths("adagrad", 100)
    assert lengths[99] / lengths[0] == pytest.approx(0.1, rel=1e-6)
    assert np.all(np.diff(lengths) < 0)
    assert surfaces.step_lengths("gd", 10)[-1] == pytest.approx(surfaces.step_lengths("gd", 10)[0])


def test_random_search_tries_more_distinct_values_of_the_important_parameter(quick):
    m = quick("search").measured
    for budget in m["budgets"]:
        assert m["random"][budget]["distinct_important"] == budget
        assert m["grid"][budget]["distinct_important"] == int(round(budget ** 0.5))
        assert m["random"][budget]["beats_grid"] > 0.5


def test_learning_rate_regimes(quick):
    runs = quick("learning-rates").measured["runs"]
    assert runs["divergent"]["status"].startswith("diverged")
    assert runs["good"]["final_train_loss"] < runs["too small"]["final_train_loss"]
    assert runs["good"]["final_train_loss"] < runs["too large"]["final_train_loss"]


def test_every_schedule_is_drawn():
    curves = rates.schedule_curves(epochs=100, steps_per_epoch=2)
    assert set(schedules.NAMES) <= set(curves)
    assert curves["constant"] == [1.0] * 200
    assert curves["cosine"][-1] < 0.01 and curves["plateau"][-1] < curves["plateau"][0]


def test_batch_norm_trains_the_deep_sigmoid_network(quick):
    m = quick("batchnorm").measured
    assert m["final"]["with batch norm"]["val_accuracy"] > m["final"]["without batch norm"]["val_accuracy"] + 0.3
    grads = m["initial_gradient_norms"]["without batch norm"]
    assert grads[0] < grads[-1] / 100                                       # vanishing towards the input


def test_early_stopping_restores_the_best_weights(quick):
    m = quick("early-stopping").measured
    assert m["best_epoch"] < m["stopped_epoch"] < m["epochs"] - 1
    assert m["stopped_epoch"] == m["best_epoch_before_stop"] + m["patience"]  # epochs counted from 1 throughout
    assert m["val_loss_after_restore"] == pytest.approx(m["best_val_loss"], rel=1e-5)
    assert m["final_val_loss_without_stopping"] > m["best_val_loss"]


def test_double_descent_peaks_at_the_interpolation_threshold(quick):
    m = quick("double-descent").measured
    errors = dict(zip(m["widths"], m["test_error"]))
    assert m["peak_width"] == m["n_train"]
    assert errors[m["widths"][-1]] < errors[m["n_train"]] - 0.2


def test_lab_command_lists_runs_and_rejects(tmp_path, capsys):
    assert main(["lab"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in lab.names())
    assert main(["lab", "no-such-lab"]) == 2
    assert "unknown lab" in capsys.readouterr().err
    out = tmp_path / "sched"
    assert main(["lab", "schedules", "--quick", "--out", str(out)]) == 0
    saved = json.loads((out / "lab.json").read_text())
    assert saved["name"] == "schedules" and saved["quick"] and saved["measured"]["rate_at_fraction"]
    assert "<img" in (out / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
@pytest.mark.parametrize("name", lab.names())
def test_every_lab_runs_in_its_time_budget(name, quick, tmp_path):
    """Two minutes for a lab on two cores, 20 s in quick mode (the optimizer bake-off: ten minutes, one)."""
    result = lab.run(name, quick=quick, out=tmp_path)
    budget = BUDGETS.get(name, (20, 120))[0 if quick else 1]
    assert result.seconds < budget and result.findings and (tmp_path / "report.html").is_file()


BUDGETS = {"optimizers": (60, 600)}  # seconds (quick, full) of labs that train many networks


def test_ridge_helper_matches_numpy():
    x, y = penalties.correlated(30)
    w = penalties.ridge(x, y, 2.0)
    np.testing.assert_allclose(x.T @ (x @ w - y[:, 0]) + 2.0 * w, 0, atol=1e-10)
