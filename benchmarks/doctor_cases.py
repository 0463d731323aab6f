"""The doctor's suite of deliberately broken recipes: each case, the findings it gets and the seconds it takes,
and what ``--fix`` buys (the recipe trained as it was and as fixed, test accuracy and loss).

    python -m benchmarks.doctor_cases            # every case: findings and seconds
    python -m benchmarks.doctor_cases --fix      # also train each fixable recipe before and after its fixes

The tests (tests/test_doctor_cases.py) run the same cases and check that each gets its finding.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from descend import config, data, doctor
from descend.runs import experiment

from . import machine

DIGITS = {"name": "digits", "val_fraction": 0.2, "test_fraction": 0.2}


def digits_recipe(name: str, lr: float = 1e-3, hidden=(128, 64), **sections) -> dict:
    """A small MLP on scikit-learn's digits (trains in seconds); ``sections`` replace whole recipe sections."""
    raw = {"name": name, "seed": 0, "data": dict(DIGITS),
           "model": {"name": "mlp", "hidden": list(hidden), "activation": "relu"},
           "train": {"epochs": 20, "batch_size": 64}, "optimizer": {"name": "adam", "lr": lr}}
    raw.update(copy.deepcopy(sections))
    return raw


def wine_csv(folder: Path, name: str, *, scale_column: float = 1.0, nan_cells: int = 0) -> Path:
    """scikit-learn's wine data as a CSV, standardized, with column 3 multiplied and some cells made NaN."""
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    x[:, 3] *= scale_column
    rng = np.random.default_rng(0)
    for row, col in zip(rng.choice(len(x), nan_cells, replace=False), rng.integers(0, x.shape[1], nan_cells)):
        x[row, col] = np.nan
    path = folder / f"{name}.csv"
    header = ",".join([*(f"f{i}" for i in range(x.shape[1])), "label"])
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", fmt="%.6g", header=header, comments="")
    return path


def wine_recipe(name: str, path: Path, scale: str) -> dict:
    return {"name": name, "seed": 0, "data": {"name": str(path), "scale": scale, "val_fraction": 0.2,
                                              "test_fraction": 0.2},
            "model": {"name": "mlp", "hidden": [64]}, "train": {"epochs": 40, "batch_size": 32},
            "optimizer": {"name": "adam", "lr": 1e-3}}


# ------------------------------------------------------------------------------------------- Python-built cases
def _digits() -> data.DataBundle:
    return data.load("digits", val_fraction=0.2, scale="standardize", seed=0)


def _mlp(outputs: int = 10, last: nn.Module | None = None) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, outputs)]
    return nn.Sequential(*layers, *([last] if last is not None else []))


def _dead() -> nn.Sequential:
    model = _mlp()
    nn.init.constant_(model[0].bias, -10.0)  # every hidden ReLU starts (and stays) off
    return model


def _noise_inputs(bundle: data.DataBundle) -> data.DataBundle:
    g = torch.Generator().manual_seed(0)
    noisy = {s: replace(getattr(bundle, s), x=torch.randn(getattr(bundle, s).x.shape, generator=g))
             for s in ("train", "val")}
    return replace(bundle, **noisy)


def _shuffled_labels(bundle: data.DataBundle) -> data.DataBundle:
    g = torch.Generator().manual_seed(0)
    train = bundle.train
    return replace(bundle, train=replace(train, y=train.y[torch.randperm(len(train), generator=g)]))


@dataclass
class Case:
    name: str
    expect: str          # the finding id it must produce ("" for a healthy case: no error-level finding)
    what: str
    target: Callable[[Path], tuple[object, dict]]  # folder -> (examine's target, examine's options)

    def run(self, folder: Path, budget: float) -> doctor.Diagnosis:
        target, options = self.target(folder)
        return doctor.examine(target, budget=budget, **options)


def _recipe(raw: dict) -> Callable[[Path], tuple[object, dict]]:
    return lambda folder: (config.validate(copy.deepcopy(raw)), {})


def _python(model: Callable[[], nn.Module], bundle: Callable[[], data.DataBundle]):
    return lambda folder: (model(), {"data": bundle(), "epochs": 20, "batch_size": 64, "name": "python"})


def _csv(name: str, scale: str, **csv_options):
    return lambda folder: (config.validate(wine_recipe(name, wine_csv(folder, name, **csv_options), scale)), {})


