"""Every part's option table in one list: the option reference (text and Markdown) and README's copy of it.

Each part of descend declares its options once (:mod:`descend.options`); this module only gathers the
tables, so :func:`describe_all` and the README's option reference are generated from them and cannot drift.
``python -m descend.options.reference`` prints the Markdown; ``python -m descend.options.reference --write README.md``
replaces the README's region between the :data:`START` and :data:`END` markers with it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import averaging, ensemble, models, optim, regularization, schedules, tracking, transfer
from .. import data as datasets
from ..config import sections
from ..data import augment, registry
from ..data.load import FILE_OPTIONS
from ..train.callbacks import EarlyStopping
from . import Option, describe, markdown, validate

START, END = "<!-- options:start -->", "<!-- options:end -->"
COMMAND = "python -m descend.options.reference --write README.md"


@dataclass(frozen=True)
class Part:
    """One part with an option table: the recipe ``section`` it is set in (None: Python only), its
    ``name``, the ``where`` its messages start with, the table, and ``build(**options)``, which checks the
    options and makes the part (cheaply: nothing trained, read or generated). ``closed`` parts refuse
    unknown names themselves; ``data.load`` hands them on to the dataset."""

    section: str | None
    name: str
    where: str
    table: tuple[Option, ...]
    build: Callable[..., Any]
    closed: bool = True
    needs: dict[str, Any] = field(default_factory=dict)  # the least it builds from, where its defaults alone are not


def _checked(where: str, table: tuple[Option, ...]) -> Callable[..., Any]:
    """``build`` of a table the recipe checks itself (``[train]``, ``[tracking]``): the table's own check."""
    return lambda **options: validate(where, table, options)


def _bind(function: Callable, *args: Any) -> Callable[..., Any]:
    return lambda **options: function(*args, **options)


def parts() -> list[Part]:
    """Every part descend declares options for, in the order of the recipe sections."""
    data_options = tuple(o for o in datasets.load.options if o.name != "seed")  # the recipe's top-level seed
    out = [Part("data", "every dataset", datasets.load.where, data_options, _bind(datasets.load, "iris"),
                closed=False)]
    out += [Part("data", name, f"dataset {name!r}", spec.options, _bind(datasets.check_options, name))
            for name, spec in registry.REGISTRY.items()]
    out += [Part("data", f"{kind} file", f"{kind} file", table, _bind(datasets.check_options, f"f.{kind}"))
            for kind, table in FILE_OPTIONS.items()]
    out += [Part("model", name, builder.where, builder.options, builder) for name, builder in models.BUILDERS.items()]
    out += [Part("optimizer", name, f"optimizer {name!r}", tuple(table), _bind(optim.create, name))
            for name, table in optim.OPTIONS.items()]
    out += [Part("schedule", name, f"schedule {name!r}", schedules.options(name), _bind(schedules.create, name))
            for name in schedules.NAMES]
    out += [Part("regularization", kind, f"regularization {kind!r}", table, _bind(regularization.create, kind))
            for kind, table in regularization.KINDS.items()]
    out += [Part("augment", "augment", "augment", augment.OPTIONS, augment.create),
            Part("early_stopping", "EarlyStopping", "EarlyStopping", EarlyStopping.__init__.options,
                 EarlyStopping)]
    out += [Part("train", title, "train", table, _checked("train", table)) for title, table in (
        ("Trainer.fit, the loss and the device", sections.RECIPE_OPTIONS), ("Trainer", sections.TRAINER_OPTIONS),
        ("Checkpoints", sections.CHECKPOINT_OPTIONS))]
    out += [Part("", "top level", "config", sections.TOP_OPTIONS, _checked("config", sections.TOP_OPTIONS)),
            Part("averaging", "averaging", "averaging", averaging.OPTIONS, averaging.create),
            Part("ensemble", "ensemble", "ensemble", ensemble.create.options, ensemble.create, needs={"members": 2}),
            Part(None, "mc_dropout", "mc_dropout", ensemble.mc_dropout.options, _bind(ensemble.mc_dropout, None, None)),
            Part("transfer", "transfer", "transfer", transfer.OPTIONS, transfer.create),
            Part("tracking", "tracking", "tracking", tracking.OPTIONS, _checked("tracking", tracking.OPTIONS))]
    return out


