"""Training an ensemble from a recipe's ``[ensemble]`` section (see :mod:`descend.ensemble` for the kinds).

``members = K``: K experiments on the same split, seeds ``seed, seed+1, …`` (initialisation and data order).
``snapshots = K``: one experiment whose schedule is replaced by K cosine cycles (``cosine_restarts`` with
``period = epochs / K``, ``mult = 1``, ``min_lr = 0``: Huang et al. 2017), a snapshot of the weights at the last
step of every cycle. ``mc_dropout = N``: one experiment, predictions averaged over N dropout passes.
:func:`fit` returns an :class:`EnsembleResult` (nothing written); :func:`run` also writes the ensemble directory
(``config.toml``, ``inference.json``, ``ensemble.json``, ``members/``, ``summary.json``), which
:func:`descend.ensemble.load`, :func:`descend.load_run` and ``descend predict`` read.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import atomic, models
from .. import config as cfg
from ..ensemble import Ensemble, dropout_layers
from ..errors import UserError
from ..memory import check_fits_memory
from ..models.networks import BYTES_PER_PARAMETER
from ..report.ensemble import write_ensemble_report
from ..train.callbacks import Callback
from ..train.metrics import num_outputs, resolve_loss
from . import experiment
from .directory import check_links, default_run_dir, owned
from .record import INFERENCE_FILE, inference_record

__all__ = ["SnapshotCollector", "EnsembleResult", "fit", "run", "snapshot_recipe", "records", "write"]


class SnapshotCollector(Callback):
    """Keeps a copy of the model's state after the last step of each of ``cycles`` equal cycles of training,
    with the learning rate of that step (the cycle's minimum under a cosine-restart schedule)."""

    order = 60

    def __init__(self, cycles: int):
        self.cycles = cycles
        self.snapshots: list[dict] = []
        self.lrs: list[float] = []
        self.cycle_steps = 0

    def on_fit_start(self, trainer) -> None:
        self.cycle_steps = trainer.total_steps // self.cycles
        if trainer.global_step == 0:
            self.snapshots, self.lrs = [], []

    def on_batch_end(self, trainer) -> None:
        if trainer.global_step % self.cycle_steps == 0:
            self.snapshots.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
            self.lrs.append(trainer.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"snapshots": list(self.snapshots), "lrs": list(self.lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.snapshots = [{k: v.clone() for k, v in s.items()} for s in state["snapshots"]]
        self.lrs = [float(lr) for lr in state["lrs"]]


@dataclass
class EnsembleResult:
    """The trained :class:`~descend.ensemble.Ensemble`, each training run's :class:`~descend.runs.experiment.Result`
    (K for members, one otherwise), the ensemble's and members' metrics on the test split (the validation split
    when there is no test split), and the total training seconds."""

    ensemble: Ensemble
    runs: list
    metrics: dict
    seconds: float
    run_dir: Path | None = None
    members: list[dict] = field(default_factory=list)
    inference: dict = field(default_factory=dict)  # what inference.json holds (scaling, labels, input shape)

    def summary(self) -> dict:
        metrics = {k: v for k, v in self.metrics.items() if k != "members"}
        return {**self.ensemble.about, "kind": self.ensemble.kind, "size": len(self.ensemble),
                "ensemble": metrics, "members": self.members, "train_seconds": round(self.seconds, 3),
                "versions": experiment.versions()}


def snapshot_recipe(config: cfg.Config, cycles: int) -> cfg.Config:
    """The recipe with its schedule replaced by ``cycles`` cosine cycles restarted from the top."""
    epochs = config.train.epochs
    if config.schedule is not None:
        raise UserError("[ensemble] snapshots bring their own schedule (cosine cycles restarted from the top, Huang "
                        "et al. 2017); remove the [schedule] section")
    if config.early_stopping is not None:
        raise UserError("[ensemble] snapshots are the ends of the cosine cycles; early stopping would cut them "
                        "short: remove the [early_stopping] section")
    if epochs % cycles:
        raise UserError(f"[ensemble] train.epochs ({epochs}) must be a multiple of snapshots ({cycles}), so that "
                        "every cycle ends with an epoch")
    raw = config.model_dump()
    raw["schedule"] = {"name": "cosine_restarts", "period": epochs // cycles, "mult": 1, "min_lr": 0.0}
    return cfg.validate(raw)


def _check_before_training(spec, architecture: dict) -> None:
    """What the ensemble needs of its model, checked on a model built on the meta device (shapes only, nothing
    allocated) before the first member trains: dropout for MC-dropout; for K members, K trained models (and their
    optimizers' state) kept until the end, for K snapshots K copies of the weights, within the machine's memory."""
    with torch.device("meta"):
        model = models.create(architecture["name"], tuple(architecture["input_shape"]), architecture["num_outputs"],
                              architecture["options"])
    if spec.kind == "mc_dropout":
        dropout_layers(model)
        return
    size = models.count_parameters(model)
    kept = BYTES_PER_PARAMETER if spec.kind == "members" else 4
    check_fits_memory(f"an ensemble of {spec.size:,} {spec.kind} of {size:,} parameters ({kept} bytes each kept)",
                      spec.size * size * kept, f"use fewer {spec.kind}")


def fit(config: cfg.Config, data=None, *, progress: bool = False, stream=None) -> EnsembleResult:
    """Train the ensemble the recipe's ``[ensemble]`` section describes; nothing is written."""
    if config.ensemble is None:
        raise UserError("this recipe has no [ensemble] section (members = K, snapshots = K or mc_dropout = N)")
    spec = config.ensemble.build()
    bundle = data if data is not None else experiment.load_data(config)
    info = bundle.info
    architecture, record = records(config, info, bundle.train.y)
    _check_before_training(spec, architecture)
    started = time.perf_counter()
    if spec.kind == "members":
        runs, entries = [], []
        for k in range(spec.size):
            seed = config.seed + k
            runs.append(experiment.build(config.model_copy(update={"seed": seed}), bundle)
                        .fit(progress=progress, stream=stream))
            entries.append({"seed": seed})
        models = [r.trainer.model for r in runs]
    else:
        recipe = snapshot_recipe(config, spec.size) if spec.kind == "snapshots" else config
        collector = SnapshotCollector(spec.size) if spec.kind == "snapshots" else None
        result = experiment.build(recipe, bundle).fit([collector] if collector else [], progress=progress,
                                                      stream=stream)
        runs, model = [result], result.trainer.model
        if collector is None:
            models, entries = [model], [{"seed": config.seed}]
        else:
            models = [_with_state(model, state) for state in collector.snapshots]
            entries = [{"seed": config.seed, "step": (k + 1) * collector.cycle_steps, "lr": lr}
                       for k, lr in enumerate(collector.lrs)]
    seconds = time.perf_counter() - started
    about = {"name": config.name, "dataset": info.name}
    ensemble = Ensemble(models, info.task, spec.kind, samples=spec.size if spec.kind == "mc_dropout" else 1,
                        architecture=architecture, about=about)
    split, prefix = (bundle.test, "test_") if bundle.test is not None and len(bundle.test) else (bundle.val, "val_")
    metrics = ensemble.evaluate(split.x, split.y, prefix=prefix) if split is not None and len(split) else {}
    member_metrics = metrics.get("members", [{}] * len(models))
    if spec.kind == "mc_dropout":  # the members are passes; report the network's deterministic prediction
        member_metrics = [runs[0].trainer.evaluate(split, prefix=prefix)] if metrics else [{}]
    members = [{**entry, **m} for entry, m in zip(entries, member_metrics)]
    return EnsembleResult(ensemble, runs, metrics, seconds, members=members, inference=record)


def records(config: cfg.Config, info, train_y) -> tuple[dict, dict]:
    """The members' architecture (for the manifest) and the inference record (``inference.json``) of an ensemble
    of ``config``'s model trained on data described by ``info`` (training targets ``train_y``)."""
    loss = resolve_loss(config.train.loss, info.task)
    outputs = num_outputs(loss, info.task, info.num_classes, train_y)
    architecture = {"name": config.model.name, "options": config.model.options,
                    "input_shape": list(info.input_shape), "num_outputs": outputs}
    return architecture, inference_record(config, info, outputs, loss)


def write(out: Path, config: cfg.Config, ensemble: Ensemble, members: list[dict], record: dict) -> None:
    """An ensemble directory: the recipe, the inference record, the manifest and the members' weights."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the ensemble directory {out}: {e.strerror}") from None
    atomic.write_text(out / "config.toml", cfg.dump(config), what="recipe")
    atomic.write_json(out / INFERENCE_FILE, record, what="inference record")
    ensemble.save(out, members=members)


def _with_state(model, state: dict):
    member = copy.deepcopy(model)
    member.load_state_dict(state)
    return member.eval()


def run(config: cfg.Config, out: str | Path | None = None, *, quiet: bool = False, stream=None) -> dict:
    """Train the recipe's ensemble and write its directory (what ``descend run`` does with ``[ensemble]``)."""
    out = Path(out) if out is not None else default_run_dir(config)
    _check_empty(out)
    with owned(out):  # owned while its members train: a second writer or an unwritable place is found first
        _check_empty(out)  # again, as owner: another process may have written it meanwhile
        check_links(out)
        result = fit(config, progress=not quiet, stream=stream)  # every check before the first member trains
        write(out, config, result.ensemble, result.members, result.inference)
        result.run_dir = out
        summary = result.summary()
        atomic.write_json(out / "summary.json", summary, what="summary")
        write_ensemble_report(out)
    return {**summary, "run_dir": str(out), "final": summary["ensemble"], "changed": {}}


def _check_empty(out: Path) -> None:
    if any((out / name).exists() for name in ("ensemble.json", "metrics.jsonl")):
        raise UserError(f"{out} already holds a run; choose another --out directory")
