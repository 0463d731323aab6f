"""descend tune: every sampler and pruner on a tiny study, resume, patience, outputs, refit, and the test split."""

import json
import os
from dataclasses import replace

import optuna
import pytest
import torch

from descend import config as cfg
from descend.cli import main
from descend.errors import UserError
from descend.runs import experiment
from descend.train import Trainer
from descend.tune import search
from descend.tune.objective import Pruning

RECIPE = """
name = "iris"
seed = 0
[data]
name = "iris"
val_fraction = 0.2
[model]
name = "mlp"
hidden = [8]
[train]
epochs = 3
batch_size = 32
[optimizer]
name = "adam"
lr = 1e-2
"""

SPACE = """
[optimizer.lr]
float = [1e-3, 1e-1]
log = true
grid = 2
[model.dropout]
float = [0.0, 0.4]
grid = 2
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "r.toml").write_text(RECIPE)
    (tmp_path / "s.toml").write_text(SPACE)
    return tmp_path


def run(files, out="out", **kwargs):
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("keep_runs", False)
    return search(files / "r.toml", files / "s.toml", out=files / out, echo=lambda text: None, **kwargs)


def by_number(result):
    return {t["number"]: t["params"] for t in result["trials"]}


SLOW = pytest.mark.slow


@pytest.mark.parametrize("sampler, trials", [("grid", None), ("random", 3), pytest.param("qmc", 3, marks=SLOW),
                                             pytest.param("tpe", 3, marks=SLOW), pytest.param("gp", 3, marks=SLOW)])
def test_each_sampler_runs_a_study(files, sampler, trials):
    result = run(files, sampler=sampler, trials=trials)
    expected = 4 if sampler == "grid" else 3
    assert [t["state"] for t in result["trials"]] == ["complete"] * expected
    assert all(t["epochs"] == 3 and t["seconds"] > 0 and 0 <= t["value"] <= 1 for t in result["trials"])
    assert result["best"]["value"] == max(t["value"] for t in result["trials"])
    assert result["plan"]["metric"] == "val_accuracy" and result["plan"]["direction"] == "maximize"
    if sampler == "grid":
        assert len({json.dumps(t["params"], sort_keys=True) for t in result["trials"]}) == 4


def test_outputs_best_recipe_and_report(files):
    result = run(files, sampler="random", trials=3, keep_runs=True)
    out = files / "out"
    saved = json.loads((out / "tune.json").read_text())
    assert saved["best"] == result["best"] and len(saved["trials"]) == 3
    assert set(saved["trials"][0]) >= {"number", "state", "params", "value", "epochs", "seconds"}
    best = cfg.load(out / "best.toml")
    assert best.optimizer.options["lr"] == pytest.approx(result["best"]["params"]["optimizer.lr"])
    page = (out / "tune.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "optimizer.lr" in page
    assert (out / "trials" / "trial-0000" / "metrics.jsonl").is_file()


def test_same_command_continues_the_study_and_more_trials_extend_it(files):
    first = run(files, sampler="random", trials=3)
    again = run(files, sampler="random", trials=3)
    assert by_number(again) == by_number(first)  # nothing new to do
    more = run(files, sampler="random", trials=5)
    assert len(more["trials"]) == 5
    assert {n: params for n, params in by_number(more).items() if n < 3} == by_number(first)
    with pytest.raises(UserError, match="different sampler"):
        run(files, sampler="qmc", trials=5)
    with pytest.raises(UserError, match="different recipe"):
        run(files, sampler="random", trials=5, overrides=["train.batch_size=16"])


def test_the_same_command_without_out_continues_in_the_latest_directory(files, monkeypatch, capsys):
    monkeypatch.chdir(files)
    command = ["tune", "r.toml", "--space", "s.toml", "--sampler", "random", "--trials", "2", "--seed", "0",
               "--no-runs"]
    assert main(command) == 0
    assert "created study 'iris'" in capsys.readouterr().out
    assert main([*command[:6], "--trials", "3", *command[8:]]) == 0
    out = capsys.readouterr().out
    assert "continuing study 'iris'" in out and "2 done" in out and "3 trials: 3 complete" in out
    assert len(list((files / "runs").glob("tune-iris-*"))) == 1


@pytest.mark.slow
def test_seeded_queue_does_not_depend_on_the_output_directory(files):
    assert by_number(run(files, "a", sampler="qmc", trials=4)) == by_number(run(files, "b", sampler="qmc", trials=4))


@pytest.mark.slow
def test_tpe_with_one_worker_is_reproducible(files):
    one = run(files, "a", sampler="tpe", trials=4, seed=3)
    two = run(files, "b", sampler="tpe", trials=4, seed=3)
    assert by_number(one) == by_number(two)
    assert [t["value"] for t in one["trials"]] == [t["value"] for t in two["trials"]]


@pytest.mark.slow
@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_pruners_see_every_epoch(files, pruner):
    result = run(files, sampler="random", trials=6, pruner=pruner)
    study = optuna.load_study(study_name="iris", storage=f"sqlite:///{files / 'out' / 'tune.db'}")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 6
    for t in finished:
        assert sorted(t.intermediate_values) == list(range(t.user_attrs["epochs"]))
    assert {t["state"] for t in result["trials"]} <= {"complete", "pruned"}


@pytest.mark.slow
@pytest.mark.parametrize("pruner, trials, folds", [("median", 10, None), ("hyperband", 10, None),
                                                    ("wilcoxon", 4, 5)])
def test_each_pruner_stops_hopeless_trials_early(files, pruner, trials, folds):
    (files / "s.toml").write_text("[optimizer.lr]\ncategorical = [0.05, 1e-6]\n[model.dropout]\nfloat = [0.0, 0.2]")
    result = run(files, sampler="random", trials=trials, pruner=pruner, folds=folds)
    budget = 3 * (folds or 1)
    pruned = [t for t in result["trials"] if t["state"] == "pruned"]
    assert pruned and all(t["params"]["optimizer.lr"] == 1e-6 and t["epochs"] < budget for t in pruned)
    assert all(t["epochs"] == budget for t in result["trials"] if t["state"] == "complete")  # none pruned at the end
    assert result["best"]["params"]["optimizer.lr"] == 0.05


@pytest.mark.slow
def test_wilcoxon_prunes_on_per_fold_scores(files):
    with pytest.warns(UserWarning, match="with --cv 3 the Wilcoxon pruner never prunes: .* use --cv 5 or more"):
        result = run(files, sampler="random", trials=3, pruner="wilcoxon", folds=3)
    for t in result["trials"]:
        assert len(t["fold_scores"]) in (2, 3) if t["state"] == "pruned" else len(t["fold_scores"]) == 3
        if t["state"] == "complete":
            assert t["value"] == pytest.approx(sum(t["fold_scores"]) / 3)
            assert t["epochs"] == 9  # 3 folds × 3 epochs
    with pytest.raises(UserError, match="per-fold scores"):
        run(files, "other", sampler="random", pruner="wilcoxon")


def test_pruning_callback_stops_training_when_told():
    class Told:
        reports = []

        def report(self, value, step):
            self.reports.append(step)

        def should_prune(self):
            return len(self.reports) >= 2

    x, y = torch.randn(40, 4), torch.randint(0, 3, (40,))
    trainer = Trainer(torch.nn.Linear(4, 3), loss="cross_entropy", callbacks=[Pruning(Told(), "val_loss")],
                      device="cpu")
    history = trainer.fit((x, y), (x, y), epochs=10, batch_size=8)
    assert len(history) == 2 and trainer.callbacks[0].pruned
    Told.reports = []  # a trial that has run its last epoch is not pruned: its whole budget is spent
    trainer = Trainer(torch.nn.Linear(4, 3), loss="cross_entropy", callbacks=[Pruning(Told(), "val_loss")],
                      device="cpu")
    assert len(trainer.fit((x, y), (x, y), epochs=2, batch_size=8)) == 2 and not trainer.callbacks[0].pruned


@pytest.mark.slow
def test_patience_stops_the_study(files):
    result = run(files, sampler="random", trials=12, patience=2)
    assert result["stopped"] and "2 finished trials" in result["stopped"]
    trials = result["trials"]
    best = result["best"]["number"]
    assert len(trials) < 12 and sum(t["number"] > best for t in trials) == 2
    assert result["queued"] == 12 - len(trials)


def test_timeout_stops_starting_trials(files):
    result = run(files, sampler="random", trials=50, timeout=0)
    assert result["trials"] == [] and result["queued"] == 50 and result["best"] is None
    result = run(files, sampler="random", trials=50, timeout=0.5)  # the same study: trials start for half a second
    assert 1 <= len(result["trials"]) < 50 and result["queued"] == 50 - len(result["trials"])


def test_a_diverging_trial_fails_alone(files):
    (files / "s.toml").write_text('[optimizer.name]\ncategorical = ["gd"]\n[optimizer.lr]\ncategorical = [0.05, 1e12]')
    result = run(files, sampler="grid")
    states = {t["params"]["optimizer.lr"]: t for t in result["trials"]}
    assert states[1e12]["state"] == "fail" and "diverged" in states[1e12]["error"]
    assert states[0.05]["state"] == "complete" and result["best"]["params"]["optimizer.lr"] == 0.05


def test_search_never_reads_the_test_split(files, monkeypatch):
    seen = []
    original = Trainer._evaluate

    def spy(self, split, *, batch_size=1024, prefix=""):
        seen.append((prefix, len(split)))
        return original(self, split, batch_size=batch_size, prefix=prefix)

    monkeypatch.setattr(Trainer, "_evaluate", spy)
    run(files, sampler="random", trials=2, keep_runs=True)
    assert seen and not [p for p, _ in seen if p.startswith("test")]
    seen.clear()
    result = run(files, "refit", sampler="random", trials=2, refit=True)
    assert [p for p, _ in seen if p.startswith("test")] == ["test_"]  # once, by the refit after the search
    refit = result["refit"]
    assert 0 <= refit["test_accuracy"] <= 1 and refit["epochs"] == 3


class Watched(torch.Tensor):
    """A tensor that records every torch operation on it (and on what is computed from it), its size aside."""

    uses: list[str] = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name not in ("__len__", "__get__", "size", "dim", "__repr__"):
            cls.uses.append(name)
        return super().__torch_function__(func, types, args, kwargs or {})


def test_no_search_touches_the_test_inputs_only_the_refit_does(files, monkeypatch):
    load = experiment.load_data

    def watched(config):  # every bundle any part of the search loads: its test inputs are watched
        bundle = load(config)
        return replace(bundle, test=replace(bundle.test, x=bundle.test.x.as_subclass(Watched)))

    monkeypatch.setattr(experiment, "load_data", watched)
    monkeypatch.setattr(Watched, "uses", [])
    for out, folds in (("plain", None), ("cv", 3)):
        run(files, out, sampler="random", trials=2, folds=folds, keep_runs=True)
        assert Watched.uses == [], out
    run(files, "refit", sampler="random", trials=2, refit=True)
    assert "cross_entropy" in Watched.uses  # the watch works: the refit's one evaluation reads them


def test_cli_errors_exit_2_before_any_trial(files, capsys):
    (files / "bad.toml").write_text("[model.dropuot]\nfloat = [0.0, 0.5]")
    code = main(["tune", str(files / "r.toml"), "--space", str(files / "bad.toml"), "--out", str(files / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("descend: error:") and "dropuot" in err
    assert not (files / "o").exists()
    code = main(["tune", str(files / "r.toml"), "--space", str(files / "s.toml"), "--sampler", "bayes"])
    assert code == 2 and "option '--sampler' must be one of 'grid', 'random', 'qmc', 'tpe', 'gp'; got 'bayes'" in (
        capsys.readouterr().err)


@pytest.mark.slow
def test_cli_runs_a_search(files, capsys):
    code = main(["tune", str(files / "r.toml"), "--space", str(files / "s.toml"), "--sampler", "grid", "--seed", "1",
                 "--out", str(files / "o"), "--no-runs"])
    out = capsys.readouterr().out
    assert code == 0 and "4 trials: 4 complete" in out and "best: trial" in out


def test_grid_warns_above_four_dimensions(files):
    (files / "s.toml").write_text("".join(f"[model.x{i}]\ncategorical = [1]\n" for i in range(5)))
    with pytest.warns(UserWarning, match="grid over 5 dimensions"), pytest.raises(UserError):
        run(files, sampler="grid")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_interrupted_trials_are_queued_again_when_the_study_continues(tmp_path):
    from descend.tune.space import parse
    from descend.tune.storage import storage
    from descend.tune.study import Plan, canonical, open_study

    space = parse({"optimizer": {"lr": {"float": [1e-3, 1e-1]}}})
    plan = Plan("random", seed=0, trials=2, space=canonical(space))
    store = storage(f"sqlite:///{tmp_path / 'tune.db'}")
    study, created = open_study("s", store, plan, space)
    trial = study.ask()
    space.suggest(trial)
    trial.set_user_attr("interrupted", True)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    again, created_again = open_study("s", store, plan, space)
    waiting = again.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert created and not created_again and len(waiting) == 2
    assert waiting[-1].user_attrs["retry_of"] == trial.number
    assert waiting[-1].system_attrs["fixed_params"] == {"optimizer.lr": trial.params["optimizer.lr"]}
    open_study("s", store, plan, space)  # queued once, not at every continuation
    assert len(again.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 2


@pytest.mark.parametrize("options, message", [
    ({"folds": 60}, "--folds 60 is more than the rows of every class"),  # iris: 120 train+val rows, 40 a class
    ({"folds": 1}, "option '--cv' must be an integer >= 2"),
    ({"trials": 0}, "option '--trials' must be an integer in [1, 10000]"),
    ({"trials": 10**12}, "option '--trials' must be an integer in [1, 10000]"),
    ({"workers": 10**6}, "option '--workers' must be an integer in [1, "),
    ({"timeout": -5.0}, "option '--timeout' must be a number >= 0"),
    ({"timeout": float("nan")}, "option '--timeout' must be a number >= 0"),
    ({"heartbeat": 0}, "option '--heartbeat' must be an integer in [1, 3600]"),
    ({"retries": -1}, "option '--retries' must be an integer in [0, 100]"),
    ({"patience": 0}, "option '--patience' must be an integer in [1, 10000]"),
])
def test_search_options_out_of_bounds_are_refused_before_anything_is_written(files, options, message):
    with pytest.raises(UserError) as e:
        run(files, sampler="random", trials=options.pop("trials", 2), **options)
    assert message in str(e.value)
    assert not (files / "out").exists()


def test_more_workers_than_cpus_is_a_warning_not_a_refusal(files, monkeypatch):
    """The bound on --workers is the same on every machine; more workers than CPUs share cores, and are told so."""
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    (files / "s.toml").write_text("[data.val_fraction]\nfloat = [0.1, 0.3]\n")  # refused by the next check
    with pytest.warns(UserWarning, match="--workers 2 on 1 CPUs: the workers share cores"):
        with pytest.raises(UserError, match="cannot be searched"):  # so nothing is spawned
            run(files, sampler="random", trials=2, workers=2)


def test_k_fold_search_warns_when_folds_are_too_small_to_score_on(files):
    (files / "s.toml").write_text("[optimizer.lr]\nfloat = [1e-3, 1e-1]\n")
    with pytest.warns(UserWarning, match="13 folds: each validation fold holds 9-10 of the 120 train\\+val rows"):
        result = run(files, sampler="random", trials=1, folds=13)
    assert [t["state"] for t in result["trials"]] == ["complete"]
