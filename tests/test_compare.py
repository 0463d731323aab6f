"""`descend compare`: variants from --vary, statistics over seeds, failures reported, worker processes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from descend.cli import main
from descend.errors import UserError
from descend.lab.compare import compare_recipe, split_values, summarize, variants
from descend.lab.stats import probability_interval, probability_of_improvement

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
    many = ",".join(str(i) for i in range(100))
    assert len(variants([f"optimizer.lr={many}", "seed=1,2,3,4,5,6,7,8,9,10"])) == 1000
    with pytest.raises(UserError, match="--vary makes 1,000,000 variants"):
        variants([f"optimizer.lr={many}", f"seed={many}", f"train.epochs={many}"])


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
    assert better["p_beats_baseline"] == pytest.approx(1.0) and base["p_beats_baseline"] == 0.5
    assert better["final"]["ci"][0] <= 0.9 <= better["final"]["ci"][1]
    assert better["best"]["mean"] == pytest.approx(0.9)
    assert (better["rank"], base["rank"], shaky["rank"]) == (1, 2, 3)
    assert shaky["ok"] == 1 and {f["status"] for f in shaky["failed"]} == {"crashed", "diverged"}



# few distinct values, so that ties between seeds are common (accuracies on small validation sets tie often)
scores = st.lists(st.sampled_from([0.5, 0.6, 0.7, 0.75, 0.8, 1.0]), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(a=scores, b=scores, higher=st.booleans())
def test_probability_of_improvement_is_symmetric_and_the_baseline_against_itself_is_one_half(a, b, higher):
    ab = probability_of_improvement(a, b, higher_is_better=higher)
    ba = probability_of_improvement(b, a, higher_is_better=higher)
    assert ab + ba == pytest.approx(1.0, abs=1e-12)
    assert probability_of_improvement(a, a, higher_is_better=higher) == 0.5
    # the definition, pair by pair: wins count 1 and ties one half
    won = sum((x > y if higher else x < y) + 0.5 * (x == y) for x in a for y in b)
    assert ab == pytest.approx(won / (len(a) * len(b)), abs=1e-12)
    low, high = probability_interval(a, b, higher_is_better=higher, count=200)
    assert 0.0 <= low <= high <= 1.0


def test_probability_of_improvement_ties_and_an_empty_side():
    assert probability_of_improvement([0.7, 0.8, 0.9], [0.8], higher_is_better=True) == 0.5
    assert probability_of_improvement([0.1, 0.2], [0.2, 0.3], higher_is_better=False) == (1 + 0.5 + 1 + 1) / 4
    assert probability_of_improvement([], [0.5], higher_is_better=True) != probability_of_improvement(
        [], [0.5], higher_is_better=True)  # nan: nothing to compare


def test_the_baseline_row_reads_one_half_with_ties_between_its_seeds():
    runs = [_run(0, s, v) for s, v in enumerate([0.6, 0.6, 0.7, 0.9, 0.6])]
    runs += [_run(1, s, v) for s, v in enumerate([0.6, 0.7, 0.7, 0.8, 0.9])]
    base, other = summarize(["base", "other"], runs, 5)["variants"]
    assert base["p_beats_baseline"] == 0.5
    low, high = base["p_beats_baseline_ci"]
    assert low < 0.5 < high
    # 0.6: three ties; each 0.7: three wins and a tie; 0.8: four wins; 0.9: four wins and a tie
    assert other["p_beats_baseline"] == pytest.approx((1.5 + 3.5 + 3.5 + 4 + 4.5) / 25)

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


def test_one_seed_is_warned_about(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(IRIS)
    with pytest.warns(UserWarning, match="--seeds 1 measures no spread"):
        out = compare_recipe(recipe, [], seeds=1, out=tmp_path / "cmp")
    assert out["variants"][0]["p_beats_baseline"] == 0.5
