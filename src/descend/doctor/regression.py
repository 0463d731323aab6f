"""The references a regression model must beat, and the scale of its targets.

- **The mean predictor**: always answering the training targets' mean scores R² = 0; a network worse than it has
  learnt less than nothing (Hastie, Tibshirani & Friedman, *The Elements of Statistical Learning*, §3.2: R² is the
  share of the variance about the mean that a model explains). This is the baseline of a regression, not the
  zeroed-input model, which may itself be far from the mean.
- **A least-squares linear model** (ordinary least squares with an intercept, solved by ``torch.linalg.lstsq``) where
  it is cheap (up to :data:`MAX_LINEAR_FEATURES` inputs): a network far worse than it is not yet using its
  capacity.
- **The targets' scale**: a network's last layer starts near zero output, so targets around 100 start the MSE near
  10⁴ and make the first gradients a hundred times those of standardised targets (LeCun et al., "Efficient
  BackProp", 1998, scale inputs and outputs alike). descend standardises regression targets by default
  (``[data] target_scale``); this check fires when a recipe turns that off on targets far from zero mean and unit
  variance.

Every comparison is on the validation split (the training split where there is none), in the split's own units:
the ratios of mean squared errors do not depend on an affine rescaling of the targets.
"""

from __future__ import annotations

import torch

from ..data import DataBundle, Split
from .findings import Finding, Fix

MAX_LINEAR_FEATURES = 1000  # inputs up to which a least-squares fit is cheap next to the short run
MAX_LINEAR_ROWS = 100_000
LINEAR_BETTER = 2.0  # the network's MSE this many times the linear model's (and the linear R² > 0.5): a warning
# E[y²] / Var(y): the loss of a zero-output model against what the mean predictor gets; far above 1 is a shift
SHIFT_WARN, SHIFT_ERROR = 10.0, 100.0
SPREAD_WARN, SPREAD_ERROR = 10.0, 100.0  # the targets' standard deviation this far from 1 (above or below)
LR_OFF = 3.0  # a configured rate this many times from the range test's suggestion is part of the fix


def target_scale(bundle: DataBundle) -> list[Finding]:
    """Regression targets far from zero mean and unit variance, on a training split that is not standardised."""
    train = bundle.train
    if train.task != "regression" or train.target_scaler is not None or len(train) < 2:
        return []
    y = train.y.double().reshape(len(train), -1)
    var = y.var(dim=0, unbiased=False)
    std = var.sqrt()
    shift = float(((y.square().mean(dim=0)) / var.clamp_min(1e-30)).max())
    spread = float(torch.maximum(std, 1 / std.clamp_min(1e-30)).max())
    evidence = {"target_mean": y.mean(dim=0).tolist(), "target_std": std.tolist(), "mean_square_over_variance": shift}
    if shift < SHIFT_WARN and spread < SPREAD_WARN:
        return []
    severity = "error" if shift >= SHIFT_ERROR or spread >= SPREAD_ERROR else "warning"
    mean, sd = float(y.mean()), float(std.mean())
    return [
        Finding(
            "unscaled_targets",
            severity,
            f"the regression targets have mean {mean:.3g} and standard deviation {sd:.3g}, unscaled: a "
            f"network starting near zero output begins at an MSE {shift:.3g}x that of predicting their mean, "
            "and its gradients and learning rate are off by the same scale",
            evidence,
            Fix(
                "standardise the targets on the training split (predictions and metrics stay in their own units)",
                {"data.target_scale": "standardize"},
            ),
        )
    ]


def _mse(pred: torch.Tensor, y: torch.Tensor) -> float:
    return float((pred.double() - y.double()).square().mean())


def linear_mse(train: Split, held: Split) -> float | None:
    """The held-out MSE of ordinary least squares with an intercept fitted on ``train``, where it is cheap."""
    x = train.x.reshape(len(train), -1).double().cpu()
    if x.shape[1] > MAX_LINEAR_FEATURES or len(train) > MAX_LINEAR_ROWS or len(train) <= x.shape[1]:
        return None
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    coef = torch.linalg.lstsq(design, train.y.reshape(len(train), -1).double().cpu(), driver="gelsd").solution
    xh = held.x.reshape(len(held), -1).double().cpu()
    pred = torch.cat([xh, torch.ones(len(xh), 1, dtype=xh.dtype)], dim=1) @ coef
    return _mse(pred, held.y.reshape(len(held), -1).cpu())


def references(trainer, bundle: DataBundle, lr: float | None, lr_range: dict | None) -> tuple[list[Finding], dict]:
    """The trained ``trainer``'s model against the mean predictor and a linear model on the held-out split.

    ``lr_range`` is the LR range test's summary, whose ``suggestion`` joins the fix when the configured rate ``lr``
    is more than :data:`LR_OFF` times away from it."""
    train = bundle.train
    held = bundle.val if bundle.val is not None and len(bundle.val) else train
    if train.task != "regression":
        return [], {}
    y = held.y.reshape(len(held), -1).cpu()
    pred = trainer.predict(held.x).float().cpu().reshape(y.shape)
    mean = train.y.reshape(len(train), -1).double().mean(dim=0).cpu()
    model, baseline = _mse(pred, y), _mse(mean.expand(y.shape), y)
    linear = linear_mse(train, held)
    evidence = {
        "split": "val" if held is not train else "train",
        "model_mse": model,
        "mean_predictor_mse": baseline,
        "model_r2": 1 - model / baseline if baseline > 0 else None,
    }
    if linear is not None:
        evidence.update(linear_mse=linear, linear_r2=1 - linear / baseline if baseline > 0 else None)
    if baseline <= 0:
        return [], evidence
    changes, advice = {}, "train longer, or look at the findings above"
    suggestion = (lr_range or {}).get("suggestion")
    if lr is not None and suggestion and not 1 / LR_OFF <= lr / suggestion <= LR_OFF:
        changes["optimizer.lr"] = float(f"{suggestion:.2g}")
        advice = (
            f"set optimizer.lr = {suggestion:.2g}, the LR range test's suggestion (the recipe has {lr:.3g}); "
            "and train longer"
        )
    if model > baseline:
        return [
            Finding(
                "worse_than_mean",
                "error",
                f"on the {evidence['split']} split the model's MSE is {model:.3g}, worse than predicting the "
                f"training targets' mean ({baseline:.3g}): R² = {1 - model / baseline:.3g} < 0",
                evidence,
                Fix(advice, changes),
            )
        ], evidence
    if linear is not None and model > LINEAR_BETTER * linear and 1 - linear / baseline > 0.5:
        return [
            Finding(
                "linear_model_better",
                "warning",
                f"a least-squares linear model reaches MSE {linear:.3g} (R² {1 - linear / baseline:.3g}) on "
                f"the {evidence['split']} split; the network, {model:.3g} (R² {1 - model / baseline:.3g}), "
                "is not yet using its capacity",
                evidence,
                Fix(advice, changes),
            )
        ], evidence
    return [], evidence
