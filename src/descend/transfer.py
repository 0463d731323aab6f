"""Transfer learning: start from a trained network's weights, then train the new task's head, or all of it.

The features of a network's early layers are general and transfer across tasks; the last ones are specific to
the task they were trained on (Yosinski et al. 2014, "How transferable are features in deep neural networks?").
The network is split into layer groups, one per weighted layer (Linear, Conv) with what follows it (batch norm,
activation, pooling, dropout); the last group is the head. ``mode``:

- ``"feature_extraction"``: the backbone (every group but the head) is frozen and only the head trains. With
  ``cache_features`` (default) the backbone runs **once** over every split (eval mode) and the head trains on the
  cached features, so an epoch costs only the head;
- ``"fine_tune"``: every layer trains, with discriminative learning rates (Howard & Ruder 2018, ULMFiT): the head
  at the optimizer's rate η, the transferred groups spaced geometrically from ``lr_scale``·η (the first group) up
  towards η (fastai's ``fine_tune`` uses slice(η/100, η), i.e. ``lr_scale = 0.01``);
- ``"gradual"`` (ULMFiT's gradual unfreezing): the head trains first; every ``unfreeze_every`` epochs one more
  group, from the top down, joins (at its discriminative rate).

Frozen batch-norm layers stay in eval mode by default (``train_batch_norm = false``, as Keras does): their
running statistics do not drift while their affine parameters are frozen. ``train_batch_norm = true`` keeps them
in train mode with trainable scale and shift, as fastai v1 did (``train_bn``). ``from`` is a run directory (its
``model.safetensors``), a weights file or a descend checkpoint; tensors match by name (``prefix`` strips a prefix
from the file's names), and every missing, unexpected or mis-shaped tensor is named in the error, except the
head's when the number of outputs differs (the head is then the new task's, freshly initialised;
``replace_head = true`` replaces it always). ``head_groups = n`` makes the top n groups the head (what feature
extraction trains; Yosinski et al. transfer the first layers and retrain the rest).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from . import atomic, optim
from .data import Batches, DataBundle, Split
from .ensemble import DROPOUT_LAYERS
from .errors import UserError
from .optim.groups import param_groups
from .options import Boolean, Either, OneOf, Option, Optional, Text, declare, integer, number, validate
from .train.callbacks import Callback
from .train.checkpoint import load_weights

__all__ = ["MODES", "TransferSpec", "create", "layer_groups", "load_pretrained", "freeze", "GradualUnfreezing",
           "CachedBackbone", "cache_features", "discriminative_optimizer", "prepare"]

MODES = ("feature_extraction", "fine_tune", "gradual")
_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd)
_BATCH_NORM = nn.modules.batchnorm._BatchNorm


@dataclass(frozen=True)
class TransferSpec:
    """A recipe's ``[transfer]`` section, checked (see the module's text)."""

    source: Path
    mode: str = "fine_tune"
    lr_scale: float = 0.01
    unfreeze_every: int = 1
    train_batch_norm: bool = False
    cache_features: bool = True
    replace_head: bool | str = "auto"
    prefix: str = ""
    head_groups: int = 1


@declare("transfer",
         Option("source", Text("a run directory or a .safetensors weights file", paths=True),
                doc="'from': a run directory (its model.safetensors) or a weights file"),
         Option("mode", OneOf(*MODES), doc="what trains: the head, everything, or more and more from the top"),
         Option("lr_scale", number(0, 1, closed="right"), doc="the first group's rate, × the head's"),
         Option("unfreeze_every", integer(1), doc="gradual: epochs between unfreezing groups"),
         Option("train_batch_norm", Boolean(), doc="frozen batch norm keeps training (fastai) instead of eval mode"),
         Option("cache_features", Boolean(), doc="feature extraction: run the frozen backbone once"),
         Option("replace_head", Either(OneOf("auto"), Boolean()), doc="auto: when the outputs differ"),
         Option("prefix", Optional(Text(), "no prefix"), doc="stripped from the file's tensor names"),
         Option("head_groups", integer(1), doc="layer groups from the top that form the head"))
def _spec(source: str, mode: str = "fine_tune", lr_scale: float = 0.01, unfreeze_every: int = 1,
          train_batch_norm: bool = False, cache_features: bool = True, replace_head: bool | str = "auto",
          prefix: str | None = None, head_groups: int = 1) -> TransferSpec:
    path = Path(source)  # a run directory's weights are read from inside it only (it may come from someone else)
    weights = atomic.inside(path, path / "model.safetensors", what="pretrained weights") if path.is_dir() else path
    return TransferSpec(weights, mode, lr_scale, unfreeze_every,
                        train_batch_norm, cache_features, replace_head, prefix or "", head_groups)


#: ``[transfer]``: ``from`` (the recipe's word for :func:`_spec`'s ``source``) and the other options of the transfer.
OPTIONS = tuple(replace(o, name="from") if o.name == "source" else o for o in _spec.options)


def create(**options) -> TransferSpec:
    """The transfer a recipe describes: ``from`` (required), ``mode``, ``lr_scale``, ``unfreeze_every``,
    ``train_batch_norm``, ``cache_features``, ``replace_head`` (auto, true, false), ``prefix``, ``head_groups``."""
    values = validate("transfer", OPTIONS, options)
    return _spec(values.pop("from"), **{k: v for k, v in values.items() if k in options})


# ------------------------------------------------------------------------------------------------ the network
def layer_groups(model: nn.Module, head_groups: int = 1) -> list[list[nn.Module]]:
    """The model's layer groups, bottom to top: a new group starts at each weighted layer (Linear, Conv) of a
    ``torch.nn.Sequential``; layers before the first (reshaping) join it. The last group is the head: the top
    ``head_groups`` groups together (1: the output layer alone)."""
    if not isinstance(model, nn.Sequential):
        raise UserError("transfer learning splits a torch.nn.Sequential into layer groups (descend's models are "
                        f"one); got {type(model).__name__}")
    groups: list[list[nn.Module]] = [[]]
    for layer in model:
        if isinstance(layer, _WEIGHTED) and any(isinstance(m, _WEIGHTED) for m in groups[-1]):
            groups.append([])
        groups[-1].append(layer)
    if len(groups) <= head_groups:
        raise UserError(f"transfer learning needs a backbone below the head: this model has {len(groups)} layer "
                        f"group(s) and head_groups = {head_groups}")
    cut = len(groups) - head_groups
    return [*groups[:cut], [m for g in groups[cut:] for m in g]]


def _names(model: nn.Module, modules: list[nn.Module]) -> set[str]:
    owned = {id(m) for m in modules}
    return {f"{prefix}.{name}" for prefix, m in model.named_modules() if id(m) in owned
            for name, _ in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]}


def load_pretrained(model: nn.Module, spec: TransferSpec) -> list[str]:
    """Load the pretrained weights into ``model``; returns the head's tensor names that were left as they were.

    Raises a UserError naming every missing, unexpected or mis-shaped tensor outside the head."""
    if not spec.source.is_file():
        raise UserError(f"transfer: no pretrained weights at {spec.source} (give a run directory with "
                        "model.safetensors, or a .safetensors file)")
    head = _names(model, layer_groups(model, spec.head_groups)[-1])
    fresh = {name: t.detach().clone() for name, t in model.state_dict().items() if name in head}
    report = load_weights(model, spec.source, prefix=spec.prefix)
    head_mismatch = [name for name, _, _ in report.mismatched if name in head]
    problems = [f"missing from the file: {', '.join(report.missing)}" if report.missing else "",
                f"in the file but not in the model: {', '.join(sorted(report.unexpected))}"
                if report.unexpected else "",
                "shape mismatch: " + ", ".join(f"{n} (model {tuple(e)}, file {tuple(f)})" for n, e, f
                                               in report.mismatched if n not in head)
                if len(head_mismatch) < len(report.mismatched) else "",
                "dtype mismatch: " + ", ".join(n for n, _, _ in report.dtype_mismatched)
                if report.dtype_mismatched else ""]
    problems = [p for p in problems if p]
    if head_mismatch and spec.replace_head is False:
        problems.append(f"the head differs ({', '.join(head_mismatch)}) and replace_head = false")
    if problems:
        raise UserError(f"transfer: the weights in {spec.source} do not fit this model: {'; '.join(problems)} "
                        "(the recipe's [model] must be the pretrained architecture; prefix= strips a name prefix)")
    if spec.replace_head is True:
        model.load_state_dict(fresh, strict=False)  # the new task's head, as initialised
        return sorted(fresh)
    return sorted(head_mismatch)  # left as initialised: their shapes are the new task's


def freeze(modules: list[nn.Module], *, train_batch_norm: bool = False) -> list:
    """Stop training ``modules``: no gradients; batch norm and dropout in eval mode (a forward pre-hook, so that
    the trainer's ``model.train()`` cannot undo it), so a frozen layer computes what it will at prediction time.
    Returns the hooks (``handle.remove()`` gives the mode back). With ``train_batch_norm`` the batch-norm layers
    stay trainable (train mode and affine parameters), as fastai v1 did."""
    hooks = []
    for module in modules:
        for m in module.modules():
            keep = train_batch_norm and isinstance(m, _BATCH_NORM)
            for p in m.parameters(recurse=False):
                p.requires_grad_(keep)
            if isinstance(m, DROPOUT_LAYERS) or isinstance(m, _BATCH_NORM) and not keep:
                hooks.append(m.register_forward_pre_hook(_eval_mode))
    return hooks


def _eval_mode(module: nn.Module, args) -> None:
    module.training = False


def unfreeze(modules: list[nn.Module], hooks: list) -> None:
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(True)
    for hook in hooks:
        hook.remove()


class GradualUnfreezing(Callback):
    """ULMFiT's gradual unfreezing: at the start of epoch e, the top 1 + ⌊e / every⌋ groups train (a function
    of the epoch alone, so a resumed run unfreezes the same groups)."""

    def __init__(self, groups: list[list[nn.Module]], every: int, train_batch_norm: bool = False):
        self.groups, self.every, self.train_batch_norm = groups, every, train_batch_norm
        self.hooks: list[list | None] = [None] * len(groups)  # None: the group trains; else its batch-norm hooks

    def on_fit_start(self, trainer) -> None:
        self._set(trainer.epoch)

    def on_epoch_start(self, trainer) -> None:
        self._set(trainer.epoch)

    def trainable(self, epoch: int) -> int:
        """How many groups, from the top, train in (0-based) ``epoch``."""
        return min(len(self.groups), 1 + epoch // self.every)

    def _set(self, epoch: int) -> None:
        first = len(self.groups) - self.trainable(epoch)
        for i, group in enumerate(self.groups):
            if i >= first and self.hooks[i] is not None:
                unfreeze(group, self.hooks[i])
                self.hooks[i] = None
            elif i < first and self.hooks[i] is None:
                self.hooks[i] = freeze(group, train_batch_norm=self.train_batch_norm)


# ------------------------------------------------------------------------------------------------ cached features
class CachedBackbone(nn.Sequential):
    """The whole network (same layers, same ``state_dict`` names); inputs shaped like the backbone's features
    (cached once by :func:`cache_features`) skip the frozen backbone and go straight to the head."""

    def __init__(self, model: nn.Sequential, head_start: int, feature_shape: tuple[int, ...]):
        super().__init__(*model)
        self.head_start, self.feature_shape = head_start, tuple(feature_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)[self.head_start:] if tuple(x.shape[1:]) == self.feature_shape else self
        for layer in layers:
            x = layer(x)
        return x


@torch.inference_mode()
def cache_features(backbone: nn.Module, split: Split | None, device: torch.device,
                   batch_size: int = 1024) -> Split | None:
    """The backbone's outputs (eval mode) for every sample of ``split``, as a new split on the CPU."""
    if split is None:
        return None
    was_training = backbone.training
    backbone.eval()
    outs = [backbone(x.to(device)).float().cpu() for x, _ in Batches(split, batch_size, shuffle=False).epoch(0)]
    backbone.train(was_training)
    return Split(torch.cat(outs), split.y, split.task, split.num_classes)


