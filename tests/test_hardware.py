"""The automatic speed settings (descend.train.hardware): what the hardware computes natively decides precision and
layout, explicit choices the hardware only emulates are warned about, and what a fit chose is recorded. Capability
detection is mocked both ways, so these tests hold on any machine."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import tomllib
import torch
from torch import nn

import descend as ds
from descend.cli import main
from descend.doctor import examine, speed_checks
from descend.train import checkpoint, hardware
from descend.train.checkpoint import CheckpointError
from descend.train.state import Checkpoints

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))
AMX = hardware.Machine("cpu", "Xeon", "AVX512", bf16=True, fp16=False, cores=2)
AVX2 = hardware.Machine("cpu", "EPYC", "AVX2", bf16=False, fp16=False, cores=2)
A100 = hardware.Machine("cuda", "A100", "8.0", bf16=True, fp16=True, cores=8)
T4 = hardware.Machine("cuda", "T4", "7.5", bf16=False, fp16=True, cores=8)
BIG = (
    nn.Sequential(nn.Flatten(), nn.Linear(784, 1024), nn.Linear(1024, 10)),
    torch.zeros(128, 1, 28, 28),
)  # 1.6e9 FLOPs
SMALL = (nn.Linear(4, 3), torch.zeros(16, 4))


def test_a_cpu_s_native_bf16_is_read_from_torch(monkeypatch):
    for native, capability in ((True, "AVX512"), (False, "AVX2")):
        monkeypatch.setattr(hardware, "_onednn_bf16", lambda native=native: native)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda capability=capability: capability)
        found = hardware.machine("cpu")
        assert (found.kind, found.capability, found.bf16, found.fp16) == ("cpu", capability, native, False)
        assert found.cores >= 1


@pytest.mark.parametrize(
    "capability, bf16, fp16", [((8, 0), True, True), ((7, 5), False, True), ((6, 1), False, False)]
)
def test_a_gpu_s_native_precisions_follow_its_compute_capability(monkeypatch, capability, bf16, fp16):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    found = hardware.machine("cuda")
    assert (found.kind, found.capability, found.bf16, found.fp16) == ("cuda", "{}.{}".format(*capability), bf16, fp16)


@pytest.mark.parametrize("hw, expected", [(AMX, "bf16"), (AVX2, "fp32"), (A100, "bf16"), (T4, "fp16")])
def test_auto_precision_is_what_the_hardware_computes_natively(hw, expected):
    model, x = BIG
    chosen = hardware.decide(hw.kind, model=model, sample=x, hardware=hw, threads=1)
    assert chosen.precision == expected
    assert chosen.reasons["precision"]  # every choice says why


def test_a_step_too_small_for_lower_precision_stays_fp32():
    model, x = SMALL
    for hw in (AMX, A100, T4):
        chosen = hardware.decide(hw.kind, model=model, sample=x, hardware=hw, threads=1)
        assert chosen.precision == "fp32" and "too small" in chosen.reasons["precision"]


@pytest.mark.parametrize("hw, precision", [(AVX2, "bf16"), (AMX, "fp16"), (AVX2, "fp16"), (T4, "bf16")])
def test_an_emulated_explicit_precision_trains_after_one_warning(hw, precision):
    model, x = SMALL
    with pytest.warns(UserWarning) as caught:
        chosen = hardware.decide(hw.kind, precision=precision, model=model, sample=x, hardware=hw, threads=1)
    assert chosen.precision == precision  # kept: the user asked for it
    assert len(caught) == 1 and 'use precision = "auto"' in str(caught[0].message)


@pytest.mark.parametrize("hw, precision", [(AMX, "bf16"), (A100, "bf16"), (T4, "fp16"), (AVX2, "fp32")])
def test_a_native_explicit_precision_is_not_warned_about(hw, precision):
    model, x = SMALL
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hardware.decide(hw.kind, precision=precision, model=model, sample=x, hardware=hw, threads=1)


def test_more_threads_than_cores_is_a_slow_choice():
    assert "threads = 8 on a CPU with 2 cores" in hardware.slow_choices(AMX, threads=8)["threads"]
    assert hardware.slow_choices(AMX, threads=2) == {}


def test_auto_channels_last_is_on_for_2d_convolutions_on_images_only():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten())
    assert hardware.layout_choice("auto", "cpu", conv, torch.zeros(2, 1, 8, 8))[0] is True
    assert hardware.layout_choice("auto", "cuda", conv, torch.zeros(2, 1, 8, 8))[0] is True
    assert hardware.layout_choice("auto", "mps", conv, torch.zeros(2, 1, 8, 8))[0] is False
    assert hardware.layout_choice("auto", "cpu", nn.Conv1d(1, 4, 3), torch.zeros(2, 1, 8))[0] is False
    assert hardware.layout_choice("auto", "cpu", nn.Linear(5, 2), torch.zeros(2, 5))[0] is False


def test_auto_channels_last_on_tabular_data_is_not_an_error():
    trainer = ds.Trainer(ds.models.mlp(hidden=[8]), channels_last="auto", threads=1)
    trainer.fit((torch.randn(32, 5), torch.randint(0, 2, (32,))), epochs=1, progress=False)
    assert trainer.speed.channels_last is False


def test_a_fit_on_images_runs_channels_last_by_default():
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 2, (32,))
    trainer = ds.Trainer(ds.models.cnn2d(channels=[4]), threads=1, device="cpu")
    trainer.fit((x, y), epochs=1, progress=False)
    conv = next(p for p in trainer.model.parameters() if p.dim() == 4)
    assert trainer.speed.channels_last and conv.is_contiguous(memory_format=torch.channels_last)


def test_the_fit_applies_and_records_the_machine_s_choice(monkeypatch):
    monkeypatch.setattr(hardware, "machine", lambda device: AMX)
    model, x = BIG
    trainer = ds.Trainer(model, device="cpu", threads=1)
    trainer.fit(
        (x[:32] + torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))), epochs=1, batch_size=32, progress=False
    )
    assert trainer.speed.precision == "bf16"  # a step of 32 x 1.6 MFLOPs x 6: over the bound
    dtypes = []
    hook = model[1].register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    trainer.predict(x[:2])
    hook.remove()
    assert dtypes == [torch.bfloat16]  # the model runs under the bf16 autocast the fit chose
    record = trainer.speed.record()
    assert record["machine"] == "Xeon" and record["capability"] == "AVX512" and record["native_bf16"]
    assert set(record["reasons"]) == {"precision", "channels_last", "threads"}


def test_resume_keeps_the_recorded_precision_and_a_deterministic_run_s_threads():
    model, x = BIG
    now = hardware.decide("cpu", model=model, sample=x, hardware=AVX2, threads="auto", deterministic=True)
    recorded = {**now.record(), "precision": "bf16", "threads": 7}
    with pytest.warns(UserWarning, match="resuming in the precision the run recorded"):  # AVX2 emulates bf16
        again = hardware.resumed(now, recorded, deterministic=True)
        loaded = hardware.resumed(now, recorded, deterministic=False)
    assert (again.precision, again.threads) == ("bf16", 7) and "recorded" in again.reasons["threads"]
    assert loaded.threads == now.threads  # without deterministic the load decides at each fit
    assert hardware.resumed(now, "damaged", deterministic=True) == now
    asked = hardware.decide("cpu", precision="fp32", threads=1, model=model, sample=x, hardware=AVX2)
    assert hardware.resumed(asked, recorded, deterministic=True) == asked  # explicit settings stay explicit


def test_a_run_prints_writes_and_shows_its_speed_settings(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'name = "r"\n[data]\nname = "iris"\n[model]\nname = "mlp"\n[train]\nepochs = 1\ndeterministic = true\n'
    )
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    line = next(row for row in printed.splitlines() if row.startswith("speed: "))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())["speed"]
    assert f"{summary['threads']} thread" in line and summary["precision"] in line
    assert summary["device"] == "cpu" and summary["precision"] == "fp32"  # an iris MLP: too small for bf16
    assert summary["threads"] == 1 and "deterministic" in summary["reasons"]["threads"]
    assert main(["show", str(recipe)]) == 0
    shown = capsys.readouterr().out
    assert re.search(r"^# speed: .*fp32", shown, re.M)
    assert tomllib.loads(shown)["train"]["precision"] == "auto"  # still a recipe: the line is a comment


# options whose best value depends on the machine: a shipped recipe leaves them to "auto"
HARDWARE_SPECIFIC = ("precision", "channels_last", "threads", "compile")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_leave_hardware_specific_speed_options_automatic(path):
    train = tomllib.loads(path.read_text()).get("train", {})
    fixed = {k: train[k] for k in HARDWARE_SPECIFIC if k in train and train[k] not in ("auto", False)}
    assert not fixed, f"{path.name} hard-codes {fixed}: leave them out (automatic)"


def test_the_doctor_reports_explicit_speed_settings_slow_on_this_machine(monkeypatch, tmp_path):
    monkeypatch.setattr(hardware, "machine", lambda device: AVX2)
    slow = speed_checks.slow_settings({"train": {"precision": "bf16", "threads": 8, "device": "cpu"}})
    assert [f.evidence["setting"] for f in slow] == ["train.threads", "train.precision"]
    assert all(f.severity == "warning" and f.fix.changes == {f.evidence["setting"]: "auto"} for f in slow)
    assert speed_checks.slow_settings({"train": {"device": "cpu"}}) == []  # automatic settings are never slow
    assert speed_checks.slow_settings(None) == []  # a model examined without a recipe
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nname = "iris"\n[model]\nname = "mlp"\n[train]\nepochs = 1\nprecision = "bf16"\n')
    with pytest.warns(UserWarning, match='precision = "bf16"'):  # the short runs train, after one warning
        diagnosis = examine(str(recipe), budget=2)
    assert "slow_speed_settings" in diagnosis.ids("warning")
    assert next(c for c in diagnosis.checks if c.id == "speed_settings").status == "finding"


class _CrashAt(ds.callbacks.Callback):
    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def _fp16_fit(folder, callbacks=(), resume=None):
    """Large inputs overflow fp16 at the default loss scale (65536): the scaler skips those steps and halves the
    scale (here four times in the first steps, once more at step 11)."""
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(128, 6, generator=g) * 30, torch.randint(0, 3, (128,), generator=g))
    torch.manual_seed(0)
    trainer = ds.Trainer(
        nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 3)),
        precision="fp16",
        device="cpu",
        threads=1,
        seed=0,
        deterministic=True,
        callbacks=list(callbacks),
        optimizer=ds.optim.create("sgd", lr=0.01),
        checkpoints=Checkpoints(folder, every=3, unit="step"),
    )
    with pytest.warns(UserWarning, match='precision = "fp16" on a CPU'):
        trainer.fit(data, epochs=3, batch_size=16, progress=False, resume=resume)
    return trainer


def test_fp16_s_loss_scale_travels_in_checkpoints_so_resume_stays_exact(tmp_path):
    """A resumed run that started again from the default scale would skip steps the unbroken run took."""
    unbroken = _fp16_fit(tmp_path / "unbroken")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fp16_fit(tmp_path / "crashed", [_CrashAt(8)])
    saved = checkpoint.load(tmp_path / "crashed" / "last.safetensors")
    assert saved["scaler"]["scale"] == 4096.0 and saved["speed"]["precision"] == "fp16"
    resumed = _fp16_fit(tmp_path / "crashed", resume=tmp_path / "crashed")
    for a, b in zip(unbroken.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "key, value", [("scale", -1.0), ("scale", float("inf")), ("growth_factor", 0.5), ("backoff_factor", 2.0),
                   ("growth_interval", 0), ("_growth_tracker", -3)]
)
def test_a_checkpoint_s_gradient_scaler_holds_values_a_scaler_can_work_with(tmp_path, key, value):
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fp16_fit(tmp_path / "crashed", [_CrashAt(8)])
    saved = checkpoint.load(tmp_path / "crashed" / "last.safetensors")
    saved["scaler"][key] = value
    checkpoint.save(tmp_path / "crashed" / "last.safetensors", saved)
    with pytest.raises(CheckpointError, match=f"scaler.{key} is"):
        _fp16_fit(tmp_path / "crashed", resume=tmp_path / "crashed")
