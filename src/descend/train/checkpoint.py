"""Checkpoints: the whole training state in one safetensors file, written atomically, read without pickle.

File format (one file, so that one atomic rename publishes a consistent checkpoint)::

    [8 bytes: header length N, little-endian u64][N bytes: JSON header][tensor bytes]

This is the `safetensors <https://github.com/huggingface/safetensors>`_ format unchanged, so any safetensors
reader opens a descend checkpoint. The JSON header lists every tensor (``dtype``, ``shape``,
``data_offsets``);
its ``__metadata__`` holds ``format = "descend-checkpoint"``, ``version = "1"`` and ``structure``: the nested
state as JSON, each tensor replaced by a reference ``{"tensor": name}``. Dicts are stored as ``{"dict": [[key,
value], ...]}`` so integer keys (torch optimizers' parameter ids) and key order survive, tuples as
``{"tuple": [...]}``, non-finite floats as ``{"float": "nan" | "inf" | "-inf"}``; lists, strings, ints, finite
floats, booleans and ``None`` are plain JSON.

Writing: a temporary file in the target's directory, flush + fsync, ``os.replace``, fsync of the directory. A
process killed at any moment leaves the previous file intact; a failed write (disk full, permission denied)
removes the temporary file and raises :class:`CheckpointError`.

Reading never executes code: no pickle, only JSON and raw little-endian tensor bytes. Every field is validated
(header size capped at :data:`MAX_HEADER_BYTES`, tensors must tile the data section exactly, each reference
must resolve, no tensor left unreferenced); any problem is a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from descend import atomic
from descend.errors import UserError

FORMAT = "descend-checkpoint"
VERSION = "1"
MAX_HEADER_BYTES = 100 * 2**20  # a checkpoint's JSON is kilobytes; a bigger claim is corruption or hostile
MAX_DEPTH = 200  # nesting of the saved structure; deeper is hostile (and would exhaust Python's stack)
MAX_DIMS = 64  # torch's own limit on tensor dimensions

_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "U16": torch.uint16,
    "I32": torch.int32, "U32": torch.uint32, "I64": torch.int64, "U64": torch.uint64,
    "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}  # fmt: skip
_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_FOREIGN = [
    (b"PK\x03\x04", "a zip archive, which is what torch.save writes (a pickle inside)"),
    (b"\x80", "a pickle"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x1f\x8b", "a gzip file"),
]


class CheckpointError(UserError):
    """A checkpoint or weights file could not be written or read; the message names the file and problem."""


# ----------------------------------------------------------------------------------------------- writing


def save(path: str | Path, state: dict) -> None:
    """Write ``state`` (nested dicts/lists/tuples of tensors and JSON scalars) atomically to ``path``.

    Tensors on any device are copied to the CPU as they are written; views of the same memory are stored
    once. The parent directory is created if needed. On any failure the previous file at ``path`` stays.
    """
    path = Path(path)
    if not isinstance(state, dict):
        raise CheckpointError(
            f"cannot save checkpoint {path}: the state must be a dict, got {type(state).__name__}"
        )
    encoder = _Encoder(path)
    structure = encoder.encode(state, "state", 0)
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "structure": json.dumps(structure, separators=(",", ":")),
    }
    _write_safetensors(path, encoder.tensors, metadata)


def save_weights(module_or_state_dict: nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> None:
    """Write a model's weights atomically as a plain safetensors file (what ``safetensors`` reads).

    Tensors that share memory (tied weights) are written once per name, as plain safetensors has no aliasing.
    """
    path = Path(path)
    sd = (
        module_or_state_dict.state_dict()
        if isinstance(module_or_state_dict, nn.Module)
        else module_or_state_dict
    )
    tensors = {}
    for name, t in sd.items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise CheckpointError(
                f"cannot save weights {path}: entry {name!r} must map a str name to a tensor, "
                f"got {type(name).__name__} -> {type(t).__name__}"
            )
        tensors[name] = _checked_tensor(t, path, name)
    _write_safetensors(path, tensors, {"format": "pt"})


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
            return {"tensor": self._add(_checked_tensor(obj, self.path, where), name)}
        if isinstance(obj, Mapping):
            items = []
            for key, value in obj.items():
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    raise self.fail(
                        where, f"has a key {key!r} of type {type(key).__name__}; keys must be str or int"
                    )
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


def _checked_tensor(t: torch.Tensor, path: Path, where: str) -> torch.Tensor:
    if t.layout != torch.strided or t.is_meta or t.dtype not in _NAMES:
        kind = t.dtype if t.dtype not in _NAMES else ("meta" if t.is_meta else t.layout)
        raise CheckpointError(
            f"cannot save {path}: {where} is a tensor of kind {kind}; a checkpoint holds dense tensors of "
            f"dtype {', '.join(str(d).removeprefix('torch.') for d in _DTYPES.values())}"
        )
    return t.detach()


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    # Largest elements first keeps every tensor aligned to its element size (the header is padded to 8 bytes).
    order = sorted(tensors, key=lambda n: -tensors[n].element_size())
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name in order:
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {
            "dtype": _NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)

    def chunks() -> Iterator[Any]:
        yield struct.pack("<Q", len(raw)) + raw
        for name in order:  # one tensor at a time on the host: a CUDA state is never copied whole
            cpu = tensors[name].to("cpu").contiguous()
            yield cpu.reshape(-1).view(torch.uint8).numpy()

    try:
        atomic.write_bytes(path, chunks(), what="checkpoint")
    except atomic.WriteError as e:
        raise CheckpointError(str(e)) from e


# ----------------------------------------------------------------------------------------------- reading


def load(path: str | Path, *, device: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save`; tensors are placed on ``device``. Never unpickles."""
    path = Path(path)
    device = _device(device)
    metadata, tensors = _read_safetensors(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not a descend checkpoint (no descend metadata); "
            "to take model weights from it use load_weights"
        )
    return _decode_checkpoint(path, metadata, tensors, device)