def _sections() -> dict[str, list[Part]]:
    found: dict[str, list[Part]] = {}
    for part in parts():
        if part.section is not None:
            found.setdefault(part.section, []).append(part)
    return {name: found[name] for name in ("", *sections.Config.model_fields) if name in found}  # the recipe's order


def describe_all() -> str:
    """Every recipe section's options as text."""
    return "\n\n".join(describe(part.table, f"[{part.section}] {part.name}" if part.section else part.name)
                       for part in parts() if part.section is not None)


_INTRO = {
    "": "Outside any section: the run's name and the seed of everything random (initialisation, the data's splits "
        "and order, dropout, augmentation).",
    "data": "`name` picks the dataset; these are the options of each dataset and of the user's own files.",
    "model": "`name` picks the builder; `input_shape` and `num_outputs` come from the data.",
    "optimizer": "`name` picks the optimizer (`sgd` is `gd`).",
    "schedule": "`name` picks the schedule; `warmup_epochs` / `warmup_steps` / `warmup_start` apply to each.",
    "regularization": "`name` picks the penalty (`kind` is its older word, still read with a warning).",
    "augment": "Training batches only, on the device, seeded.",
    "early_stopping": "The options of `EarlyStopping`; `mode` is inferred from the metric's name.",
    "train": "How long and on what batches, the loss, the device; the Trainer's own options; when checkpoints are "
             "written. The automatic speed settings (`precision`, `threads`, `channels_last`) are explained under "
             "[Reproducibility](#reproducibility-and-the-automatic-speed-settings).",
    "averaging": "Weight averaging during training (`descend.averaging`); `name` picks the method (`method` is its "
                 "older word, still read with a warning).",
    "ensemble": "Exactly one of `members`, `snapshots` or `mc_dropout`; the run directory is an ensemble.",
    "transfer": "Start from trained weights (`descend.transfer`); `from` is required.",
    "tracking": "Where runs are logged besides their run directory (`descend.tracking`).",
}


def reference_markdown() -> str:
    """The option reference as Markdown: one collapsible block per recipe section."""
    out = [START, f"<!-- generated from the option tables by `{COMMAND}`; do not edit by hand -->", ""]
    for section, members in _sections().items():
        intro = _INTRO[section]
        empty = [part.name for part in members if not part.table]
        if empty:
            intro += f" {', '.join(empty)}: no options."
        tables = markdown((part.name, _shown(part)) for part in members if part.table).rstrip()
        title = f"<code>[{section}]</code>" if section else "top level"
        out += [f"<details><summary>{title}</summary>", "", intro, "", tables, "", "</details>", ""]
    return "\n".join([*out, END])


def _shown(part: Part) -> tuple[Option, ...]:
    """The options a recipe sets: a schedule's warmup options are listed once, in the introduction."""
    if part.section == "schedule":
        return tuple(o for o in part.table if o.name not in schedules.WARMUP_OPTIONS)
    if part.section == "model":
        return models.table(part.name)
    return part.table


def region(text: str) -> str:
    """The option reference region of a README (markers included), or '' when it has none."""
    start, end = text.find(START), text.find(END)
    return text[start:end + len(END)] if 0 <= start < end else ""


def write(path: str | Path) -> bool:
    """Replace the region of README ``path`` with the current reference; True when it changed."""
    path = Path(path)
    text = path.read_text()
    old = region(text)
    if not old:
        raise SystemExit(f"{path} has no {START} ... {END} region")
    new = reference_markdown()
    path.write_text(text.replace(old, new))
    return new != old


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m descend.options.reference", description=__doc__.split("\n")[0])
    parser.add_argument("--write", metavar="README", help="rewrite the option reference region of this file")
    parser.add_argument("--text", action="store_true", help="print plain text instead of Markdown")
    args = parser.parse_args(argv)
    if args.write:
        print(f"{args.write}: {'updated' if write(args.write) else 'already up to date'}")
    else:
        sys.stdout.write((describe_all() if args.text else reference_markdown()) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
