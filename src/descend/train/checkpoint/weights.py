"""Model weights: write them as a plain safetensors file, load matching tensors from any safetensors file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import codec, container
from .container import CheckpointError, dtype_name, names


def save_weights(module_or_state_dict: nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write a model's weights atomically as a plain safetensors file (what ``safetensors`` reads).

    Tensors that share memory (tied weights) are written once per name, as plain safetensors has no aliasing.
    """
    path = Path(path)
    sd = module_or_state_dict.state_dict() if isinstance(module_or_state_dict, nn.Module) else module_or_state_dict
    tensors = {}
    for name, t in sd.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise CheckpointError(
                f"cannot save weights {path}: entry {name!r} must map a str name to a tensor, "
                f"got {type(name).__name__} -> {type(t).__name__}"
            )
        tensors[name] = container.checked_tensor(t, path, name)
    container.write(path, tensors, {"format": "pt"}, what="checkpoint")


@dataclass
class WeightsReport:
    """What :func:`load_weights` found: names the model has and the file lacks, and the other way round, and
    tensors whose shape or dtype differ (``(name, expected, found)``). Everything else was loaded."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dtype_mismatched: list[tuple[str, str, str]] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched or self.dtype_mismatched)

    def __str__(self) -> str:
        total = len(self.loaded) + len(self.missing) + len(self.mismatched) + len(self.dtype_mismatched)
        parts = [f"loaded {len(self.loaded)} of {total} model tensors"]
        if self.missing:
            parts.append(f"missing from the file: {names(self.missing)}")
        if self.unexpected:
            parts.append(f"in the file but not in the model: {names(self.unexpected)}")
        if self.mismatched:
            parts.append("shape mismatch: " + names(
                [f"{n} (model {tuple(e)}, file {tuple(f)})" for n, e, f in self.mismatched]
            ))  # fmt: skip
        if self.dtype_mismatched:
            parts.append("dtype mismatch: " + names(
                [f"{n} (model {e}, file {f})" for n, e, f in self.dtype_mismatched]
            ))  # fmt: skip
        return "; ".join(parts)


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = False, prefix: str = "") -> WeightsReport:
    """Copy matching tensors from a descend checkpoint (its ``"model"`` entry) or a plain safetensors file.

    ``prefix`` selects the file's tensors whose names start with it and strips it (``prefix="encoder."`` loads
    a sub-network's weights from a bigger model). Tensors match by name, shape and dtype (nothing is cast); the
    others are named in the returned :class:`WeightsReport`. With ``strict=True`` any mismatch raises
    :class:`CheckpointError` listing all of them, and nothing is loaded. A file none of whose tensors match
    (the weights of a different model) raises :class:`CheckpointError` with the report, strict or not.
    """
    path = Path(path)
    metadata, tensors = container.read(path)
    if metadata.get("format") == codec.FORMAT:
        state = codec.decode(path, metadata, tensors, torch.device("cpu"))
        source = state.get("model")
        if not isinstance(source, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in source.items()
        ):
            raise CheckpointError(f"checkpoint {path} has no 'model' entry mapping names to tensors")
    else:
        source = tensors
    if prefix:
        source = {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
    expected = model.state_dict()
    report = WeightsReport(
        missing=[k for k in expected if k not in source],
        unexpected=[k for k in source if k not in expected],
    )
    matched = {}
    for name, target in expected.items():
        if name not in source:
            continue
        found = source[name]
        if found.shape != target.shape:
            report.mismatched.append((name, tuple(target.shape), tuple(found.shape)))
        elif found.dtype != target.dtype:
            report.dtype_mismatched.append((name, dtype_name(target.dtype), dtype_name(found.dtype)))
        else:
            matched[name] = found
            report.loaded.append(name)
    if expected and not report.loaded:
        raise CheckpointError(
            f"the weights in {path} are not for this model: none of its {len(source)} tensors"
            f"{f' under prefix {prefix!r}' if prefix else ''} matches one of the model's {len(expected)} "
            f"by name, shape and dtype ({report})"
        )
    if strict and not report.ok:
        raise CheckpointError(f"the weights in {path} do not match the model: {report}")
    model.load_state_dict(matched, strict=False)
    return report