def _device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"device must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from e


def _decode_checkpoint(path: Path, metadata: dict, tensors: dict, device: torch.device) -> dict:
    if metadata.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {_short(metadata.get('version'))}; "
            f"this descend reads version {VERSION}"
        )
    if "structure" not in metadata:
        raise CheckpointError(f"{path} is corrupt: its metadata lacks the 'structure' entry")
    structure = _parse_json(path, metadata["structure"], "the structure in its metadata")
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
        raise CheckpointError(f"{path} is corrupt: tensors not referenced by its structure: {_names(unused)}")
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
            raise fail(f"refers to tensor {_short(value)}, which the file does not contain")
        used.add(value)
        return tensors[value]
    if tag == "tuple" and isinstance(value, list):
        return tuple(_decode(v, tensors, used, f"{where}[{i}]", depth + 1, path) for i, v in enumerate(value))
    if tag == "float" and value in ("nan", "inf", "-inf"):
        return float(value)
    if tag == "dict" and isinstance(value, list):
        out: dict = {}
        for item in value:
            if not (
                isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))
            ) or isinstance(item[0], bool):
                raise fail("has a dict item that is not a [str-or-int key, value] pair")
            key = item[0]
            if key in out:
                raise fail(f"has the key {_short(key)} twice")
            out[key] = _decode(item[1], tensors, used, f"{where}[{_short(key)}]", depth + 1, path)
        return out
    raise fail(f"has an unknown or malformed tag {_short(tag)}")