def discriminative_optimizer(spec, model: nn.Module, groups: list[list[nn.Module]], lr_scale: float):
    """The recipe's optimizer over ``model`` with group i of G (the head is G − 1) at lr · lr_scale^((G−1−i)/(G−1))
    (fastai's geometric spread of slice(lr·lr_scale, lr)); weight-decay exclusions apply as without groups."""
    options = dict(spec.options)
    lr, last = options["lr"], len(groups) - 1
    group_of = {id(p): i for i, g in enumerate(groups) for m in g for p in m.parameters()}
    split: dict[tuple[int, int], dict] = {}
    for d, decay_group in enumerate(param_groups(model, options.get("weight_decay", 0.0),
                                                 list(options.get("exclude_from_decay", ())))):
        for p in decay_group["params"]:
            i = group_of[id(p)]
            entry = split.setdefault((i, d), {**{k: v for k, v in decay_group.items() if k != "params"},
                                              "params": [], "lr": lr * lr_scale ** ((last - i) / last)})
            entry["params"].append(p)
    return optim.create(spec.name, [split[key] for key in sorted(split)], **options)


@dataclass
class Prepared:
    """What :func:`prepare` hands the experiment: the model, the data, the optimizer, the extra callbacks."""

    model: nn.Module
    data: DataBundle
    optimizer: object
    callbacks: list = field(default_factory=list)


