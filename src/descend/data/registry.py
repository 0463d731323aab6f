"""The built-in datasets: what each is, its options, and how to produce its raw arrays.

name            task            sample shape  sizes (own split)     source
mnist1d         classification  (40,)         4000 / 1000, 10 cl.   generated offline by the mnist1d package
fashion_mnist   classification  (1, 28, 28)   60000 / 10000, 10 cl. IDX files (see descend.data.fashion)
digits          classification  (64,)         1797, 10 classes      scikit-learn (bundled)
breast_cancer   classification  (30,)         569, 2 classes        scikit-learn (bundled)
wine            classification  (13,)         178, 3 classes        scikit-learn (bundled)
iris            classification  (4,)          150, 3 classes        scikit-learn (bundled)
diabetes        regression      (10,)         442, 1 output         scikit-learn (bundled)
sine            regression      (1,)          20 / 200 generated    a noisy sine: y = x + 2 sin(1.5x) + N(0, 0.2)
linear_highdim  regression      (200,)        20 / 100 generated    Dive into Deep Learning: y = 0.05 + Σ 0.01 x_i + ε
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import random
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from descend.data import fashion, synthetic
from descend.data.core import RawData
from descend.data.files import cache_dir, write_npz_atomic
from descend.errors import UserError
from descend.options import Boolean, ListOf, Option, Optional, Text, integer, number, validate


@dataclass(frozen=True)
class Spec:
    """A built-in dataset: its description (listed without loading anything) and its loader."""

    name: str
    task: str
    input_shape: tuple[int, ...] | Callable[[dict], tuple[int, ...]]
    num_classes: int | None
    sizes: Callable[[dict], tuple[int, int | None]]  # options -> (pool or train size, own test size or None)
    source: str
    options: tuple[Option, ...]  # what each option allows, its default and meaning
    loader: Callable[[dict], RawData]
    generated: bool = False  # draws a fresh validation split: the training split keeps all n_train samples

    def shape(self, opts: dict) -> tuple[int, ...]:
        return self.input_shape(opts) if callable(self.input_shape) else self.input_shape

    @property
    def defaults(self) -> dict[str, Any]:
        """Every option's default."""
        return {o.name: o.default for o in self.options}

    def check(self, given: dict[str, Any]) -> dict[str, Any]:
        """The dataset's options: ``given`` checked against its table, defaults filled in (nothing loaded)."""
        return validate(f"dataset {self.name!r}", self.options, given)


# --- option tables

_N_TRAIN = Option("n_train", integer(2), 20, "training samples drawn (a fresh validation split is drawn too)")
_DATA_SEED = Option("data_seed", integer(0), 0, "seed of the generated data (not of the training run)")


#: the range of float32, which the data is trained in
_FLOAT32 = number(-float(np.finfo(np.float32).max), float(np.finfo(np.float32).max))


def _n_test(default: int) -> Option:
    return Option("n_test", integer(0), default, "test samples drawn")


def _noise(default: float) -> Option:
    return Option("noise_std", number(0), default, "σ of the Gaussian noise on the targets")


# --- mnist1d


def _mnist1d(opts: dict) -> RawData:
    num_samples, data_seed = opts["num_samples"], opts["data_seed"]
    overrides = {"num_samples": num_samples, "seed": data_seed}
    version = importlib.metadata.version("mnist1d")
    key = hashlib.sha256(json.dumps({"mnist1d": version, **overrides}, sort_keys=True).encode()).hexdigest()
    path = cache_dir() / f"mnist1d-{key[:16]}.npz"
    arrays = None
    if opts["cache"] and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            arrays = None  # a damaged cache file is regenerated and replaced
    how = f"cached at {path}"
    if arrays is None:
        arrays, seconds = generate_mnist1d(overrides)
        how = f"generated in {seconds:.1f} s"
        if opts["cache"]:
            try:
                write_npz_atomic(path, arrays)
                how += f", cached at {path}"
            except OSError:
                how += " (cache folder not writable)"
    return RawData(
        x=arrays["x"],
        y=arrays["y"],
        x_test=arrays["x_test"],
        y_test=arrays["y_test"],
        task="classification",
        num_classes=10,
        kind="signal",
        source=f"mnist1d {version} make_dataset(num_samples={num_samples}, seed={data_seed}), {how}",
    )


