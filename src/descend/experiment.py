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

from . import __version__, models, schedules
from . import config as cfg
from . import data as datasets
from .errors import DivergenceError, UserError
from .train import Trainer
from .train.callbacks import EarlyStopping
from .train.checkpoint import save_weights
from .train.logs import MetricsFile, ProgressBar, TensorBoard
from .train.metrics import num_outputs, resolve_loss
from .train.state import Checkpoints


@dataclass
class Experiment:
    """Everything a recipe describes, built and ready to train."""

    config: cfg.Config
    data: datasets.DataBundle
    trainer: Trainer
    early_stopping: EarlyStopping | None


def build(config: cfg.Config, out: Path | None = None) -> Experiment:
    """Load the data and build model, optimizer, schedule, regularizer, augmentation and callbacks.

    With ``out``, the trainer writes checkpoints to ``out/checkpoints``.
    """
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
    trainer = Trainer(
        model, loss=loss, optimizer=c.optimizer.build(),
        schedule=c.schedule.build() if c.schedule else None,
        regularizer=c.regularization.build() if c.regularization else None,
        augment=c.augment.build(dataset=info.name) if c.augment else None,
        callbacks=[stopper] if stopper else [],
        clip_grad_norm=c.train.clip_grad_norm, clip_grad_value=c.train.clip_grad_value,
        device=c.train.device, precision=c.train.precision, seed=c.seed,
        deterministic=c.train.deterministic, log_every=c.train.log_every,
        checkpoints=Checkpoints(out / "checkpoints", every=c.train.checkpoint_every, unit=c.train.checkpoint_unit,
                                monitor=stopper.monitor if stopper else None,
                                mode=stopper.mode if stopper else "auto") if out is not None else None,
        on_divergence=c.train.on_divergence if out is not None else "stop", max_rollbacks=c.train.max_rollbacks)
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


def run(config: cfg.Config, out: str | Path | None = None, *, resume: bool = False, quiet: bool = False,
        stream=None, callbacks=()) -> dict:
    """Train the recipe and write its run directory; returns the summary.

    ``resume=True`` continues the run in ``out`` from its last checkpoint; fields that shape the computation
    (data, model, optimizer, …) must equal the run's recorded recipe, others (epochs, patience, …) may change and
    are reported under ``"changed"``.
    """
    out = Path(out) if out is not None else default_run_dir(config)
    changed = check_resume(config, out) if resume else {}
    if not resume and (out / "metrics.jsonl").exists():
        raise UserError(f"{out} already holds a run; choose another --out directory, or continue it with --resume")
    exp = build(config, out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the run directory {out}: {e.strerror}") from None
    (out / "config.toml").write_text(cfg.dump(config))
    trainer = exp.trainer
    if trainer.schedule is not None:
        steps = len(datasets.Batches(exp.data.train, config.train.batch_size, drop_last=config.train.drop_last))
        schedules.plot(trainer.schedule, steps_per_epoch=steps, total_steps=steps * config.train.epochs,
                       base_lr=config.optimizer.options.get("lr", 1.0), path=out / "schedule.png")
    trainer.callbacks += [MetricsFile(out / "metrics.jsonl"), TensorBoard(out / "tb"), *callbacks]
    if not quiet:
        trainer.callbacks.append(ProgressBar(config.train.epochs, stream=stream))
    started = time.perf_counter()
    try:
        trainer.fit(exp.data.train, exp.data.val, epochs=config.train.epochs, batch_size=config.train.batch_size,
                    shuffle=config.train.shuffle, drop_last=config.train.drop_last,
                    resume=out if resume else None)
    except DivergenceError as e:
        failed = {"name": config.name, "status": "diverged", "error": str(e), "epochs_run": len(trainer.history),
                  "step": trainer.global_step, "checkpoints": _listing(out / "checkpoints")}
        (out / "summary.json").write_text(json.dumps(failed, indent=2) + "\n")
        raise
    seconds = time.perf_counter() - started
    save_weights(trainer.model, out / "model.safetensors")
    summary = summarize(exp, seconds)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return {**summary, "run_dir": str(out), "changed": changed}


# Fields a resumed run may change; every other field shapes the computation and must stay as recorded.
RESUMABLE = ("name", "train.epochs", "train.log_every", "train.checkpoint_every", "train.checkpoint_unit",
             "train.on_divergence", "train.max_rollbacks", "train.device", "early_stopping.patience",
             "early_stopping.min_delta", "early_stopping.restore_best")


def check_resume(config: cfg.Config, out: Path) -> dict[str, tuple]:
    """The recorded recipe of the run in ``out`` against ``config``: fixed fields must match; returns the changes."""
    recorded = out / "config.toml"
    if not recorded.is_file():
        raise UserError(f"cannot resume: {out} holds no run (no config.toml); give the run directory to --resume")
    before, now = _flat(cfg.load(recorded).model_dump()), _flat(config.model_dump())
    changed = {key: (before.get(key), now.get(key)) for key in sorted(set(before) | set(now))
               if before.get(key) != now.get(key)}
    fixed = [f"{key} ({old!r} -> {new!r})" for key, (old, new) in changed.items() if key not in RESUMABLE]
    if fixed:
        raise UserError(f"cannot resume {out} with a different {', '.join(fixed)}: these fields shape the training "
                        f"and must stay as recorded; only {', '.join(RESUMABLE)} may change")
    return changed


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.safetensors")) if directory.is_dir() else []


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
        **({"sparsity": trainer.regularizer.sparsity(trainer.model)} if trainer.regularizer is not None else {}),
        "device": str(trainer.device),
        "versions": {"descend": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
