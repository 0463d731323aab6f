"""The short run and what its learning curves say.

One run of the recipe (up to its epochs, within the budget) with validation, per-step losses and the gradient
statistics of :class:`~descend.doctor.fit_checks.GradientStats`, then the same number of epochs on zeroed inputs:
Karpathy's input-independent baseline. The curves give ``underfitting``, ``overfitting`` (training loss falling
while validation rises, or a large gap), ``noisy_loss``, ``aggressive_clipping`` (the Deep Learning Tuning
Playbook: clipping more than half the steps means the learning rate should come down instead), early divergence
and the input-independence verdict.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from ..data import DataBundle
from .findings import Finding, Fix
from .fit_checks import GradientStats
from .subject import Probe, Subject, probe

NOISE = 0.5       # step-to-step noise / the trend's fall, beyond which the loss is called noisy
GAP = 0.5         # (val - train) / train loss beyond which the gap is large
RISE = 0.1        # a validation loss rising back by this share of its fall from init is an error, less a warning
CLIPPED = 0.5     # fraction of clipped steps (Tuning Playbook)


def short_run(subject: Subject, deadline: float) -> tuple[Probe, GradientStats]:
    stats = GradientStats()
    trainer = subject.make(None)
    result = probe(trainer, subject.data.train, subject.data.val, deadline=deadline, epochs=subject.epochs,
                   batch_size=subject.batch_size, callbacks=[stats])
    return result, stats


def zeroed_run(subject: Subject, steps: int, deadline: float) -> Probe:
    """The same recipe trained on inputs set to zero (train and validation) for as many ``steps`` as the short run
    took (its epochs stay the recipe's, so a schedule keeps its shape)."""
    data = subject.data
    zero = DataBundle(replace(data.train, x=torch.zeros_like(data.train.x)),
                      replace(data.val, x=torch.zeros_like(data.val.x)) if data.val is not None else None,
                      None, data.info)
    return probe(subject.make(None), zero.train, zero.val, deadline=deadline, epochs=subject.epochs,
                 steps=max(1, steps), batch_size=subject.batch_size)


def curves(result: Probe) -> dict:
    epochs = [row["epoch"] for row in result.history]
    series = {k: (epochs, [row[k] for row in result.history]) for k in ("train_loss", "val_loss")
              if result.history and k in result.history[0]}
    return {"title": "learning curves (short run)", "xlabel": "epoch", "ylabel": "loss", "ylog": True,
            "series": series}


def divergence(result: Probe, lr: float | None) -> list[Finding]:
    if result.diverged_at is None:
        return []
    return [Finding("lr_too_high", "error", f"the loss became non-finite at step {result.diverged_at} of the short "
                    f"run (learning rate {lr}): the updates overshoot", {"diverged_at_step": result.diverged_at,
                                                                         "configured_lr": lr},
                    Fix("divide the learning rate by 10", {"optimizer.lr": lr / 10} if lr else {}))]


def learning_curves(result: Probe, initial: float | None, subject: Subject) -> tuple[list[Finding], dict]:
    """Underfitting, overfitting and noise from the short run's history and step losses."""
    history, findings = result.history, []
    if not history:
        return [], {}
    train = [row["train_loss"] for row in history]
    val = [row["val_loss"] for row in history if "val_loss" in row]
    start = initial if initial is not None and math.isfinite(initial) else result.losses[0]
    evidence = {"epochs_run": len(history), "initial_loss": start, "final_train_loss": train[-1],
                **({"final_val_loss": val[-1], "best_val_loss": min(val), "best_val_epoch": int(np.argmin(val)) + 1}
                   if val else {})}
    plot = curves(result)
    if train[-1] > 0.8 * start:
        findings.append(Finding("underfitting", "warning", f"after {len(history)} epoch(s) the training loss is "
                                f"still {train[-1]:.3g} ({train[-1] / start:.0%} of the {start:.3g} at init)",
                                evidence, Fix("train longer, raise the learning rate towards the range test's "
                                              "suggestion, or give the model more capacity"), plot))
    if len(val) >= 3:
        findings += _overfitting(train, val, evidence, subject, plot)
    noise = _noise(result.losses)
    evidence["step_noise"] = noise
    if noise is not None and noise > NOISE:
        findings.append(Finding("noisy_loss", "warning", f"step-to-step noise of the training loss is {noise:.2f}x "
                                "its fall over the run: the steps are dominated by mini-batch noise",
                                {**evidence, "step_noise": noise},
                                Fix("use a larger batch (x4) or a lower learning rate (Smith & Le 2018: the noise "
                                    "scale grows with lr / batch size)", _bigger_batch(subject)), plot))
    return findings, evidence


def _overfitting(train: list[float], val: list[float], evidence: dict, subject: Subject, plot: dict) -> list[Finding]:
    best = int(np.argmin(val))
    rising = best < len(val) - 1 and val[-1] > 1.1 * val[best] and train[-1] < train[best]
    gap = (val[-1] - train[-1]) / max(train[-1], 1e-8)
    evidence.update(train_val_gap=gap, val_rising=rising)
    if not rising and not (gap > GAP and val[-1] - train[-1] > 0.1):
        return []
    changes, remedies = _remedies(subject.raw or {})
    why = (f"validation loss rose from {val[best]:.3g} (epoch {best + 1}) to {val[-1]:.3g} while the training loss "
           f"fell to {train[-1]:.3g}") if rising else (
        f"validation loss {val[-1]:.3g} is {gap:.1f}x above the training loss {train[-1]:.3g}")
    # a rise that gives back a sliver of what was learnt (0.03 -> 0.04 after falling from 2.3: over-confidence on a
    # few samples, the accuracy unchanged) is worth a warning, not an error
    fell = evidence["initial_loss"] - val[best]
    severe = (rising and val[-1] - val[best] > RISE * fell) or (val[-1] > 10 * train[-1] and val[-1] - train[-1] > 0.2)
    return [Finding("overfitting", "error" if severe else "warning", f"{why}: the model memorises the training "
                    "split", evidence, Fix("; then ".join(remedies), changes), plot)]


def _remedies(raw: dict) -> tuple[dict, list[str]]:
    """The usual remedies for overfitting in order, skipping those the recipe has; changes for the first two."""
    remedies: list[tuple[str, dict]] = []
    if not raw.get("early_stopping"):
        remedies.append(("early stopping on the validation loss, keeping the best weights",
                         {"early_stopping": {"monitor": "val_loss", "patience": 5}}))
    optimizer = raw.get("optimizer", {})
    if not optimizer.get("weight_decay") and not raw.get("regularization"):
        if optimizer.get("name", "adam") in ("adam", "adamw"):
            remedies.append(("decoupled weight decay (AdamW, Loshchilov & Hutter 2019)",
                             {"optimizer.name": "adamw", "optimizer.weight_decay": 0.05}))
        else:
            remedies.append(("L2 weight decay", {"optimizer.weight_decay": 5e-4}))
    if not raw.get("model", {}).get("dropout"):
        remedies.append(("dropout (Srivastava et al. 2014)", {"model.dropout": 0.2}))
    if not raw.get("augment"):
        remedies.append(("data augmentation", {}))
    remedies.append(("more data", {}))
    changes = {}
    for _, change in remedies[:2]:
        changes.update(change)
    return changes, [text for text, _ in remedies]


def _noise(losses: list[float]) -> float | None:
    """Std of the step losses around a moving average, over the fall of that average (second half of the run)."""
    n = len(losses)
    if n < 40:
        return None
    a = np.asarray(losses, float)
    window = max(5, n // 20)
    trend = np.convolve(a, np.ones(window) / window, mode="valid")
    residual = a[window // 2: window // 2 + len(trend)] - trend
    half, quarter = len(trend) // 2, max(1, len(trend) // 4)
    fall = float(trend[:quarter].mean() - trend[-quarter:].mean())
    if fall < 0.05 * abs(trend[:quarter].mean()):
        return None  # a flat or rising loss: its noise says nothing about the batch size
    return float(residual[half:].std()) / fall


def _bigger_batch(subject: Subject) -> dict:
    if subject.batch_size == "full":
        return {}
    bigger = int(subject.batch_size) * 4
    return {"train.batch_size": "full" if bigger >= len(subject.data.train) else bigger}


def clipping(stats: GradientStats, clip: float | None, lr: float | None) -> list[Finding]:
    totals = stats.totals()
    if clip is None or not totals:
        return []
    norms = np.asarray(totals)
    clipped = float((norms > clip).mean())
    if clipped <= CLIPPED:
        return []
    factor = float(np.median(np.minimum(1.0, clip / norms)))
    evidence = {"clipped_fraction": clipped, "clip_grad_norm": clip, "median_grad_norm": float(np.median(norms)),
                "steps": len(totals)}
    changes = {"optimizer.lr": float(f"{lr * factor:.2g}")} if lr else {}
    return [Finding("aggressive_clipping", "warning", f"{clipped:.0%} of the steps were clipped (median gradient "
                    f"norm {np.median(norms):.3g} against clip_grad_norm {clip}): clipping is doing the learning "
                    "rate's job", evidence,
                    Fix(f"lower the learning rate by about {1 / factor:.1f}x instead (Deep Learning Tuning Playbook: "
                        "clip only the rare outlier steps)", changes))]


def input_independence(real: Probe, zero: Probe) -> tuple[list[Finding], dict]:
    """The real-input run against the zeroed-input run at the same number of epochs (validation loss)."""
    key = "val_loss" if real.history and "val_loss" in real.history[0] else "train_loss"
    epochs = min(len(real.history), len(zero.history))
    if epochs == 0:
        return [], {}
    best_real = min(row[key] for row in real.history[:epochs])
    best_zero = min(row[key] for row in zero.history[:epochs])
    evidence = {"compared": key, "epochs": epochs, "with_inputs": best_real, "zeroed_inputs": best_zero,
                "ratio": best_real / best_zero if best_zero > 0 else math.inf}
    if best_real < 0.95 * best_zero:
        return [], evidence
    return [Finding("input_independent", "error", f"with the inputs the best {key} is {best_real:.3g}, with the "
                    f"inputs set to zero {best_zero:.3g}: the model does no better with the inputs than without "
                    "(the inputs are not used, carry no signal, or the labels do not match them)", evidence,
                    Fix("check the input pipeline: that inputs and labels stay paired, are not shuffled apart, "
                        "and are the intended arrays (Karpathy: input-independent baseline)"))], evidence