def generate_mnist1d(overrides: dict[str, Any]) -> tuple[dict[str, np.ndarray], float]:
    """MNIST-1D generated offline by ``mnist1d.data.make_dataset`` (never its download path).

    The package seeds the global ``random`` and ``numpy.random`` streams; their states are restored after,
    so loading the data changes no other random numbers in the process.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # heavy import, only when generating

    args = get_dataset_args()
    for k, v in overrides.items():
        setattr(args, k, v)
    np_state, py_state = np.random.get_state(), random.getstate()
    start = time.perf_counter()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    seconds = time.perf_counter() - start
    arrays = {
        "x": d["x"].astype(np.float32),
        "y": d["y"].astype(np.int64),
        "x_test": d["x_test"].astype(np.float32),
        "y_test": d["y_test"].astype(np.int64),
    }
    return arrays, seconds


def _mnist1d_sizes(opts: dict) -> tuple[int, int]:
    n = opts["num_samples"]
    return int(n * 0.8), n - int(n * 0.8)  # the package's train_split = 0.8


# --- Fashion-MNIST


def _fashion(opts: dict) -> RawData:
    arrays, source = fashion.load_arrays(opts["path"], opts["download"])
    return RawData(
        x=arrays["x"][:, None],
        y=arrays["y"].astype(np.int64),
        x_test=arrays["x_test"][:, None],
        y_test=arrays["y_test"].astype(np.int64),
        task="classification",
        num_classes=10,
        source=source,
        class_names=list(fashion.CLASS_NAMES),
    )


# --- scikit-learn


def _sklearn(loader_name: str, task: str) -> Callable[[dict], RawData]:
    def load(opts: dict) -> RawData:
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, loader_name)()
        classes = [str(c) for c in bunch.target_names] if task == "classification" else None
        names = [str(n) for n in bunch.feature_names] if "feature_names" in bunch else None
        return RawData(
            x=np.asarray(bunch.data, dtype=np.float64),
            y=np.asarray(bunch.target),
            task=task,
            num_classes=len(classes) if classes else None,
            class_names=classes,
            feature_names=names,
            source=f"scikit-learn {loader_name}() (bundled with the package)",
        )

    return load


# --- the synthetic sets


def _generated(
    make: Callable[[int, np.random.Generator, dict], tuple[np.ndarray, np.ndarray]],
    describe: Callable[[dict], str],
) -> Callable[[dict], RawData]:
    def load(opts: dict) -> RawData:
        n_train, n_test, seed = opts["n_train"], opts["n_test"], opts["data_seed"]
        # train, val and test from independent streams: test points do not move when n_train changes
        x, y = make(n_train, np.random.default_rng([seed, 0]), opts)
        x_test, y_test = make(n_test, np.random.default_rng([seed, 1]), opts)
        return RawData(
            x=x,
            y=y,
            x_test=x_test,
            y_test=y_test,
            draw_val=lambda n: make(n, np.random.default_rng([seed, 2]), opts),
            task="regression",
            source=f"generated: {describe(opts)}, n_train={n_train}, n_test={n_test}, data_seed={seed}",
        )

    return load


def _sine_make(n: int, rng: np.random.Generator, opts: dict) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = opts["x_range"]
    return synthetic.sine(n, rng, noise_std=opts["noise_std"], x_range=(lo, hi))


def _linear_make(n: int, rng: np.random.Generator, opts: dict) -> tuple[np.ndarray, np.ndarray]:
    return synthetic.linear_highdim(n, rng, d=opts["d"], noise_std=opts["noise_std"])


def _own(opts: dict) -> tuple[int, int]:
    return opts["n_train"], opts["n_test"]


def _fixed(total: int) -> Callable[[dict], tuple[int, None]]:
    return lambda opts: (total, None)


REGISTRY: dict[str, Spec] = {
    s.name: s
    for s in [
        Spec(
            "mnist1d",
            "classification",
            (40,),
            10,
            _mnist1d_sizes,
            "generated offline by the mnist1d package (make_dataset), cached as .npz",
            (
                Option("num_samples", integer(10), 5000, "samples generated (80% train, 20% test)"),
                Option("data_seed", integer(0), 42, "seed of make_dataset (42: the package's own set)"),
                Option("cache", Boolean(), True, "keep the generated arrays as .npz in the cache folder"),
            ),
            _mnist1d,
        ),
        Spec(
            "fashion_mnist",
            "classification",
            (1, 28, 28),
            10,
            lambda opts: (60000, 10000),
            "IDX files: path option, $DESCEND_DATA, /usr/share/datasets/fashion-mnist (Debian package "
            "dataset-fashion-mnist), or the official download when allowed",
            (
                Option("path", Optional(Text("a folder path", paths=True), "none (search the usual places)"), None,
                       "folder holding the four IDX files"),
                Option("download", Boolean(), False, "fetch the official files when none are found"),
            ),
            _fashion,
        ),
        Spec(
            "digits",
            "classification",
            (64,),
            10,
            _fixed(1797),
            "scikit-learn load_digits (bundled)",
            (),
            _sklearn("load_digits", "classification"),
        ),
        Spec(
            "breast_cancer",
            "classification",
            (30,),
            2,
            _fixed(569),
            "scikit-learn load_breast_cancer (bundled)",
            (),
            _sklearn("load_breast_cancer", "classification"),
        ),
        Spec(
            "wine",
            "classification",
            (13,),
            3,
            _fixed(178),
            "scikit-learn load_wine (bundled)",
            (),
            _sklearn("load_wine", "classification"),
        ),
        Spec(
            "iris",
            "classification",
            (4,),
            3,
            _fixed(150),
            "scikit-learn load_iris (bundled)",
            (),
            _sklearn("load_iris", "classification"),
        ),
        Spec(
            "diabetes",
            "regression",
            (10,),
            None,
            _fixed(442),
            "scikit-learn load_diabetes (bundled)",
            (),
            _sklearn("load_diabetes", "regression"),
        ),
        Spec(
            "sine",
            "regression",
            (1,),
            None,
            _own,
            "generated: y = x + 2 sin(1.5x) + N(0, 0.2), x ~ U(0, 10) (a noisy sine)",
            (
                _N_TRAIN,
                _DATA_SEED,
                _n_test(200),
                _noise(synthetic.SINE_NOISE_STD),
                Option("x_range", ListOf(_FLOAT32, length=2, increasing=True), [0.0, 10.0],
                       "x is drawn uniformly from [low, high]"),
            ),
            _generated(
                _sine_make,
                lambda o: (
                    f"y = x + 2 sin(1.5x) + N(0, σ²), σ={o['noise_std']:.4g}, x ~ U{tuple(o['x_range'])}"
                ),
            ),
            generated=True,
        ),
        Spec(
            "linear_highdim",
            "regression",
            lambda opts: (opts["d"],),
            None,
            _own,
            "generated: y = 0.05 + Σ 0.01·x_i + ε, ε ~ N(0, 0.01²), x ~ N(0, I), d = 200 (Zhang et al., Dive into "
            "Deep Learning, weight decay)",
            (_N_TRAIN, _DATA_SEED, _n_test(100), Option("d", integer(1), 200, "input dimension"), _noise(0.01)),
            _generated(
                _linear_make,
                lambda o: f"y = 0.05 + Σ_(i=1..{o['d']}) 0.01·x_i + N(0, σ²), σ={o['noise_std']:.4g}",
            ),
            generated=True,
        ),
    ]
}


def get(name: str) -> Spec:
    """The built-in dataset ``name``; an unknown name is a UserError listing the valid ones."""
    if name not in REGISTRY:
        raise UserError(
            f"unknown dataset {name!r}; valid names: {', '.join(REGISTRY)} "
            "(or a path to a .csv, .npz or .idx file)"
        )
    return REGISTRY[name]
