"""Speed options change how a fit runs, not what it computes: channels-last memory and torch.compile give the
losses of the plain run, keep one model (same parameters, same state-dict keys), and are refused where they cannot
apply, before anything is written."""

from __future__ import annotations

import copy

import pytest
import torch

import descend as ds
from descend.cli import main
from descend.data import Split

X = torch.randn(256, 3, 12, 12, generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 4, (256,), generator=torch.Generator().manual_seed(1))


class _Start(ds.callbacks.Callback):
    """Keeps the weights a fit starts from, all in one vector."""

    def on_fit_start(self, trainer):
        self.weights = _flat(trainer.model)


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _model():
    # smooth everywhere (GELU, average pooling): at a ReLU or max-pooling kink a value within rounding of the tie
    # can fall on either side, and that discrete change in the gradient (measured: one ReLU sign in 36864 moves a
    # layer's gradient by 0.8%) would hide the float32 arithmetic these tests are about
    return ds.models.cnn2d(channels=[8, 16], batch_norm=True, activation="gelu", pool="avg")


def _same_trajectory(fast, plain, start, losses, expected):
    """Float32 reassociation only: measured 1.5e-6 of the distance the weights travelled, losses within 1e-7."""
    assert losses == pytest.approx(expected, rel=1e-5)
    assert list(fast.model.state_dict()) == list(plain.model.state_dict())  # no "_orig_mod." prefix
    moved, apart = (_flat(plain.model) - start.weights).norm(), (_flat(fast.model) - _flat(plain.model)).norm()
    assert apart <= 1e-4 * moved  # 70x the measured gap: room for other CPUs' vector widths and kernel choices


def _fit(*callbacks, **speed):
    trainer = ds.Trainer(_model(), callbacks=callbacks,
                         optimizer=ds.optim.create("sgd", lr=0.05), seed=0, threads=1, **speed)
    history = trainer.fit(Split(X, Y, "classification", 4), Split(X[:64], Y[:64], "classification", 4), epochs=3,
                          batch_size=64, progress=False)
    return trainer, [h[k] for h in history for k in ("train_loss", "val_loss")]


def test_channels_last_trains_in_nhwc_with_the_plain_losses():
    start = _Start()
    plain, expected = _fit(start)
    nhwc, losses = _fit(channels_last=True)
    convs = [p for p in nhwc.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    # the same arithmetic in another order: NHWC kernels sum a convolution's 3·3·C products differently
    _same_trajectory(nhwc, plain, start, losses, expected)


def _same_gradients(speed_up, x=X[:64]):
    """One backward pass of a model and of ``speed_up(its copy)`` on ``x``: float32 reassociation only."""
    torch.manual_seed(0)
    model = _model().build((3, 12, 12), 4)
    twin = copy.deepcopy(model)
    for m, inputs in ((model, X[:64]), (speed_up(twin), x)):
        torch.nn.functional.cross_entropy(m(inputs), Y[:64]).backward()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6)


def test_channels_last_gives_the_same_gradients():
    _same_gradients(lambda m: m.to(memory_format=torch.channels_last),
                    X[:64].contiguous(memory_format=torch.channels_last))


def test_channels_last_is_refused_for_inputs_that_are_not_images():
    trainer = ds.Trainer(ds.models.mlp(hidden=[8]), channels_last=True, threads=1)
    with pytest.raises(ds.errors.UserError, match="channels_last is for 2-D convolutional models"):
        trainer.fit((torch.randn(32, 5), torch.randint(0, 2, (32,))), epochs=1, progress=False)


def test_a_recipe_asking_channels_last_for_tabular_data_writes_nothing(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nname = "iris"\n[model]\nname = "mlp"\n[train]\nepochs = 1\nchannels_last = true\n')
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "channels_last is for 2-D convolutional models" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field, value", [("compile", "'yes'"), ("channels_last", "1")])
def test_speed_fields_are_booleans(tmp_path, capsys, field, value):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nname = "iris"\n[model]\nname = "mlp"\n[train]\nepochs = 1\n')
    assert main(["run", str(recipe), "--set", f"train.{field}={value}", "--quiet"]) == 2
    assert f"train.{field}" in capsys.readouterr().err


@pytest.mark.slow  # torch.compile generates and builds C++ kernels: about a minute on two cores
def test_compile_trains_one_model_with_the_plain_losses():
    start = _Start()
    plain, expected = _fit(start)
    compiled, losses = _fit(compile=True)
    # Inductor fuses batch norm and the activations into generated C++ kernels: the same sums in another order
    _same_trajectory(compiled, plain, start, losses, expected)


@pytest.mark.slow
def test_compile_gives_the_same_gradients():
    _same_gradients(torch.compile)  # the compiled module shares the copy's parameters
