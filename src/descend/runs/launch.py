"""``descend run RECIPE --nproc N``: start the processes through torchrun, and what each of them does."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from torch.distributed import run as torchrun
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

from .. import config
from ..distributed.trainer import is_worker, rank, share_commands
from ..errors import UserError
from ..train.control import Control
from . import execute, experiment
from .directory import default_run_dir

MAX_PROCESSES = 256  # per node: the same bound on every machine, as descend tune --workers
MAX_NODES = 4096


def launch(args) -> int:
    """Run ``descend run`` in ``args.nproc`` processes per node through ``torch.distributed.run`` (torchrun).

    The run directory is fixed here, before the processes start, so every rank (and every restart after a failed
    worker, ``--max-restarts``) agrees on it; a restarted run resumes from its last checkpoint. torchrun's own log
    lines (its OMP_NUM_THREADS banner, its report of a failed worker) are kept off the terminal: the workers say
    what went wrong in ``descend:`` lines, and a worker killed by a signal is reported here.
    """
    if not (1 <= args.nproc <= MAX_PROCESSES and 1 <= args.nnodes <= MAX_NODES and args.max_restarts >= 0):
        raise UserError(f"--nproc must be in [1, {MAX_PROCESSES}], --nnodes in [1, {MAX_NODES}] and --max-restarts "
                        f">= 0; got --nproc {args.nproc}, --nnodes {args.nnodes}, --max-restarts {args.max_restarts}")
    if args.nproc > (os.cpu_count() or 1):
        warnings.warn(f"--nproc {args.nproc} on a machine with {os.cpu_count()} CPUs: the processes share cores "
                      "(and each holds a copy of the model and data)", UserWarning, stacklevel=2)
    with _silent():  # its warnings are said once, by the process of rank 0
        recipe = config.load(args.recipe, args.overrides)  # a bad recipe fails once, here, not in every process
    out = args.resume or args.out or str(default_run_dir(recipe))
    rendezvous = (["--rdzv-backend", "c10d", "--rdzv-endpoint", args.rdzv_endpoint] if args.rdzv_endpoint
                  else ["--standalone"])
    command = ["-m", "descend.cli", "run", args.recipe, "--out", out]
    command += [item for override in args.overrides for item in ("--set", override)]
    command += (["--resume", out] if args.resume else []) + (["--quiet"] if args.quiet else [])
    try:
        with _quiet_torchrun():
            torchrun.main(["--nproc-per-node", str(args.nproc), "--nnodes", str(args.nnodes),
                           "--max-restarts", str(args.max_restarts), *rendezvous, *command])
    except ChildFailedError as failed:
        rank, failure = failed.get_first_failure()
        if failure.exitcode is not None and failure.exitcode < 0:  # the worker left no message of its own
            name = signal.Signals(-failure.exitcode).name if -failure.exitcode in signal.valid_signals() else \
                f"signal {-failure.exitcode}"
            print(f"descend: error: the process of rank {rank} was killed by {name}; `descend resume {out}` "
                  f"continues from the last checkpoint, if one was written", file=sys.stderr)
            return 128 - failure.exitcode
        return failure.exitcode or 1
    return 0


def quiet_unless_rank_0():
    """Warnings are said once, by the process of rank 0 (the launcher and the other ranks load the same recipe and
    train the same run: N processes would say each warning N times)."""
    return _silent() if is_worker() and rank() != 0 else contextlib.nullcontext()


@contextlib.contextmanager
def _silent():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _quiet_torchrun():
    """No log records while torchrun runs in this process: its loggers set their own levels and handlers, so
    they are switched off here (this process only waits for the workers) and back on afterwards."""
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(before)


def run_worker(recipe, out: str | Path, *, resume: bool, quiet: bool) -> dict | None:
    """One rank's part of ``descend run``: rank 0 writes the run directory, the others only train.

    After a restart by torchrun (``TORCHELASTIC_RESTART_COUNT`` > 0) every rank resumes from the run's last
    checkpoint, if one was written."""
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    resume = resume or (restarted and (Path(out) / "checkpoints" / "last.safetensors").is_file())
    if rank() == 0:  # babysitting: rank 0 reads control.toml (and keys) and hands the commands to every rank
        control = Control(Path(out) / "control.toml", keys=not quiet, share=share_commands)
        return execute.run(recipe, out, resume=resume, quiet=quiet, callbacks=[control])
    with _silent():  # rank 0 says what the run has to say, once
        follower = Control(None, share=share_commands, stream=io.StringIO())  # applies rank 0's commands silently
        experiment.build(recipe).fit([follower], resume_from=out if resume else None)
    return None
