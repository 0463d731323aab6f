"""Weight averaging (EMA, SWA): the update rule, the batch-norm policies, which weights validation judges, resume."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import SWALR

import descend as ds
from descend import averaging, config
from descend.train.callbacks import Callback
from descend.train.state import Checkpoints


def bn_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def trainer_for(callbacks, checkpoints=None, lr=0.05) -> ds.Trainer:
    return ds.Trainer(bn_model(), optimizer=ds.optim.create("momentum", lr=lr, momentum=0.9),
                      callbacks=callbacks, device="cpu", seed=1, deterministic=True, checkpoints=checkpoints)


@pytest.fixture(scope="module")
def iris():
    return ds.data.load("iris", seed=0)


def fake_trainer(model):
    return SimpleNamespace(model=model, total_steps=10, steps_per_epoch=1, schedule=None)


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_follows_its_formula_in_float64(warmup):
    model = bn_model().double()
    ema = averaging.EMA(0.95, warmup=warmup, warmup_gamma=2.0, warmup_power=0.75)
    ema.on_fit_start(fake_trainer(model))
    generator = torch.Generator().manual_seed(0)
    expected = None
    for t in range(12):
        with torch.no_grad():   # a "step": every weight and running statistic moves
            for tensor in [*model.parameters(), model[1].running_mean, model[1].running_var]:
                tensor.add_(torch.randn(tensor.shape, generator=generator, dtype=torch.float64))
        ema.update(model)
        current = {name: t_.detach().clone() for name, t_ in model.state_dict().items()}
        if expected is None:    # the first update copies the weights (AveragedModel)
            expected = current
            continue
        d = min(0.95, 1 - (1 + t / 2.0) ** -0.75) if warmup else 0.95
        assert ema.decay_at(t) == pytest.approx(d, abs=0)
        expected = {name: d * expected[name] + (1 - d) * current[name] if current[name].is_floating_point()
                    else current[name] for name in current}
    averaged = ema.averaged_state()
    for name, value in expected.items():
        assert (averaged[name] - value).abs().max().item() <= 1e-12, name


class Snapshots(Callback):
    """Records the weights at the end of every epoch (order < averaging's, same moment as its SWA update)."""

    order = 10

    def __init__(self):
        self.states = []

    def on_batch_end(self, trainer):
        if trainer.batch_index == trainer.steps_per_epoch:
            self.states.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})


def test_swa_average_is_the_mean_of_the_epoch_end_snapshots(iris):
    swa, snaps = averaging.SWA(first_epoch=3, evaluate_with="raw"), Snapshots()
    trainer = trainer_for([swa, snaps])
    trainer.fit(iris.train, iris.val, epochs=6, batch_size=20)
    assert swa.updates == 4
    averaged = swa.averaged_state()
    for name, value in averaged.items():
        if value.is_floating_point():
            mean = torch.stack([s[name] for s in snaps.states[2:]]).mean(0)
            torch.testing.assert_close(value, mean, rtol=1e-5, atol=1e-6)
    # evaluate_with = "raw": the raw weights stay in the model
    torch.testing.assert_close(trainer.model[0].weight, snaps.states[-1]["0.weight"], rtol=0, atol=0)


def test_evaluation_after_swa_uses_recomputed_batch_norm_statistics(iris):
    swa = averaging.SWA(first_epoch=2, batch_norm="recompute")
    trainer = trainer_for([swa])
    trainer.fit(iris.train, iris.val, epochs=4, batch_size=20)
    reference = copy.deepcopy(trainer.model)
    reference.load_state_dict(swa.averaged_state())
    with torch.random.fork_rng(devices=[]):  # the RNG state the trainer's pass started from (it forked it too)
        torch.optim.swa_utils.update_bn(trainer.train_batches(), reference)
    bn, ref = trainer.model[1], reference[1]
    # the trainer's pass ran under its thread policy (one thread for a model this small), the reference under the
    # test's two threads: the same float32 sums in another order, so equal to a few ulps (seen: 9e-8 on values ~0.05)
    torch.testing.assert_close(bn.running_mean, ref.running_mean, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-5, atol=1e-7)
    assert not torch.equal(bn.running_mean, swa.averaged_state()["1.running_mean"])  # not the averaged statistics
    torch.testing.assert_close(trainer.model[0].weight, reference[0].weight, rtol=0, atol=0)
    # the last validation judged exactly the weights and statistics that are now installed
    assert trainer.history[-1]["val_loss"] == pytest.approx(trainer.evaluate(iris.val)["loss"], rel=1e-6)
    assert trainer.history[-1]["val_avg_loss"] == trainer.history[-1]["val_loss"]


@pytest.mark.parametrize("policy", ["average", "keep"])
def test_the_other_batch_norm_policies(iris, policy):
    swa, snaps = averaging.SWA(first_epoch=2, batch_norm=policy, evaluate_with="both"), Snapshots()
    trainer = trainer_for([swa, snaps])
    trainer.fit(iris.train, iris.val, epochs=4, batch_size=20)
    expected = (swa.averaged_state()["1.running_mean"] if policy == "average"
                else snaps.states[-1]["1.running_mean"])
    torch.testing.assert_close(trainer.model[1].running_mean, expected, rtol=0, atol=0)


