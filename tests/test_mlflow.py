"""MLflow tracking (``[tracking] mlflow = URI``, ``--mlflow URI``): everything a run logs is read back with
``mlflow.MlflowClient`` from a local store; a store that fails costs one warning line, never the run."""

from __future__ import annotations

import json
import os
import sqlite3
import sys

import pytest

from descend import config, tune
from descend.cli import main

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

RECIPE = (
    'seed = 0\n[data]\nname = "wine"\n[model]\nname = "mlp"\nhidden = [16]\n'
    '[train]\nepochs = 3\nbatch_size = 32\ndevice = "cpu"\n[optimizer]\nname = "adam"\nlr = 0.01\n'
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite tracking store for the module (creating its tables takes seconds)."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlruns.db'}"
    here = os.getcwd()
    os.chdir(folder)  # MLflow resolves its default artifact root, ./mlruns, when it first opens the store
    try:
        mlflow.MlflowClient(uri).search_experiments()  # creates the tables once
    finally:
        os.chdir(here)
    return folder, uri


def _runs(uri: str, experiment: str) -> list:
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"]) if found else []


def test_a_run_logs_its_recipe_epochs_summary_and_files(store, tmp_path, recwarn):
    _, uri = store
    (tmp_path / "wine.toml").write_text(RECIPE + '[tracking]\nexperiment = "wine-run"\n')
    assert main(["run", str(tmp_path / "wine.toml"), "--out", str(tmp_path / "run"), "--quiet", "--mlflow", uri]) == 0
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    (run,) = _runs(uri, "wine-run")
    client = mlflow.MlflowClient(uri)
    params = run.data.params
    assert params["optimizer.name"] == "adam" and params["optimizer.lr"] == "0.01" and params["seed"] == "0"
    assert params["model.hidden"] == "[16]" and params["tracking.mlflow"] == uri
    assert params["optimizer.beta2"] == "0.999" and params["model.activation"] == "relu"  # defaults resolved
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [(m.step, m.value) for m in history] == [(row["epoch"], row["val_loss"]) for row in lines]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "step")] == [row["step"] for row in lines]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert run.data.metrics["final.test_accuracy"] == summary["final"]["test_accuracy"]
    assert run.data.metrics["best.epoch"] == summary["best"]["best_epoch"]
    assert run.data.tags["descend.status"] == "finished" and run.data.tags["mlflow.runName"] == "run"
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.toml", "report.html", "model.safetensors", "summary.json"} <= artifacts
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="config.toml", tracking_uri=uri, dst_path=str(tmp_path / "back")
    )
    assert open(local).read() == (tmp_path / "run" / "config.toml").read_text()


