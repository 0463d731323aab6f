"""descend on a CUDA GPU: streamed batches, mixed precision, channels-last, torch.compile, exact resume, the doctor
and a search. The CUDA tests are marked ``cuda`` and skip without a CUDA device; ``benchmarks/gpu_check.sh`` runs
them (``pytest -m cuda``) on a lent GPU. What of this logic runs on a CPU is tested in the default suite: the fp16
gradient scaler here (fp16 emulated on the CPU), the prefetch order in test_streams.py, channels-last and compile
in test_speed.py, exact resume in test_resume.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import descend as ds
from descend.cli import main
from descend.train import checkpoint
from descend.train.callbacks import Callback
from descend.train.dataloaders import Stream
from descend.train.state import Checkpoints

NO_CUDA = not torch.cuda.is_available()
CUDA = [pytest.mark.cuda, pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")]


def on_cuda(test):
    """Mark ``test`` as a CUDA test: selected by ``pytest -m cuda``, skipped without a CUDA device."""
    for mark in reversed(CUDA):
        test = mark(test)
    return test


def _images(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=g)
    y = (x[:, 0, :6].mean((1, 2)) > x[:, 0, 6:].mean((1, 2))).long()  # a learnable rule: top half brighter
    return ds.data.Split(x, y, "classification", 2)


def _cnn(seed=0):
    torch.manual_seed(seed)
    # GELU and average pooling: smooth everywhere, so two layouts or precisions do not flip a ReLU/max-pool tie
    return ds.models.cnn2d(
        [8, 16], input_shape=(1, 12, 12), num_outputs=2, batch_norm=True, activation="gelu", pool="avg"
    )


def _fit(data, epochs=3, **options):
    options.setdefault("precision", "fp32")
    trainer = ds.Trainer(_cnn(), optimizer=ds.optim.create("adamw", lr=3e-3), device="cuda", seed=0, **options)
    history = trainer.fit(data, epochs=epochs, batch_size=32)
    return trainer, [row["train_loss"] for row in history]


@on_cuda
def test_streamed_batches_are_prefetched_from_pinned_memory_on_a_side_stream(monkeypatch):
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)
    stream = Stream(loader, torch.device("cuda"))
    seen = []  # (event, batch index, the stream the copy was queued on, whether its source was pinned)
    pair = Stream._pair

    def spy(self, batch):
        seen.append(("copy", len(seen), torch.cuda.current_stream().cuda_stream, all(t.is_pinned() for t in batch)))
        return pair(self, batch)

    monkeypatch.setattr(Stream, "_pair", spy)
    got = []
    for i, (xb, yb) in enumerate(stream.epoch()):
        seen.append(("train", i))
        got.append((xb, yb))
        assert xb.device.type == "cuda" and yb.device.type == "cuda"
    assert [event[0] for event in seen] == ["copy", "copy", "train", "copy", "train", "copy", "train", "train"]
    side = stream._side.cuda_stream
    assert side != torch.cuda.default_stream().cuda_stream
    assert all(event[2] == side and event[3] for event in seen if event[0] == "copy")
    torch.cuda.synchronize()
    assert torch.equal(torch.cat([b[0] for b in got]).cpu(), x) and torch.equal(torch.cat([b[1] for b in got]).cpu(), y)


@on_cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_trains_close_to_fp32(precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    data = _images()
    _, fp32 = _fit(data)
    trainer, low = _fit(data, precision=precision)
    assert trainer.speed.precision == precision
    assert all(torch.isfinite(torch.tensor(low)))
    assert low[-1] < low[0]
    # bf16 keeps 8 bits of mantissa (relative rounding 2^-9), fp16 11: three epochs of a small CNN stay within 5%
    assert low[-1] == pytest.approx(fp32[-1], rel=0.05)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.filterwarnings("ignore:precision = .fp16. on a CPU")  # emulated there, and warned about: still exact
def test_fp16_scaler_skips_an_overflowing_step_and_its_scale_is_checkpointed(device, tmp_path):
    data = _images()
    trainer = ds.Trainer(
        _cnn(),
        optimizer=ds.optim.create("sgd", lr=0.1),
        device=device,
        seed=0,
        precision="fp16",
        checkpoints=Checkpoints(tmp_path, every=1, unit="epoch"),
    )
    trainer.fit(data, epochs=1, batch_size=32)
    saved = checkpoint.load(tmp_path / "last.safetensors")
    assert float(saved["scaler"]["scale"]) > 0  # the loss scale travels with the checkpoint: resume stays exact
    before = [p.detach().clone() for p in trainer.model.parameters()]
    huge = ds.data.Split(data.x * 1e30, data.y, "classification", 2)  # finite in fp32, inf in fp16
    with pytest.raises(ds.errors.DivergenceError):  # the loss is not finite: descend stops, as on any device
        trainer.fit(huge, epochs=1, batch_size=256)
    # the one step had inf gradients: the scaler skipped it, so plain SGD left every weight as it was
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


@on_cuda
def test_channels_last_on_cuda_matches_the_default_layout():
    data = _images()
    _, plain = _fit(data, channels_last=False)
    trainer, nhwc = _fit(data, channels_last=True)
    conv = next(m for m in trainer.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    # cuDNN picks other kernels for NHWC, and by default (torch.backends.cudnn.allow_tf32) rounds fp32
    # convolutions' inputs to TF32 (10-bit mantissa, 2^-11 relative): three epochs' losses agree to 2e-3
    assert nhwc == pytest.approx(plain, rel=2e-3)


@on_cuda
def test_compile_on_cuda_matches_eager():
    data = _images()
    _, eager = _fit(data)
    _, compiled = _fit(data, compile=True)
    # Triton's fused kernels sum in another order; the convolutions are cuDNN's (TF32) in both
    assert compiled == pytest.approx(eager, rel=2e-3)


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("optimizer", ["adamw", "momentum"])  # torch's fused kernels, as descend creates them
def test_resume_ends_where_an_unbroken_run_ends(device, channels_last, optimizer, tmp_path):
    """A crash mid-epoch, then resume from the last checkpoint, with and without channels-last memory (the moments
    restored from the checkpoint must take the channels-last parameters' layout: fused kernels pair elements by
    memory position). With deterministic=True: bit-identical on the CPU; on a GPU within 1e-6 (a cuBLAS workspace
    may split a sum differently after the restart)."""
    data = _images()  # 256 images, batch 32: 8 steps an epoch

    def trainer(folder, callbacks=()):
        return ds.Trainer(
            _cnn(),
            optimizer=ds.optim.create(optimizer, lr=3e-3),
            device=device,
            seed=0,
            precision="fp32",
            deterministic=True,
            callbacks=list(callbacks),
            channels_last=channels_last,
            checkpoints=Checkpoints(folder, every=3, unit="step"),
        )

    full = trainer(tmp_path / "full")
    full.fit(data, epochs=3, batch_size=32)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(tmp_path / "crash", [CrashAt(13)]).fit(data, epochs=3, batch_size=32)  # mid-epoch 2
    resumed = trainer(tmp_path / "crash")
    resumed.fit(data, epochs=3, batch_size=32, resume=tmp_path / "crash")
    tolerance = 0 if device == "cpu" else 1e-6
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert a.device.type == device
        assert torch.allclose(a.float(), b.float(), rtol=0, atol=tolerance), name
    assert [r["train_loss"] for r in resumed.history] == pytest.approx(
        [r["train_loss"] for r in full.history], rel=tolerance, abs=tolerance
    )


RECIPE = """
name = "cuda_small"
seed = 0
[data]
name = "digits"
val_fraction = 0.2
[model]
name = "mlp"
hidden = [32]
[train]
epochs = 3
batch_size = 64
device = "cuda"
[optimizer]
name = "adam"
lr = 1e-2
"""


@on_cuda
def test_doctor_on_cuda(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    code = main(["doctor", str(recipe), "--budget", "60", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().out
    written = json.loads((tmp_path / "doctor.json").read_text())
    assert {c["id"] for c in written["checks"]} >= {"data", "lr_range"}
    assert all(c["status"] != "failed" for c in written["checks"])


@on_cuda
def test_a_small_search_on_cuda(tmp_path):
    (tmp_path / "r.toml").write_text(RECIPE)
    (tmp_path / "s.toml").write_text("[optimizer.lr]\nfloat = [1e-3, 1e-1]\nlog = true\n")
    out = tmp_path / "study"
    code = main(
        [
            "tune",
            str(tmp_path / "r.toml"),
            "--space",
            str(tmp_path / "s.toml"),
            "--sampler",
            "random",
            "--trials",
            "2",
            "--seed",
            "0",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    trials = json.loads((out / "tune.json").read_text())["trials"]
    assert [t["state"] for t in trials] == ["complete", "complete"]
    assert all(0 <= t["value"] <= 1 and t["epochs"] == 3 for t in trials)
