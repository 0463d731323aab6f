"""Epoch numbers: one convention everywhere.

Epochs count from 1, as the progress bar prints them and ``metrics.jsonl`` and TensorBoard log them. An option
that *names an epoch* is 1-based and inclusive: ``first_epoch = 7`` means from the seventh epoch on, the seventh
included (``[averaging] first_epoch``, ``[early_stopping] first_epoch``). An option that *counts epochs* is a
count: ``patience``, ``cooldown``, ``warmup_epochs``, ``anneal_epochs``, ``checkpoint_every``, a step schedule's
``step_size`` and a multistep schedule's ``milestones`` ("after this many epochs": ``milestones = [7]`` lowers the
rate from epoch 8 on, as torch's ``MultiStepLR``).

Two older options named an epoch otherwise; they are still accepted with their old meaning and a warning:
``[averaging] start_epoch`` counted from 0 (``start_epoch = 7`` averaged from epoch 8 on), and
``[early_stopping] start_from_epoch`` was Keras's number of epochs to ignore (``start_from_epoch = 3`` watched from
epoch 4 on).
"""

from __future__ import annotations

import warnings

from ..errors import UserError
from ..options import Option, Optional, integer

#: The most epochs a run may reach (a recipe's epochs plus those babysitting adds): more is a typo.
MAX_EPOCHS = 1_000_000  # as a recipe's train.epochs


def first_epoch_option(doc: str, default: str) -> Option:
    """The ``first_epoch`` option of a part: an epoch number (from 1, inclusive), or None for ``default``."""
    return Option("first_epoch", Optional(integer(1, MAX_EPOCHS), f"none ({default})"), doc=doc)


def deprecated_option(name: str, doc: str) -> Option:
    """An older option that names an epoch in another convention (kept for old recipes; see the module text)."""
    return Option(name, Optional(integer(0, MAX_EPOCHS)), doc=f"deprecated: {doc}")


def first_epoch(where: str, first: int | None, old_name: str, old: int | None, *, meaning: str) -> int | None:
    """``first`` (1-based), or the deprecated option ``old_name`` converted to it (``old + 1``) with a warning
    that says what it means and what to write instead; both given is a :class:`UserError`."""
    if old is None:
        return first
    if first is not None:
        raise UserError(f"{where}: give first_epoch (counted from 1) and leave out the deprecated {old_name}")
    warnings.warn(f"{where}: {old_name} is deprecated: {old_name} = {old} {meaning} epoch {old + 1} on, and keeps "
                  f"that meaning; write first_epoch = {old + 1} instead (epochs count from 1 everywhere in descend)",
                  FutureWarning, stacklevel=3)
    return old + 1


def warn_if_after_last(where: str, first: int | None, last: int, consequence: str) -> None:
    """One warning when an epoch-naming option ``first`` lies after the run's ``last`` epoch: the option cannot do
    what it was written for, and ``consequence`` says what happens instead."""
    if first is not None and first > last:
        warnings.warn(f"{where}: first_epoch = {first} is after the run's last epoch ({last}): {consequence}; lower "
                      f"first_epoch or raise train.epochs", stacklevel=3)
