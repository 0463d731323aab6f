"""The doctor's parts without training: LR range test analysis, data checks, ranking, budget, fixes, report."""

import json
import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from descend import config, doctor
from descend.data import DataBundle, DatasetInfo, Split
from descend.doctor import curve_checks, data_checks, fit_checks, fix, lr_range, report
from descend.doctor.findings import Budget, Check, Diagnosis, Finding, Fix, rank
from descend.doctor.subject import Probe, Subject, from_config
from descend.errors import UserError
from descend.train.metrics import builtin_loss_name


def sweep_curve(lrs, best=1e-2, blow=1.0, spike_at=None):
    """A range-test-like loss: falls until ``best``, blows up past ``blow``."""
    x = np.log10(lrs)
    loss = 2.3 - 1.5 / (1 + np.exp(-(x - np.log10(best) + 2) * 3)) + np.maximum(0, x - np.log10(best)) ** 2 * 3
    loss[np.asarray(lrs) > blow] = np.inf
    if spike_at is not None:
        loss[spike_at] = 50.0
    return loss


def test_range_test_reads_the_minimum_and_the_divergence_and_ignores_one_early_spike():
    lrs = np.logspace(-6, 1, 100)
    sweep = lr_range.analyse(lrs, sweep_curve(lrs))
    assert 10 ** -2.3 < sweep.lr_min < 10 ** -1.7
    assert sweep.suggestion == pytest.approx(sweep.lr_min / 10)
    assert sweep.lr_diverge is not None and sweep.lr_min < sweep.lr_diverge <= 1.1
    spiked = lr_range.analyse(lrs, sweep_curve(lrs, spike_at=10))
    assert spiked.lr_min == sweep.lr_min and spiked.responsive


def test_a_flat_sweep_is_not_responsive():
    lrs = np.logspace(-6, 1, 60)
    assert not lr_range.analyse(lrs, np.full(60, 2.3) + np.random.default_rng(0).normal(0, 0.01, 60)).responsive


def test_seeds_combine_into_a_suggestion_with_its_spread():
    sweeps = [lr_range.Sweep([], [], lr, 1.0, 0.5) for lr in (1e-2, 1e-1)]
    summary = lr_range.combine(sweeps)
    assert summary["suggestion"] == pytest.approx(10 ** -2.5)
    assert (summary["suggestion_low"], summary["suggestion_high"]) == pytest.approx((1e-3, 1e-2))
    assert summary["log10_std"] == pytest.approx(0.5)


@pytest.mark.parametrize("lr, expect, severity", [(5.0, "lr_too_high", "error"), (0.03, "lr_too_high", "warning"),
                                                   (1e-7, "lr_too_low", "error"), (1e-5, "lr_too_low", "warning"),
                                                   (3e-3, None, None)])
def test_the_configured_lr_is_judged_against_the_range_test(lr, expect, severity):
    summary = lr_range.combine([lr_range.Sweep([], [], lr_min, 10.0, 0.5) for lr_min in (0.01, 0.02)])
    found = lr_range.judge(lr, summary)
    assert [f.id for f in found] == ([expect] if expect else [])
    if expect:
        assert found[0].severity == severity and found[0].fix.changes["optimizer.lr"] == pytest.approx(1.4e-3)


def bundle(x, y, val=None, test=None, classes=3):
    task = "classification" if classes else "regression"
    split = lambda a, b: Split(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b), task, classes)  # noqa: E731
    return DataBundle(split(x, y), split(*val) if val else None, split(*test) if test else None,
                      DatasetInfo("t", task, tuple(x.shape[1:]), classes, classes or 1, {}, "test"))


def healthy_data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 5)), rng.integers(0, 3, n)
    return x, y, (rng.normal(size=(60, 5)), rng.integers(0, 3, 60))


def test_healthy_data_has_no_finding():
    x, y, val = healthy_data()
    assert data_checks.check_data(bundle(x, y, val), "standardize") == []


