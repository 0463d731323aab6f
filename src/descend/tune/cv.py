"""K-fold cross-validation on train+val, for choosing hyper-parameters on small data.

The training and validation splits are pooled and dealt into ``k`` stratified folds (classification; a seeded
random partition for regression); the test split is left untouched. Each fold trains a *fresh* model, built and
initialised from the recipe as if it were the only one, because a model object reused across folds would carry
the previous fold's weights into the next (skorch issue #689). The feature scaling is fitted on each fold's
training part alone, so nothing about the held-out fold leaks into its inputs. The score of a recipe is the mean
over the folds, reported with the standard deviation across folds.
"""

from __future__ import annotations

import copy
import statistics
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .. import config as cfg
from .. import tracking
from ..atomic import write_json
from ..data import DataBundle, Split, kfold_indices
from ..data.scaling import fit_scaler
from ..data.splits import MIN_HELD_ROWS
from ..ensemble import Ensemble
from ..errors import UserError
from ..runs import experiment, workflow
from ..runs.ensemble import records, write


def unscaled(raw: dict) -> DataBundle:
    """The recipe's data with the same splits and no scaling (scalers are fitted per fold, or on train+val)."""
    raw = copy.deepcopy(raw)
    raw.setdefault("data", {})["scale"] = "none"
    return experiment.load_data(cfg.validate(raw, source="recipe"))


def pooled(bundle: DataBundle) -> Split:
    """Train and validation concatenated (the test split stays apart)."""
    if bundle.val is None or not len(bundle.val):
        return bundle.train
    t, v = bundle.train, bundle.val
    return replace(t, x=torch.cat([t.x, v.x]), y=torch.cat([t.y, v.y]))


def scaled(scale: str, train: Split, others: dict[str, Split | None], info) -> DataBundle:
    """A bundle whose scaler is fitted on ``train`` alone and applied to every split."""
    scaler = fit_scaler(scale, train.x)

    def apply(split: Split | None) -> Split | None:
        return split if split is None or scaler is None else replace(split, x=scaler.transform(split.x))

    parts = {"train": apply(train), **{name: apply(split) for name, split in others.items()}}
    sizes = {name: len(split) if split is not None else 0 for name, split in parts.items()}
    return DataBundle(parts["train"], parts.get("val"), parts.get("test"), replace(info, scaler=scaler, sizes=sizes))


def refuse_folds(labels: np.ndarray, k: int, *, stratify: bool) -> None:
    """Refuse ``k`` folds the pooled rows cannot make: at least 2, at most one per row, and for classification not
    more than the largest class has rows (then no fold can be stratified; scikit-learn's StratifiedKFold refuses
    the same)."""
    n = len(labels)
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= n:
        raise UserError(f"--folds must be an integer in [2, {n}] (the train+val size), got {k!r}")
    if stratify:
        counts = np.unique(labels, return_counts=True)[1]
        if k > counts.max():
            raise UserError(f"--folds {k} is more than the rows of every class (at most {counts.max()} in train+val): "
                            f"no fold can hold each class in proportion; use --folds {_most_folds(n, len(counts))} "
                            f"or fewer (at least {MIN_HELD_ROWS} rows in each validation fold)")


def warn_small_folds(labels: np.ndarray, k: int, *, stratify: bool) -> None:
    """Warn when a validation fold is too small to score a model on: fewer than :data:`MIN_HELD_ROWS` rows (the
    threshold held-out splits are warned at), or a class with fewer rows than folds (some folds lack it)."""
    n = len(labels)
    smallest = n // k
    counts = np.unique(labels, return_counts=True)[1] if stratify else np.array([n])
    problems = []
    if smallest < MIN_HELD_ROWS:
        problems.append(f"each validation fold holds {smallest}-{-(-n // k)} of the {n} train+val rows, so one row "
                        f"moves a fold's score by {1 / max(smallest, 1):.0%} and the spread across folds is noise")
    if stratify and k > counts.min():
        problems.append(f"a class has only {counts.min()} rows, so {k - counts.min()} of the {k} folds lack it")
    if problems:
        warnings.warn(f"{k} folds: {'; '.join(problems)}; use --folds {_most_folds(n, len(counts))} or fewer "
                      f"(at least {MIN_HELD_ROWS} rows in each validation fold)", UserWarning, stacklevel=3)


