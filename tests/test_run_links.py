"""A run directory may come from someone else: no file of a run is read or written through a symbolic link that
leads out of it (links that stay inside are fine), and a refusal leaves the file outside untouched."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import descend as ds
from descend import atomic, ensemble, models, transfer
from descend.cli import main
from descend.doctor import fix
from descend.errors import UserError
from descend.runs import directory as rundir

RECIPE = """
name = "iris"
seed = 0
[data]
name = "iris"
[model]
name = "mlp"
hidden = [8]
[train]
epochs = 2
batch_size = 16
device = "cpu"
deterministic = true
[optimizer]
name = "adam"
lr = 0.01
[schedule]
name = "cosine"
"""
# every file and folder a run reads or writes
WRITTEN = [
    "config.toml",
    "inference.json",
    "metrics.jsonl",
    "tb",
    "checkpoints",
    "model.safetensors",
    "summary.json",
    "predictions.json",
    "report.html",
    "schedule.png",
]
READ_BY_LOAD_RUN = {
    "config.toml": "final",
    "inference.json": "final",
    "model.safetensors": "final",
    "checkpoints/best.safetensors": "best",
    "checkpoints/last.safetensors": "last",
    "summary.json": "final",
    "metrics.jsonl": "final",
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("links")
    (base / "r.toml").write_text(RECIPE)
    assert main(["run", str(base / "r.toml"), "--out", str(base / "run"), "--quiet"]) == 0
    return base / "run"


def _copy(finished: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    return run


def _link_out(run: Path, name: str, outside: Path) -> Path:
    """Move ``run/name`` outside and leave a symbolic link to it in its place; returns the moved path."""
    target = outside / name.replace("/", "_")
    shutil.move(run / name, target)
    os.symlink(target, run / name)
    return target


def _contents(path: Path) -> dict:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): p.read_bytes() for p in files}


@pytest.mark.parametrize("name", WRITTEN)
def test_resume_refuses_a_run_with_a_link_leading_out_and_writes_nothing_there(name, finished, tmp_path, capsys):
    run, outside = _copy(finished, tmp_path), tmp_path / "elsewhere"
    outside.mkdir()
    target = _link_out(run, name, outside)
    before = _contents(target)
    assert main(["resume", str(run), "--quiet", "--set", "train.epochs=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("descend: error: ") and name in err and "Traceback" not in err, err
    assert _contents(target) == before
    assert os.path.islink(run / name)


def test_the_metrics_log_is_never_appended_through_a_link(tmp_path):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("someone's file\n")
    os.symlink(outside, tmp_path / "metrics.jsonl")
    with pytest.raises(UserError, match="symbolic link"):
        atomic.append_text(tmp_path / "metrics.jsonl", "{}\n", what="metrics log")
    atomic.write_text(tmp_path / "metrics.jsonl", "{}\n")  # atomic: replaces the link by the file
    assert outside.read_text() == "someone's file\n" and not os.path.islink(tmp_path / "metrics.jsonl")


@pytest.mark.parametrize("name", READ_BY_LOAD_RUN)
def test_load_run_refuses_each_file_behind_a_link_leading_out(name, finished, tmp_path):
    run, outside = _copy(finished, tmp_path), tmp_path / "elsewhere"
    outside.mkdir()
    _link_out(run, name, outside)
    with pytest.raises(UserError, match="leads outside"):
        ds.load_run(run, READ_BY_LOAD_RUN[name])


@pytest.mark.parametrize("name", READ_BY_LOAD_RUN)
def test_links_that_stay_inside_the_run_are_followed(name, finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "kept").mkdir()
    _link_out(run, name, run / "kept")
    loaded = ds.load_run(run, READ_BY_LOAD_RUN[name])
    assert loaded.predict(torch.zeros(2, 4)).shape == (2,)
    assert atomic.links_out(run) == []


def test_a_run_directory_that_is_itself_a_link_is_used(finished, tmp_path):
    os.symlink(finished, tmp_path / "latest")
    assert ds.load_run(tmp_path / "latest").summary["status"] == "finished"
    assert rundir.read_summary(tmp_path / "latest")["status"] == "finished"


def test_ensemble_members_and_manifest_behind_a_link_leading_out_are_refused(tmp_path):
    arch = {"name": "mlp", "options": {"hidden": [4]}, "input_shape": [4], "num_outputs": 3}
    members = [models.build("mlp", (4,), 3, hidden=[4]) for _ in range(2)]
    directory = ensemble.Ensemble(members, "classification", "members", architecture=arch).save(tmp_path / "ens")
    assert len(ensemble.load(directory)) == 2
    for name in ("members/member-1.safetensors", "ensemble.json"):
        outside = tmp_path / f"out-{name.replace('/', '_')}"
        outside.mkdir()
        _link_out(directory, name, outside)
        with pytest.raises(UserError, match="leads outside"):
            ensemble.load(directory)
        os.unlink(directory / name)
        shutil.move(outside / name.replace("/", "_"), directory / name)


def test_transfer_from_a_run_reads_its_weights_from_inside_it_only(finished, tmp_path):
    run, outside = _copy(finished, tmp_path), tmp_path / "elsewhere"
    outside.mkdir()
    assert transfer.create(**{"from": str(run)}).source == run / "model.safetensors"
    _link_out(run, "model.safetensors", outside)
    with pytest.raises(UserError, match="leads outside"):
        transfer.create(**{"from": str(run)})


def test_the_doctor_s_fixed_recipe_replaces_a_link_instead_of_writing_through_it(tmp_path):
    outside = tmp_path / "someone-else.toml"
    outside.write_text("kept = true\n")
    os.symlink(outside, tmp_path / "r.fixed.toml")
    fix.write({"data": {"name": "iris"}}, tmp_path / "r.fixed.toml")
    assert outside.read_text() == "kept = true\n" and not os.path.islink(tmp_path / "r.fixed.toml")
    assert (tmp_path / "r.fixed.toml").read_text() == '[data]\nname = "iris"\n'


def test_a_report_of_a_run_with_a_link_leading_out_is_refused(finished, tmp_path, capsys):
    run, outside = _copy(finished, tmp_path), tmp_path / "elsewhere"
    outside.mkdir()
    _link_out(run, "summary.json", outside)
    before = (run / "report.html").read_bytes()
    assert main(["report", str(run)]) == 2
    assert "holds symbolic links that lead outside it (summary.json)" in capsys.readouterr().err
    assert (run / "report.html").read_bytes() == before