def test_each_data_problem_is_found():
    x, y, val = healthy_data()
    x_nan = x.copy()
    x_nan[3, 1] = np.nan
    assert [f.id for f in data_checks.check_data(bundle(x_nan, y, val))] == ["data_nan"]
    assert [f.id for f in data_checks.check_data(bundle(x, y + 5, val))] == ["label_out_of_range"]
    wide = x.copy()
    wide[:, 2] *= 1000
    found = data_checks.check_data(bundle(wide, y, val), "none")
    assert [f.id for f in found] == ["unscaled_inputs"] and found[0].fix.changes == {"data.scale": "standardize"}
    assert found[0].evidence["widest_feature"] == 2
    leaked = (np.concatenate([val[0][:10], x[:20]]), np.concatenate([val[1][:10], y[:20]]))
    assert [f.id for f in data_checks.check_data(bundle(x, y, val, leaked))] == ["train_test_leakage"]
    assert [f.id for f in data_checks.check_data(bundle(x[:12], y[:12], val))] == ["too_few_samples"]
    skewed = np.where(np.arange(300) < 20, y, 0)
    assert "class_imbalance" in [f.id for f in data_checks.check_data(bundle(x, skewed, val))]


def test_images_are_compared_per_channel_and_a_scaled_recipe_is_not_blamed():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(200, 2, 8, 8))
    images[:, :, 0, :] = 0.0  # a constant border, as in digit images
    assert data_checks.unscaled(bundle(images, rng.integers(0, 3, 200)).train, None) == []
    images[:, 1] *= 1000
    assert [f.id for f in data_checks.unscaled(bundle(images, rng.integers(0, 3, 200)).train, None)] == [
        "unscaled_inputs"]
    x, y, _ = healthy_data()
    x[:, 0] *= 1000
    assert data_checks.unscaled(bundle(x, y).train, "standardize") == []


def test_scan_csv_counts_missing_and_non_finite_cells_but_not_the_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,0\nnan,3,1\n4,,0\n5,inf,1\n6,7,0\n")
    finding = data_checks.scan_csv(path)
    assert finding.id == "data_nan" and finding.evidence == {"non_finite_values": {"file": 3}, "first_rows": [3, 4, 5]}
    clean = tmp_path / "c.csv"
    clean.write_text("a,label\n1,0\n2,1\n")
    assert data_checks.scan_csv(clean) is None


def test_cells_descend_imputes_are_a_warning_and_the_training_checks_still_run(tmp_path):
    """[data] missing = "impute" (the default) trains on a CSV with empty cells: the doctor says so as a warning
    with the count, and goes on with every training check; with missing = "refuse" the data blocks them."""
    rng = np.random.default_rng(0)
    rows = ["a,b,label"] + [f"{x:.3f},{x * 2:.3f},{int(x > 0)}" for x in rng.normal(size=60)]
    rows[5], rows[9] = "nan,1.0,1", "0.5,,0"
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nname = "d.csv"\n[model]\nhidden = [8]\n[train]\nepochs = 2\n')
    diagnosis = doctor.examine(recipe, budget=60)
    found = {f.id: f for f in diagnosis.findings}
    assert found["data_nan"].severity == "warning" and "2 missing" in found["data_nan"].message
    assert {c.id: c.status for c in diagnosis.checks}["short_run"] != "skipped"
    recipe.write_text(recipe.read_text().replace('name = "d.csv"', 'name = "d.csv"\nmissing = "refuse"'))
    refused = doctor.examine(recipe, budget=60)
    assert [(f.id, f.severity) for f in refused.findings] == [("data_nan", "error")]


def test_ranking_puts_errors_first_then_the_flowchart_order():
    found = [Finding("overfitting", "warning", "", {}), Finding("underfitting", "error", "", {}),
             Finding("lr_too_high", "error", "", {}), Finding("data_nan", "warning", "", {})]
    assert [f.id for f in rank(found)] == ["lr_too_high", "underfitting", "data_nan", "overfitting"]


def test_budget_hands_unused_time_to_later_checks():
    budget = Budget(10.0, {"a": 1.0, "b": 1.0})
    first = budget.share("a") - time.perf_counter()
    assert first == pytest.approx(5.0, abs=0.1)
    assert budget.share("b") - time.perf_counter() == pytest.approx(10.0, abs=0.1)  # a used nothing


def test_step_time_leaves_the_start_up_out():
    """A probe of 5 steps after 2 s of start-up: 0.1 s a step, not 0.5 (a range test sized by the latter ran
    a fifth of its steps and called itself cut short)."""
    probe = Probe([1.0] * 5, [], None, seconds=2.5, times=[2.1, 2.2, 2.3, 2.4, 2.5])
    assert probe.step_seconds == pytest.approx(0.1)
    assert Probe([1.0] * 4, [], None, seconds=2.0).step_seconds == pytest.approx(0.5)


