"""`descend compare`: variants from --vary, statistics over seeds, failures reported, worker processes."""

from __future__ import annotations

import json

import pytest

from descend.cli import main
from descend.errors import UserError
from descend.lab.compare import compare_recipe, split_values, summarize, variants

IRIS = """
name = "iris-compare"
seed = 0
[data]
name = "iris"
[model]
name = "mlp"
hidden = [8]
[train]
epochs = 2
batch_size = 32
device = "cpu"
[optimizer]
name = "gd"
lr = 0.1
"""


def test_vary_values_split_outside_brackets():
    assert split_values("sgd, adam") == ["sgd", "adam"]
    assert split_values("[64,64],[32]") == ["[64,64]", "[32]"]
    assert split_values('"a,b",c') == ['"a,b"', "c"]
    assert variants(["optimizer.name=gd,adam", "optimizer.lr=0.1,0.01"]) == [
        ["optimizer.name=gd", "optimizer.lr=0.1"], ["optimizer.name=gd", "optimizer.lr=0.01"],
        ["optimizer.name=adam", "optimizer.lr=0.1"], ["optimizer.name=adam", "optimizer.lr=0.01"]]
    assert variants([]) == [[]]
    with pytest.raises(UserError, match="--vary expects"):
        variants(["optimizer.name"])


def _run(variant, seed, value, status="finished"):
    history = [{"epoch": 0, "val_accuracy": value - 0.1}, {"epoch": 1, "val_accuracy": value}]
    return {"variant": variant, "seed": seed, "status": status, "error": None if status == "finished" else "boom",
            "final": {"val_accuracy": value, "val_loss": 1 - value} if status == "finished" else {},
            "history": history if status == "finished" else [], "seconds": 1.0}


def test_summary_statistics_ranks_and_failures():
    runs = [_run(0, s, v) for s, v in enumerate([0.5, 0.6, 0.7])]
    runs += [_run(1, s, v) for s, v in enumerate([0.8, 0.9, 1.0])]
    runs += [_run(2, 0, 0, "crashed"), _run(2, 1, 0, "diverged"), _run(2, 2, 0.1)]
    s = summarize(["base", "better", "shaky"], runs, 3)
    assert s["metric"] == "val_accuracy" and s["higher_is_better"]
    base, better, shaky = s["variants"]
    assert better["final"]["mean"] == pytest.approx(0.9) and better["final"]["std"] == pytest.approx(0.1)
    assert better["p_beats_baseline"] == pytest.approx(1.0) and base["p_beats_baseline"] == pytest.approx(0.5, abs=0.05)
    assert better["final"]["ci"][0] <= 0.9 <= better["final"]["ci"][1]
    assert better["best"]["mean"] == pytest.approx(0.9)
    assert (better["rank"], base["rank"], shaky["rank"]) == (1, 2, 3)
    assert shaky["ok"] == 1 and {f["status"] for f in shaky["failed"]} == {"crashed", "diverged"}


def test_a_crashing_variant_is_reported_and_the_others_finish(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(IRIS)
    out = compare_recipe(recipe, ["data.name=iris,missing.csv"], seeds=2, out=tmp_path / "cmp")
    good, bad = out["variants"]
    assert good["ok"] == 2 and good["rank"] == 1 and bad["ok"] == 0 and bad["rank"] == 2
    assert [f["status"] for f in bad["failed"]] == ["crashed", "crashed"] and "not found" in bad["failed"][0]["error"]
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "Runs that failed" in page and "crashed" in page


@pytest.mark.slow  # each spawned worker imports torch afresh: ~10 s on a loaded 2-core machine
def test_compare_in_two_worker_processes(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(IRIS)
    out = compare_recipe(recipe, ["optimizer.lr=0.1,0.5"], seeds=2, jobs=2, out=tmp_path / "cmp")
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [v["ok"] for v in saved["variants"]] == [2, 2] and saved["jobs"] == 2
    assert {(r["variant"], r["seed"]) for r in saved["runs"]} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert len({r["final"]["val_accuracy"] for r in saved["runs"]}) >= 1
    assert out["report"].endswith("compare.html")


def test_compare_user_errors_exit_2(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(IRIS)
    assert main(["compare", str(recipe), "--vary", "optimizer.lr"]) == 2
    assert main(["compare", str(recipe), "--vary", "optimizer.nope=1,2"]) == 2
    assert main(["compare", str(recipe), "--seeds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("descend: error:") == 3 and "nope" in err


def test_more_seeds_than_can_run_start_at_once_and_jobs_are_bounded_by_the_cpus(tmp_path, monkeypatch):
    """The runs are made as they are needed: asking for 10^20 seeds starts the first run at once (memory grows with
    the runs done, not with the number asked for), as asking for 10^9 epochs does."""
    import os

    from descend.lab import compare

    recipe = tmp_path / "r.toml"
    recipe.write_text(IRIS)

    def first_run(task):
        raise KeyboardInterrupt(task[3])

    monkeypatch.setattr(compare, "run_one", first_run)
    with pytest.raises(KeyboardInterrupt) as stopped:
        compare_recipe(recipe, [], seeds=10**20, out=tmp_path / "cmp")
    assert stopped.value.args == (0,)
    with pytest.raises(UserError, match="--jobs must be at most the .* CPUs of this machine"):
        compare_recipe(recipe, [], seeds=2, jobs=(os.cpu_count() or 1) + 1, out=tmp_path / "cmp")
