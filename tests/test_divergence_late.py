"""Divergence the step-loss watch cannot see: the loss of a step is computed before its update, so weights made
non-finite (or so large the outputs overflow) by an epoch's last step show only in validation or at the next
step; the trainer checks both at each epoch's end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from descend.errors import DivergenceError
from descend.train import Trainer
from descend.train.callbacks import Callback
from descend.train.divergence import all_finite


class _Poison(Callback):
    """After the last step of the first epoch, set one weight to ``value``."""

    def __init__(self, value: float):
        self.value = value

    def on_batch_end(self, trainer):
        if trainer.batch_index == trainer.steps_per_epoch:
            with torch.no_grad():
                trainer.model[0].weight[0, 0] = self.value


def _data(n: int = 32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


@pytest.mark.parametrize("validation", [True, False])
def test_weights_made_non_finite_by_the_last_step_are_divergence(validation):
    trainer = Trainer(nn.Sequential(nn.Linear(3, 2)), loss="cross_entropy", callbacks=[_Poison(float("nan"))],
                      device="cpu")
    with pytest.raises(DivergenceError, match=r"the weights became non-finite by step 4 \(epoch 1\)\. The weights "
                                              r"became non-finite \(0.weight\)"):
        trainer.fit(_data(), _data(8) if validation else None, epochs=1, batch_size=8)


def test_a_validation_loss_that_overflows_is_divergence():
    trainer = Trainer(nn.Sequential(nn.Linear(3, 2)), loss="cross_entropy", callbacks=[_Poison(3e38)],
                      device="cpu")
    with pytest.raises(DivergenceError, match=r"the validation loss is (nan|inf) after step 4 \(epoch 1\)"):
        trainer.fit(_data(), _data(8), epochs=2, batch_size=8)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite_finds_one_non_finite_value_in_any_float_dtype(dtype, bad):
    tensors = [torch.randn(3, 5).to(dtype), torch.randn(40).to(dtype), torch.zeros(0, dtype=dtype),
               torch.arange(6)]  # integers and empty tensors hold nothing non-finite
    assert all_finite(tensors)
    tensors[1][17] = bad
    assert not all_finite(tensors)


def test_all_finite_is_exact_where_a_float64_sum_overflows():
    # float32/16 maxima can never sum past the float64 range; float64 maxima can, and are still finite
    assert all_finite([torch.full((1000,), torch.finfo(torch.float32).max), torch.full((3,), 65504.0).half()])
    huge = torch.full((4,), torch.finfo(torch.float64).max, dtype=torch.float64)
    assert huge.sum().isinf() and all_finite([huge])
    huge[2] = float("nan")
    assert not all_finite([huge])