def _most_folds(rows: int, classes: int) -> int:
    """The most folds that leave every validation fold :data:`MIN_HELD_ROWS` rows and one row per class."""
    return max(2, rows // max(MIN_HELD_ROWS, classes))


class Folds:
    """The pooled train+val data of a recipe, split into ``k`` folds once; :meth:`fit` trains a recipe on each."""

    def __init__(self, raw: dict, k: int, *, data: DataBundle | None = None) -> None:
        bundle = data if data is not None else unscaled(raw)
        self.pool, self.info, self.k = pooled(bundle), bundle.info, k
        self.scale = cfg.validate(raw, source="recipe").data.scale
        seed = cfg.validate(raw, source="recipe").seed
        labels = self.pool.y.cpu().numpy()
        stratify = self.pool.task == "classification"
        refuse_folds(labels, k, stratify=stratify)
        self.index = kfold_indices(labels, k, seed=seed, stratify=stratify)

    def bundle(self, fold: int) -> DataBundle:
        """Fold ``fold``: its training part (the scaler fitted there) and its held-out part as validation."""
        train_idx, val_idx = self.index[fold]
        return scaled(self.scale, self.pool.subset(train_idx), {"val": self.pool.subset(val_idx), "test": None},
                      self.info)

    def fit(self, config: cfg.Config, out: Path | None = None, callbacks=()) -> Iterator:
        """Train a freshly built model on every fold in turn; yields each fold's Result."""
        for fold in range(self.k):
            exp = experiment.build(config, self.bundle(fold))
            with tracking.tagged(fold=fold):  # [tracking] mlflow: each fold is one MLflow run, tagged
                result = exp.fit(callbacks=list(callbacks), out=out / f"fold-{fold}" if out is not None else None)
            yield result


def cross_validate(config: cfg.Config | str | Path | dict, k: int, out: str | Path, *, ensemble: bool = False,
                   model=None, data=None) -> dict:
    """Per-fold and mean ± std metrics of ``config`` over ``k`` folds; writes ``cv.json`` and ``cv.png`` to ``out``.

    With ``ensemble``, the fold models are kept in ``out/ensemble/`` as an ensemble directory of kind ``folds``
    (:mod:`descend.ensemble`): each member with its fold's scaling, so raw inputs go in; ``descend.load_run`` and
    ``descend predict`` take it. The test split stays unread here too. ``config`` may be a recipe path or dict, and
    ``model`` and ``data`` replace its sections (:func:`descend.runs.workflow.recipe`).
    """
    if model is not None or data is not None or not isinstance(config, cfg.Config):
        config = workflow.recipe(config, model=model, data=data)
    out = Path(out)
    raw = config.model_dump(exclude_none=True)
    folds = Folds(raw, k)
    warn_small_folds(folds.pool.y.cpu().numpy(), k, stratify=folds.pool.task == "classification")
    out.mkdir(parents=True, exist_ok=True)
    rows, curves, models = [], [], []
    with tracking.group(config, out.name, "cv", folds=k) as parent:  # the folds' MLflow runs nest under it
        for fold, result in enumerate(folds.fit(config, out=out)):
            rows.append({"fold": fold, **{key: v for key, v in result.final.items()
                                          if key.startswith(("train_", "val_"))}, "epochs": len(result.history)})
            curves.append(list(result.history))
            if ensemble:
                models.append(result.trainer.model)
        metrics = sorted({key for row in rows for key in row if key not in ("fold", "epochs")})
        summary = {key: {"mean": statistics.fmean(r[key] for r in rows),
                         "std": statistics.stdev(r[key] for r in rows) if k > 1 else 0.0} for key in metrics}
        if parent is not None:
            parent.log_metrics({f"{stat}.{key}": v[stat] for key, v in summary.items() for stat in ("mean", "std")})
    report = {"recipe": config.name, "folds": k, "per_fold": rows, "summary": summary,
              "sizes": [[len(tr), len(va)] for tr, va in folds.index]}
    if ensemble:
        _keep(out / "ensemble", config, folds, models, rows)
        report["ensemble"] = str(out / "ensemble")
    write_json(out / "cv.json", report, what="cross-validation report")
    plot_folds(curves, out / "cv.png")
    return report


def _keep(directory: Path, config: cfg.Config, folds: Folds, models: list, rows: list[dict]) -> None:
    """The fold models as an ensemble directory: member k with the scaling fitted on fold k's training part."""
    architecture, record = records(config, folds.info, folds.pool.y)  # record: no scaling, each member has its own
    scalers = [folds.bundle(fold).info.scaler for fold in range(folds.k)]
    kept = Ensemble(models, folds.info.task, "folds", architecture=architecture, scalers=scalers,
                    about={"name": config.name, "dataset": folds.info.name})
    write(directory, config, kept, [{k: v for k, v in row.items() if k != "epochs"} for row in rows], record)


def plot_folds(curves: list[list[dict]], path: Path) -> None:
    """Every fold's training and validation curves in one figure (loss, and accuracy where there is one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [key for key in ("loss", "accuracy") if any(f"val_{key}" in row for rows in curves for row in rows)]
    fig, axes = plt.subplots(1, max(len(keys), 1), figsize=(5 * max(len(keys), 1), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for fold, rows in enumerate(curves):
            epochs = [row["epoch"] for row in rows]  # from 1, as logged
            line, = ax.plot(epochs, [row.get(f"val_{key}") for row in rows], label=f"fold {fold} val")
            if f"train_{key}" in rows[0]:
                ax.plot(epochs, [row.get(f"train_{key}") for row in rows], "--", color=line.get_color(), alpha=0.5)
        ax.set(xlabel="epoch", ylabel=key, title=f"{key} per fold (dashed: training)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def describe(report: dict) -> str:
    """Per-fold rows and the mean ± std line, for the terminal."""
    keys = [key for key in report["summary"] if key.startswith("val_")]
    lines = ["fold  " + "  ".join(f"{key:>14}" for key in keys)]
    lines += [f"{row['fold']:>4}  " + "  ".join(f"{row[key]:>14.4f}" for key in keys) for row in report["per_fold"]]
    lines.append("mean  " + "  ".join(f"{report['summary'][key]['mean']:>7.4f} ± {report['summary'][key]['std']:<5.3f}"
                                      for key in keys))
    return "\n".join(lines)
