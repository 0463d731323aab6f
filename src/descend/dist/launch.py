"""``descend run RECIPE --nproc N``: start the processes through torchrun, and what each of them does."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError


def launch(args) -> int:
    """Run ``descend run`` in ``args.nproc`` processes per node through ``torch.distributed.run`` (torchrun).

    The run directory is fixed here, before the processes start, so every rank (and every restart after a failed
    worker, ``--max-restarts``) agrees on it; a restarted run resumes from its last checkpoint.
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from .. import config
    from ..rundir import default_run_dir

    recipe = config.load(args.recipe, args.overrides)  # a bad recipe fails once, here, not in every process
    if args.nproc < 1 or args.nnodes < 1 or args.max_restarts < 0:
        raise UserError("--nproc and --nnodes must be >= 1, --max-restarts >= 0")
    out = args.resume or args.out or str(default_run_dir(recipe))
    rendezvous = (["--rdzv-backend", "c10d", "--rdzv-endpoint", args.rdzv_endpoint] if args.rdzv_endpoint
                  else ["--standalone"])
    command = ["-m", "descend.cli", "run", args.recipe, "--out", out]
    command += [item for override in args.overrides for item in ("--set", override)]
    command += (["--resume", out] if args.resume else []) + (["--quiet"] if args.quiet else [])
    try:
        torchrun.main(["--nproc-per-node", str(args.nproc), "--nnodes", str(args.nnodes),
                       "--max-restarts", str(args.max_restarts), *rendezvous, *command])
    except ChildFailedError as failed:
        return failed.get_first_failure()[1].exitcode or 1
    return 0


def run_worker(recipe, out: str | Path, *, resume: bool, quiet: bool) -> dict | None:
    """One rank's part of ``descend run``: rank 0 writes the run directory, the others only train.

    After a restart by torchrun (``TORCHELASTIC_RESTART_COUNT`` > 0) every rank resumes from the run's last
    checkpoint, if one was written."""
    from .. import experiment
    from .trainer import rank

    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    resume = resume or (restarted and (Path(out) / "checkpoints" / "last.safetensors").is_file())
    if rank() == 0:
        return experiment.run(recipe, out, resume=resume, quiet=quiet)
    experiment.build(recipe).fit(resume_from=out if resume else None)
    return None
