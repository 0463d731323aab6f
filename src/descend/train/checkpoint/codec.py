"""The state codec: a nested training state <-> one safetensors file (a JSON structure and a tensor table).

The file's ``__metadata__`` holds ``format = "descend-checkpoint"``, ``version = "1"`` and ``structure``: the
nested state as JSON, each tensor replaced by a reference ``{"tensor": name}`` into the file's tensors, named by
their place in the state (``model/0.weight``, ``optimizer/state/0/exp_avg``). Dicts are stored as ``{"dict":
[[key, value], ...]}`` so integer keys (torch optimizers' parameter ids) and key order survive, tuples as
``{"tuple": [...]}``, non-finite floats as ``{"float": "nan" | "inf" | "-inf"}``; lists, strings, ints, finite
floats, booleans and ``None`` are plain JSON.

A checkpoint never holds non-finite tensor values: :func:`save` refuses a state whose floating-point tensors hold
NaN or infinity (a step can make the weights infinite while the loss it computed was still finite). Decoding
checks every reference (it must resolve; no tensor may be left unreferenced) and the nesting depth; any problem is
a :class:`CheckpointError` naming the file. See :mod:`.container` for the bytes and :mod:`.validate` for the
check of a loaded state against a trainer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from descend.errors import DivergenceError, UserError

from . import container
from .container import CheckpointError, names, short

FORMAT = "descend-checkpoint"
VERSION = "1"
MAX_DEPTH = 200  # nesting of the saved structure; deeper is hostile (and would exhaust Python's stack)
_CHECKED_FINITE = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def save(path: str | Path, state: dict) -> None:
    """Write ``state`` (nested dicts/lists/tuples of tensors and JSON scalars) atomically to ``path``.

    Tensors on any device are copied to the CPU as they are written; views of the same memory are stored
    once. The parent directory is created if needed. On any failure the previous file at ``path`` stays.
    A state whose floating-point tensors hold NaN or infinity raises :class:`~descend.errors.DivergenceError`
    (exit code 3, like any divergence; a trainer with ``on_divergence="rollback"`` rolls back) and writes nothing.
    """
    path = Path(path)
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot save checkpoint {path}: the state must be a dict, got {type(state).__name__}")
    encoder = _Encoder(path)
    structure = encoder.encode(state, "state", 0)
    bad = non_finite(encoder.tensors)
    if bad:
        raise DivergenceError(
            f"refusing to write checkpoint {path}: {names(bad)} hold non-finite values (NaN or infinity) "
            "although the last loss checked was finite: training diverged. The previous checkpoint, if any, is "
            "kept. Try a lower learning rate or gradient clipping (clip_grad_norm)."
        )
    metadata = {"format": FORMAT, "version": VERSION, "structure": json.dumps(structure, separators=(",", ":"))}
    container.write(path, encoder.tensors, metadata, what="checkpoint")


def non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the floating-point tensors that hold NaN or infinity.

    CPU tensors are checked by NumPy (``isfinite``: single-threaded, one pass with no temporary tensor, and safe
    in a forked child, where torch's OpenMP pool deadlocks). Tensors on an
    accelerator are checked by one fused max-|x| per device (``torch._foreach_norm`` with ord=inf: NaN and inf
    propagate, large finite values do not overflow), with one host sync per device.
    """
    bad, by_device = [], {}
    for name, t in tensors.items():
        if t.dtype not in _CHECKED_FINITE or not t.numel():
            continue
        if t.device.type != "cpu":
            by_device.setdefault(t.device, []).append(name)
        elif t.dtype == torch.bfloat16:  # NumPy has no bfloat16: all exponent bits set is inf or NaN
            if ((t.detach().view(torch.int16).numpy() & 0x7F80) == 0x7F80).any():
                bad.append(name)
        elif not np.isfinite(t.detach().numpy()).all():
            bad.append(name)
    for group in by_device.values():
        maxima = torch._foreach_norm([tensors[n].detach() for n in group], ord=math.inf)
        if not bool(torch.stack([m.float() for m in maxima]).isfinite().all()):  # note: a CPU-GPU sync point
            bad += [n for n, m in zip(group, maxima, strict=True) if not math.isfinite(float(m))]
    return bad


