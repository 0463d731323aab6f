"""One experiment from a recipe: build every part from the config, train, and write the run directory.

``runs/<name>-<timestamp>/`` (or ``--out``) holds ``config.toml`` (the resolved recipe), ``metrics.jsonl``,
TensorBoard event files under ``tb/``, ``model.safetensors`` (final weights) and ``summary.json``. Everything is
built before the directory is made, so a mistake in the recipe leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch

from . import __version__, models, optim, regularization, schedules
from . import config as cfg
from . import data as datasets
from .data import augment
from .errors import UserError
from .train import Trainer
from .train.callbacks import EarlyStopping
from .train.checkpoint import save_weights
from .train.logs import MetricsFile, ProgressBar, TensorBoard
from .train.metrics import num_outputs, resolve_loss


@dataclass
class Experiment:
    """Everything a recipe describes, built and ready to train."""

    config: cfg.Config
    data: datasets.DataBundle
    trainer: Trainer
    early_stopping: EarlyStopping | None


def build(config: cfg.Config) -> Experiment:
    """Load the data and build model, optimizer, schedule, regularizer, augmentation and callbacks."""
    c = config
    with _section("data"):
        bundle = datasets.load(c.data.name, val_fraction=c.data.val_fraction, test_fraction=c.data.test_fraction,
                               scale=c.data.scale, seed=c.seed, target=c.data.target, features=c.data.features,
                               task=c.data.task, **c.data.options)
    info = bundle.info
    with _section("train"):
        loss = resolve_loss(c.train.loss, info.task)
    with _section("model"):
        torch.manual_seed(c.seed)
        model = models.build(c.model.name, info.input_shape,
                             num_outputs(loss, info.task, info.num_classes, bundle.train.y), **c.model.options)
    stopper = EarlyStopping(**c.early_stopping.model_dump()) if c.early_stopping else None
    with _section("augment"):
        augmenter = augment.create(dataset=info.name, **c.augment.options) if c.augment else None
    trainer = Trainer(
        model, loss=loss,
        optimizer=optim.create(c.optimizer.name, **c.optimizer.options),
        schedule=schedules.create(c.schedule.name, **c.schedule.options) if c.schedule else None,
        regularizer=regularization.create(c.regularization.kind, **c.regularization.options)
        if c.regularization else None,
        augment=augmenter, callbacks=[stopper] if stopper else [],
        clip_grad_norm=c.train.clip_grad_norm, clip_grad_value=c.train.clip_grad_value,
        device=c.train.device, precision=c.train.precision, seed=c.seed,
        deterministic=c.train.deterministic, log_every=c.train.log_every)
    return Experiment(config, bundle, trainer, stopper)


@contextlib.contextmanager
def _section(name: str):
    """Name the recipe section in a part's error, as config errors do."""
    try:
        yield
    except UserError as e:
        raise UserError(f"[{name}] {e}") from None


def default_run_dir(config: cfg.Config, root: str | Path = "runs") -> Path:
    return Path(root) / f"{config.name or 'run'}-{datetime.now():%Y%m%d-%H%M%S}"


def run(config: cfg.Config, out: str | Path | None = None, *, quiet: bool = False, stream=None) -> dict:
    """Train the recipe and write its run directory; returns the summary."""
    exp = build(config)
    out = Path(out) if out is not None else default_run_dir(config)
    if (out / "metrics.jsonl").exists():
        raise UserError(f"{out} already holds a run; choose another --out directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the run directory {out}: {e.strerror}") from None
    (out / "config.toml").write_text(cfg.dump(config))
    trainer = exp.trainer
    trainer.callbacks += [MetricsFile(out / "metrics.jsonl"), TensorBoard(out / "tb")]
    if not quiet:
        trainer.callbacks.append(ProgressBar(config.train.epochs, stream=stream))
    started = time.perf_counter()
    trainer.fit(exp.data.train, exp.data.val, epochs=config.train.epochs, batch_size=config.train.batch_size,
                shuffle=config.train.shuffle, drop_last=config.train.drop_last)
    seconds = time.perf_counter() - started
    save_weights(trainer.model, out / "model.safetensors")
    summary = summarize(exp, seconds)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {**summary, "run_dir": str(out)}


def summarize(exp: Experiment, seconds: float) -> dict:
    """Final train/val/test metrics, best epoch, training time, size and versions."""
    trainer, bundle = exp.trainer, exp.data
    final = {}
    for prefix, split in (("train_", bundle.train), ("val_", bundle.val), ("test_", bundle.test)):
        if split is not None and len(split):
            final.update(trainer.evaluate(split, prefix=prefix))
    if exp.early_stopping is not None and exp.early_stopping.best_epoch is not None:
        best = exp.early_stopping.summary()
    else:
        monitor = "val_loss" if bundle.val is not None and len(bundle.val) else "train_loss"
        row = trainer.history.best(monitor)
        best = {"monitor": monitor, "best_value": row[monitor], "best_epoch": row["epoch"]}
    return {
        "name": exp.config.name,
        "dataset": bundle.info.name,
        "task": bundle.info.task,
        "epochs_run": len(trainer.history),
        "final": final,
        "best": best,
        "train_seconds": round(seconds, 3),
        "parameters": models.count_parameters(trainer.model),
        "device": str(trainer.device),
        "versions": {"descend": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
