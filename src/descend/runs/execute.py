"""What ``descend run`` does: train a recipe into its run directory (one network, or an ensemble of them).

The directory is checked before anything is built (a quick refusal) and again once this process owns it (another
process may have written it between the two looks). ``resume=True`` continues the run there.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from .. import config as cfg
from .. import models
from ..errors import UserError
from . import directory, experiment
from .ensemble import run as run_ensemble


def run(config: cfg.Config, out: str | Path | None = None, *, resume: bool = False, quiet: bool = False,
        stream=None, callbacks=()) -> dict:
    """Train the recipe and write its run directory (what ``descend run`` does); returns the summary.

    ``out`` defaults to ``runs/<name>-<timestamp>``. ``resume=True`` continues the run in ``out`` from its last
    checkpoint; fields that shape the computation (data, model, optimizer, …) must equal the run's recorded recipe,
    others (epochs, patience, …) may change and are reported under ``"changed"``.
    """
    if config.ensemble is not None:  # several networks: descend.runs.ensemble trains and writes them
        if resume:
            raise UserError("an ensemble run cannot be resumed; train it again (each member takes one run)")
        return run_ensemble(config, out, quiet=quiet, stream=stream)
    out = Path(out) if out is not None else directory.default_run_dir(config)
    changed, already = _check_out(config, out, resume, warn=True)  # before building: a quick refusal
    if already is not None:
        return already
    exp = experiment.build(config)
    with directory.owned(out, doing="resume" if resume else "write"):
        changed, already = _check_out(config, out, resume)  # again, as owner: another process may have written it
        if already is not None:
            return already
        if not quiet:
            print(models.summary(exp.trainer.model, exp.data.info.input_shape), file=stream or sys.stdout)
        result = exp.fit(callbacks, out, resume=resume, progress=not quiet, stream=stream)
    return {**result.summary(), "run_dir": str(out), "changed": changed}


def _check_out(config: cfg.Config, out: Path, resume: bool, warn: bool = False) -> tuple[dict, dict | None]:
    """What ``out`` holds against what the command asks: the resumed fields that change, and the summary of a
    run that has already ended (nothing to resume), or a :class:`UserError` for a directory that holds a run."""
    held = directory.status(out)
    changed = directory.check_resume(config, out) if resume else {}
    if resume:
        summary = directory.read_summary(out) or {}
        if held == "stopped_early" or (held == "finished" and summary.get("epochs_run", 0) >= config.train.epochs):
            return changed, {**summary, "run_dir": str(out), "changed": changed, "already": held}
    elif held == "unstarted":
        if warn:
            warnings.warn(f"{out} holds a run that stopped before its first checkpoint: starting it afresh",
                          UserWarning, stacklevel=3)
    elif held != "empty":
        raise UserError(f"{out} already holds a run; choose another --out directory, or continue it with --resume")
    return changed, None
