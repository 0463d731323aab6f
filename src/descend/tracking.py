"""Experiment tracking in MLflow: ``[tracking] mlflow = "sqlite:///mlruns.db"`` (or ``--mlflow URI``).

Every fit of a recipe that names a tracking store becomes one MLflow run, through MLflow's own client
(``mlflow.MlflowClient``; the ``mlflow-skinny`` package is enough: ``pip install 'descend[mlflow]'``):

- parameters: the resolved recipe (every default filled in, as in a run's ``config.toml``), flattened
  (``optimizer.lr``, ``optimizer.beta2``, ``model.hidden``, ``seed``, …);
- metrics: every value of every epoch's log (``train_loss``, ``val_accuracy``, ``lr``, ``step``, …) at MLflow step =
  the epoch (from 1, as in ``metrics.jsonl``), then the summary: ``final.<metric>`` (test metrics of a run directory
  included), ``best.value``, ``best.epoch``, ``train_seconds``, ``parameters``;
- artifacts, for a run directory: ``config.toml``, ``report.html``, ``summary.json``, ``metrics.jsonl``,
  ``inference.json`` and the weights ``model.safetensors``;
- tags: ``descend.status``, ``descend.dataset``, ``descend.task``, the run directory, and those of the study that ran
  it: a search logs one parent run for the study and each trial as a nested run (``mlflow.parentRunId``, tags
  ``trial``); ``descend compare`` and ``descend cv`` log one run per variant and seed, or per fold, under a parent run
  of their own (tags ``variant``, ``seed``, ``fold``).

A resumed run (``descend resume``) goes on in its MLflow run, which the run directory's ``mlflow.json`` names.
The store is any MLflow tracking URI: ``sqlite:///mlruns.db`` (a local database), a folder (``file:./mlruns``), or a
tracking server (``http://host:5000``). Tracking never costs a run: when the store fails (a server that does not
answer, a locked or damaged database, mlflow not installed) descend warns once (``descend: warning: ...``), stops
tracking that run, and training goes on; the run directory is complete. Requests to a server are tried once with a
10-second timeout (``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT``, where not set already).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path

from . import __version__, atomic
from .errors import UserError
from .options import Option, Optional, Text
from .train.callbacks import Callback

#: ``[tracking]``: where runs are logged besides their run directory.
OPTIONS = (
    Option("mlflow", Optional(Text("an MLflow tracking URI"), "no tracking"), None,
           "an MLflow tracking URI: sqlite:///mlruns.db, file:./mlruns, or a server's http(s)://host:port"),
    Option("experiment", Optional(Text(), "the recipe's name"), None, "the MLflow experiment"),
)

#: The MLflow run that the runs started in this process (and in the processes it starts) are nested under.
PARENT_ENV = "DESCEND_MLFLOW_PARENT"
#: The file of a run directory that names its MLflow run (a resumed run continues it).
RECORD = "mlflow.json"
#: The files of a run directory logged as artifacts, where present.
ARTIFACTS = ("config.toml", "report.html", "summary.json", "metrics.jsonl", "inference.json", "model.safetensors")
_TAGS: contextvars.ContextVar[tuple] = contextvars.ContextVar("descend_mlflow_tags", default=())  # (key, value)s


class Tracker:
    """One MLflow run. Every call is guarded: the first failure warns once and turns this tracker off."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str | None = None,
        *,
        tags: dict | None = None,
        parent: str | None = None,
        continues: str | None = None,
    ):
        self.uri, self.client, self.run_id, self.failed, self.continued = uri, None, None, False, False
        try:  # imported before its loggers are quieted: importing mlflow sets their levels
            import mlflow
        except ImportError:
            mlflow = None
        self._guard(self._start, mlflow, experiment, run_name, tags or {}, parent, continues)

    @classmethod
    def for_config(
        cls, config, run_name: str | None = None, *, tags: dict | None = None, resume: Path | None = None
    ) -> Tracker | None:
        """The tracker of a recipe's ``[tracking]`` section (None when it names no store), nested under the
        current parent run, tagged with the current tags (:func:`tagged`). ``resume``: the run directory of a
        resumed run, whose MLflow run (recorded in its ``mlflow.json``, for the same store) continues."""
        section = getattr(config, "tracking", None)
        if section is None or not section.mlflow:
            return None
        experiment = section.experiment or config.name or "descend"
        return cls(
            section.mlflow,
            experiment,
            run_name,
            tags={**dict(_TAGS.get()), **(tags or {})},
            parent=os.environ.get(PARENT_ENV),
            continues=_recorded_run(resume, section.mlflow) if resume is not None else None,
        )

    @property
    def active(self) -> bool:
        return self.run_id is not None and not self.failed

    def _start(
        self, mlflow, experiment: str, run_name: str | None, tags: dict, parent: str | None, continues: str | None
    ) -> None:
        if mlflow is None:
            raise RuntimeError("mlflow is not installed: pip install 'descend[mlflow]'")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a server that does not answer: one try,
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")  # not minutes of retries while training waits
        self.client = mlflow.MlflowClient(tracking_uri=self.uri)
        if continues is not None:
            try:
                previous = self.client.get_run(continues)
            except Exception:  # deleted from the store since: a new MLflow run
                previous = None
            if previous is not None and previous.info.lifecycle_stage == "active":
                self.client.update_run(continues, status="RUNNING")  # a resumed run goes on in its MLflow run
                self.run_id, self.continued = continues, True
                return
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            try:
                experiment_id = self.client.create_experiment(experiment)
            except Exception:  # another worker may have created it in the meantime
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise  # no: the store's own reason
                experiment_id = found.experiment_id
        tags = {"descend.version": __version__, **{str(k): str(v) for k, v in tags.items()}}
        if parent:
            tags["mlflow.parentRunId"] = parent
        self.run_id = self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id

    def _guard(self, fn, *args):
        if self.failed:
            return None
        try:
            with _quiet_mlflow():
                return fn(*args)
        except Exception as e:
            self.failed = True
            message = " ".join(f"{type(e).__name__}: {e}".split())
            message = message if len(message) <= 200 else message[:197] + "..."
            warnings.warn(
                f"MLflow tracking at {self.uri} failed ({message}); training goes on without it",
                UserWarning,
                stacklevel=2,
            )
            return None

    # ----------------------------------------------------------------------------------------------- logging
    def log_params(self, params: dict) -> None:
        """Parameters, flattened with dots; MLflow takes at most 100 per request and 6000 characters per value."""
        if not self.active:
            return
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self._call("log_batch", params=items[i : i + 100])

    def log_metrics(self, values: dict, step: int = 0) -> None:
        """Finite numbers of ``values`` as metrics at ``step``."""
        if not self.active:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(str(k), float(v), now, int(step))
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
        if metrics:
            self._call("log_batch", metrics=metrics)

    def set_tags(self, tags: dict) -> None:
        if not self.active:
            return
        from mlflow.entities import RunTag

        self._call("log_batch", tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def log_artifacts(self, folder: Path, names=ARTIFACTS) -> None:
        for name in names:
            if (Path(folder) / name).is_file():
                self._call("log_artifact", str(Path(folder) / name))

    def end(self, status: str = "FINISHED") -> None:
        """Close the MLflow run: FINISHED, FAILED or KILLED."""
        self._call("set_terminated", status=status)

    def _call(self, method: str, *args, **kwargs) -> None:
        if self.active:
            self._guard(lambda: getattr(self.client, method)(self.run_id, *args, **kwargs))

    # ---------------------------------------------------------------------------------------- a recipe's fit
    def start_fit(self, config, out: Path | None) -> EpochLog:
        """Log the recipe (resolved: every default filled in) and return the callback that logs each epoch. A
        continued run keeps its parameters (MLflow never changes one): a field a resume changed (``train.epochs``)
        becomes a tag ``descend.resumed.<field>``."""
        params = flatten(config.model_dump(exclude_none=True))
        if self.continued and self.active:
            logged = self._guard(lambda: self.client.get_run(self.run_id).data.params) or {}
            self.set_tags({f"descend.resumed.{k}": v for k, v in params.items() if k in logged and logged[k] != str(v)})
            params = {k: v for k, v in params.items() if k not in logged}
        self.log_params(params)
        if out is not None and self.active:
            self.set_tags({"descend.run_dir": str(Path(out).resolve())})
            atomic.write_json(Path(out) / RECORD, {"tracking_uri": self.uri, "run_id": self.run_id}, what="MLflow run")
        return EpochLog(self)

    def finish_fit(self, result, out: Path | None) -> None:
        """Log the summary of a finished fit (and its run directory's files), and close the run."""
        summary = result.summary()
        best = summary.get("best", {})
        self.log_metrics(
            {
                **{f"final.{k}": v for k, v in summary.get("final", {}).items()},
                "best.value": best.get("best_value"),
                "best.epoch": best.get("best_epoch"),
                "train_seconds": summary.get("train_seconds"),
                "parameters": summary.get("parameters"),
            },
            step=summary.get("epochs_run", 0),
        )
        self.set_tags(
            {
                "descend.status": summary.get("status"),
                "descend.dataset": summary.get("dataset"),
                "descend.task": summary.get("task"),
            }
        )
        if out is not None:
            self.log_artifacts(Path(out))
        self.end("FINISHED")


class EpochLog(Callback):
    """Logs each epoch's values to the tracker, at MLflow step = the epoch; closes the MLflow run as FAILED (or
    KILLED after Ctrl-C) when the fit ends without finishing."""

    order = 95  # after the logs (90): every value of the epoch is there

    def __init__(self, tracker: Tracker):
        self.tracker, self.finished = tracker, False

    def on_epoch_end(self, trainer, logs: dict[str, float]) -> None:
        self.tracker.log_metrics({k: v for k, v in logs.items() if k != "epoch"}, step=int(logs["epoch"]))

    def on_fit_end(self, trainer) -> None:
        self.finished = True

    def close(self) -> None:
        if not self.finished:
            error = sys.exc_info()[1]
            self.tracker.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")


@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow's own log lines (a new database's tables, a failure's traceback) and its libraries' deprecation
    notices stay out of descend's output: a failure is reported once, as a warning, by the tracker."""
    log = logging.getLogger("mlflow")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _recorded_run(run_dir: Path, uri: str) -> str | None:
    """The MLflow run a run directory's ``mlflow.json`` names, when it was logged to the store ``uri``."""
    path = Path(run_dir) / RECORD
    if not path.is_file():  # tracked nowhere before: the resumed run gets an MLflow run of its own
        return None
    try:
        record = atomic.read_json(path, what="MLflow run")
    except UserError:  # damaged: the same
        return None
    return record.get("run_id") if record.get("tracking_uri") == uri else None


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dicts as one level of dotted keys: ``{"optimizer": {"lr": 0.1}}`` -> ``{"optimizer.lr": 0.1}``."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@contextlib.contextmanager
def tagged(**tags):
    """Tags for the MLflow runs started inside (``trial=3``, ``fold=1``, ``variant="adam"``, ``seed=0``)."""
    token = _TAGS.set((*_TAGS.get(), *((k, str(v)) for k, v in tags.items())))
    try:
        yield
    finally:
        _TAGS.reset(token)


@contextlib.contextmanager
def group(config, run_name: str, kind: str, **tags):
    """A parent MLflow run (a search, a comparison, a cross-validation) that the runs started inside, in this
    process or in the worker processes it starts, are nested under. Yields its :class:`Tracker` (or None)."""
    tracker = Tracker.for_config(config, run_name, tags={"descend.kind": kind, **tags})
    if tracker is None or not tracker.active:
        yield tracker
        return
    tracker.log_params(config.model_dump(exclude_none=True))
    previous = os.environ.get(PARENT_ENV)
    os.environ[PARENT_ENV] = tracker.run_id
    status = "FAILED"
    try:
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if previous is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = previous
        tracker.end(status)
