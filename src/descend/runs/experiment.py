"""One experiment from a recipe: load the data, build every part, train, and return a typed :class:`Result`.

Made to be called many times in one process (a search, cross-validation, a comparison over seeds, the doctor)::

    data = experiment.load_data(config)                   # once
    for trial in trials:
        result = experiment.build(trial_config, data).fit()  # nothing touches the disk
        result.final["val_accuracy"]

``fit(out=...)`` writes a run directory through :class:`descend.runs.directory.RunDirectory` (config, metrics,
TensorBoard, checkpoints, summary, weights); :func:`run` is what ``descend run`` calls. Everything is built
before a run directory is made, so a mistake in the recipe leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import __version__, models, tracking, transfer
from .. import config as cfg
from .. import data as datasets
from .. import distributed as dist
from ..errors import UserError
from ..report import inline
from ..train import History, Trainer
from ..train.callbacks import EarlyStopping
from ..train.checks import resolve_device
from ..train.logs import ProgressBar, SpeedLine
from ..train.metrics import make_loss, num_outputs
from ..train.rng import seed_torch
from .directory import RunDirectory, resolved_recipe


@contextlib.contextmanager
def _section(name: str):
    """Name the recipe section in a part's error, as config errors do."""
    try:
        yield
    except UserError as e:
        raise UserError(f"[{name}] {e}") from None


def load_data(config: cfg.Config) -> datasets.DataBundle:
    """The data a recipe asks for, split and scaled: load it once and pass it to many :func:`build` calls. The
    recipe's model factory is checked first (:func:`check_model`): every workflow reads its data before it trains
    or writes, so a wrong factory argument stops it there, before the data is read."""
    check_model(config)
    c = config.data
    with _section("data"):
        return datasets.load(c.name, val_fraction=c.val_fraction, test_fraction=c.test_fraction, scale=c.scale,
                             target_scale=c.target_scale, missing=c.missing, seed=config.seed, target=c.target,
                             features=c.features, task=c.task, **c.options)


def check_model(config: cfg.Config) -> None:
    """The recipe's model factory of the user's code imported and its ``[model]`` arguments checked against its
    signature (:func:`descend.models.user.check`); nothing is built. descend's own networks are checked when the
    recipe is read."""
    if models.user.is_user(config.model.name):
        with _section("model"):
            models.user.check(config.model.name, config.model.options)


def build(config: cfg.Config, data: datasets.DataBundle | None = None) -> Experiment:
    """Build model, optimizer, schedule, regularizer, augmentation and callbacks from the recipe.

    ``data`` (a bundle from :func:`load_data`, or a cross-validation fold) is used as it is; without it the data is
    loaded. Nothing is written anywhere.
    """
    c = config
    bundle = data if data is not None else load_data(config)
    info = bundle.info
    with _section("train"):
        loss = recipe_loss(c, info.task, info.num_classes)
    with _section("model"):
        seed_torch(c.seed)
        model = models.create(c.model.name, info.input_shape,
                              num_outputs(loss, info.task, info.num_classes, bundle.train.y), c.model.options,
                              num_classes=info.num_classes if info.task == "classification" else None)
    if c.schedule is not None:
        check_schedule_length(c, bundle.train)
    stopper = EarlyStopping(**c.early_stopping.model_dump()) if c.early_stopping else None
    callbacks = [cb for cb in (stopper, c.averaging.build() if c.averaging else None) if cb is not None]
    optimizer, augment = c.optimizer.build(), c.augment.build(dataset=info.name, kind=info.kind) if c.augment else None
    if c.transfer:  # pretrained weights in, frozen layers, cached features or discriminative learning rates
        with _section("transfer"):
            ready = transfer.prepare(c.transfer.build(), model, bundle, optimizer,
                                     device=resolve_device(c.train.device), augment=augment)
        model, bundle, optimizer, callbacks = ready.model, ready.data, ready.optimizer, callbacks + ready.callbacks
    # every Trainer option of [train] in one call; "rollback" reloads a run directory's checkpoints, so the trainer
    # stops on divergence until Experiment.fit gives it those (a fit without a run directory has none)
    options = {**c.train.trainer_options(), "on_divergence": "stop"}
    trainer = (dist.DistributedTrainer if dist.is_worker() else Trainer)(
        model, loss=loss, optimizer=optimizer, schedule=c.schedule.build() if c.schedule else None,
        regularizer=c.regularization.build() if c.regularization else None, augment=augment, callbacks=callbacks,
        metrics=c.train.metrics, device=c.train.device, seed=c.seed, **options)
    return Experiment(config, bundle, trainer, stopper)