RAW = {"name": "r", "data": {"name": "digits"}, "optimizer": {"name": "adam", "lr": 0.5}}


def test_fixes_apply_in_rank_order_skip_warnings_and_validate():
    found = [Finding("lr_too_high", "error", "", {}, Fix("", {"optimizer.lr": 1e-3})),
             Finding("noisy_loss", "warning", "", {}, Fix("", {"train.batch_size": 512})),
             Finding("overfitting", "error", "", {}, Fix("", {"optimizer.lr": 9.0,
                                                               "early_stopping": {"patience": 5}}))]
    new, changed = fix.apply(RAW, found)
    assert new["optimizer"]["lr"] == 1e-3 and new["early_stopping"] == {"patience": 5}
    assert "train" not in new and RAW["optimizer"]["lr"] == 0.5
    assert changed == ["optimizer.lr: 0.5 -> 0.001 (lr_too_high)",
                       "early_stopping: (unset) -> {'patience': 5} (overfitting)"]
    assert fix.apply(RAW, found, ("error", "warning"))[0]["train"] == {"batch_size": 512}
    with pytest.raises(UserError, match="fixed recipe"):
        fix.apply(RAW, [Finding("x", "error", "", {}, Fix("", {"optimizer.lr": -1.0}))])


def test_a_fixed_recipe_is_written_as_toml_that_loads(tmp_path):
    (tmp_path / "r.toml").write_text('[data]\nname = "digits"\n[optimizer]\nname = "adam"\nlr = 0.5\n')
    raw = fix.read_raw(tmp_path / "r.toml", ["optimizer.lr=0.7"])
    assert raw["optimizer"]["lr"] == 0.7
    new, _ = fix.apply(raw, [Finding("lr_too_high", "error", "", {}, Fix("", {"optimizer.lr": 1e-3}))])
    path = fix.write(new, fix.fixed_path(tmp_path / "r.toml"))
    assert path.name == "r.fixed.toml" and config.load(path).optimizer.options["lr"] == 1e-3


def test_report_writes_the_json_schema_and_a_self_contained_page(tmp_path):
    plot = {"title": "t", "xlabel": "x", "ylabel": "y", "xlog": True,
            "series": {"a": ([1e-3, 1e-2], [1.0, math.inf])}, "vlines": {"lr": 1e-2}}
    d = Diagnosis([Finding("lr_too_high", "error", "m <b>", {"lr": 0.123456789, "bad": math.nan},
                           Fix("lower it", {"optimizer.lr": 1e-3}), plot)],
                  [Check("lr_range", "finding", 1.2345)], 2.0, 60.0, "r", {}, {"curves": plot})
    data, page = report.write(d, tmp_path / "out")
    written = json.loads(data.read_text())
    assert written["findings"] == [{"id": "lr_too_high", "severity": "error", "message": "m <b>",
                                    "evidence": {"lr": 0.1235, "bad": "nan"},
                                    "fix": {"text": "lower it", "changes": {"optimizer.lr": 0.001}}}]
    assert written["checks"] == [{"id": "lr_range", "status": "finding", "seconds": 1.234}]
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 1 and "m &lt;b&gt;" in html
    assert "lr_too_high" in d.summary() and not d.healthy


def test_unit_statistics_find_dead_relus_and_saturated_tanh():
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    relu = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    assert fit_checks.unit_findings(relu, x, "now")[0] == []
    nn.init.constant_(relu[0].bias, -50.0)
    found, evidence = fit_checks.unit_findings(relu, x, "now")
    assert [f.id for f in found] == ["dead_units"] and evidence["dead_fraction_per_layer"] == [1.0]
    tanh = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
    nn.init.normal_(tanh[0].weight, std=20.0)
    assert [f.id for f in fit_checks.unit_findings(tanh, x, "now")[0]] == ["saturated_units"]


