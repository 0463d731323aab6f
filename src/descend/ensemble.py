"""Ensembles: several networks whose predictions are averaged, saved as a directory, loaded for prediction.

Three kinds, one :class:`Ensemble` to predict with:

- **members** (Lakshminarayanan et al. 2017, "Simple and Scalable Predictive Uncertainty Estimation using Deep
  Ensembles"): K networks trained independently from different seeds (initialisation and data order) on the same
  split;
- **snapshots** (Huang et al. 2017, "Snapshot Ensembles: Train 1, get M for free"): one run whose learning rate
  follows K cosine cycles restarted from the top, η_t = η₀/2·(1 + cos(π·(t mod ⌈T/K⌉)/⌈T/K⌉)); the weights at the
  end of each cycle (the learning-rate minimum) are the members;
- **MC-dropout** (Gal & Ghahramani 2016), "dropout is a kind of ensemble": training with dropout trains one
  network of a different structure per mini-batch, with shared weights. Keeping dropout on at prediction time
  and averaging N stochastic passes averages N members of that implicit ensemble::

    p̂(y | x) = 1/N Σ_{n=1..N} softmax(f(x; W ⊙ r_n)),   r_n ~ Bernoulli masks

  The usual prediction (eval mode) replaces the average by one pass with the expected activations instead.

A fourth kind, **folds**, holds the models of a cross-validation (``descend cv --ensemble``): one per fold, each
with the feature scaling fitted on its fold's training part, applied to the raw inputs before that member.

Classifiers average the members' probabilities, regressors their outputs. An ensemble directory holds
``ensemble.json`` (the manifest: format, kind, task, architecture, member files, their metrics and scalings) and
``members/member-<k>.safetensors``; :func:`load` reads it back (no pickle) and ``predict`` / ``predict_proba``
answer like one model. With the recipe (``config.toml``) and ``inference.json`` beside them, the directory is what
:func:`descend.load_run` and ``descend predict`` take, as for a single run (:meth:`Ensemble.as_module`). Training an
ensemble from a recipe is :mod:`descend.runs.ensemble`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from descend import atomic, models, usercode
from descend.data.core import TASKS, as_tensor
from descend.data.scaling import Scaler
from descend.errors import UserError
from descend.options import OneOf, Option, Optional, declare, integer
from descend.train.checkpoint import CheckpointError, load_weights, save_weights

__all__ = ["mc_dropout", "DROPOUT_LAYERS", "KINDS", "EnsembleSpec", "create", "Ensemble", "Combined", "load",
           "is_ensemble", "MANIFEST"]

KINDS = ("members", "snapshots", "mc_dropout")
SAVED_KINDS = (*KINDS, "folds")  # and the fold models that cross-validation keeps (descend.tune.cv)
MANIFEST = "ensemble.json"
FORMAT = "descend-ensemble"

#: torch's dropout layers: Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout.
DROPOUT_LAYERS: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd,)
MAX_MEMBERS = 1000  # networks kept in memory and run on every prediction
MAX_PASSES = 10_000  # forward passes per prediction
_PASSES = integer(1, MAX_PASSES)  # the recipe's bound, for a manifest's samples too


@declare("mc_dropout", Option("samples", _PASSES, doc="stochastic forward passes averaged"),
         Option("output", OneOf("probabilities", "raw"), doc="average softmax(logits), or the raw outputs"))
def mc_dropout(model: nn.Module, x: torch.Tensor, samples: int = 20,
               output: str = "probabilities") -> torch.Tensor:
    """Mean of ``samples`` stochastic forward passes of ``model`` on ``x``.

    Dropout layers run in train mode (a fresh mask per pass, from torch's global generator); every other
    module (batch norm in particular) runs in eval mode, so batch norm uses its running averages and does not
    update them. Runs under ``torch.inference_mode``; every module's train/eval mode is restored afterwards.

    ``output="probabilities"`` (default, for classifiers) averages softmax(logits) over dim 1, the class axis;
    ``output="raw"`` averages the model's outputs as they are (regression, or models that end in a softmax).
    """
    modes = {module: module.training for module in model.modules()}
    dropouts = dropout_layers(model)
    try:
        model.eval()
        for module in dropouts:
            module.train()
        with torch.inference_mode():
            total = None
            for _ in range(samples):
                out = model(x)
                if output == "probabilities":
                    out = out.softmax(dim=1)
                total = out.clone() if total is None else total.add_(out)  # never write into the output
            return total.div_(samples)
    finally:
        for module, training in modes.items():
            module.training = training


def dropout_layers(model: nn.Module) -> list[nn.Module]:
    """The dropout layers of ``model`` that drop something (p > 0); a :class:`UserError` when it has none, so an
    MC-dropout ensemble is refused before anything is trained (a model built on the meta device will do)."""
    layers = [m for m in model.modules() if isinstance(m, DROPOUT_LAYERS)]
    if not any(m.p > 0 for m in layers):
        has = "only dropout layers with p = 0" if layers else "none"
        raise UserError(f"mc_dropout needs a model with dropout layers (nn.Dropout with p > 0); this model has {has}: "
                        "give the model dropout (e.g. dropout = 0.1 in [model]) or use members or snapshots")
    return layers


# ------------------------------------------------------------------------------------------------ the recipe part
@dataclass(frozen=True)
class EnsembleSpec:
    """What a recipe's ``[ensemble]`` section asks for: ``kind`` and its size (members, snapshots or passes)."""

    kind: str
    size: int


@declare("ensemble",
         Option("members", Optional(integer(2, MAX_MEMBERS), "not this kind"), doc="K networks from K seeds"),
         Option("snapshots", Optional(integer(2, MAX_MEMBERS), "not this kind"), doc="K snapshots at cycle ends"),
         Option("mc_dropout", Optional(integer(1, MAX_PASSES), "not this kind"), doc="N stochastic dropout passes"))
def create(members: int | None = None, snapshots: int | None = None, mc_dropout: int | None = None) -> EnsembleSpec:
    """Exactly one of ``members = K`` (independent seeds), ``snapshots = K`` (cosine cycles in one run) or
    ``mc_dropout = N`` (stochastic passes of one network)."""
    given = {kind: value for kind, value in zip(KINDS, (members, snapshots, mc_dropout)) if value is not None}
    if len(given) != 1:
        raise UserError(f"ensemble: give exactly one of members = K, snapshots = K or mc_dropout = N; got "
                        f"{', '.join(given) or 'none'}")
    (kind, size), = given.items()
    return EnsembleSpec(kind, size)


# ------------------------------------------------------------------------------------------------ predicting
def probabilities(outputs: torch.Tensor) -> torch.Tensor:
    """Class probabilities from logits: softmax, or (one output, binary cross-entropy) sigmoid as [1 − p, p]."""
    if outputs.shape[1] == 1:
        p = outputs.sigmoid()
        return torch.cat([1 - p, p], dim=1)
    return outputs.softmax(dim=1)


class Ensemble:
    """Networks whose predictions are averaged: ``predict_proba(x)`` (classifiers), ``predict(x)``.

    ``models`` are the members (kind members or snapshots), or the one network of an MC-dropout ensemble, whose
    ``samples`` stochastic passes are its members. ``task`` is classification or regression; ``architecture``
    (``{"name", "options", "input_shape", "num_outputs"}``, a :mod:`descend.models` builder) lets :func:`load`
    rebuild the members. Inputs are given as the models were trained on them (scaled as the recipe scales);
    ``scalers`` (one :class:`~descend.data.scaling.Scaler` or None per model) scale them per member first, for
    members trained on differently scaled data (the folds of a cross-validation).
    """

    def __init__(self, models: list[nn.Module], task: str, kind: str = "members", *, samples: int = 1,
                 architecture: dict | None = None, about: dict | None = None,
                 scalers: list[Scaler | None] | None = None):
        if not models:
            raise UserError("an ensemble needs at least one model")
        if kind == "mc_dropout":
            dropout_layers(models[0])
        self.models, self.task, self.kind, self.samples = list(models), task, kind, samples
        self.architecture, self.about = architecture, dict(about or {})
        self.scalers = list(scalers) if scalers is not None else [None] * len(self.models)
        if len(self.scalers) != len(self.models):
            raise UserError(f"an ensemble of {len(self.models)} models needs as many scalers (None: inputs as "
                            f"given), got {len(self.scalers)}")

    def __len__(self) -> int:
        return self.samples if self.kind == "mc_dropout" else len(self.models)

    @torch.inference_mode()
    def member_outputs(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Each member's probabilities (classification) or outputs (regression): shape (members, N, C)."""
        device = next(self.models[0].parameters()).device
        chunks = []
        for i in range(0, len(x), batch_size):
            xb = as_tensor(x[i:i + batch_size]).to(device).float()
            inputs = [xb if scaler is None else scaler.transform(xb) for scaler in self.scalers]
            if self.kind == "mc_dropout":
                outs = [mc_dropout(self.models[0], inputs[0], samples=1, output="raw") for _ in range(self.samples)]
            else:
                outs = []
                for model, xm in zip(self.models, inputs):
                    was_training = model.training
                    model.eval()
                    outs.append(model(xm).float())
                    model.train(was_training)
            stacked = torch.stack(outs)
            chunks.append(probabilities(stacked.flatten(0, 1)).unflatten(0, stacked.shape[:2])
                          if self.task == "classification" else stacked)
        return torch.cat(chunks, dim=1)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of the members' class probabilities, shape (N, classes)."""
        if self.task != "classification":
            raise UserError("predict_proba is for classifiers; this ensemble is a regressor: use predict")
        return self.member_outputs(x).mean(0)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Classes (argmax of the mean probabilities) for classifiers, the mean output for regressors."""
        mean = self.member_outputs(x).mean(0)
        return mean.argmax(dim=1) if self.task == "classification" else mean

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, prefix: str = "test_") -> dict:
        """The ensemble's and every member's metrics on (x, y), and the members' disagreement.

        Classification: accuracy and loss (negative log-likelihood of the averaged probabilities); disagreement
        is the fraction of samples on which two members predict different classes, averaged over all pairs.
        Regression: mean squared error; disagreement is the members' standard deviation, averaged over samples.
        """
        outs = self.member_outputs(x)
        y = as_tensor(y).to(outs.device)
        metric = (lambda o: _classification(o, y)) if self.task == "classification" else (lambda o: _regression(o, y))
        result = {f"{prefix}{k}": v for k, v in metric(outs.mean(0)).items()}
        result["members"] = [{f"{prefix}{k}": v for k, v in metric(o).items()} for o in outs]
        if self.task == "classification":
            labels = outs.argmax(dim=2)
            pairs = list(itertools.combinations(range(len(labels)), 2))
            result[f"{prefix}disagreement"] = (sum((labels[i] != labels[j]).float().mean().item() for i, j in pairs)
                                               / max(len(pairs), 1))
        else:
            result[f"{prefix}disagreement"] = outs.std(dim=0, unbiased=False).mean().item()
        return result

    def as_module(self) -> Combined:
        """The ensemble as one network whose output is the combined prediction (see :class:`Combined`)."""
        return Combined(self)

    # ------------------------------------------------------------------ on disk
    def save(self, directory: str | Path, members: list[dict] | None = None) -> Path:
        """Write ``members/member-<k>.safetensors`` and the manifest ``ensemble.json`` into ``directory``.

        ``members`` (optional) adds one dict per model to the manifest (seed, metrics, …).
        """
        if self.architecture is None:
            raise UserError("this ensemble has no architecture record (descend.models name and options), so it "
                            "could not be loaded again; build it from a recipe or pass architecture=")
        directory = Path(directory)
        entries = []
        for k, model in enumerate(self.models):
            name = f"members/member-{k}.safetensors"
            save_weights(model, directory / name)
            scaling = {} if self.scalers[k] is None else {"scaler": self.scalers[k].to_json()}
            entries.append({"weights": name, **((members or [{}] * len(self.models))[k]), **scaling})
        manifest = {"format": FORMAT, "version": 1, "kind": self.kind, "task": self.task, "size": len(self),
                    "combine": "mean of probabilities" if self.task == "classification" else "mean of outputs",
                    "samples": self.samples, "architecture": self.architecture, "members": entries, **self.about}
        atomic.write_json(directory / MANIFEST, manifest, what="ensemble manifest")
        return directory


def is_ensemble(path: str | Path) -> bool:
    """Whether ``path`` is an ensemble directory (holds ``ensemble.json``)."""
    return (Path(path) / MANIFEST).is_file()


def load(directory: str | Path, device: str | torch.device = "cpu", *, allow_code: bool = False,
         model=None) -> Ensemble:
    """The ensemble saved in ``directory`` (by :meth:`Ensemble.save` or ``descend run`` with ``[ensemble]``).

    Members built by a factory of the user's code are loaded only when the caller consents (``allow_code=True``)
    or passes the factory itself (``model``); otherwise nothing is imported and the refusal names the code."""
    directory = Path(directory)
    path = atomic.inside(directory, directory / MANIFEST, what="ensemble manifest")
    if not path.is_file():
        raise UserError(f"{directory} is not an ensemble: it has no {MANIFEST}")
    manifest = atomic.read_json(path, what="ensemble manifest")  # its size checked before it is read
    if manifest.get("format") != FORMAT:
        raise UserError(f"{directory / MANIFEST} is not a descend ensemble manifest (format {FORMAT!r})")
    arch = _checked_manifest(manifest, directory / MANIFEST)["architecture"]
    if model is None and models.user.is_user(arch["name"]):
        usercode.consent(arch["name"], allow=allow_code, what="model factory", where=str(directory))
    factory = model
    members, scalers = [], []
    for entry in manifest["members"]:
        scalers.append(Scaler.from_json(entry["scaler"]) if entry.get("scaler") else None)
        model = models.create(arch["name"], tuple(arch["input_shape"]), arch["num_outputs"], arch["options"],
                              factory=factory)
        weights = atomic.inside(directory, directory / entry["weights"], what="member weights")
        if not weights.is_file():
            raise UserError(f"{directory / MANIFEST} names the member weights {entry['weights']}, which are missing")
        report = load_weights(model, weights)
        if not report.ok:
            raise CheckpointError(f"{directory / entry['weights']} does not fit the ensemble's architecture: {report}")
        members.append(model.to(device).eval())
    about = {k: v for k, v in manifest.items() if k not in ("format", "version", "kind", "task", "size", "combine",
                                                             "samples", "architecture", "members")}
    return Ensemble(members, manifest["task"], manifest["kind"], samples=manifest.get("samples", 1),
                    architecture=arch, about=about, scalers=scalers)


def _checked_manifest(manifest: dict, path: Path) -> dict:
    """``ensemble.json`` as :meth:`Ensemble.save` wrote it, field by field: an edited or damaged file is one
    UserError naming the field, not a KeyError, and member weights are read from inside the ensemble only."""
    def count(v, low):
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    def inside(name):  # a relative path that stays in the ensemble's directory
        return isinstance(name, str) and name and not Path(name).is_absolute() and ".." not in Path(name).parts

    arch = manifest.get("architecture")
    parts = arch if isinstance(arch, dict) else {}
    fields = {"kind": (manifest.get("kind"), lambda v: v in SAVED_KINDS, "one of " + ", ".join(SAVED_KINDS)),
              "task": (manifest.get("task"), lambda v: v in TASKS, "one of " + ", ".join(TASKS)),
              "samples": (manifest.get("samples", 1), lambda v: _PASSES.check(v)[0], _PASSES.allowed()),
              "architecture": (arch, lambda v: isinstance(v, dict), "an object"),
              "architecture.name": (parts.get("name"), lambda v: isinstance(v, str), "a model name"),
              "architecture.input_shape": (parts.get("input_shape"),
                                           lambda v: isinstance(v, list) and v and all(count(n, 1) for n in v),
                                           "a non-empty list of integers >= 1"),
              "architecture.num_outputs": (parts.get("num_outputs"), lambda v: count(v, 1), "an integer >= 1"),
              "architecture.options": (parts.get("options"), lambda v: isinstance(v, dict), "an object"),
              "members": (manifest.get("members"), lambda v: isinstance(v, list) and 0 < len(v) <= MAX_MEMBERS and all(
                  isinstance(e, dict) and inside(e.get("weights")) and isinstance(e.get("scaler") or {}, dict)
                  for e in v), f"a list of 1 to {MAX_MEMBERS} {{weights: a path inside the ensemble, scaler: an "
                  "object}")}
    for field, (value, ok, wanted) in fields.items():
        if not ok(value):
            raise UserError(f"{path}: {field} must be {wanted}, got {str(value)[:60]}; was it edited?")
    return manifest


class Combined(nn.Module):
    """An :class:`Ensemble` as one network, for code that takes a model (:func:`descend.load_run`, a trainer's
    ``evaluate``). Its output lives where one member's does, so the usual read-outs give the ensemble's answer:

    - classifiers: log p̄, the logarithm of the mean probabilities (softmax(log p̄) = p̄, its argmax is the
      ensemble's class, and the cross-entropy of it is the ensemble's negative log-likelihood); with one output
      (binary cross-entropy), logit(p̄₁), so that the sigmoid gives p̄₁ back;
    - regressors: the mean output.
    """

    def __init__(self, ensemble: Ensemble):
        super().__init__()
        self.ensemble = ensemble
        self.members = nn.ModuleList(ensemble.models)  # so that .to(), .eval() and parameters() reach them
        self.binary = ensemble.task == "classification" and (ensemble.architecture or {}).get("num_outputs") == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.ensemble.member_outputs(x).mean(0)
        if self.ensemble.task != "classification":
            return mean
        if self.binary:
            return torch.logit(mean[:, 1:], eps=1e-7)  # float32: 1 − 1e-7 is the last value below 1
        return mean.clamp_min(1e-12).log()


def _classification(probs: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    picked = probs.gather(1, y.long().view(-1, 1)).clamp_min(1e-12)
    return {"loss": -picked.log().mean().item(), "accuracy": (probs.argmax(1) == y).float().mean().item()}


def _regression(out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    return {"mse": (out - y.view_as(out)).pow(2).mean().item()}
