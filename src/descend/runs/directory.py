"""The run directory: what ``descend run`` writes, and how a run continues from it.

``runs/<name>-<timestamp>/`` (or ``--out``) holds ``config.toml`` (the resolved recipe: every default filled in),
``inference.json`` (what :func:`descend.load_run` needs to predict on raw inputs: the fitted feature scaling,
feature columns, class labels, input and output sizes), ``metrics.jsonl`` (one line per epoch), TensorBoard
event files under ``tb/``, ``checkpoints/`` (``last`` and ``best``), ``schedule.png`` when the recipe has a
schedule, and at the end ``model.safetensors`` (final weights), ``summary.json`` (final train/val/test metrics,
best epoch, seconds, size, versions), ``predictions.json`` (confusion matrix or predicted vs true) and
``report.html`` (:mod:`descend.report.run`; also after a divergence). Every file is written atomically
(:mod:`descend.atomic`).

While a process writes a run directory it owns it (:func:`owned`): an exclusive ``fcntl.flock`` on
``.descend.lock`` inside it, which the kernel releases when the process ends in any way (a crash or ``kill -9``
leaves no stale owner, unlike a PID file). A second ``descend run --out`` or ``descend resume`` of the same
directory is refused (exit code 2) with the owner's PID instead of interleaving its files with the owner's.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import os
import warnings
from datetime import datetime
from pathlib import Path

from .. import atomic, models, schedules
from .. import config as cfg
from ..errors import DivergenceError, UserError
from ..report.run import write_predictions, write_run_report
from ..tracking import flatten
from ..train.checkpoint import save_weights
from ..train.checkpointing import Checkpoints, has_checkpoint
from ..train.logs import MetricsFile, TensorBoard
from ..train.metrics import num_outputs
from .record import INFERENCE_FILE, inference_record

# Fields a resumed run may change; every other field shapes the computation and must stay as recorded.
RESUMABLE = ("name", "train.epochs", "train.log_every", "train.checkpoint_every", "train.checkpoint_unit",
             "train.on_divergence", "train.max_rollbacks", "train.device", "early_stopping.patience",
             "early_stopping.min_delta", "early_stopping.restore_best", "tracking.mlflow", "tracking.experiment")


def resolved_recipe(config: cfg.Config) -> cfg.Config:
    """The recipe with every default filled in, the parts' options included (optimizer, schedule, model): what a
    run's ``config.toml`` records and ``descend show`` prints."""
    raw = config.model_dump(exclude_none=True)
    raw["optimizer"] = {"name": config.optimizer.name, **config.optimizer.build().options}
    if config.schedule is not None:
        factory = schedules.FACTORIES[config.schedule.name]
        raw["schedule"] = {**_defaults(factory), **raw["schedule"]}
    if not models.user.is_user(config.model.name):  # a factory of the user's code: its options as given
        raw["model"] = {**_defaults(models.BUILDERS[config.model.name], skip=("input_shape", "num_outputs")),
                        **raw["model"]}
    return cfg.validate(_toml_values(raw), source="the resolved recipe")


def _defaults(fn, skip: tuple[str, ...] = ()) -> dict:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if name not in skip and p.default is not inspect.Parameter.empty and p.default is not None}


def _toml_values(tree):
    """Tuples as lists and Nones dropped, as TOML holds them."""
    if isinstance(tree, dict):
        return {k: _toml_values(v) for k, v in tree.items() if v is not None}
    return [_toml_values(v) for v in tree] if isinstance(tree, (list, tuple)) else tree


LOCK_FILE = ".descend.lock"
_HELD: dict[str, int] = {}  # directories this process owns (real path -> nesting), so owning is re-entrant

try:
    import fcntl
except ImportError:  # Windows: no flock; a run directory there has no owner
    fcntl = None


@contextlib.contextmanager
def owned(path: str | Path, *, doing: str = "write"):
    """Own the run directory ``path`` (created if needed) for the ``with`` block: an exclusive lock on
    :data:`LOCK_FILE`, held by this process only. Another process owning it is a :class:`UserError` naming the
    directory and that process's PID (``doing`` says what was refused: "write", "resume"). A directory this
    call created and left empty (a check failed before anything was written) is removed again."""
    path = Path(path)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the run directory {path}: {e.strerror}") from None
    key = os.path.realpath(path)
    if fcntl is None or key in _HELD:
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield path
        finally:
            _HELD[key] -= 1
            if not _HELD[key]:
                del _HELD[key]
        return
    fd = _lock(path, doing)
    _HELD[key] = 1
    try:
        yield path
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.unlink(path / LOCK_FILE)  # while still held: a process waiting on this file sees it gone and retries
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty: nothing was written