def _parse_json(path: Path, text: str | bytes, what: str) -> Any:
    def unique(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"duplicate key {k!r}")
            out[k] = v
        return out

    def no_constant(name):
        raise ValueError(f"non-standard constant {name}")

    try:
        return json.loads(text, object_pairs_hook=unique, parse_constant=no_constant)
    except RecursionError:
        raise CheckpointError(f"{path} is corrupt: {what} nests too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, int too long, duplicate keys
        raise CheckpointError(f"{path} is corrupt: {what} is not valid JSON ({e})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Validate and read a safetensors file: (metadata, tensors by name in header order)."""
    try:
        with open(path, "rb") as f:
            return _read_open(path, f, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint file {path}: {e.strerror or e}") from None


def _read_open(path: Path, f, size: int) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    start = f.read(16)

    def not_safetensors(problem: str) -> CheckpointError:
        hint = next((kind for magic, kind in _FOREIGN if start.startswith(magic)), None)
        hint = (
            f"; it looks like {hint}, which descend never loads (re-save the weights as safetensors)"
            if hint
            else ""
        )
        return CheckpointError(f"{path} is not a valid safetensors checkpoint: {problem}{hint}")

    if size < 8:
        raise not_safetensors(f"the file has only {size} bytes (truncated or empty)")
    (n,) = struct.unpack("<Q", start[:8])
    if n > MAX_HEADER_BYTES:
        raise not_safetensors(
            f"the header length field claims {n} bytes, over the {MAX_HEADER_BYTES} byte limit"
        )
    if 8 + n > size:
        raise not_safetensors(f"the header claims {n} bytes but only {size - 8} follow (truncated)")
    f.seek(8)
    raw = f.read(n)
    if len(raw) != n or not raw.startswith(b"{"):
        raise not_safetensors("the header is not a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise not_safetensors("the header is not UTF-8 text") from None
    header = _parse_json(path, text, "the header")
    if not isinstance(header, dict):
        raise not_safetensors("the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path} is corrupt: __metadata__ must map names to strings")
    body = size - 8 - n
    specs = {name: _tensor_spec(path, name, info) for name, info in header.items()}
    end = 0
    for name, (_, _, begin, stop) in sorted(specs.items(), key=lambda item: item[1][2:]):
        if begin != end:
            raise CheckpointError(
                f"{path} is corrupt: tensor {_short(name)} starts at byte {begin} of the data, not {end} "
                "(tensors overlap or leave a gap)"
            )
        end = stop
    if end != body:
        state = "truncated" if end > body else "corrupt"
        raise CheckpointError(
            f"{path} is {state}: its tensors take {end} bytes but the data section has {body} bytes"
        )
    tensors = {}
    for name, (dtype, shape, begin, stop) in specs.items():
        try:
            t = torch.empty(shape, dtype=dtype)
        except (RuntimeError, ValueError, OverflowError) as e:
            raise CheckpointError(
                f"{path} is corrupt: tensor {_short(name)} has an impossible shape {_short(shape)}: {e}"
            ) from None
        f.seek(8 + n + begin)
        if stop > begin and f.readinto(t.reshape(-1).view(torch.uint8).numpy()) != stop - begin:
            raise CheckpointError(f"{path} is truncated: tensor {_short(name)} ends past the end of the file")
        if dtype == torch.bool and stop > begin and t.view(torch.uint8).max() > 1:
            raise CheckpointError(
                f"{path} is corrupt: bool tensor {_short(name)} holds bytes other than 0 and 1"
            )
        tensors[name] = t
    return metadata, tensors


def _tensor_spec(path: Path, name: str, info: Any) -> tuple[torch.dtype, list[int], int, int]:
    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"{path} is corrupt: tensor {_short(name)} {problem}")

    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise fail("must be described by exactly 'dtype', 'shape' and 'data_offsets'")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise fail(f"has dtype {_short(dtype)}; known dtypes are {', '.join(_DTYPES)}")
    if not _ints(shape) or len(shape) > MAX_DIMS:
        raise fail(
            f"has shape {_short(shape)}; a shape is a list of at most {MAX_DIMS} non-negative integers"
        )
    if not _ints(offsets) or len(offsets) != 2 or offsets[0] > offsets[1]:
        raise fail(f"has data_offsets {_short(offsets)}; expected [begin, end] with 0 <= begin <= end")
    numel = math.prod(shape)
    itemsize = torch.empty((), dtype=_DTYPES[dtype]).element_size()
    if offsets[1] - offsets[0] != numel * itemsize:
        raise fail(
            f"of dtype {dtype} and shape {shape} needs {numel * itemsize} bytes, "
            f"but its data_offsets span {offsets[1] - offsets[0]}"
        )
    return _DTYPES[dtype], shape, offsets[0], offsets[1]


def _ints(values: Any) -> bool:
    return isinstance(values, list) and all(type(v) is int and v >= 0 for v in values)


def _short(value: Any, limit: int = 80) -> str:
    """repr of a value from a file, cut short: hostile files must not produce megabyte-long messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _names(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(_short(n)[1:-1] if len(n) > 80 else n for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# ----------------------------------------------------------------------------------------------- weights


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
            parts.append(f"missing from the file: {_names(self.missing)}")
        if self.unexpected:
            parts.append(f"in the file but not in the model: {_names(self.unexpected)}")
        if self.mismatched:
            parts.append("shape mismatch: " + _names(
                [f"{n} (model {tuple(e)}, file {tuple(f)})" for n, e, f in self.mismatched]
            ))  # fmt: skip
        if self.dtype_mismatched:
            parts.append("dtype mismatch: " + _names(
                [f"{n} (model {e}, file {f})" for n, e, f in self.dtype_mismatched]
            ))  # fmt: skip
        return "; ".join(parts)


def load_weights(
    model: nn.Module, path: str | Path, *, strict: bool = False, prefix: str = ""
) -> WeightsReport:
    """Copy matching tensors from a descend checkpoint (its ``"model"`` entry) or a plain safetensors file.

    ``prefix`` selects the file's tensors whose names start with it and strips it (``prefix="encoder."`` loads
    a sub-network's weights from a bigger model). Tensors match by name, shape and dtype; the others are named
    in the returned :class:`WeightsReport`. With ``strict=True`` any mismatch raises :class:`CheckpointError`
    listing all of them, and nothing is loaded.
    """
    path = Path(path)
    metadata, tensors = _read_safetensors(path)
    if metadata.get("format") == FORMAT:
        state = _decode_checkpoint(path, metadata, tensors, torch.device("cpu"))
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
            report.dtype_mismatched.append((name, _dtype_name(target.dtype), _dtype_name(found.dtype)))
        else:
            matched[name] = found
            report.loaded.append(name)
    if strict and not report.ok:
        raise CheckpointError(f"the weights in {path} do not match the model: {report}")
    model.load_state_dict(matched, strict=False)
    return report


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
