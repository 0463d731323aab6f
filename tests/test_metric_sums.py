"""The epoch's sums are held, not reduced, at each step: reducing them later (at the epoch's sync, when the held
outputs pass the budget, or for a checkpoint) gives the sums of reducing every batch at once; the divergence watch
names the first non-finite step however the losses were held."""

import math

import pytest
import torch
import torch.nn.functional as F

from descend.errors import DivergenceError
from descend.train.divergence import Watch
from descend.train.fit_state import FitState
from descend.train.metric_fns import predicted_class
from descend.train.metrics import MetricSums


def batches(task: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for size in (7, 16, 16, 3):
        if task == "classification":
            out, y = torch.randn(size, 4, generator=g), torch.randint(0, 4, (size,), generator=g)
            yield out, y, F.cross_entropy(out, y)
        else:
            out, y = torch.randn(size, 1, generator=g), torch.randn(size, generator=g)
            yield out, y, F.mse_loss(out.reshape(-1), y)


@pytest.mark.parametrize("loss, task", [("cross_entropy", "classification"), ("mse", "regression")])
@pytest.mark.parametrize("budget", [1, 40, 1 << 22])
def test_held_batches_reduce_to_the_sums_of_all_samples(loss, task, budget):
    sums = MetricSums(loss, torch.device("cpu"), budget=budget)
    for out, y, value in batches(task):
        sums.update(out, y, value)
    outs, ys, _ = zip(*batches(task))
    out, y = torch.cat(outs).double(), torch.cat(ys)
    logs = sums.compute("train_")
    if task == "classification":
        assert logs["train_loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-6)
        assert logs["train_accuracy"] == pytest.approx((out.argmax(1) == y).double().mean().item())
    else:
        err = out.reshape(-1) - y.double()
        assert logs["train_mse"] == pytest.approx(err.square().mean().item(), rel=1e-6)
        assert logs["train_r2"] == pytest.approx(1 - err.square().sum().item() / ((y - y.mean()) ** 2).sum().item())


def test_a_saved_state_holds_the_batches_not_yet_reduced():
    first = MetricSums("cross_entropy", torch.device("cpu"))
    parts = list(batches("classification"))
    for part in parts[:2]:
        first.update(*part)
    second = MetricSums("cross_entropy", torch.device("cpu"))
    second.load_state_dict({k: v.clone() for k, v in first.state_dict().items()})
    for part in parts[2:]:
        first.update(*part)
        second.update(*part)
    assert first.compute() == pytest.approx(second.compute())


class _Trainer:
    """What the watch reads from a trainer: the epoch, and for its diagnosis the model and augmentation."""

    def __init__(self, epoch):
        self.epoch, self.model, self.augment, self.fit_state = epoch, torch.nn.Linear(2, 1), None, FitState()


def test_the_watch_names_the_first_non_finite_step_and_keeps_raising():
    watch = Watch(step=10)
    for value in (1.0, 0.5):
        watch.update(torch.tensor(value))
    assert watch.check(_Trainer(0)) == 0.5
    for value in (0.25, math.inf, math.nan):
        watch.update(torch.tensor(value))
    for _ in range(2):
        with pytest.raises(DivergenceError, match=r"step 14 \(epoch 2\); the last finite loss was 0.25"):
            watch.check(_Trainer(1))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows, classes", [(7, 3), (4096, 10), (3000, 1000)])
def test_the_predicted_class_is_argmax_with_ties_and_nan(rows, classes, threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = torch.randint(0, 3, (rows, classes), generator=torch.Generator().manual_seed(rows)).float()  # ties
        out[::7, 1], out[::11, classes - 1] = math.nan, math.nan
        assert torch.equal(predicted_class(out), out.argmax(dim=1))
    finally:
        torch.set_num_threads(before)
    logit = torch.tensor([[-0.5], [0.0], [2.0]])
    assert predicted_class(logit).tolist() == [0, 0, 1]  # one output unit: logit > 0
