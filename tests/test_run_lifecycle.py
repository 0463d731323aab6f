"""Run directories over their life: resuming runs that had already stopped, runs killed before their first
checkpoint, and mistakes found before anything is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from descend.cli import main

IRIS = """
name = "iris"
seed = 0
[data]
name = "iris"
{data}
[model]
name = "mlp"
hidden = [8]
[train]
epochs = {epochs}
batch_size = {batch_size}
device = "cpu"
deterministic = true
{train}
[optimizer]
name = "{optimizer}"
lr = {lr}
{extra}
"""


def recipe(tmp_path: Path, *, epochs=4, lr=0.01, optimizer="adam", data="", train="", extra="",
           batch_size=16) -> str:
    path = tmp_path / "r.toml"
    path.write_text(IRIS.format(epochs=epochs, lr=lr, optimizer=optimizer, data=data, train=train, extra=extra,
                                batch_size=batch_size))
    return str(path)


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (run / "metrics.jsonl", run / "summary.json", run / "model.safetensors")}


def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys):
    r, out = recipe(tmp_path), tmp_path / "run"
    assert main(["run", r, "--out", str(out), "--quiet"]) == 0
    before = snapshot(out)
    assert main(["run", r, "--resume", str(out), "--quiet"]) == 0
    assert snapshot(out) == before
    assert "had already finished: nothing to resume" in capsys.readouterr().out


def test_resuming_an_early_stopped_run_changes_nothing(tmp_path, capsys):
    # lr 0 never improves the validation loss: patience 1 stops the run after epoch 2 of 8
    r = recipe(tmp_path, epochs=8, lr=0.0, extra="[early_stopping]\npatience = 1\nmin_delta = 0.1")
    out = tmp_path / "run"
    assert main(["run", r, "--out", str(out), "--quiet"]) == 0
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and json.loads((out / "summary.json").read_text())["status"] == "stopped_early"
    before = snapshot(out)
    assert main(["run", r, "--resume", str(out), "--quiet"]) == 0
    assert snapshot(out) == before
    assert "had already stopped early" in capsys.readouterr().out


def test_an_early_stopped_run_killed_before_its_summary_does_not_train_again(tmp_path):
    r = recipe(tmp_path, epochs=8, lr=0.0, extra="[early_stopping]\npatience = 1\nmin_delta = 0.1")
    out = tmp_path / "run"
    assert main(["run", r, "--out", str(out), "--quiet"]) == 0
    rows = (out / "metrics.jsonl").read_text()
    (out / "summary.json").unlink()      # as if killed between the last checkpoint and the summary
    (out / "model.safetensors").unlink()
    assert main(["run", r, "--resume", str(out), "--quiet"]) == 0
    assert (out / "metrics.jsonl").read_text() == rows   # the stop is in the checkpoint: no extra epoch
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 2


def test_a_finished_run_killed_before_its_summary_does_not_train_again(tmp_path):
    r, out = recipe(tmp_path), tmp_path / "run"
    assert main(["run", r, "--out", str(out), "--quiet"]) == 0
    rows = (out / "metrics.jsonl").read_text()
    (out / "summary.json").unlink()
    assert main(["run", r, "--resume", str(out), "--quiet"]) == 0
    assert (out / "metrics.jsonl").read_text() == rows
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 4


def test_a_finished_run_continues_when_given_more_epochs(tmp_path):
    out = tmp_path / "run"
    assert main(["run", recipe(tmp_path, epochs=2), "--out", str(out), "--quiet"]) == 0
    assert main(["run", recipe(tmp_path, epochs=3), "--resume", str(out), "--quiet"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_run_killed_before_its_first_checkpoint_can_resume_or_start_again(tmp_path):
    r, out = recipe(tmp_path), tmp_path / "run"
    assert main(["run", r, "--out", str(out), "--quiet"]) == 0
    reference = (out / "model.safetensors").read_bytes()
    for name in ("checkpoints", "tb"):  # what exists after the first step, before the first checkpoint
        shutil.rmtree(out / name)
    for name in ("summary.json", "model.safetensors", "report.html", "predictions.json"):
        (out / name).unlink(missing_ok=True)
    (out / "metrics.jsonl").write_text("")
    with pytest.warns(UserWarning, match="no checkpoint yet"):
        assert main(["run", r, "--resume", str(out), "--quiet"]) == 0
    assert (out / "model.safetensors").read_bytes() == reference
    shutil.rmtree(out / "checkpoints")
    (out / "summary.json").unlink()
    with pytest.warns(UserWarning, match="before its first checkpoint: starting it afresh"):
        assert main(["run", r, "--out", str(out), "--quiet"]) == 0
    assert (out / "model.safetensors").read_bytes() == reference


WRONG = {
    "early-stopping monitor misspelt": dict(extra="[early_stopping]\nmonitor = 'val_acc'", message="val_accuracy"),
    "plateau monitor misspelt": dict(extra="[schedule]\nname = 'plateau'\nmonitor = 'val_los'\nmode = 'min'",
                                     message="val_loss"),
    "validation monitor without validation data": dict(data="val_fraction = 0.0", extra="[early_stopping]",
                                                       message="no validation data"),
    "warmup longer than training": dict(extra="[schedule]\nname = 'cosine'\nwarmup_steps = 1000",
                                        message="warmup"),
    "batch larger than the split with drop_last": dict(batch_size=1000, train="drop_last = true",
                                                       message="drop_last"),
    "binary cross-entropy on three classes": dict(train="loss = 'binary_cross_entropy'", message="labels"),
    "an image augmentation on tabular data": dict(extra="[augment]\ncrop_padding = 2", message="crop_padding"),
    "Newton on a model too large for it": dict(optimizer="newton", extra="max_params = 10", message="max_params"),
}


@pytest.mark.parametrize("case", WRONG, ids=list(WRONG))
def test_mistakes_found_before_anything_is_written(case, tmp_path, capsys):
    spec = dict(WRONG[case])
    message = spec.pop("message")
    out = tmp_path / "run"
    assert main(["run", recipe(tmp_path, **spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("descend: error: ") and message in err and "Traceback" not in err
    assert not out.exists(), f"{case}: left {sorted(p.name for p in out.iterdir())}"


def test_a_directory_where_the_last_checkpoint_belongs_is_refused_before_anything_is_written(tmp_path, capsys):
    """Not "no checkpoint yet, starting afresh" (which failed later, at the first checkpoint, after writing logs)."""
    r, out = recipe(tmp_path), tmp_path / "run"
    assert main(["run", r, "--out", str(out), "--quiet"]) == 0
    (out / "summary.json").unlink()
    (out / "checkpoints" / "last.safetensors").unlink()
    (out / "checkpoints" / "last.safetensors").mkdir()
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    for argv in (["resume", str(out)], ["run", r, "--resume", str(out)], ["run", r, "--out", str(out)]):
        assert main([*argv, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("descend: error: ") and "is where the last checkpoint belongs" in err, err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
