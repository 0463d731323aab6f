"""Every option that touches the loss, the metrics or the logs means the same in one process and in N: the same
recipes run through torchrun with ``--nproc 1`` and ``--nproc 2`` log the same keys every epoch, with the same
values, and end with the same weights (slow: real gloo processes, as in test_dist.py).

Why the weights agree: each rank's chunk gradient is weighted by its share of the global batch's mean before DDP's
all-reduce (its share of the samples, or of Σ w[y] under class weights), so a step is the one-process step up to
the order of float32 additions (a few ulp per step, over ~100 steps of Adam on weights of order 0.1: 1e-5 is ~100x
the differences seen, and 100x below a one-step change of lr·sign ≈ 3e-3). The logged values are the same sums over
the same samples (under class weights each chunk's loss counts for its share of the batch's Σ w[y]). The regression
run is babysat (a control.toml in its run directory): rank 0 reads it and both ranks apply it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

CLASSIFICATION = """
name = "digits_options"
seed = 3
[data]
name = "digits"
val_fraction = 0.1
[model]
name = "mlp"
hidden = [32]
[train]
epochs = 3
batch_size = 40
device = "cpu"
threads = 1
clip_grad_norm = 5.0
{train}
[optimizer]
name = "adamw"
lr = 0.003
[regularization]
name = "l2"
strength = 1e-3
[early_stopping]
monitor = "train_f1"
patience = 1
restore_best = false
start_from_epoch = 0  # deprecated (first_epoch = 1): its warning is said once, not once per process
"""

REGRESSION = """
name = "diabetes_options"
seed = 1
[data]
name = "diabetes"
val_fraction = 0.2
[model]
name = "mlp"
hidden = [16]
[train]
epochs = 3
batch_size = 32
device = "cpu"
threads = 1
loss = "mae"
metrics = ["rmse"]
[optimizer]
name = "adam"
lr = 0.01
[early_stopping]
monitor = "train_rmse"
"""

# label smoothing and class weights: a CrossEntropyLoss module; metrics beyond accuracy, each a different kind of
# running sum (a confusion matrix, top-k counts, AUROC's gathered scores); regression: mae, rmse, and babysitting
RECIPES = {
    "classification": CLASSIFICATION.format(
        train="class_weights = [1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0, 0.5]\nlabel_smoothing = 0.1\n"
        'metrics = ["f1", "precision", "top5_accuracy", "auroc"]'
    ),
    "regression": REGRESSION,
}
CONTROL = {"regression": 'lr = "halve"\nadd_epochs = 1'}  # read by rank 0 at the end of epoch 1


def run(tmp_path: Path, name: str, nproc: int) -> tuple[list[dict], dict]:
    recipe = tmp_path / f"{name}.toml"
    recipe.write_text(RECIPES[name])
    out = tmp_path / f"{name}-{nproc}"
    if name in CONTROL:  # headless babysitting: control.toml in the run directory before it starts
        out.mkdir()
        (out / "control.toml").write_text(CONTROL[name])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "descend.cli",
        "run",
        str(recipe),
        "--out",
        str(out),
        "--quiet",
        "--nproc",
        str(nproc),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    # torchrun's banner and log lines stay off the terminal: every line on stderr is descend's own
    assert all(line.startswith(("descend: ", "control: ")) for line in done.stderr.splitlines()), done.stderr
    if "start_from_epoch" in RECIPES[name]:
        assert done.stderr.count("start_from_epoch is deprecated") == 1, done.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows, load_file(out / "model.safetensors")


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_one_and_two_processes_log_the_same_values_and_end_with_the_same_weights(tmp_path, name):
    one_rows, one_weights = run(tmp_path, name, 1)
    two_rows, two_weights = run(tmp_path, name, 2)
    assert [sorted(row) for row in one_rows] == [sorted(row) for row in two_rows]
    assert {"train_loss", "val_loss"} <= set(one_rows[0])
    if name == "classification":
        assert {"train_f1", "val_f1", "train_auroc", "train_penalty", "grad_norm"} <= set(one_rows[0])
    else:  # babysitting: both ranks trained the added epoch at the halved rate (a rank that did not would have
        # left the other waiting in an all-reduce)
        assert len(two_rows) == 4 and two_rows[0]["control_lr_factor"] == 0.5
        assert [row["lr"] for row in two_rows] == pytest.approx([0.01, 0.005, 0.005, 0.005])
    for key in one_weights:
        torch.testing.assert_close(one_weights[key], two_weights[key], rtol=0, atol=1e-5)
    for one, two in zip(one_rows, two_rows, strict=True):
        for key in one.keys() - {"seconds"}:  # the same sums over the same samples
            assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key
