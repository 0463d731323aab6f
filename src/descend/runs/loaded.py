"""Use a trained run: ``descend.load_run(RUN_DIR).predict(raw_inputs)``.

A run directory holds everything prediction needs (see :mod:`descend.runs.directory`): the resolved recipe
(``config.toml``: the model's name and options), the weights (``model.safetensors``, or a checkpoint), and
``inference.json``: the feature scaling fitted on the training split, the CSV feature columns, the original class
labels, the task and the model's input and output sizes. :class:`LoadedRun` applies the saved scaling to *raw*
inputs, exactly as training did, and gives classes back as the original labels::

    run = descend.load_run("runs/wine", which="best")
    run.predict("new_wines.csv")          # array(['barolo', 'grignolino', ...]); the label column may be absent
    run.predict_proba(x)                  # (N, K) class probabilities, columns in the order of run.classes
    run.evaluate("wine_labelled.csv")     # {"test_loss": ..., "test_accuracy": ...}

Loading reads JSON and safetensors only: it never runs code from the run directory, and a run whose recipe names
the user's own model factory is loaded only with consent (``allow_code=True``, or the factory passed as ``model``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .. import atomic, ensemble, models, usercode
from .. import config as cfg
from .. import data as datasets
from .. import export as export_
from ..data import Split, labels
from ..data.core import RawData
from ..data.files import (
    check_finite,
    check_float32_range,
    csv_target,
    feature_columns,
    file_kind,
    numeric_columns,
    read_npz,
    read_table,
)
from ..data.load import check_targets
from ..data.scaling import Scaler, as_float_inputs
from ..data.tables import TableEncoder
from ..errors import UserError
from ..report import inline
from ..train.checkpoint import load_weights
from ..train.divergence import all_finite
from ..train.history import History
from ..train.metric_fns import predicted_class
from .experiment import evaluation_trainer
from .record import INFERENCE_FILE, checked_record, feature_scaler

WEIGHTS = {"final": "model.safetensors", "best": "checkpoints/best.safetensors",
           "last": "checkpoints/last.safetensors"}


def load_run(run_dir: str | Path, which: str = "final", *, device: str | torch.device = "cpu",
             allow_code: bool = False, model=None) -> LoadedRun:
    """The trained model of a run directory, ready to predict on raw inputs.

    ``which``: ``"final"`` (``model.safetensors``, the weights at the end of training: the best epoch's when early
    stopping restored them), ``"best"`` (the checkpoint of the best monitored epoch) or ``"last"`` (the latest
    checkpoint, also of a run that was stopped). Raises :class:`~descend.errors.UserError` when the directory is
    not a finished run or lacks the weights asked for. An ensemble directory (``descend ensemble``, ``descend run``
    with ``[ensemble]``, ``descend cv --ensemble``) loads the same way, its members combined into one model
    (:class:`descend.ensemble.Combined`); it has only ``"final"`` weights.

    A run whose recipe names a model factory of the user's code (``[model] name = "package.module:factory"``)
    loads only with consent, as Keras' ``safe_mode``: ``allow_code=True`` imports the module or file the recipe
    names, and ``model=factory`` uses the factory given instead (nothing is imported). Without either nothing is
    imported and the :class:`~descend.errors.UserError` names the code that loading would run.
    """
    path = Path(run_dir)
    if which not in WEIGHTS:
        raise UserError(f"which must be one of {', '.join(WEIGHTS)}, got {which!r}")
    if not (path / "config.toml").is_file():
        raise UserError(f"{path} is not a run directory (it has no config.toml)")
    if not (path / INFERENCE_FILE).is_file():
        raise UserError(f"{path} has no {INFERENCE_FILE}: it was written by an older descend; train it again")
    config = cfg.load(atomic.inside(path, path / "config.toml", what="recipe"))  # reading imports nothing
    if model is None and models.user.is_user(config.model.name):
        usercode.consent(config.model.name, allow=allow_code, what="model factory", where=str(path))
    record_path = atomic.inside(path, path / INFERENCE_FILE, what="inference record")
    record = checked_record(atomic.read_json(record_path, what="inference record"), record_path)
    if ensemble.is_ensemble(path):  # the members' combined prediction, as one model (descend.ensemble.Combined)
        if which != "final":
            raise UserError(f"{path} is an ensemble: its members are its weights; which={which!r} is for single "
                            "runs (load it with which='final')")
        net = ensemble.load(path, device=device, allow_code=allow_code, model=model).as_module()
    else:
        weights = atomic.inside(path, path / WEIGHTS[which], what=f"{which} weights")
        if not weights.is_file():
            hint = "; the run did not finish: load which='last'" if which == "final" else ""
            raise UserError(f"{path} holds no {which} weights ({WEIGHTS[which]} is missing){hint}")
        net = models.create(config.model.name, tuple(record["input_shape"]), record["num_outputs"],
                            config.model.options, num_classes=record["num_classes"], factory=model)
        load_weights(net, weights, strict=True)
    net.to(device).eval()
    summary_path = atomic.inside(path, path / "summary.json", what="summary")
    summary = atomic.read_json(summary_path, what="summary") if summary_path.is_file() else {}
    history = History(atomic.read_jsonl(atomic.inside(path, path / "metrics.jsonl", what="metrics log"),
                                        what="metrics log"))
    return LoadedRun(path, which, net, config, summary, history, record, torch.device(device), allow_code)


@dataclass
class LoadedRun:
    """A trained run: ``model`` (eval mode), ``config`` (the recipe), ``summary``, ``history``, and prediction on
    raw inputs: a tensor or array of shape ``(N, *input_shape)``, a DataFrame, or a ``.csv`` / ``.npz`` path."""

    path: Path
    which: str
    model: torch.nn.Module
    config: cfg.Config
    summary: dict
    history: History
    record: dict
    device: torch.device
    allow_code: bool = False  # consent to import the data loader the recipe names (evaluate on the run's own data)

    @property
    def task(self) -> str:
        return self.record["task"]

    @property
    def classes(self) -> list | None:
        """The class labels in the order of :meth:`predict_proba`'s columns (None for regression)."""
        if self.task != "classification":
            return None
        return self.record["labels"] or list(range(self.record["num_classes"]))

    @property
    def scaler(self) -> Scaler | None:
        return feature_scaler(self.record)

    @property
    def target_scaler(self) -> Scaler | None:
        """The standardisation of regression targets the model learned on (None: targets as they are)."""
        return Scaler.from_json(self.record["target_scaler"]) if self.record.get("target_scaler") else None

    def _repr_html_(self) -> str:
        """In a notebook: the run's curves and summary (:mod:`descend.report.inline`)."""
        return inline.summary_html(f"{self.path} ({self.which} weights)", list(self.history), self.summary)

    def inputs(self, x) -> torch.Tensor:
        """Raw inputs as the model's scaled float32 tensor (checked: shape, columns, finite values)."""
        options = self.config.data.options
        t = _as_tensor(x, self.record["feature_names"], options.get("x_key", "x"), options.get("delimiter", ","),
                       self.table)
        return self._model_inputs(t)

    @property
    def table(self) -> TableEncoder | None:
        """The encoding of text columns and missing cells the model learned with (None: numeric inputs)."""
        return TableEncoder.from_json(self.record["table"]) if self.record.get("table") else None

    def _model_inputs(self, t: torch.Tensor) -> torch.Tensor:
        """Numeric (encoded) inputs checked against the model and scaled as in training."""
        want = tuple(self.record["input_shape"])
        if tuple(t.shape[1:]) != want:
            raise UserError(f"the inputs have shape {tuple(t.shape)}; this model takes rows of shape {want} "
                            f"(N, {', '.join(map(str, want))})")
        if not all_finite([t]):
            bad = int((~torch.isfinite(t)).any(dim=tuple(range(1, t.dim()))).nonzero()[0])
            raise UserError(f"the inputs hold NaN or infinite values (first in row {bad}); clean or impute them")
        scaler = self.scaler
        return scaler.transform(t) if scaler is not None else t

    @torch.inference_mode()
    def outputs(self, x, *, batch_size: int = 1024) -> torch.Tensor:
        """The model's raw outputs (logits for classifiers) for raw inputs ``x``, on the CPU."""
        t = self.inputs(x)
        return torch.cat([self.model(t[i:i + batch_size].to(self.device)).float().cpu()
                          for i in range(0, len(t), batch_size)])

    def predict(self, x, *, batch_size: int = 1024) -> np.ndarray:
        """Predicted classes as the original labels (text labels decoded), or the predicted values (regression:
        shape ``(N,)`` for one target, ``(N, k)`` for k)."""
        out = self.outputs(x, batch_size=batch_size)
        if self.task != "classification":
            if self.target_scaler is not None:  # the model learned standardised targets: back to their own units
                out = self.target_scaler.inverse_transform(out)
            return (out[:, 0] if out.shape[1] == 1 else out).numpy()
        codes = predicted_class(out)
        return labels.decode(codes.numpy(), self.record["labels"])

    def predict_proba(self, x, *, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities ``(N, K)``, columns in the order of :attr:`classes` (classification only)."""
        if self.task != "classification":
            raise UserError("predict_proba is for classification; this run learned a regression task")
        out = self.outputs(x, batch_size=batch_size)
        if out.shape[1] == 1:  # one logit (binary cross-entropy): P(class 1) = sigmoid
            p = torch.sigmoid(out)
            return torch.cat([1 - p, p], dim=1).numpy()
        return out.softmax(dim=1).numpy()

    def evaluate(self, data: str | Path | Split | None = None, *, prefix: str = "test_") -> dict[str, float]:
        """Loss and metrics on labelled data: a CSV/NPZ file (raw, scaled here), a dataset name (its test
        split), a scaled :class:`~descend.data.Split`, or by default the recipe's own test split."""
        if isinstance(data, Split):
            split = data
        elif data is None or file_kind(str(data)) is None:
            split = self._test_split(data)
        else:
            split = self._labelled(Path(data))
        trainer = evaluation_trainer(self.config, self.model, self.task, self.device)
        return trainer.evaluate(split, prefix=prefix)

    def export(self, path: str | Path | None = None, format: str = "onnx", **options) -> export_.Exported:
        """Write this run as an ONNX, TorchScript or ``torch.export`` model that takes raw inputs, checked against
        this PyTorch model first (:func:`descend.export.export`, which takes ``tolerance`` and ``rows``)."""
        if self.table is not None:
            raise UserError(f"{self.path} learned on a table with text columns or missing cells, which an exported "
                            "graph cannot encode; predict with descend predict or load_run(...).predict")
        return export_.export(self, path, format, **options)

    def held_out_inputs(self) -> torch.Tensor:
        """Raw inputs of the recipe's held-out rows: its test split, else its validation split (float32)."""
        bundle = self._raw_bundle(None)
        split = next((s for s in (bundle.test, bundle.val) if s is not None and len(s)), None)
        if split is None:
            raise UserError(f"the data {self.config.data.name!r} has no held-out rows (no test or validation split)")
        return split.x

    def _raw_bundle(self, name: str | None):
        """The recipe's data (or dataset ``name``), split as in training and not scaled."""
        d, seed = self.config.data, self.config.seed
        if name is None and usercode.is_reference(d.name):  # the run's own data comes from the user's loader
            usercode.consent(d.name, allow=self.allow_code, what="data loader", where=str(self.path))
        options = {"target": d.target, "features": d.features, "task": d.task, "missing": d.missing, **d.options} \
            if name is None else {}
        return datasets.load(name or d.name, val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                             scale="none", target_scale="none", seed=seed, **options)

    def _test_split(self, name: str | None) -> Split:
        """The test split of the recipe's data (or of dataset ``name``), scaled with the run's saved scaling."""
        bundle = self._raw_bundle(name)
        if bundle.test is None:
            raise UserError(f"the data {name or self.config.data.name!r} has no test split to evaluate on")
        test = self._classes(bundle.test, bundle.info.labels, name or self.config.data.name)
        return self._targets(replace(test, x=self._model_inputs(test.x)))  # a table's rows are encoded already

    def _classes(self, split: Split, data_labels: list[str] | None, source: str) -> Split:
        """``split`` with its class indices those of the run, or one UserError: labels of another kind (text at
        training, numbers now, or the reverse), labels the run never saw, or another task are refused, never
        scored against the wrong classes."""
        if split.task != self.task:
            raise UserError(f"{source!r} is {split.task} data; {self.path} learned a {self.task} task")
        if self.task != "classification":
            return split
        trained, k = self.record["labels"], self.record["num_classes"]
        if trained is not None and data_labels is None:
            raise UserError(f"the labels of {source!r} are numbers, but {self.path} was trained on the text labels "
                            f"{', '.join(trained[:10])}: give the data with those labels")
        if trained is None and data_labels is not None:
            raise UserError(f"the labels of {source!r} are text ({', '.join(data_labels[:10])}), but {self.path} was "
                            f"trained on class numbers 0..{k - 1}: give the data with those labels")
        if trained is not None:  # text both times: the data's classes renumbered as the run's
            codes = labels.encode(labels.decode(split.y.numpy(), data_labels), trained)[0]
            return replace(split, y=torch.as_tensor(codes), num_classes=k)
        high = int(split.y.max()) if len(split) else 0
        if high >= k:
            raise UserError(f"the labels of {source!r} reach {high}, but {self.path} knows classes 0..{k - 1}")
        return replace(split, num_classes=k)

    def _targets(self, split: Split) -> Split:
        """A split of raw regression targets standardised as the model learned them (metrics convert back)."""
        scaler = self.target_scaler
        if split.task != "regression" or scaler is None:
            return split
        if split.y.shape[1:] != scaler.shift.shape:
            raise UserError(f"the data has {split.y.shape[1]} target column(s); this model predicts "
                            f"{scaler.shift.shape[0]}")
        return replace(split, y=scaler.transform(split.y), target_scaler=scaler)

    def _labelled(self, path: Path) -> Split:
        """A labelled CSV or NPZ file as a scaled split, labels encoded with the run's mapping."""
        d = self.config.data
        if file_kind(path) == "csv":
            y, x = csv_target(path, d.target, delimiter=d.options.get("delimiter", ",")), self.inputs(path)
        else:
            keys = [d.options.get("x_key", "x"), d.options.get("y_key", "y")]
            arrays = read_npz(path, keys)
            x, y = self.inputs(arrays[keys[0]]), arrays[keys[1]]
        if len(y) != len(x):
            raise UserError(f"{str(path)!r} has {len(x)} inputs but {len(y)} targets")
        if self.task == "classification":
            if self.record["labels"]:
                if y.ndim != 1 and y.shape[1:] != (1,):
                    raise UserError(f"the labels of {str(path)!r} must be one column, got shape {y.shape}")
                y = labels.encode(y, self.record["labels"])[0]
            else:  # labels 0..K-1, checked as the training data's were
                if y.dtype.kind in "USO":
                    raise UserError(f"the labels of {str(path)!r} are text, but {self.path} was trained on class "
                                    f"numbers 0..{self.record['num_classes'] - 1}: give the data with those labels")
                check_finite(f"the labels of {str(path)!r}", y)
                check_targets(RawData(x=np.empty((len(y), 0)), y=y, task="classification", source=str(path),
                                      num_classes=self.record["num_classes"]))
            return Split(x, torch.as_tensor(y.reshape(-1).astype(np.int64)), "classification",
                         self.record["num_classes"])
        check_finite(f"the targets of {str(path)!r}", y)
        check_float32_range(f"the targets of {str(path)!r}", y)
        return self._targets(Split(x, torch.as_tensor(np.asarray(y, np.float32).reshape(len(x), -1)), "regression"))


def predictions_csv(run: LoadedRun, x, *, proba: bool = False) -> str:
    """Predictions for raw inputs ``x`` as CSV text: a ``prediction`` column (original labels or values), and with
    ``proba`` one probability column per class, ``p_<label>``."""
    if proba and run.task != "classification":  # before reading any input
        raise UserError(f"--proba (class probabilities) is for classifiers; {run.path} learned a {run.task} task: "
                        "leave out --proba")
    pred = run.predict(x)
    rows = [list(r) for r in pred.reshape(len(pred), -1).tolist()]
    header = ["prediction"] if pred.ndim == 1 else [f"prediction_{i}" for i in range(pred.shape[1])]
    if proba:
        header += [f"p_{label}" for label in run.classes]
        rows = [row + [f"{p:.6g}" for p in probs] for row, probs in zip(rows, run.predict_proba(x).tolist())]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _as_tensor(x, feature_names: list[str] | None, x_key: str, delimiter: str = ",",
               table: TableEncoder | None = None) -> torch.Tensor:
    """Raw inputs of any accepted kind as a float32 tensor (rows of a table: the model's feature columns, text
    columns and missing cells encoded by ``table`` as in training)."""
    if isinstance(x, (str, Path)):
        kind = file_kind(x)
        if kind == "csv":
            x = _csv_features(Path(x), feature_names, delimiter, cells=table is not None)
        elif kind != "npz":
            raise UserError(f"cannot read inputs from {str(x)!r}: give a .csv or .npz file, an array or a tensor")
        else:
            x = read_npz(x, [x_key])[x_key]
    if hasattr(x, "columns") and hasattr(x, "to_numpy"):  # a DataFrame (pandas, polars): columns by name
        columns = [str(c) for c in x.columns]
        if feature_names and all(name in columns for name in feature_names):
            x = x[feature_names]
        elif len(columns) != len(feature_names or columns):
            missing = [name for name in feature_names if name not in columns]
            raise UserError(f"the table lacks the model's feature columns {', '.join(missing)}")
        x = x.to_numpy()
    array = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
    if table is not None and array.ndim == 2:
        array = table.transform(array, "the inputs")
    if array.dtype.kind not in "biuf":
        raise UserError(f"the inputs must be real numbers, got values of type {array.dtype}")
    if array.ndim < 2:
        raise UserError(f"the inputs must have shape (N, features...), got {array.shape}: one row per sample")
    if len(array) == 0:
        raise UserError(f"the inputs have shape {array.shape}: no rows to predict on")
    return as_float_inputs(array)


def _csv_features(path: Path, feature_names: list[str] | None, delimiter: str = ",", cells: bool = False) -> np.ndarray:
    """The model's feature columns of a CSV file (by header name; a label column may be there or not), as numbers,
    or with ``cells`` as the text cells a table encoder reads when any is not a number."""
    read = feature_columns if cells else numeric_columns
    p, header, rows = read_table(path, delimiter=delimiter)
    ncols = len(rows[0])
    names = feature_names or []
    if header is not None and names and all(name in header for name in names):
        return read(p, header, rows, [header.index(name) for name in names])
    if header is not None and names and not all(n.startswith("x") and n[1:].isdigit() for n in names):
        missing = [name for name in names if name not in header]
        raise UserError(f"CSV file {str(p)!r} lacks the model's feature column(s) {', '.join(missing)}; "
                        f"its columns: {', '.join(header)}")
    if ncols == len(names) or not names:
        return read(p, header, rows, list(range(ncols)))
    if not all(n.startswith("x") and n[1:].isdigit() for n in names):  # named columns, and no header to find them
        raise UserError(f"CSV file {str(p)!r} has {ncols} columns and no header; the model reads the {len(names)} "
                        f"columns {', '.join(names)}: give the file a header naming them, or exactly those columns")
    index = [int(n[1:]) for n in names]  # a headerless training file: columns x0, x1, ... by position
    if max(index) >= ncols:
        raise UserError(f"CSV file {str(p)!r} has {ncols} columns; the model reads columns {', '.join(names)}")
    return read(p, header, rows, index)