def test_both_logs_raw_and_average_and_swaps_back_for_training(iris):
    ema, snaps = averaging.EMA(0.9, evaluate_with="both"), Snapshots()
    trainer = trainer_for([ema, snaps])
    trainer.fit(iris.train, iris.val, epochs=3, batch_size=20)
    row = trainer.history[-1]
    assert {"val_loss", "val_accuracy", "val_avg_loss", "val_avg_accuracy"} <= set(row)
    assert row["val_loss"] != row["val_avg_loss"]
    # training continued from the raw weights: the snapshot after the last step is the raw model
    raw_model = bn_model()
    raw_model.load_state_dict(snaps.states[-1])
    raw = ds.Trainer(raw_model, device="cpu").evaluate(iris.val, prefix="val_")
    assert raw["val_loss"] == pytest.approx(row["val_loss"], rel=1e-6)
    # and the final weights are the average
    torch.testing.assert_close(trainer.model[0].weight, ema.averaged_state()["0.weight"], rtol=0, atol=0)


def test_early_stopping_keeps_the_best_average(iris):
    ema, stopper = averaging.EMA(0.8), ds.callbacks.EarlyStopping(patience=50)
    trainer = trainer_for([ema, stopper])
    trainer.fit(iris.train, iris.val, epochs=5, batch_size=20)
    best = trainer.history[stopper.best_epoch - 1]["val_loss"]  # epochs count from 1
    assert trainer.evaluate(iris.val)["loss"] == pytest.approx(best, rel=1e-6)


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_batch_end(self, trainer):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("make", [lambda: averaging.EMA(0.9, warmup=True, evaluate_with="both"),
                                  lambda: averaging.SWA(first_epoch=2, swa_lr=0.01)])
def test_resume_with_averaging_is_bit_identical(iris, tmp_path, make):
    full_cb = make()
    full = trainer_for([full_cb], Checkpoints(tmp_path / "full", every=3, unit="step"))
    full.fit(iris.train, iris.val, epochs=4, batch_size=20)
    crashed = trainer_for([make(), CrashAt(14)], Checkpoints(tmp_path / "crash", every=3, unit="step"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit(iris.train, iris.val, epochs=4, batch_size=20)
    resumed_cb = make()
    resumed = trainer_for([resumed_cb], Checkpoints(tmp_path / "crash", every=3, unit="step"))
    resumed.fit(iris.train, iris.val, epochs=4, batch_size=20, resume=tmp_path / "crash")
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(full_cb.averaged_state().values(), resumed_cb.averaged_state().values(), strict=True):
        assert torch.equal(a, b)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]


def test_swa_learning_rate_matches_torch_swalr():
    start = 3
    schedule = averaging.SWALearningRate(None, start, swa_lr=0.01, anneal_steps=4)
    params = [nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=0.1)
    swalr = SWALR(opt, swa_lr=0.01, anneal_epochs=4, anneal_strategy="cos")
    for step in range(start, start + 7):
        assert schedule.lr(0.1, step) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        swalr.step()
    assert schedule.lr(0.1, 0) == 0.1


def test_recipe_section_and_its_errors():
    raw = {"data": {"name": "iris"}, "averaging": {"name": "swa", "first_epoch": 4, "batch_norm": "keep"}}
    callback = config.validate(raw).averaging.build()
    assert isinstance(callback, averaging.WeightAveraging) and callback.batch_norm == "keep"
    for bad, words in [({"name": "polyak"}, "option 'name' must be one of 'ema', 'swa'; got 'polyak'"),
                       ({"decay": 1.0}, "option 'decay'"), ({"batch_norm": "freeze"}, "'recompute', 'average', 'keep'"),
                       ({"name": "ema", "swa_lr": 0.1}, r"belong to SWA \(name = 'swa'\)"),
                       ({"decay_rate": 0.9}, "unknown option 'decay_rate'")]:
        with pytest.raises(ds.UserError, match=words):
            config.validate({"data": {"name": "iris"}, "averaging": bad})


def test_a_recipe_with_averaging_writes_the_averaged_weights(tmp_path):
    from safetensors.torch import load_file

    from descend.runs import experiment

    raw = {"name": "avg", "data": {"name": "iris"}, "model": {"name": "mlp", "hidden": [8], "batch_norm": True},
           "train": {"epochs": 3, "batch_size": 16, "device": "cpu"}, "optimizer": {"name": "adam", "lr": 0.01},
           "averaging": {"name": "ema", "decay": 0.9, "evaluate_with": "both"}}
    built = experiment.build(config.validate(raw))
    result = built.fit(out=tmp_path / "run")
    ema = next(cb for cb in built.trainer.callbacks if isinstance(cb, averaging.WeightAveraging))
    assert "val_avg_accuracy" in result.history[-1]
    saved = load_file(tmp_path / "run" / "model.safetensors")
    for name, value in ema.averaged_state().items():
        torch.testing.assert_close(saved[name], value, rtol=0, atol=0)


def test_the_deprecated_start_epoch_keeps_its_0_based_meaning_with_a_warning(iris):
    with pytest.warns(FutureWarning, match="start_epoch = 2 averages from epoch 3 on.*write first_epoch = 3"):
        old = averaging.SWA(start_epoch=2, evaluate_with="raw")
    new = averaging.SWA(first_epoch=3, evaluate_with="raw")
    for swa in (old, new):
        trainer_for([swa]).fit(iris.train, iris.val, epochs=6, batch_size=20)
    assert old.updates == new.updates == 4  # epochs 3, 4, 5, 6
    for name, value in old.averaged_state().items():
        torch.testing.assert_close(value, new.averaged_state()[name], rtol=0, atol=0)
    with pytest.raises(ds.UserError, match="leave out the deprecated start_epoch"):
        averaging.SWA(first_epoch=3, start_epoch=2)
    with pytest.raises(ds.UserError, match="option 'first_epoch' must be an integer in"):
        averaging.SWA(first_epoch=0)