class _Encoder:
    """Turns the nested state into JSON with tensor references, collecting the tensors by readable names."""

    def __init__(self, path: Path):
        self.path = path
        self.tensors: dict[str, torch.Tensor] = {}
        self._seen: dict[tuple, str] = {}

    def fail(self, where: str, problem: str) -> CheckpointError:
        return CheckpointError(f"cannot save checkpoint {self.path}: {where} {problem}")

    def encode(self, obj: Any, where: str, depth: int, name: tuple = ()) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(where, f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(obj, np.generic) and not isinstance(obj, np.ndarray):
            obj = obj.item()  # numpy scalars are saved as the Python scalars they equal
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            if math.isfinite(obj):
                return float(obj)
            return {"float": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
        if isinstance(obj, torch.Tensor):
            return {"tensor": self._add(container.checked_tensor(obj, self.path, where), name)}
        if isinstance(obj, Mapping):
            items = []
            for key, value in obj.items():
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    raise self.fail(where, f"has a key {key!r} of type {type(key).__name__}; keys must be str or int")
                key = str(key) if isinstance(key, str) else int(key)
                items.append([key, self.encode(value, f"{where}[{key!r}]", depth + 1, (*name, str(key)))])
            return {"dict": items}
        if isinstance(obj, (list, tuple)):
            values = [self.encode(v, f"{where}[{i}]", depth + 1, (*name, str(i))) for i, v in enumerate(obj)]
            return values if isinstance(obj, list) else {"tuple": values}
        raise self.fail(
            where,
            f"has type {type(obj).__name__}; a checkpoint holds tensors, dicts, lists, tuples, "
            "str, int, float, bool and None",
        )

    def _add(self, t: torch.Tensor, name: tuple) -> str:
        key = None
        if t.numel() > 0:  # identical views of the same memory are stored once and come back as one tensor
            key = (t.device, t.dtype, t.data_ptr(), tuple(t.shape), t.stride())
            if key in self._seen:
                return self._seen[key]
        base = "/".join(name) or "tensor"
        unique, n = base, 1
        while unique in self.tensors or unique == "__metadata__":
            unique, n = f"{base}~{n}", n + 1
        self.tensors[unique] = t
        if key is not None:
            self._seen[key] = unique
        return unique


def load(path: str | Path, *, device: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save`; tensors are placed on ``device``. Never unpickles."""
    path = Path(path)
    device = _device(device)
    metadata, tensors = container.read(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a descend checkpoint (no descend metadata); "
            "to take model weights from it use load_weights"
        )
    return decode(path, metadata, tensors, device)


def _device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from e


def decode(path: Path, metadata: dict, tensors: dict, device: torch.device) -> dict:
    """The state a descend checkpoint's metadata and tensors describe, with the tensors moved to ``device``."""
    if metadata.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {short(metadata.get('version'))}; "
            f"this descend reads version {VERSION}"
        )
    if "structure" not in metadata:
        raise CheckpointError(f"{path} is corrupt: its metadata lacks the 'structure' entry")
    structure = container.parse_json(path, metadata["structure"], "the structure in its metadata")
    try:
        moved = {name: t.to(device) for name, t in tensors.items()}
    except (RuntimeError, AssertionError) as e:
        raise UserError(f"cannot place the tensors of {path} on device {str(device)!r}: {e}") from e
    used: set[str] = set()
    state = _decode(structure, moved, used, "state", 0, path)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is corrupt: the saved state is a {type(state).__name__}, not a dict")
    unused = [name for name in tensors if name not in used]
    if unused:
        raise CheckpointError(f"{path} is corrupt: tensors not referenced by its structure: {names(unused)}")
    return state


def _decode(node: Any, tensors: dict, used: set, where: str, depth: int, path: Path) -> Any:
    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"{path} is corrupt: {where} {problem}")

    if depth > MAX_DEPTH:
        raise fail(f"nests deeper than {MAX_DEPTH} levels")
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, list):
        return [_decode(v, tensors, used, f"{where}[{i}]", depth + 1, path) for i, v in enumerate(node)]
    if not isinstance(node, dict) or len(node) != 1:
        raise fail("is neither a JSON value nor a single-key tagged object")
    ((tag, value),) = node.items()
    if tag == "tensor":
        if not isinstance(value, str) or value not in tensors:
            raise fail(f"refers to tensor {short(value)}, which the file does not contain")
        used.add(value)
        return tensors[value]
    if tag == "tuple" and isinstance(value, list):
        return tuple(_decode(v, tensors, used, f"{where}[{i}]", depth + 1, path) for i, v in enumerate(value))
    if tag == "float" and value in ("nan", "inf", "-inf"):
        return float(value)
    if tag == "dict" and isinstance(value, list):
        out: dict = {}
        for item in value:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))) or isinstance(
                item[0], bool
            ):
                raise fail("has a dict item that is not a [str-or-int key, value] pair")
            key = item[0]
            if key in out:
                raise fail(f"has the key {short(key)} twice")
            out[key] = _decode(item[1], tensors, used, f"{where}[{short(key)}]", depth + 1, path)
        return out
    raise fail(f"has an unknown or malformed tag {short(tag)}")
