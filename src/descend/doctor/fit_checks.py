"""Stage 1 of the debugging flowchart: does the model fit the training data at all?

- the loss at initialisation against its expected value (Karpathy, "A Recipe for Training Neural Networks":
  "verify loss @ init" — ln C for C balanced classes, the targets' mean square for MSE);
- overfitting a fixed batch of a few samples (the same recipe's "overfit one batch"): a model that cannot drive
  its loss towards zero on 20 samples has a bug or no capacity;
- per-layer gradient norms over the first steps (vanishing / exploding gradients; Glorot & Bengio 2010) and the
  fraction of ReLU units never active or sigmoid/tanh units stuck near their limits, read with forward hooks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import optim
from ..train import Trainer
from ..train.callbacks import Callback
from ..train.metrics import LOSSES, builtin_loss_name, resolve_loss
from .findings import Finding, Fix
from .subject import Subject, probe

SUBSET = 20                 # samples in the fixed batch to overfit
SUBSET_STEPS = 400
SUBSET_LR = 3e-3            # Adam: a safe default, so a failure points at the model and data, not at the LR
GRADIENT_STEPS = 20         # steps whose per-layer gradients are kept
DEAD, SATURATED = 0.5, 0.5  # fraction of a layer's units for an error


@torch.no_grad()
def initial_loss(subject: Subject, unscaled: bool = False) -> tuple[list[Finding], dict]:
    """The loss of the untrained model on up to 512 training samples against what a sane init gives.

    ``unscaled``: the data check found unscaled inputs, the likelier cause of a large initial loss.
    """
    trainer = subject.make(None)
    model, train = trainer.model, subject.data.train
    loss_name = builtin_loss_name(resolve_loss(trainer.loss, train.task))
    if loss_name is None:  # the user's own loss: no known value at initialisation to compare with
        return [], {"loss": "custom"}
    x, y = train.x[:512].to(trainer.device), train.y[:512].to(trainer.device)
    model.to(trainer.device).train()
    out = model(x).float()
    evidence = {"loss": loss_name, "outputs_per_sample": list(out.shape[1:])}
    if loss_name == "cross_entropy":
        classes = int(train.num_classes or int(y.max()) + 1)
        expected = math.log(classes)
        evidence.update(classes=classes, expected=expected)
        if out.dim() != 2 or out.shape[1] != classes:
            got = out.shape[1] if out.dim() == 2 else tuple(out.shape[1:])
            evidence["head_mismatch"] = True  # the trainer refuses such a model: the training checks cannot run
            if out.dim() == 2 and out.shape[1] > int(y.max()):
                evidence["initial_loss"] = float(LOSSES[loss_name](out, y))
            why = (f"labels {got}..{classes - 1} can never be predicted" if isinstance(got, int) and got < classes
                   else f"the loss at init is about ln {got}, not ln {classes}, and the extra outputs only learn to "
                   "lose")
            return [Finding("initial_loss_off", "error", f"the model's head gives {got} outputs for {classes} "
                            f"classes: {why}", evidence,
                            Fix(f"make the last layer's size the number of classes ({classes})"))], evidence
        value = float(LOSSES[loss_name](out, y))
        evidence["initial_loss"] = value
        if bool((out >= 0).all() and (out <= 1).all()) and float((out.sum(1) - 1).abs().max()) < 1e-3:
            return [Finding("initial_loss_off", "error", "the model's outputs already sum to 1 (a softmax before "
                            "cross-entropy, which applies log-softmax itself): the loss cannot fall below "
                            f"{math.log(1 + (classes - 1) / math.e):.2f}", evidence,
                            Fix("remove the final softmax: cross-entropy takes logits"))], evidence
    elif loss_name == "binary_cross_entropy":
        expected = math.log(2)
        value = float(LOSSES[loss_name](out, y))
        evidence.update(expected=expected, initial_loss=value)
    else:
        target = y.float().reshape(out.shape)
        expected = float((target ** 2).mean())  # an output near 0 against the targets
        value = float(LOSSES[loss_name](out, y))
        evidence.update(expected=expected, target_variance=float(target.var()), initial_loss=value)
        if loss_name == "mae":
            expected = float(target.abs().mean())
            evidence["expected"] = expected
        if value > 3 * expected + 3:
            return [_init_scale(value, expected, evidence, subject, unscaled)], evidence
        return [], evidence
    off = abs(value - expected) / expected
    evidence["relative_difference"] = off
    if off > 0.5 and abs(value - expected) > 0.7:
        return [_init_scale(value, expected, evidence, subject, unscaled)], evidence
    return [], evidence


def _init_scale(value: float, expected: float, evidence: dict, subject: Subject, unscaled: bool) -> Finding:
    message = f"loss at initialisation {value:.3g}, expected about {expected:.3g}: the outputs start far too large"
    if unscaled:
        return Finding("initial_loss_off", "error", f"{message}, from the unscaled inputs (see unscaled_inputs)",
                       evidence, Fix("scale the inputs first; then check the loss at init again"))
    model = (subject.raw or {}).get("model", {})
    changes = {}
    if model.get("init") == "normal":  # a fixed-std init; the fan-in-scaled ones suit the activation
        changes = {"model.init": "xavier_uniform" if model.get("activation") in ("tanh", "sigmoid") else "he_uniform"}
    return Finding("initial_loss_off", "error", f"{message} (a bad init scale) or the head does not fit the loss",
                   evidence, Fix("use a fan-in-scaled init (he_uniform for ReLU, xavier_uniform for tanh/sigmoid; "
                                 "Glorot & Bengio 2010, He et al. 2015) and check the last layer", changes))


def overfit_subset(subject: Subject, deadline: float) -> tuple[list[Finding], dict, bool]:
    """Train Adam on a fixed batch of ``SUBSET`` samples; the loss must fall below 10% of where it started, or for
    a mean squared error below 10% of the batch's target variance (what predicting their mean scores): an offset
    in the targets makes the start high and its fall easy, standardised targets start near their variance."""
    base = subject.make(None)
    train = subject.data.train
    subset = train.subset(list(range(min(SUBSET, len(train)))))
    trainer = Trainer(base.model, loss=base.loss, optimizer=optim.create("adam", lr=SUBSET_LR), device=base.device,
                      seed=0)
    floor = loss_floor(base.loss, train.num_classes)  # judged above the least value the loss can take
    result = probe(trainer, subset, deadline=deadline, steps=SUBSET_STEPS, batch_size="full",
                   stop_if=lambda losses: _recent(losses) - floor < 0.02 * (losses[0] - floor))
    # judged in training mode, as it trains: batch norm's running statistics lag behind a few fast steps
    first = result.losses[0] if result.losses else math.nan
    final = _recent(result.losses) if result.diverged_at is None and result.losses else math.nan
    start = first
    if builtin_loss_name(base.loss) == "mse":
        start = float(subset.y.double().reshape(len(subset), -1).var(dim=0, unbiased=False).mean())
    ratio = (final - floor) / (start - floor) if start > floor else math.nan
    evidence = {"samples": len(subset), "steps": len(result.losses), "optimizer": f"adam lr={SUBSET_LR}",
                "initial_loss": first, "final_loss": final, "loss_floor": floor, "final_over_initial": ratio,
                **({"mean_predictor_loss": start} if start != first else {})}
    curve = {"title": f"overfitting {len(subset)} samples", "xlabel": "step", "ylabel": "training loss",
             "ylog": True, "series": {"loss": (list(range(len(result.losses))), result.losses)}}
    if math.isfinite(ratio) and ratio < 0.1:
        return [], {**evidence, "curve": curve}, result.cut_short
    if result.cut_short and (len(result.losses) < SUBSET_STEPS // 2 or ratio < 0.5):
        return [], evidence, True  # too few steps, or still falling, when time ran out: no verdict
    return [Finding("cannot_overfit_small_subset", "error", f"on a fixed batch of {len(subset)} samples the loss "
                    f"only fell from {first:.3g} to {final:.3g} in {len(result.losses)} Adam steps"
                    f"{f' (predicting their mean gives {start:.3g})' if start != first else ''}: a model that "
                    "cannot memorise a handful of samples has a bug (loss/head, frozen or dead layers) or no "
                    "capacity", evidence, Fix("check the head and the loss first (logits into cross-entropy), then "
                                              "give the model more capacity (wider or more layers)"), curve)], \
        evidence, result.cut_short


def loss_floor(loss, classes: int | None) -> float:
    """The least value the loss can take: 0, but with label smoothing ε over C classes the entropy of the smoothed
    targets (1 − ε + ε/C on the label, ε/C elsewhere; Szegedy et al. 2016), which no model goes below."""
    eps = loss.label_smoothing if isinstance(loss, nn.CrossEntropyLoss) else 0.0
    if not eps or not classes or classes < 2:
        return 0.0
    high, low = 1 - eps + eps / classes, eps / classes
    return -(high * math.log(high) + (classes - 1) * low * math.log(low))


def _recent(losses: list[float]) -> float:
    """The median of the last five step losses (dropout makes single steps noisy)."""
    tail = sorted(losses[-5:])
    return tail[len(tail) // 2]


class GradientStats(Callback):
    """Per-layer gradient norms and update/weight ratios over the first steps; pre-clip norms over all steps.

    Reads ``p.grad`` at ``on_after_backward`` (before clipping and the step) and the weights again at
    ``on_batch_end``: ‖ΔW‖ / ‖W‖ is the update ratio Karpathy's cs231n notes put near 1e-3.
    """

    def __init__(self, steps: int = GRADIENT_STEPS) -> None:
        self.steps = steps
        self.grad: list[torch.Tensor] = []     # per kept step: the layers' gradient norms
        self.ratio: list[torch.Tensor] = []    # per kept step: the layers' update/weight ratios
        self.total: list[torch.Tensor] = []    # per step: the whole gradient's norm
        self.names: list[str] = []
        self._before: list[torch.Tensor] | None = None

    def _weights(self, model: nn.Module) -> list[tuple[str, torch.Tensor]]:
        return [(n, p) for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]

    def on_after_backward(self, trainer) -> None:
        weights = self._weights(trainer.model)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in weights]
        norms = torch.stack(torch._foreach_norm(grads)) if grads else torch.zeros(0)
        everything = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        if everything:
            self.total.append(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(everything))))
        if len(self.grad) < self.steps:
            self.names = [n for n, _ in weights]
            self.grad.append(norms.float())
            self._before = [p.detach().clone() for _, p in weights]

    def on_batch_end(self, trainer) -> None:
        if self._before is None:
            return
        weights = [p.detach() for _, p in self._weights(trainer.model)]
        deltas = torch.stack(torch._foreach_norm(torch._foreach_sub(weights, self._before)))
        self.ratio.append((deltas / torch.stack(torch._foreach_norm(self._before)).clamp_min(1e-12)).float())
        self._before = None

    def layers(self) -> dict[str, list[float]]:
        """Per layer (weights only), the mean gradient norm and update/weight ratio over the kept steps."""
        grad = torch.stack(self.grad).mean(0).tolist() if self.grad else []
        ratio = torch.stack(self.ratio).mean(0).tolist() if self.ratio else []
        return {"names": self.names, "grad_norm": grad, "update_ratio": ratio}

    def totals(self) -> list[float]:
        return torch.stack(self.total).tolist() if self.total else []


def gradient_findings(stats: GradientStats) -> tuple[list[Finding], dict]:
    layers = stats.layers()
    grad = layers["grad_norm"]
    if len(grad) < 2:
        return [], layers
    first, last = grad[0], grad[-1]
    steps = stats.totals()[:len(stats.grad)]
    evidence = {"first_layer_grad_norm": first, "last_layer_grad_norm": last,
                "first_over_last": first / last if last > 0 else math.inf, "layers": len(grad),
                "update_ratio_first_layer": layers["update_ratio"][0] if layers["update_ratio"] else None}
    plot = {"title": "gradient norm per layer (first steps)", "xlabel": "layer (input to output)",
            "ylabel": "mean ||grad W||", "ylog": True,
            "series": {"grad norm": (list(range(len(grad))), [max(g, 1e-30) for g in grad])}}
    layers["plot"] = plot
    if not all(math.isfinite(g) for g in grad) or (last > 0 and first / last > 1e3) or (
            len(steps) > 5 and min(steps[:3]) > 0 and steps[-1] > 100 * min(steps[:3])):
        return [Finding("exploding_gradients", "error", f"gradient norms grow towards the input (first layer "
                        f"{first:.3g}, last {last:.3g}) or over the first steps: the updates blow up",
                        evidence, Fix("clip the gradient norm (train.clip_grad_norm = 1.0) and lower the learning "
                                      "rate; batch normalization keeps the layers' scales in check (Ioffe & "
                                      "Szegedy 2015)", {"train.clip_grad_norm": 1.0, "model.batch_norm": True}),
                        plot)], layers
    if last > 0 and first / last < 1e-3:
        return [Finding("vanishing_gradients", "error", f"the first layer's gradient is {first / last:.1e} of the "
                        f"last layer's: the early layers barely learn (Hochreiter 1991; Glorot & Bengio 2010)",
                        evidence, Fix("use ReLU with He initialisation (He et al. 2015) and batch normalization "
                                      "instead of a deep sigmoid stack with a small init",
                                      {"model.activation": "relu", "model.init": "he_uniform",
                                       "model.batch_norm": True}), plot)], layers
    return [], layers


@torch.no_grad()
def unit_findings(model: nn.Module, x: torch.Tensor, when: str) -> tuple[list[Finding], dict]:
    """Dead ReLU units (never positive on the batch) and saturated sigmoid/tanh outputs, per activation layer."""
    stats, hooks = [], []

    def hook(module, inputs, output):
        o = output.detach().float()
        per_unit = o.transpose(0, 1).reshape(o.shape[1], -1) if o.dim() > 1 else o.reshape(1, -1)
        if isinstance(module, nn.ReLU):
            stats.append(("dead", float((per_unit.amax(1) <= 0).float().mean())))
        elif isinstance(module, nn.Sigmoid):
            stats.append(("saturated", float(((o < 0.01) | (o > 0.99)).float().mean())))
        else:
            stats.append(("saturated", float((o.abs() > 0.99).float().mean())))

    for m in model.modules():
        if isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Tanh)):
            hooks.append(m.register_forward_hook(hook))
    was = model.training
    model.train()
    try:
        model(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    dead = [v for kind, v in stats if kind == "dead"]
    saturated = [v for kind, v in stats if kind == "saturated"]
    evidence = {"when": when, "dead_fraction_per_layer": dead, "saturated_fraction_per_layer": saturated}
    kinds = [  # (finding, fractions per layer, error threshold (half of it warns), what the worst layer shows, fix)
        ("dead_units", dead, DEAD,
         f"of the ReLU units in a layer are never active on {len(x)} samples ({when}): they get no gradient and "
         "stay dead",
         Fix("use leaky ReLU (Maas et al. 2013), a lower learning rate, and biases initialised at 0",
             {"model.activation": "leaky_relu"})),
        ("saturated_units", saturated, SATURATED,
         f"of a sigmoid/tanh layer's outputs are within 0.01 of their limits ({when}): their gradients are near "
         "zero",
         Fix("scale the inputs, use Xavier initialisation (Glorot & Bengio 2010) or batch normalization, or switch "
             "to ReLU", {"model.batch_norm": True})),
    ]
    findings = []
    for finding, fractions, threshold, shows, fix in kinds:
        worst = max(fractions, default=0.0)
        if worst >= threshold / 2:  # thresholds are > 0, so a model without such units finds nothing
            findings.append(Finding(finding, "error" if worst >= threshold else "warning", f"{worst:.0%} {shows}",
                                    evidence, fix))
    return findings, evidence