def _one_warning(recwarn, capfd, uri: str, *words: str) -> None:
    """One warning (pytest records them; the command line prints each as one ``descend: warning:`` line) naming
    the store, and no traceback."""
    shown = [str(w.message) for w in recwarn if issubclass(w.category, UserWarning)]
    assert len(shown) == 1 and f"MLflow tracking at {uri} failed" in shown[0], shown
    assert all(word in shown[0] for word in words) and "\n" not in shown[0]
    out, err = capfd.readouterr()  # MLflow's own log lines (its handler writes to the process's stderr) stay out
    assert "Traceback" not in out + err and "mlflow" not in err.lower().replace(uri.lower(), "")


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9", "damaged"])
def test_a_store_that_fails_costs_one_warning_not_the_run(tmp_path, capfd, recwarn, uri):
    if uri == "damaged":
        (tmp_path / "bad.db").write_bytes(b"this is not a database" * 100)
        uri = f"sqlite:///{tmp_path / 'bad.db'}"
    (tmp_path / "wine.toml").write_text(RECIPE + f'[tracking]\nmlflow = "{uri}"\n')
    assert main(["run", str(tmp_path / "wine.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    _one_warning(recwarn, capfd, uri)
    for name in ("summary.json", "model.safetensors", "report.html", "metrics.jsonl"):
        assert (tmp_path / "run" / name).is_file()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "finished"


def test_without_mlflow_installed_a_run_warns_once_and_resumes_tracked(store, tmp_path, capfd, recwarn, monkeypatch):
    _, uri = store
    (tmp_path / "wine.toml").write_text(RECIPE.replace("epochs = 3", "epochs = 2"))
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "mlflow", None)  # import mlflow fails, as where the extra is not installed
        assert (
            main(
                [
                    "run",
                    str(tmp_path / "wine.toml"),
                    "--out",
                    str(tmp_path / "run"),
                    "--quiet",
                    "--mlflow",
                    "sqlite:///elsewhere.db",
                ]
            )
            == 0
        )
    _one_warning(recwarn, capfd, "sqlite:///elsewhere.db", "not installed", "descend[mlflow]")
    recwarn.clear()
    # tracking may be added or changed on resume: it does not shape the training
    argv = ["resume", str(tmp_path / "run"), "--set", "train.epochs=3", "--set", 'tracking.experiment="wine-resumed"']
    assert main([*argv, "--quiet", "--mlflow", uri]) == 0
    (run,) = _runs(uri, "wine-resumed")
    client = mlflow.MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [3]  # the epoch it trained
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_a_resumed_run_goes_on_in_its_mlflow_run(store, tmp_path, recwarn):
    _, uri = store
    (tmp_path / "wine.toml").write_text(
        RECIPE.replace("epochs = 3", "epochs = 2") + '[tracking]\nexperiment = "resumed"\n'
    )
    assert main(["run", str(tmp_path / "wine.toml"), "--out", str(tmp_path / "run"), "--quiet", "--mlflow", uri]) == 0
    assert json.loads((tmp_path / "run" / "mlflow.json").read_text())["tracking_uri"] == uri
    assert main(["resume", str(tmp_path / "run"), "--set", "train.epochs=3", "--quiet", "--mlflow", uri]) == 0
    (run,) = _runs(uri, "resumed")
    history = mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3] and run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.tags["descend.resumed.train.epochs"] == "3"
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_a_diverging_run_is_a_failed_mlflow_run(store, tmp_path, capfd):
    _, uri = store
    recipe = RECIPE.replace('"wine"', '"diabetes"\nscale = "none"').replace('"adam"\nlr = 0.01', '"sgd"\nlr = 10.0')
    (tmp_path / "d.toml").write_text(recipe + '[tracking]\nexperiment = "diverging"\n')
    assert main(["run", str(tmp_path / "d.toml"), "--out", str(tmp_path / "run"), "--quiet", "--mlflow", uri]) == 3
    (run,) = _runs(uri, "diverging")
    assert run.info.status == "FAILED" and "train_loss" in run.data.metrics
    assert capfd.readouterr().err.startswith("descend: training diverged")


@pytest.mark.slow
def test_a_locked_database_costs_one_warning_not_the_run(store, tmp_path, capfd, recwarn):
    folder, uri = store
    lock = sqlite3.connect(folder / "mlruns.db")
    lock.execute("BEGIN EXCLUSIVE")  # another process holds the database for the whole run
    try:
        (tmp_path / "wine.toml").write_text(RECIPE + f'[tracking]\nmlflow = "{uri}"\n')
        assert main(["run", str(tmp_path / "wine.toml"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    finally:
        lock.rollback()
        lock.close()
    _one_warning(recwarn, capfd, uri, "locked")
    assert (tmp_path / "run" / "summary.json").is_file()


def test_cross_validation_logs_one_run_per_fold_under_its_own(store, tmp_path):
    _, uri = store
    (tmp_path / "wine.toml").write_text(RECIPE + f'[tracking]\nmlflow = "{uri}"\nexperiment = "wine-cv"\n')
    report = tune.cross_validate(config.load(tmp_path / "wine.toml"), 3, tmp_path / "cv")
    runs = _runs(uri, "wine-cv")
    (parent,) = [r for r in runs if r.data.tags.get("descend.kind") == "cv"]
    folds = [r for r in runs if r is not parent]
    assert sorted(r.data.tags["fold"] for r in folds) == ["0", "1", "2"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in folds)
    assert parent.data.metrics["mean.val_accuracy"] == pytest.approx(report["summary"]["val_accuracy"]["mean"])
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
def test_a_search_nests_each_trial_and_compare_tags_each_variant(store, tmp_path, recwarn):
    _, uri = store
    (tmp_path / "wine.toml").write_text(RECIPE + '[tracking]\nexperiment = "wine-tune"\n')
    (tmp_path / "space.toml").write_text("[optimizer.lr]\nfloat = [1e-3, 1e-1]\nlog = true\n")
    assert (
        main(
            [
                "tune",
                str(tmp_path / "wine.toml"),
                "--space",
                str(tmp_path / "space.toml"),
                "--sampler",
                "random",
                "--trials",
                "2",
                "--seed",
                "0",
                "--no-runs",
                "--out",
                str(tmp_path / "tune"),
                "--mlflow",
                uri,
            ]
        )
        == 0
    )
    runs = _runs(uri, "wine-tune")
    (study,) = [r for r in runs if r.data.tags.get("descend.kind") == "study"]
    trials = [r for r in runs if r is not study]
    assert sorted(r.data.tags["trial"] for r in trials) == ["0", "1"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {study.info.run_id}
    assert len({r.data.params["optimizer.lr"] for r in trials}) == 2
    (tmp_path / "c.toml").write_text(RECIPE + '[tracking]\nexperiment = "wine-compare"\n')
    assert (
        main(
            [
                "compare",
                str(tmp_path / "c.toml"),
                "--vary",
                "optimizer.name=sgd,adam",
                "--seeds",
                "1",
                "--jobs",
                "2",  # worker processes: their runs nest under the comparison's all the same
                "--out",
                str(tmp_path / "compare"),
                "--mlflow",
                uri,
            ]
        )
        == 0
    )
    runs = _runs(uri, "wine-compare")
    variants = sorted(
        (r.data.tags["variant"], r.data.params["optimizer.name"]) for r in runs if "variant" in r.data.tags
    )
    assert variants == [("0", "sgd"), ("1", "adam")]
    (parent,) = [r for r in runs if r.data.tags.get("descend.kind") == "compare"]
    assert {r.data.tags["mlflow.parentRunId"] for r in runs if r is not parent} == {parent.info.run_id}
    assert not [str(w.message) for w in recwarn if "MLflow" in str(w.message)]
