"""Every sentence a lab writes is supported by its own numbers at its own intervals: the bias-variance lab's
claims are checked against the intervals in its measured results, in quick and full mode, and no estimate that its
intervals leave unresolved is stated, shown negative, or left unmarked."""

from __future__ import annotations

import re

import numpy as np
import pytest

from descend import lab
from descend.lab import claims, complexity
from descend.lab.decomposition import Decomposition


@pytest.fixture(scope="module")
def quick_bias_variance():
    return lab.run("bias-variance", quick=True)


def test_a_change_is_claimed_only_where_the_intervals_separate():
    a, b, c = claims.Estimate(1.0, 0.9, 1.1), claims.Estimate(0.5, 0.4, 0.6), claims.Estimate(0.95, 0.5, 1.5)
    assert claims.direction(a, b) == claims.FALLS and claims.direction(b, a) == claims.RISES
    assert claims.direction(a, c) == claims.NO_CHANGE
    sentence = claims.Claim("degree", "bias", 0, 3, a, c).sentence("Bias²", "degree")
    assert "no measurable change" in sentence and "falls" not in sentence
    assert claims.Estimate(-0.2, -0.5, 0.3).text(clip_at_zero=True) == "0 [0, 0.3]"
    points = {"a": a, "b": b, "c": c}
    assert claims.lowest(points, points) == ("b", ["c"])                   # c's wide interval reaches b's
    assert claims.highest(points, points) == ("a", ["c"])                  # a and c overlap: no single best


def test_an_estimate_is_unresolved_when_its_interval_is_wider_than_half_its_value():
    d = Decomposition("squared", expected_loss=2.0, bias=1.0, variance=0.8, noise=0.2,
                      intervals={"bias": (0.9, 1.1), "variance": (0.1, 5.0), "expected_loss": (1.5, 2.5)})
    assert d.unresolved(("bias", "variance", "expected_loss")) == ["variance"]
    tiny = Decomposition("squared", expected_loss=0.2, bias=0.001, variance=0.001, noise=0.2,
                         intervals={"bias": (-0.005, 0.01), "variance": (0.0, 0.01)})
    assert tiny.unresolved() == []          # within a tenth of the noise: resolved although relatively wide


def test_more_training_sets_are_drawn_while_the_variance_is_unresolved():
    terms = {d: lab.bias_variance(complexity.polynomial(d), complexity.sampler, x_test=complexity.X_TEST,
                                  target=complexity.target, truth=complexity.truth(complexity.X_TEST),
                                  repetitions=20, max_repetitions=160, bootstrap=50) for d in (1, 11)}
    assert terms[1].repetitions < 160 and not terms[1].unresolved()
    assert terms[11].repetitions == 160 and "variance" in terms[11].unresolved()   # heavy tails: never resolves


def check_claims(result) -> None:
    """The lab's sentences against the lab's numbers (lab.json's content), whatever the numbers came out as."""
    m, text = result.measured, " ".join(result.findings)
    assert m["claims"], "the lab states no measured change at all"
    for c in m["claims"]:
        start, end = m[c["axis"]][str(c["start"])], m[c["axis"]][str(c["end"])]
        for point in (start, end):
            assert c["quantity"] not in point["unresolved"], c       # never compares an unresolved estimate
        (lo_a, hi_a), (lo_b, hi_b) = start["intervals"][c["quantity"]], end["intervals"][c["quantity"]]
        expected = "falls" if hi_b < lo_a else "rises" if lo_b > hi_a else "no measurable change"
        assert c["direction"] == expected, c
        label, word = complexity.LABELS[c["quantity"]], complexity.SWEEPS[c["axis"]][0]
        claim = claims.Claim(c["axis"], c["quantity"], c["start"], c["end"], claims.Estimate(**c["before"]),
                             claims.Estimate(**c["after"]))
        assert claim.sentence(label, word, clip_at_zero=c["quantity"] == "bias") in text
    stated = re.findall(r"\b(falls|rises) from", text)
    assert len(stated) == sum(c["direction"] != "no measurable change" for c in m["claims"])   # nothing else
    for axis, (word, _) in complexity.SWEEPS.items():
        keys = {claims.key_text(float(k)) if "." in k else k: v for k, v in m[axis].items()}
        for best, rest in re.findall(rf"lowest at {re.escape(word)} (\S+) \(.*?\)(?:, not distinguished from "
                                     rf"{re.escape(word)} ([^(]*) \()?", text):
            for key in [best, *filter(None, rest.split(", "))]:   # the minimum and its ties: resolved test losses
                assert "expected_loss" not in keys[key.strip()]["unresolved"], (axis, key)
    assert not re.search(r"bias² -|−", text)                    # never a negative bias² in the text
    header, rows = result.tables[0][1], result.tables[0][2]
    for row in rows:
        record = dict(zip(header, row))
        assert record["bias²"] >= 0 and not record["bias² 95%"].startswith("[-")
        assert (record["estimate"] == "resolved") == (not m["degree"][str(record["degree"])]["unresolved"])


