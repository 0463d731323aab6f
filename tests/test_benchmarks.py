"""The benchmarks' own logic on tiny recipes: the machine line, time to accuracy over seeds, a recipe's cost.

These check that each runs and reports what it says (fields, seeds, counted FLOPs), never how fast anything is.
"""

import statistics

import pytest
import torch
from benchmarks import machine, overhead, recipe_cost, speed, time_to_accuracy

import descend as ds
from descend import config
from descend.runs import experiment

TINY = """
name = "tiny"
seed = 0

[data]
name = "digits"
val_fraction = 0.1
scale = "standardize"

[model]
name = "mlp"
hidden = [128, 64]

[train]
epochs = 2
batch_size = 64

[optimizer]
name = "adam"
lr = 1e-3
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return str(path)


def test_machine_line_names_every_field():
    fields = machine.describe(size=64)
    line = machine.line(fields)
    assert fields["capability"] == torch.backends.cpu.get_cpu_capability()
    assert fields["threads"] == torch.get_num_threads() and fields["matmul_gflops"] > 0
    assert fields["gpu"] is None or "compute capability" in fields["gpu"]
    for part in (
        fields["cpu"],
        f"capability {fields['capability']}",
        "native bf16 yes" if fields["native_bf16"] else "native bf16 no",
        f"{fields['threads']} thread",
        "GPU ",
        "float32 matmul 64²",
        "GFLOP/s",
    ):
        assert part in line


def test_time_to_accuracy_over_seeds(tiny, capsys):
    out = time_to_accuracy.main([tiny, "--seeds", "2", "--first-seed", "3", "--set", "train.epochs=1"])
    printed = capsys.readouterr().out
    assert printed.startswith("machine: ") and "capability" in printed
    assert [row["seed"] for row in out["rows"]] == [3, 4]
    assert all(row["epochs"] == 1 and 0 <= row["test_accuracy"] <= 1 for row in out["rows"])
    accuracies = [row["test_accuracy"] for row in out["rows"]]
    assert out["accuracy"] == pytest.approx(statistics.fmean(accuracies))
    assert out["accuracy_std"] == pytest.approx(statistics.stdev(accuracies))
    assert "seed 3: test accuracy" in printed and "2 seeds: test accuracy" in printed and " ± " in printed
    assert "with train.epochs=1" in printed
    assert "speed: " in printed and all(row["cpu_seconds"] > 0 for row in out["rows"])


def test_time_to_accuracy_bad_override_is_one_message(tiny, capsys):
    with pytest.raises(SystemExit) as stopped:
        time_to_accuracy.main([tiny, "--seeds", "1", "--set", "train.epochs=0"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("descend: error:") and "epochs" in err and "Traceback" not in err


def test_recipe_cost_counts_the_layers_multiply_adds(tiny, capsys):
    (row,) = recipe_cost.main([tiny, "--images", "128", "--epochs", "2", "--threads", "2"])
    macs = 64 * 128 + 128 * 64 + 64 * 10  # digits' 8x8 pixels -> 128 -> 64 -> 10 classes
    assert row["per_image"] == 3 * 2 * macs  # forward and backward, two FLOPs per multiply-add
    bundle = experiment.load_data(config.load(tiny))
    assert row["trained"] == 2 * len(bundle.train)  # 2 epochs
    assert row["evaluated"] == 2 * len(bundle.val) + len(bundle.test)  # validation every epoch, the test split once
    assert row["tflop"] == pytest.approx((row["trained"] + row["evaluated"] / 3) * row["per_image"] / 1e12)
    assert row["rate"] > 0 and "MFLOP per training image" in capsys.readouterr().out


def test_the_overhead_sides_compute_the_same_training():
    """descend against the hand-written loop is a fair comparison only when both compute alike: the same losses (the
    automatic settings would run the CNN in bf16 on a CPU with native bf16, the loop in float32)."""
    data = ds.data.load("mnist1d", val_fraction=0.1)
    small = ds.data.Split(data.train.x[:512], data.train.y[:512], "classification", 10)
    for kind in ("mlp", "cnn"):
        case = overhead.Case(kind, kind, 128, 1)
        assert overhead.raw(case, small, data.val, 1, 0) == pytest.approx(
            overhead.trainer(case, small, data.val, 1, 0), rel=1e-6
        )


def test_speed_variants_name_their_precision_and_layout():
    """The speed table's ratios are against float32: no variant may leave a setting to the automatic choice."""
    assert all({"precision", "channels_last"} <= set(options) for options in speed.VARIANTS.values())
    assert speed.VARIANTS["fp32"] == {"precision": "fp32", "channels_last": False}