def check_schedule_length(config: cfg.Config, train: datasets.Split) -> None:
    """The schedule fits the run's length (a warmup shorter than training), checked before anything is written;
    the message names the recipe fields."""
    c = config
    steps = len(datasets.Batches(train, c.train.batch_size, drop_last=c.train.drop_last))
    try:
        c.schedule.build().bind(steps, steps * c.train.epochs)
    except UserError as e:
        given = {k: v for k, v in c.schedule.options.items() if k.startswith("warmup_") and k != "warmup_start" and v}
        fields = ", ".join(f"schedule.{k} = {v!r}" for k, v in given.items()) or f"schedule.name = {c.schedule.name!r}"
        raise UserError(f"{fields} does not fit in training of train.epochs = {c.train.epochs} ({steps} steps per "
                        f"epoch): {str(e).removeprefix('warmup: ')}; lower the warmup (warmup_fraction = 0.1 gives "
                        "a tenth of training) or raise train.epochs") from None


def recipe_loss(config: cfg.Config, task: str, num_classes: int | None = None):
    """The recipe's loss for ``task``: ``train.loss`` with its ``label_smoothing`` and ``class_weights``."""
    t = config.train
    if t.class_weights is not None and num_classes is not None and len(t.class_weights) != num_classes:
        raise UserError(f"class_weights has {len(t.class_weights)} weights, but the data has {num_classes} "
                        "classes: give one weight per class")
    return make_loss(t.loss, task, label_smoothing=t.label_smoothing, class_weights=t.class_weights)


def evaluation_trainer(config: cfg.Config, model: torch.nn.Module, task: str, device="cpu") -> Trainer:
    """A trainer that evaluates ``model`` with the recipe's loss and metrics (for a loaded run)."""
    return Trainer(model, loss=recipe_loss(config, task), metrics=config.train.metrics, device=device,
                   precision=config.train.precision)


@dataclass
class Result:
    """What a fit gives back: the history, final metrics (``train_*``, ``val_*``; ``test_*`` for a run directory),
    the best epoch of the monitored value, training seconds, the trainer (with its model), and where it was
    written (``run_dir``, None when nothing was)."""

    history: History
    final: dict[str, float]
    best: dict
    seconds: float
    trainer: Trainer
    status: str = "finished"  # or "stopped_early"
    run_dir: Path | None = None
    about: dict = field(default_factory=dict)  # recipe name, dataset, task

    def _repr_html_(self) -> str:
        """In a notebook: the fit's curves and summary (:mod:`descend.report.inline`)."""
        where = f" -> {self.run_dir}" if self.run_dir is not None else ""
        return inline.summary_html(f"{self.about.get('name') or 'fit'}{where}", list(self.history), self.summary())

    def summary(self) -> dict:
        """The JSON-able summary a run directory's ``summary.json`` holds."""
        trainer = self.trainer
        return {
            **self.about,
            "status": self.status,
            "epochs_run": len(self.history),
            "final": self.final,
            "best": self.best,
            "train_seconds": round(self.seconds, 3),
            "parameters": models.count_parameters(trainer.model),
            **({"sparsity": trainer.regularizer.sparsity(trainer.model)} if trainer.regularizer is not None else {}),
            "device": str(trainer.device),
            "speed": trainer.speed.record() if trainer.speed is not None else None,  # what the fit chose, and why
            "versions": versions(),
        }


