"""Labs ``batchnorm`` (a deep sigmoid network with and without batch normalization) and ``early-stopping``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from descend import data, models, optim
from descend.data import Split
from descend.lab.base import LabResult
from descend.report import html
from descend.train import Trainer
from descend.train.callbacks import EarlyStopping


def first_gradients(model: torch.nn.Module, split: Split) -> list[float]:
    """‖∂L/∂W‖ of each Linear layer, input side first, on one batch of 256 at initialisation."""
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(split.x[:256]), split.y[:256]).backward()
    norms = [float(m.weight.grad.norm()) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    model.zero_grad(set_to_none=True)
    return norms


def batchnorm_lab(quick: bool = False) -> LabResult:
    bundle = data.load("digits", val_fraction=0.2, seed=0)
    epochs, depth = (3 if quick else 20), 8
    runs, grads = {}, {}
    for label, bn in (("without batch norm", False), ("with batch norm", True)):
        torch.manual_seed(0)
        model = models.mlp([64] * depth, activation="sigmoid", batch_norm=bn, init="xavier_uniform",
                           input_shape=(64,), num_outputs=10)
        grads[label] = first_gradients(model, bundle.train)
        trainer = Trainer(model, loss="cross_entropy", optimizer=optim.create("momentum", lr=0.05, momentum=0.9),
                          device="cpu", seed=0)
        trainer.fit(bundle.train, bundle.val, epochs=epochs, batch_size=64)
        runs[label] = trainer.history
    measured = {"epochs": epochs, "depth": depth, "final": {
        k: {"train_loss": h[-1]["train_loss"], "val_accuracy": h[-1]["val_accuracy"]} for k, h in runs.items()},
        "initial_gradient_norms": grads}
    fig, (a1, a2, a3) = html.figure(11.0, 3.3, ncols=3)
    for label, history in runs.items():
        a1.plot(range(1, epochs + 1), history["train_loss"], "o-", ms=3, label=label)
        a2.plot(range(1, epochs + 1), history["val_accuracy"], "o-", ms=3, label=label)
        a3.semilogy(range(1, depth + 2), grads[label], "o-", ms=3, label=label)
    a1.set(ylabel="training loss")
    a2.set(ylabel="validation accuracy")
    html.epoch_axis(a1, a2)
    a3.set(xlabel="layer (input side first)", ylabel="‖∂L/∂W‖ at initialisation")
    a1.legend(fontsize=7)
    without, with_bn = measured["final"]["without batch norm"], measured["final"]["with batch norm"]
    return LabResult(
        "batchnorm", "batch normalization in a deep sigmoid network",
        "Batch normalization (Ioffe & Szegedy 2015) normalises each layer's pre-activations over the mini-batch. "
        "In a deep network of sigmoid units, whose derivative is at most ¼, gradients shrink layer by layer "
        "towards the input and saturated units learn slowly (Glorot & Bengio 2010); with batch norm the same "
        f"network trains quickly. {depth} hidden layers of 64 sigmoid units on scikit-learn digits, SGD with "
        "momentum 0.9, same initialisation and batches.",
        measured, [("Training loss, validation accuracy and initial gradient norms per layer", fig)],
        [("After training", ["network", "train loss", "val accuracy"],
          [[k, v["train_loss"], v["val_accuracy"]] for k, v in measured["final"].items()])],
        [f"After {epochs} epochs: without batch norm training loss {without['train_loss']:.3g}, validation "
         f"accuracy {without['val_accuracy']:.3f}; with batch norm {with_bn['train_loss']:.3g} and "
         f"{with_bn['val_accuracy']:.3f}. At initialisation the first layer's gradient is "
         f"{grads['without batch norm'][0] / grads['without batch norm'][-1]:.2g} of the last layer's without "
         f"batch norm and {grads['with batch norm'][0] / grads['with batch norm'][-1]:.2g} with it."])


def noisy_digits(n: int = 300, noise: float = 0.3, seed: int = 0):
    """A small training set of digits with a fraction ``noise`` of its labels replaced at random (the
    validation split keeps its true labels), so that a network starts memorising noise."""
    bundle = data.load("digits", val_fraction=0.3, seed=seed)
    rng = np.random.default_rng(seed)
    train = bundle.train.subset(np.arange(n))
    flip = torch.from_numpy(rng.random(n) < noise)
    labels = train.y.clone()
    labels[flip] = torch.from_numpy(rng.integers(0, 10, int(flip.sum())))
    return Split(train.x, labels, train.task, train.num_classes), bundle.val


def early_stopping_lab(quick: bool = False) -> LabResult:
    train, val = noisy_digits()
    epochs, patience = (25, 5) if quick else (100, 10)

    # One run over every epoch, keeping the best weights; where `patience` would have stopped it is found by
    # replaying the logged validation losses through the same EarlyStopping rule.
    keeper = EarlyStopping(monitor="val_loss", patience=epochs, restore_best=True)
    trainer = Trainer(models.mlp([256, 256]), loss="cross_entropy", optimizer=optim.create("adam", lr=1e-3),
                      callbacks=[keeper], device="cpu", seed=0)
    trainer.fit(train, val, epochs=epochs, batch_size=32)
    stopper, replay = EarlyStopping(monitor="val_loss", patience=patience, restore_best=False), SimpleNamespace()
    for row in trainer.history:
        replay.epoch, replay.stop_training = row["epoch"] - 1, False   # the trainer counts from 0, the log from 1
        stopper.on_epoch_end(replay, row)
        if replay.stop_training:
            break
    restored = trainer.evaluate(val)                         # the best epoch's weights, loaded back at the end
    curve = trainer.history["val_loss"]
    measured = {"epochs": epochs, "patience": patience, "best_epoch": keeper.best_epoch,
                "best_val_loss": keeper.best_value, "stopped_epoch": stopper.stopped_epoch,
                "best_epoch_before_stop": stopper.best_epoch, "val_loss_after_restore": restored["loss"],
                "final_val_loss_without_stopping": curve[-1],
                "final_train_loss_without_stopping": trainer.history[-1]["train_loss"],
                "val_accuracy_restored": restored["accuracy"],
                "val_accuracy_without_stopping": trainer.history[-1]["val_accuracy"]}
    fig, ax = html.figure(6.5, 3.8)
    logged = trainer.history["epoch"]                         # from 1, as best_epoch and stopped_epoch
    ax.plot(logged, trainer.history["train_loss"], label="training loss (30% noisy labels)")
    ax.plot(logged, curve, label="validation loss")
    ax.axvline(keeper.best_epoch, color="C2", ls="--", label=f"best epoch {keeper.best_epoch}")
    if stopper.stopped_epoch is not None:
        ax.axvline(stopper.stopped_epoch, color="C3", ls=":", label=f"stopped (patience {patience})")
    ax.set(ylabel="cross-entropy", ylim=(0, max(curve) * 1.1))
    html.epoch_axis(ax)
    ax.legend(fontsize=8)
    m = measured
    return LabResult(
        "early-stopping", "early stopping",
        "Training longer fits the training set ever better, but past some epoch the validation loss rises: the "
        "network starts to memorise noise. Early stopping (Morgan & Bourlard 1990; Prechelt 1998, 'Early "
        "Stopping — But When?') watches the validation loss, stops after `patience` epochs without improvement "
        "and restores the weights of the best epoch. 300 scikit-learn digits with 30% random labels, an MLP "
        "with two hidden layers of 256 units, Adam.",
        measured, [("Training and validation loss per epoch (a run without stopping)", fig)],
        [("Early stopping", ["quantity", "value"], [[k, v] for k, v in measured.items()])],
        [f"The validation loss is lowest at epoch {m['best_epoch']} ({m['best_val_loss']:.3f}); with patience "
         f"{patience} training would stop at epoch {m['stopped_epoch']}; the restored weights give validation loss "
         f"{m['val_loss_after_restore']:.3f}. Without stopping the validation loss ends at "
         f"{m['final_val_loss_without_stopping']:.3f} after {epochs} epochs (accuracy "
         f"{m['val_accuracy_without_stopping']:.3f} vs {m['val_accuracy_restored']:.3f} restored)."])