def prepare(spec: TransferSpec, model: nn.Module, data: DataBundle, optimizer_spec, *, device="cpu",
            augment=None) -> Prepared:
    """Load, freeze and (feature extraction) cache, as ``spec`` says; used by :func:`descend.runs.experiment.build`."""
    load_pretrained(model, spec)
    groups = layer_groups(model, spec.head_groups)
    backbone = [m for g in groups[:-1] for m in g]
    if spec.mode == "fine_tune":
        return Prepared(model, data, discriminative_optimizer(optimizer_spec, model, groups, spec.lr_scale))
    if spec.mode == "gradual":
        return Prepared(model, data, discriminative_optimizer(optimizer_spec, model, groups, spec.lr_scale),
                        [GradualUnfreezing(groups, spec.unfreeze_every, spec.train_batch_norm)])
    freeze(backbone, train_batch_norm=spec.train_batch_norm)
    head_start = len(backbone)
    body = nn.Sequential(*backbone).to(device)
    feature_shape = tuple(cache_features(body, data.train.subset([0]), device).x.shape[1:])
    if not spec.cache_features or feature_shape == tuple(data.info.input_shape):
        return Prepared(model, data, optimizer_spec)
    if augment is not None or spec.train_batch_norm:
        raise UserError("transfer: cached features are computed once, so they cannot see [augment] or a "
                        "training batch norm; set cache_features = false to run the backbone every step")
    cached = DataBundle(*(cache_features(body, s, device) for s in (data.train, data.val, data.test)), data.info)
    return Prepared(CachedBackbone(model, head_start, feature_shape), cached, optimizer_spec)
