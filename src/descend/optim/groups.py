"""Which parameters get weight decay: parameter groups built from a model, tensors or group dicts.

Weight decay usually penalizes only the weights of connections, not the biases, which need less data to fit
and whose penalty can cause underfitting (Goodfellow, Bengio & Courville 2016, §7.1); normalisation layers'
scale and shift are left alone for the same reason. ``exclude_from_decay`` lists fnmatch patterns matched
against parameter names ("0.weight", "3.bias", "bn.weight"); the entry ``"<normalization>"`` means every
parameter of a normalisation module (BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm,
LocalResponseNorm), found by module type.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn

from descend.errors import UserError
from descend.optim.options import DEFAULT_EXCLUDE

NORMALIZATION_TOKEN = "<normalization>"
_NORM_TYPES: tuple[type, ...] = tuple(
    t for t in (getattr(nn.modules.batchnorm, "_NormBase", None), nn.LayerNorm, nn.GroupNorm,
                getattr(nn, "RMSNorm", None), nn.LocalResponseNorm) if t is not None)


def normalization_names(module: nn.Module) -> set[str]:
    """Names of the parameters owned directly by normalisation modules of ``module``."""
    names = set()
    for prefix, mod in module.named_modules():
        if isinstance(mod, _NORM_TYPES):
            for pname, _ in mod.named_parameters(recurse=False):
                names.add(f"{prefix}.{pname}" if prefix else pname)
    return names


def _excluded(name: str, patterns: list[str], norm: set[str]) -> bool:
    if NORMALIZATION_TOKEN in patterns and name in norm:
        return True
    return any(fnmatchcase(name, p) for p in patterns if p != NORMALIZATION_TOKEN)


def param_groups(params: Any, weight_decay: float, exclude: list[str]) -> list[dict[str, Any]]:
    """Split ``params`` into a decayed group and a ``weight_decay=0`` group.

    - an ``nn.Module`` or an iterable of ``(name, tensor)`` pairs: by name (and module type), as above;
    - an iterable of tensors: names are unknown; the default exclusion then takes tensors with ≤ 1 dimension
      (biases and normalisation scales); custom patterns need names and are refused;
    - an iterable of dicts (torch param groups): used as given; a group's own ``weight_decay`` wins.
    """
    if isinstance(params, torch.Tensor):
        raise UserError("params must be an nn.Module or an iterable of tensors, not a single tensor")
    norm: set[str] = set()
    if isinstance(params, nn.Module):
        norm = normalization_names(params)
        items: list[Any] = list(params.named_parameters())
    elif isinstance(params, Iterable):
        items = list(params)
    else:
        raise UserError(f"params must be an nn.Module, tensors or param-group dicts, "
                        f"got {type(params).__name__}")
    if not items:
        raise UserError("the optimizer got no parameters to optimize")
    if all(isinstance(i, dict) for i in items):
        return [dict(g) for g in items]
    named = all(isinstance(i, tuple) and len(i) == 2 and isinstance(i[0], str) for i in items)
    if not named and not all(isinstance(i, torch.Tensor) for i in items):
        raise UserError("params must be all tensors, all (name, tensor) pairs or all param-group dicts")
    tensors = [i[1] for i in items] if named else items
    if weight_decay == 0 or not exclude:
        return [{"params": tensors}]
    if named:
        mask = [_excluded(n, exclude, norm) for n, _ in items]
    elif sorted(exclude) == sorted(DEFAULT_EXCLUDE):
        mask = [t.ndim <= 1 for t in tensors]
    else:
        raise UserError("exclude_from_decay patterns match parameter names: pass the nn.Module (or "
                        "named_parameters()) instead of bare tensors, or leave exclude_from_decay at "
                        "its default")
    decay = [t for t, m in zip(tensors, mask, strict=True) if not m]
    keep = [t for t, m in zip(tensors, mask, strict=True) if m]
    groups = [{"params": decay}] if decay else []
    if keep:
        groups.append({"params": keep, "weight_decay": 0.0})
    return groups
