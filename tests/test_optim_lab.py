"""`descend lab optimizers` (quick mode): every optimizer tuned by the same search, its best rate run over fresh
seeds, and the report's statistics consistent with their definitions."""

from __future__ import annotations

import math

import pytest

from descend import lab
from descend.lab import optimizers


@pytest.mark.slow  # trains 32 small networks (about 45 s on a busy 2-core machine)
def test_quick_bake_off_reports_what_it_promises(tmp_path):
    result = lab.run("optimizers", quick=True, out=tmp_path)
    m = result.measured
    assert (tmp_path / "report.html").is_file() and m["trials"] == 2 and m["seeds"] == 2
    for problem in ("mnist1d", "fashion_mnist_subset"):
        by_name, target = m[problem]["optimizers"], m[problem]["target"]
        assert set(by_name) == set(optimizers.QUICK)
        assert by_name["adamw"]["p_beats_adamw"] == 0.5  # AdamW against itself
        best = max(o["mean"] for o in by_name.values())
        assert target == pytest.approx(optimizers.TARGET_FRACTION * best)
        for name, o in by_name.items():
            centre = optimizers.CENTRES[name]
            assert centre / 10**1.5 <= o["lr"] <= centre * 10**1.5  # searched within its own range
            assert len(o["final_val_accuracy"]) == 2 and o["ci95"][0] <= o["mean"] <= o["ci95"][1]
            if o["mean"] >= target:  # a mean above the target means some seed reached it
                assert o["reached"] >= 1 and o["steps_to_target"] > 0
            if o["reached"] == 0:
                assert o["steps_to_target"] is None
            assert 0 <= o["p_beats_adamw"] <= 1 and not math.isnan(o["p_beats_adamw"])