def test_gradient_statistics_call_vanishing_and_exploding():
    def stats(norms):
        s = fit_checks.GradientStats()
        s.grad = [torch.tensor(norms)]
        s.names = [str(i) for i in range(len(norms))]
        return s
    assert fit_checks.gradient_findings(stats([0.5, 1.0, 2.0]))[0] == []
    assert [f.id for f in fit_checks.gradient_findings(stats([1e-9, 1e-5, 1.0]))[0]] == ["vanishing_gradients"]
    assert [f.id for f in fit_checks.gradient_findings(stats([1e4, 1.0, 1.0]))[0]] == ["exploding_gradients"]


def test_noise_is_judged_against_the_fall_of_the_loss():
    rng = np.random.default_rng(0)
    trend = np.linspace(2.0, 0.5, 200)
    assert curve_checks._noise(list(trend + rng.normal(0, 0.02, 200))) < 0.1
    assert curve_checks._noise(list(trend + rng.normal(0, 1.0, 200))) > curve_checks.NOISE
    assert curve_checks._noise(list(np.full(200, 2.0) + rng.normal(0, 0.2, 200))) is None  # flat: no verdict


def test_overfitting_is_an_error_when_validation_gives_back_a_real_share_of_its_fall():
    def judged(val):
        history = [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "val_loss": v} for e, v in enumerate(val)]
        result = Probe([1.0] * 100, history, None)
        subject = Subject("s", None, None, len(val), 64, 1e-3, raw={"model": {}, "optimizer": {}})
        found, _ = curve_checks.learning_curves(result, 2.3, subject)
        return {f.id: f.severity for f in found}.get("overfitting")

    assert judged([1.0, 0.5, 0.3, 0.3]) is None
    assert judged([1.0, 0.3, 0.6, 0.9]) == "error"                          # back up by 0.6 of a 2.0 fall
    assert judged([0.5, 0.1, 0.03, 0.035, 0.045]) == "warning"              # 0.015 of a 2.27 fall: a sliver


def test_a_snapshot_ensemble_is_examined_with_its_cosine_cycles():
    from descend import data, schedules
    from descend.doctor import subject

    recipe = config.validate({**RAW, "train": {"epochs": 10}, "ensemble": {"snapshots": 5}})
    s = subject.from_experiment_parts(recipe, data.load("iris", val_fraction=0.2, seed=0))
    assert isinstance(s.make(None).schedule, schedules.CosineRestarts) and "schedule" not in s.raw


def test_clipping_most_steps_asks_for_a_lower_lr():
    stats = fit_checks.GradientStats()
    stats.total = [torch.tensor(v) for v in (5.0, 4.0, 6.0, 0.5)]
    found = curve_checks.clipping(stats, 1.0, 0.1)
    assert [f.id for f in found] == ["aggressive_clipping"]
    assert found[0].evidence["clipped_fraction"] == 0.75 and found[0].fix.changes == {"optimizer.lr": 0.023}
    assert curve_checks.clipping(stats, 10.0, 0.1) == [] and curve_checks.clipping(stats, None, 0.1) == []


@pytest.mark.parametrize("extra, expected", [({"label_smoothing": 0.1}, "cross_entropy"),
                                             ({"class_weights": [1.0] * 10}, "cross_entropy")])
def test_the_loss_at_init_is_judged_with_label_smoothing_or_class_weights(extra, expected):
    # the recipe's label smoothing or class weights make torch's CrossEntropyLoss module, still cross-entropy
    raw = {"name": "d", "data": {"name": "digits"}, "model": {"name": "mlp", "hidden": [16]}, "train": extra}
    findings, evidence = fit_checks.initial_loss(from_config(config.validate(raw)))
    assert evidence["loss"] == expected and abs(evidence["initial_loss"] - math.log(10)) < 0.7 and not findings
    assert builtin_loss_name(lambda out, y: out.sum()) is None


def test_the_loss_floor_of_label_smoothing_is_what_the_best_model_reaches():
    loss, classes = nn.CrossEntropyLoss(label_smoothing=0.1), 10
    floor = fit_checks.loss_floor(loss, classes)
    q = torch.full((1, classes), 0.1 / classes)
    q[0, 3] += 0.9                               # the smoothed target: the best prediction there is
    assert loss(q.log(), torch.tensor([3])).item() == pytest.approx(floor, rel=1e-6)
    assert floor == pytest.approx(0.5003, abs=1e-4)
    assert fit_checks.loss_floor(nn.CrossEntropyLoss(), classes) == 0.0
    assert fit_checks.loss_floor("cross_entropy", 10) == 0.0