@dataclass
class Experiment:
    """Everything a recipe describes, built and ready to train (:func:`build`)."""

    config: cfg.Config
    data: datasets.DataBundle
    trainer: Trainer
    early_stopping: EarlyStopping | None

    def fit(self, callbacks=(), out: str | Path | None = None, *, resume: bool = False,
            progress: bool = False, stream=None, resume_from: str | Path | None = None) -> Result:
        """Train for ``train.epochs`` epochs with the extra ``callbacks``; returns the :class:`Result`.

        Without ``out`` nothing touches the disk (``on_divergence = "rollback"`` then acts as ``"stop"``: it needs
        the checkpoints of a run directory). With ``out`` the run directory is written (``resume=True`` continues
        the run there). ``progress`` shows a progress bar (a terminal) or one line per epoch. Raises
        :class:`~descend.errors.DivergenceError` when the loss becomes non-finite. ``resume_from`` (a checkpoint or
        run directory) continues from there without writing anything (the other ranks of a data-parallel run).
        """

        c, trainer = self.config, self.trainer
        writer = RunDirectory(Path(out), c, resume=resume) if out is not None else None
        extra = list(callbacks) + (writer.callbacks(self) if writer is not None else [])
        if progress:
            extra += [SpeedLine(stream), ProgressBar(stream=stream)]
        trainer.callbacks += extra
        fit_args = c.train.fit_options()
        tracker = None
        with contextlib.ExitStack() as owner:
            try:
                trainer.prepare(self.data.train, self.data.val, **fit_args)  # every check before anything is written
                if trainer.checkpoints is not None:  # the run directory's checkpoints: a rollback has one to reload
                    trainer.on_divergence = c.train.on_divergence
                if writer is not None:
                    owner.enter_context(writer.owned())  # one process writes a run directory at a time
                    resume_from = writer.resume_from() if resume else None
                    writer.start(self)
                tracker = tracking.Tracker.for_config(c, Path(out).name if out is not None else c.name,
                                                      resume=Path(out) if resume and out is not None else None)
                if tracker is not None:  # [tracking] mlflow = URI: this fit is one MLflow run (descend.tracking)
                    extra.append(tracker.start_fit(resolved_recipe(c), out))  # every default filled in
                    trainer.callbacks.append(extra[-1])
                started = time.perf_counter()
                try:
                    trainer.fit(self.data.train, self.data.val, resume=resume_from, progress=False, **fit_args)
                except Exception as e:
                    if writer is not None:
                        writer.failed(self, e)
                    raise
            finally:
                for cb in extra:
                    if hasattr(cb, "close"):
                        cb.close()  # a progress bar ends its line before any message (Ctrl-C, an error)
                trainer.callbacks = [cb for cb in trainer.callbacks if cb not in extra]
            result = self._result(time.perf_counter() - started)
            if writer is not None:
                writer.finish(self, result)  # adds test_* to result.final and sets result.run_dir
            if tracker is not None:
                tracker.finish_fit(result, out)
        return result

    def evaluate(self, split: str = "test") -> dict[str, float]:
        """Loss and metrics of the trained model on ``split`` ("train", "val" or "test"), keys prefixed by it."""
        data = getattr(self.data, split, None) if split in ("train", "val", "test") else None
        if data is None or not len(data):
            raise UserError(f"this experiment has no {split!r} split to evaluate")
        return self.trainer.evaluate(data, prefix=f"{split}_")

    def _result(self, seconds: float) -> Result:
        trainer, bundle, stopper = self.trainer, self.data, self.early_stopping
        final = {}
        for name in ("train", "val"):
            split = getattr(bundle, name)
            if split is not None and len(split):
                final.update(trainer.evaluate(split, prefix=f"{name}_"))
        if stopper is not None and stopper.best_epoch is not None:
            best = stopper.summary()
        else:
            monitor = "val_loss" if bundle.val is not None and len(bundle.val) else "train_loss"
            row = trainer.history.best(monitor)
            best = {"monitor": monitor, "best_value": row[monitor], "best_epoch": row["epoch"]}
        status = "stopped_early" if stopper is not None and stopper.stopped_epoch is not None else "finished"
        about = {"name": self.config.name, "dataset": bundle.info.name, "task": bundle.info.task}
        return Result(trainer.history, final, best, seconds, trainer, status, about=about)


def versions() -> dict[str, str]:
    return {"descend": __version__, "torch": torch.__version__, "python": platform.python_version()}