def _lock(path: Path, doing: str) -> int:
    """An open descriptor of ``path/LOCK_FILE`` holding its exclusive flock, the file naming this process."""
    lock = path / LOCK_FILE
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as e:
            raise UserError(f"cannot lock the run directory {path} ({lock}: {e.strerror}); a run directory must "
                            "be writable and its lock file a plain file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # a file system without locks
                warnings.warn(f"cannot lock the run directory {path} ({e.strerror}): its file system does not "
                              "support locks, so a second process writing it at the same time is not refused",
                              UserWarning, stacklevel=4)
                return fd
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"process {owner}" if owner.isdigit() else "another process"
            raise UserError(f"cannot {doing} {path}: {who} is training in it now (it holds {LOCK_FILE}); wait "
                            "for it to end, stop it, or choose another --out directory") from None
        try:
            same = os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except OSError:
            same = False
        if same:  # not a file its previous owner removed between our open and our lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


def check_links(path: Path) -> None:
    """Refuse a run directory holding symbolic links that lead outside it (:func:`descend.atomic.links_out`):
    a run writes and reads its own files only, not files elsewhere that a link in a received directory names."""
    atomic.refuse_links_out(path, what="run directory")


def default_run_dir(config: cfg.Config, root: str | Path = "runs") -> Path:
    return Path(root) / f"{config.name or 'run'}-{datetime.now():%Y%m%d-%H%M%S}"


class RunDirectory:
    """Writes one run directory around :meth:`Experiment.fit <descend.runs.experiment.Experiment.fit>`."""

    def __init__(self, path: Path, config: cfg.Config, *, resume: bool = False):
        self.path, self.config, self.resume = Path(path), config, resume

    def callbacks(self, experiment) -> list:
        """The callbacks that log and checkpoint into the directory (made later, by :meth:`start`)."""
        c, stopper = self.config, experiment.early_stopping
        keeper = Checkpoints(self.path / "checkpoints", every=c.train.checkpoint_every, unit=c.train.checkpoint_unit,
                             monitor=stopper.monitor if stopper else None, mode=stopper.mode if stopper else "auto")
        return [MetricsFile(self.path / "metrics.jsonl"), TensorBoard(self.path / "tb"), keeper]

    @contextlib.contextmanager
    def owned(self):
        """Own the directory while writing it (:func:`owned`), once checked that no link in it leads out."""
        with owned(self.path, doing="resume" if self.resume else "write"):
            check_links(self.path)
            yield

    def resume_from(self) -> Path | None:
        """The checkpoint to continue from; a run killed before its first checkpoint starts again, with a note."""
        if has_checkpoint(self.path):
            return self.path
        warnings.warn(f"{self.path} holds no checkpoint yet (the run stopped before writing one): training starts "
                      "from the beginning", UserWarning, stacklevel=3)
        return None

    def start(self, experiment) -> None:
        """Make the directory, write the recipe and the schedule's figure (once every part has been checked)."""
        c, trainer = self.config, experiment.trainer
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the run directory {self.path}: {e.strerror}") from None
        atomic.write_text(self.path / "config.toml", cfg.dump(resolved_recipe(c)), what="recipe")
        data = experiment.data
        outputs = num_outputs(trainer.loss, data.info.task, data.info.num_classes, data.train.y)
        atomic.write_json(self.path / INFERENCE_FILE, inference_record(c, data.info, outputs, trainer.loss),
                          what="inference record")
        if trainer.schedule is not None and hasattr(trainer.schedule, "lr"):  # trainer.prepare() counted the steps
            schedules.plot(trainer.schedule, steps_per_epoch=trainer.steps_per_epoch,
                           total_steps=trainer.steps_per_epoch * c.train.epochs,
                           base_lr=c.optimizer.options.get("lr", 1.0), path=self.path / "schedule.png")

    def finish(self, experiment, result) -> None:
        """Test metrics into the result, then the final weights and ``summary.json``."""
        test = experiment.data.test
        if test is not None and len(test):
            result.final.update(experiment.trainer.evaluate(test, prefix="test_"))
        result.run_dir = self.path
        save_weights(experiment.trainer.model, self.path / "model.safetensors")
        atomic.write_json(self.path / "summary.json", result.summary(), what="summary")
        write_predictions(self.path, experiment.trainer, experiment.data)
        write_run_report(self.path)

    def failed(self, experiment, error: BaseException) -> None:
        """A diverged run records how it ended in ``summary.json``; its checkpoints stay as they were."""
        if not isinstance(error, DivergenceError):
            return
        trainer = experiment.trainer
        atomic.write_json(self.path / "summary.json", {
            "name": self.config.name, "status": "diverged", "error": str(error), "epochs_run": len(trainer.history),
            "step": getattr(error, "step", trainer.global_step), "epoch": getattr(error, "epoch", trainer.epoch + 1),
            "checkpoints": _listing(self.path / "checkpoints")}, what="summary")
        write_run_report(self.path)


def status(path: Path) -> str:
    """What a directory holds: "empty", "unstarted" (a recipe but no checkpoint), "in_progress" (a checkpoint, no
    summary), or the status its ``summary.json`` records ("finished", "stopped_early", "diverged")."""
    summary = read_summary(path)
    if summary is not None and summary.get("status") in ("finished", "stopped_early", "diverged"):
        return summary["status"]
    if has_checkpoint(path):
        return "in_progress"
    return "unstarted" if (path / "config.toml").is_file() or (path / "metrics.jsonl").is_file() else "empty"


def read_summary(path: Path) -> dict | None:
    """The run's summary, or None where it has none (or one a killed process or an editor left unreadable)."""
    try:
        return atomic.read_json(atomic.inside(path, path / "summary.json", what="summary"), what="summary")
    except UserError:
        return None


def check_resume(config: cfg.Config, out: Path) -> dict[str, tuple]:
    """The recorded recipe of the run in ``out`` against ``config``: fixed fields must match; returns the changes."""
    recorded = out / "config.toml"
    if not recorded.is_file():
        raise UserError(f"cannot resume: {out} holds no run (no config.toml); give the run directory to --resume")
    before = flatten(resolved_recipe(cfg.load(atomic.inside(out, recorded, what="recorded recipe"))).model_dump())
    now = flatten(resolved_recipe(config).model_dump())
    changed = {key: (before.get(key), now.get(key)) for key in sorted(set(before) | set(now))
               if before.get(key) != now.get(key)}
    fixed = [f"{key} ({old!r} -> {new!r})" for key, (old, new) in changed.items() if key not in RESUMABLE]
    if fixed:
        raise UserError(f"cannot resume {out} with a different {', '.join(fixed)}: these fields shape the training "
                        f"and must stay as recorded; only {', '.join(RESUMABLE)} may change")
    return changed



def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.safetensors")) if directory.is_dir() else []
