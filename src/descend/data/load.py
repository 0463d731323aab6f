"""``load``: a dataset name or file path in, a :class:`DataBundle` of scaled, split tensors out;
``datasets``: the built-in datasets listed without loading any."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from descend.data import fashion, registry, user
from descend.data.build import DEFAULT_TEST_FRACTION, build, check_targets
from descend.data.core import KINDS, TASKS, DataBundle, DatasetInfo, RawData
from descend.data.files import (
    check_finite,
    file_kind,
    idx_labels_path,
    is_file,
    read_csv,
    read_idx,
    read_npz,
    read_table,
    require_file,
)
from descend.data.labels import encode as encode_labels
from descend.data.labels import infer_task
from descend.data.scaling import SCALES
from descend.data.splits import held_count
from descend.data.tables import is_table
from descend.errors import UserError
from descend.memory import check_fits_memory
from descend.options import OneOf, Option, Optional, Text, declare, integer, number, validate
from descend.options import describe as describe_table
from descend.usercode import is_reference

_NUM_CLASSES = Option("num_classes", Optional(integer(2), "none (inferred from the labels)"), None,
                      "number of classes, when the labels do not show them all")


def _key(name: str, default: str) -> Option:
    return Option(name, Text("an array name"), default, f"the array holding {default}")


#: The options of the user's own files, by kind.
FILE_OPTIONS: dict[str, tuple[Option, ...]] = {
    "csv": (Option("delimiter", Text("a single character", max_length=1), ",", "the column separator"),
            _NUM_CLASSES),
    "npz": (_key("x_key", "x"), _key("y_key", "y"), _key("x_test_key", "x_test"),
            _key("y_test_key", "y_test"), _NUM_CLASSES,
            Option("kind", Optional(OneOf(*KINDS), "none (by shape: (F,) tabular, (C, L) signal, (C, H, W) "
                   "image)"), None, "what a sample is: augmentation flips and shifts only images and signals")),
    "idx": (Option("labels", Optional(Text("a file path", paths=True), "none (guessed from the images file's name)"),
                   None, "the IDX file of the labels"), _NUM_CLASSES),
}


@declare("data",
         Option("val_fraction", number(0, 1, closed="left"), doc="fraction of the training part held out"),
         Option("test_fraction", Optional(number(0, 1, closed="left"), "none (the dataset's own test split, else "
                                          "0.2)"), doc="fraction of all data held out for testing"),
         Option("scale", OneOf(*SCALES), doc="input scaling, fitted on the training split only"),
         Option("missing", OneOf("impute", "refuse"), doc="missing input cells: imputed from the training split "
                "with an indicator column, or refused"),
         Option("target_scale", OneOf("standardize", "none"), doc="regression targets: standardised on the "
                "training split (metrics and predictions in their own units), or used as they are"),
         Option("seed", integer(0), doc="seed of the splits"),
         Option("task", Optional(OneOf(*TASKS), "none (inferred)"), doc="the task of a user file"))
def load(
    name_or_path: str | Path,
    *,
    val_fraction: float = 0.1,
    test_fraction: float | None = None,
    scale: str = "standardize",
    target_scale: str = "standardize",
    missing: str = "impute",
    seed: int = 0,
    target: str | int | None = None,
    features: list[str | int] | None = None,
    task: str | None = None,
    **options: Any,
) -> DataBundle:
    """Load a built-in dataset or a user file, split it and scale its inputs.

    ``name_or_path`` is a name of :func:`datasets` or a path to a ``.csv``, ``.npz`` or IDX
    (``.idx``/``*-ubyte``, optionally ``.gz``) file. The test split is the dataset's own where it has one
    (mnist1d, fashion_mnist, the generated sets, an NPZ file with ``x_test``/``y_test``) and
    ``test_fraction=None``; a number pools everything and holds out that fraction; otherwise 0.2. The
    validation split (``val_fraction``) is carved from the training part. Both are stratified for
    classification and drawn from ``seed``. ``scale`` ("standardize", "minmax", "none") is fitted on the
    final training split only; ``target_scale`` ("standardize", "none") does the same for regression targets, and
    metrics and predictions come back in the targets' own units. ``target``/``features`` choose CSV columns;
    ``task`` ("classification" or "regression") overrides the inferred task of a user file. ``options`` go to
    the dataset (see :func:`datasets`; files: csv ``delimiter``, ``num_classes``; npz ``x_key``, ``y_key``,
    ``x_test_key``, ``y_test_key``, ``num_classes``; idx ``labels`` (path of the labels file), ``num_classes``).
    """
    opts = check_options(name_or_path, **options)
    key = str(name_or_path)
    if key in registry.REGISTRY:
        spec = registry.REGISTRY[key]
        if target is not None or features is not None:
            raise UserError(
                f"target and features choose CSV columns; dataset {key!r} has fixed inputs and targets"
            )
        if task is not None and task != spec.task:
            raise UserError(f"task for dataset {key!r} must be {spec.task!r}, got {task!r}")
        pool, own_test = spec.sizes(opts)  # generated sets also draw up to `pool` validation rows
        rows = pool * (2 if spec.generated else 1) + (own_test or 0)
        check_fits_memory(f"dataset {key!r} with {rows:,} samples of shape {spec.shape(opts)} (float64 while made)",
                          rows * (math.prod(spec.shape(opts)) + 1) * 8, "ask for fewer samples or features")
        raw = spec.loader(opts)
        name = key
    elif file_kind(key) is None and is_reference(key):  # the user's own loader: "package.module:loader"
        if target is not None or features is not None:
            raise UserError(f"target and features choose CSV columns; data loader {key!r} returns x and y itself")
        return user.from_user(user.call_loader(key, opts), name=key, task=task, val_fraction=val_fraction,
                         test_fraction=test_fraction, scale=scale, seed=int(seed), source=f"data loader {key}",
                              target_scale=target_scale, missing=missing)
    else:
        path = Path(key).expanduser()
        raw = read_file(file_kind(key), path, target=target, features=features, task=task, options=opts)
        name = Path(key).name
    check_targets(raw)
    return build(
        raw, name, val_fraction=val_fraction, test_fraction=test_fraction, scale=scale, seed=int(seed),
        target_scale=target_scale, missing=missing,
    )


def check_options(name_or_path: str | Path, **options: Any) -> dict[str, Any]:
    """The options of a built-in dataset or a user file, checked against its table, defaults filled in.

    Nothing is read or generated, so a recipe's ``[data]`` section is checked when it loads. An unknown
    dataset name, or a file that is not CSV, NPZ or IDX, is a :class:`UserError`.
    """
    if not isinstance(name_or_path, (str, Path)):
        raise UserError(f"dataset must be a name or a file path, got {name_or_path!r}")
    key = str(name_or_path)
    if key in registry.REGISTRY:
        return registry.REGISTRY[key].check(options)
    kind = file_kind(key)
    if kind is None and is_reference(key):  # checked against the loader's signature when it is imported
        return dict(options)
    if kind is None:
        if is_file(key):
            raise UserError(f"cannot read {key!r}: data files must be .csv, .npz or IDX (.idx, *-ubyte, .gz)")
        registry.get(key)  # raises: unknown dataset, listing the valid names
    return validate(f"{kind} file", FILE_OPTIONS[kind], options)


def describe() -> str:
    """Every built-in dataset's options, and those of the user's own files, as text."""
    tables = [(f"dataset {name!r}", spec.options) for name, spec in registry.REGISTRY.items()]
    tables += [(f"{kind} file", table) for kind, table in FILE_OPTIONS.items()]
    return "\n".join(describe_table(table, title) for title, table in tables)


def read_file(
    kind: str,
    path: Path,
    *,
    target: str | int | None,
    features: list[str | int] | None,
    task: str | None,
    options: dict[str, Any],
) -> RawData:
    """A user's CSV, NPZ or IDX file as raw arrays, its task given or inferred; ``options`` are checked
    (:func:`check_options`)."""
    opts = options
    if kind != "csv" and (target is not None or features is not None):
        raise UserError(f"target and features choose CSV columns; {str(path)!r} is a {kind} file")
    names = x_test = y_test = labels = None
    if kind == "csv":
        x, y, names = read_csv(path, target=target, features=features, delimiter=opts["delimiter"])
        if y.dtype.kind in "US":  # text labels: classes in sorted order, the mapping kept for predictions
            if task == "regression":
                raise UserError(f"the target column of {str(path)!r} holds text, which cannot be regressed on")
            y, labels = encode_labels(y)
            task = "classification"
    elif kind == "npz":
        keys = [opts["x_key"], opts["y_key"]]
        arrays = read_npz(path, keys, optional=(opts["x_test_key"], opts["y_test_key"]))
        x, y = arrays[opts["x_key"]], arrays[opts["y_key"]]
        x_test, y_test = arrays.get(opts["x_test_key"]), arrays.get(opts["y_test_key"])
        if (x_test is None) != (y_test is None):
            raise UserError(
                f"NPZ file {str(path)!r} has only one of {opts['x_test_key']!r} and "
                f"{opts['y_test_key']!r}; give both or neither"
            )
    else:
        x = read_idx(path)
        guess = idx_labels_path(path)
        if opts["labels"] is None and guess == path:
            raise UserError(f"give the labels file of {str(path)!r} with the option labels=PATH")
        labels = require_file(opts["labels"] or guess, "IDX labels file (option labels)")
        y = read_idx(labels)
        if x.ndim == 3:  # (N, H, W) images -> channels-first (N, 1, H, W)
            x = x[:, None]
    for what, a, b in (("", x, y), (" test", x_test, y_test)):
        if a is None:
            continue
        if not is_table(a):  # a table's cells are checked as it is encoded (descend.data.tables)
            check_finite(f"inputs{what} of {str(path)!r}", a)
        check_finite(f"targets{what} of {str(path)!r}", b)
        if a.ndim == 1:
            raise UserError(f"inputs{what} of {str(path)!r} must have shape (N, features...), got {a.shape}")
        if len(a) != len(b):
            raise UserError(f"{str(path)!r} has {len(a)}{what} inputs but {len(b)} targets")
        if len(a) == 0:
            raise UserError(f"inputs{what} of {str(path)!r} have no rows")
        if 0 in a.shape[1:]:
            raise UserError(f"inputs{what} of {str(path)!r} have shape {a.shape}: no features to learn from")
        if a.shape[1:] != x.shape[1:]:
            raise UserError(
                f"inputs{what} of {str(path)!r} have shape {a.shape}; need rows of shape {x.shape[1:]}"
            )
    task = task or infer_task(y, y_test, repr(str(path)))
    num_classes = opts["num_classes"]
    if num_classes is not None:
        if task != "classification":
            raise UserError(f"num_classes applies to classification; the task of {str(path)!r} is {task}")
    return RawData(
        x=x,
        y=y,
        x_test=x_test,
        y_test=y_test,
        task=task,
        num_classes=num_classes,
        feature_names=names,
        class_names=labels,
        labels=labels,
        kind=opts.get("kind"),
        source=f"{kind} file {path.resolve()}",
    )


def datasets() -> list[dict[str, Any]]:
    """One row per built-in dataset: ``name``, ``task``, ``input_shape``, ``num_classes``, ``sizes`` (with the
    default ``val_fraction=0.1`` and test split), ``source`` and ``options`` (their defaults). Nothing is
    generated or read to list them; for fashion_mnist the source says where its files were found, or how to
    get them."""
    rows = []
    for spec in registry.REGISTRY.values():
        pool, own_test = spec.sizes(spec.defaults)
        test = own_test if own_test is not None else held_count(pool, DEFAULT_TEST_FRACTION)
        rest = pool if own_test is not None else pool - test
        val = held_count(rest, 0.1)
        train = rest if spec.generated else rest - val
        source = spec.source
        if spec.name == "fashion_mnist":
            found = fashion.locate()
            source = f"IDX files in {found['x'].parent}" if found else f"not installed: {fashion.HOW_TO_GET}"
        rows.append(
            {
                "name": spec.name,
                "task": spec.task,
                "input_shape": spec.shape(spec.defaults),
                "num_classes": spec.num_classes,
                "sizes": {"train": train, "val": val, "test": test},
                "source": source,
                "options": spec.defaults,
            }
        )
    return rows


def resolved_fields(data, info: DatasetInfo) -> tuple[dict[str, Any], str | None]:
    """The ``[data]`` fields a recipe left to their defaults, as loading resolved them (for ``descend show``): the
    dataset's options with their defaults, the task, a CSV file's target column, and ``test_fraction``. Where the
    dataset brings its own test split (``test_fraction`` unset), no number says so: the second value is a note."""
    fields: dict[str, Any] = {k: v for k, v in data.build().items() if v is not None}
    fields["task"] = info.task
    if data.target is None and is_file(data.name) and file_kind(data.name) == "csv":
        _, header, _ = read_table(data.name, delimiter=fields.get("delimiter", ","))
        fields["target"] = header[-1] if header else -1
    note = None
    if data.test_fraction is None:
        if own_test_split(data.name, fields):
            note = f"test_fraction unset: the dataset's own test split is used ({info.sizes.get('test', 0)} rows)"
        else:
            fields["test_fraction"] = DEFAULT_TEST_FRACTION
    return fields, note


def own_test_split(name: str, options: dict) -> bool:
    """Whether dataset ``name`` comes with its own test split (a built-in one, or an NPZ file with test arrays)."""
    if name in registry.REGISTRY:
        spec = registry.REGISTRY[name]
        return spec.sizes({**spec.defaults, **options})[1] is not None
    if is_file(name) and file_kind(name) == "npz":
        with np.load(name) as arrays:
            return options.get("x_test_key", "x_test") in arrays.files
    return False