def test_the_quick_bias_variance_lab_states_only_what_its_intervals_support(quick_bias_variance):
    check_claims(quick_bias_variance)
    m = quick_bias_variance.measured
    bias = next(c for c in m["claims"] if c["axis"] == "degree" and c["quantity"] == "bias")
    assert bias["direction"] == "falls" and bias["start"] == 0
    assert m["degree"]["11"]["unresolved"]                       # the heavy-tailed fit is marked, not a finding


@pytest.mark.slow  # the full lab: about a minute on two cores
def test_the_full_bias_variance_lab_states_only_what_its_intervals_support():
    result = lab.run("bias-variance")
    check_claims(result)
    width = {c["quantity"]: c for c in result.measured["claims"] if c["axis"] == "MLP width"}
    assert width["expected_loss"]["direction"] == "falls"


def test_the_double_descent_sentences_follow_its_intervals():
    result = lab.run("double-descent", quick=True)
    m, text = result.measured, " ".join(result.findings)
    widths, intervals = m["widths"], dict(zip(m["widths"], m["test_error_interval"]))
    peak = m["peak_width"]
    separated = all(intervals[w][1] < intervals[peak][0] for w in (widths[0], widths[-1]))
    assert ("a peak." in text) == separated and ("no peak is resolved" in text) == (not separated)
    assert f"highest at width {peak} " in text
    fitted = next(w for j, w in enumerate(widths) if all(e == 0 for e in m["train_error_max"][j:]))
    assert f"from width {fitted} on" in text
    # a made-up sweep whose highest point is within the noise: no peak is claimed
    flat = complexity.double_descent_findings([1, 2, 3], np.array([[0.5, 0.6, 0.5], [0.6, 0.5, 0.6]]),
                                              np.ones((2, 3)), 10)
    assert "no peak is resolved" in flat[0] and flat[1] == "No width fits every training label."


def test_unresolved_points_are_drawn_hollow_without_a_line_or_band():
    def point(variance, interval):
        return Decomposition("squared", expected_loss=1.0 + variance, bias=1.0, variance=variance, noise=0.2,
                             intervals={"bias": (0.9, 1.1), "variance": interval, "expected_loss": (0.9, 1.2)})

    series = {1: point(0.5, (0.45, 0.55)), 2: point(0.6, (0.55, 0.65)), 3: point(40.0, (1.0, 500.0))}
    ax = complexity._curve("degree", series).axes[0]
    variance = [line for line in ax.lines if line.get_label() == "variance"][0]
    assert np.isnan(variance.get_ydata()[2]) and not np.isnan(variance.get_ydata()[:2]).any()   # no line to it
    hollow = [line for line in ax.lines if line.get_markerfacecolor() == "none" and len(line.get_xdata())]
    assert any(list(line.get_xdata()) == [2] and line.get_ydata()[0] == 40.0 for line in hollow)


def test_the_optimizer_bake_off_names_a_best_only_where_its_interval_stands_above_the_others():
    from descend.lab.optimizers import _finding

    def entry(mean, low, high, steps=None):
        return {"mean": mean, "ci95": [low, high], "steps_to_target": steps}

    overlapping = {"adamw": entry(0.90, 0.88, 0.92, 10), "lion": entry(0.91, 0.89, 0.93, 12),
                   "sgd": entry(0.80, 0.79, 0.81)}
    text = _finding("mnist1d", overlapping, 0.85)
    assert "highest mean final validation accuracy lion (91.00%), not distinguished at 95% from adamw" in text
    assert "best final" not in text and "sgd" not in text.split(";")[0] and "to 85.00%: adamw." in text
    separated = {"adamw": entry(0.90, 0.89, 0.91), "muon": entry(0.95, 0.94, 0.96, 8)}
    assert _finding("fashion", separated, 0.9).startswith(
        "fashion: best final validation accuracy muon (95.00%), its 95% interval above every other's")