CASES = [
    Case("healthy", "", "the digits MLP as it should be", _recipe(digits_recipe("healthy"))),
    Case("lr_high", "lr_too_high", "Adam at 30x the healthy LR (3e-2)", _recipe(digits_recipe("lr_high", lr=3e-2))),
    Case("lr_low", "lr_too_low", "Adam at 1/1000 of the healthy LR (1e-6)",
         _recipe(digits_recipe("lr_low", lr=1e-6))),
    Case("vanishing", "vanishing_gradients", "10-layer sigmoid MLP, N(0, 0.01²) init, SGD",
         _recipe(digits_recipe("vanishing", model={"name": "mlp", "hidden": [64] * 10, "activation": "sigmoid",
                                      "init": "normal", "init_std": 0.01},
                               optimizer={"name": "sgd", "lr": 0.1}))),
    Case("overfitting", "overfitting", "180 training digits, a 2x512 MLP, no regularization, 30 epochs",
         _recipe(digits_recipe("overfitting", hidden=[512, 512], data={**DIGITS, "val_fraction": 0.875},
                               train={"epochs": 30, "batch_size": 32}))),
    Case("unscaled", "unscaled_inputs", "wine CSV, one feature x1000, scale = none",
         _csv("unscaled", "none", scale_column=1000.0)),
    Case("nan_csv", "data_nan", "wine CSV with 3 NaN cells", _csv("nan_csv", "standardize", nan_cells=3)),
    Case("shuffled_labels", "input_independent", "digits with the training labels shuffled",
         _python(_mlp, lambda: _shuffled_labels(_digits()))),
    Case("noise_inputs", "input_independent", "digits with the inputs replaced by Gaussian noise",
         _python(_mlp, lambda: _noise_inputs(_digits()))),
    Case("wrong_head", "initial_loss_off", "a head with 7 outputs for 10 classes",
         _python(lambda: _mlp(outputs=7), _digits)),
    Case("softmax_head", "initial_loss_off", "a softmax before cross-entropy",
         _python(lambda: _mlp(last=nn.Softmax(dim=1)), _digits)),
    Case("dead_relu", "dead_units", "first-layer biases at -10: every ReLU off", _python(_dead, _digits)),
]


def train(raw: dict, seeds: int = 1) -> dict[str, float]:
    """Train a recipe as it is (mean over seeds): test accuracy and loss, and the seconds it took."""
    rows = []
    for seed in range(seeds):
        exp = experiment.build(config.validate({**copy.deepcopy(raw), "seed": seed}))
        try:
            result = exp.fit()
            rows.append({**exp.evaluate("test"), "seconds": result.seconds})
        except Exception as e:  # a diverged run counts as chance level
            rows.append({"test_accuracy": float("nan"), "test_loss": float("nan"), "seconds": 0.0, "error": str(e)})
    return {k: float(np.nanmean([r[k] for r in rows])) if any(np.isfinite(r[k]) for r in rows) else float("nan")
            for k in ("test_accuracy", "test_loss", "seconds")}


def fix_gain(case: Case, folder: Path, budget: float, seeds: int = 1) -> dict | None:
    """Examine a recipe case, apply its fixes, train both recipes: before/after test accuracy and loss (None for
    a case built in Python, which has no recipe to fix)."""
    target, _ = case.target(folder)
    if not isinstance(target, config.Config):
        return None
    raw = target.model_dump(exclude_none=True)
    diagnosis = doctor.examine(target, budget=budget)
    fixed, changed = doctor.apply_fixes(raw, diagnosis.findings)
    if not changed:
        return None
    return {"case": case.name, "changed": changed, "before": train(raw, seeds), "after": train(fixed, seeds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--fix", action="store_true")
    args = parser.parse_args()
    print(machine.line(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"{'case':16} {'expect':22} {'s':>5}  findings (error / warning)")
        for case in CASES:
            started = time.perf_counter()
            d = case.run(folder, args.budget)
            found = ", ".join(f"{f.id}{'' if f.severity == 'error' else '?'}" for f in d.findings) or "(none)"
            ok = (d.healthy if not case.expect else case.expect in d.ids())
            print(f"{case.name:16} {case.expect or 'healthy':22} {time.perf_counter() - started:5.1f}  "
                  f"{'ok ' if ok else 'MISS'} {found}  [{', '.join(f'{c.id} {c.seconds:.1f}' for c in d.checks)}]")
        if args.fix:
            for case in CASES:
                gain = fix_gain(case, folder, args.budget)
                if gain is not None:
                    b, a = gain["before"], gain["after"]
                    print(f"--fix {case.name}: test accuracy {b['test_accuracy']:.3f} -> {a['test_accuracy']:.3f}, "
                          f"test loss {b['test_loss']:.3g} -> {a['test_loss']:.3g}; {'; '.join(gain['changed'])}")


if __name__ == "__main__":
    main()
