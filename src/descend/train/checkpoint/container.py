"""The byte container: one safetensors file, written and read through the ``safetensors`` library.

File layout (`safetensors <https://github.com/huggingface/safetensors>`_, unchanged, so any safetensors reader
opens a descend file)::

    [8 bytes: header length N, little-endian u64][N bytes: JSON header][tensor bytes]

Writing: ``safetensors.torch.save(tensors, metadata)`` gives the file's bytes and :func:`descend.atomic.write_bytes`
publishes them (temporary file, fsync, rename), so a process killed at any moment leaves the previous file intact.
Tensors are copied to the CPU first (a CUDA state is copied whole), and views that share memory are stored as
copies of their own.

Reading never executes code (no pickle). The library validates the header (JSON, dtypes, shapes, offsets that
tile the data section exactly, no trailing bytes, metadata of strings, header size) and memory-maps the file;
each tensor is copied out of the map at once, so no loaded tensor stays backed by the file (a file truncated in
place later would otherwise fault the process with SIGBUS when the tensor is next touched). Around
it, descend checks what the library does not, each a :class:`CheckpointError` naming the file:

- before: a file shorter than 8 bytes, a header length over :data:`MAX_HEADER_BYTES` or past the end of the file,
  tensor data larger than :func:`~descend.memory.memory_limit` (a :class:`~descend.errors.UserError`),
  and a hint when the file is something descend never loads (a ``torch.save`` zip, a pickle, ``.npy``, HDF5, gzip);
- after: the same name twice in the header, tensor entries with fields other than ``dtype``, ``shape`` and
  ``data_offsets``, and bool tensors holding bytes other than 0 and 1.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open

from descend import atomic
from descend.errors import CheckpointError, short
from descend.memory import check_fits_memory

MAX_HEADER_BYTES = 100 * 2**20  # a checkpoint's JSON is kilobytes; a bigger claim is corruption or hostile
DTYPES = (
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32, torch.uint32, torch.int64,
    torch.uint64, torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.float8_e4m3fn,
    torch.float8_e5m2,
)  # fmt: skip
_FOREIGN = [
    (b"PK\x03\x04", "a zip archive, which is what torch.save writes (a pickle inside)"),
    (b"\x80", "a pickle"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x1f\x8b", "a gzip file"),
]
_TENSOR_FIELDS = {"dtype", "shape", "data_offsets"}


def names(items: list[str], limit: int = 20) -> str:
    """A list of names for a message: the first ``limit``, each cut short, and how many more."""
    shown = ", ".join(short(n)[1:-1] if len(n) > 80 else n for n in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def checked_tensor(t: torch.Tensor, path: Path, where: str) -> torch.Tensor:
    """``t`` detached, if the container can hold it: dense, not meta, of one of :data:`DTYPES`."""
    if t.layout != torch.strided or t.is_meta or t.dtype not in DTYPES:
        kind = t.dtype if t.dtype not in DTYPES else ("meta" if t.is_meta else t.layout)
        raise CheckpointError(
            f"cannot save {path}: {where} is a tensor of kind {kind}; a checkpoint holds dense tensors of "
            f"dtype {', '.join(dtype_name(d) for d in DTYPES)}"
        )
    return t.detach()


def parse_json(path: Path, text: str | bytes, what: str) -> Any:
    """Strict JSON: duplicate keys and NaN/Infinity constants are errors, as is nesting past Python's stack."""

    def unique(pairs):
        out = {}
        for k, v in pairs:
            if k in out:
                raise ValueError(f"duplicate key {short(k)}")
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


# ----------------------------------------------------------------------------------------------- writing


def write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], *, what: str) -> None:
    """Write ``tensors`` (names to :func:`checked_tensor` tensors) and string ``metadata`` atomically."""
    try:
        data = safetensors.torch.save(_owned(tensors), metadata)
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot save {path}: {e}") from e
    header_end = 8 + struct.unpack("<Q", data[:8])[0]
    view = memoryview(data)
    try:  # header, then tensor bytes: a writer killed between them leaves only its temporary file
        atomic.write_bytes(path, (view[:header_end], view[header_end:]), what=what)
    except atomic.WriteError as e:
        raise CheckpointError(str(e)) from e


def _owned(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU tensors, each contiguous and alone in its storage (the library refuses views that share memory)."""
    out, storages = {}, set()
    for name, t in tensors.items():
        t = t.to("cpu")
        storage = t.untyped_storage()
        if storage.data_ptr() in storages or storage.nbytes() != t.nbytes or not t.is_contiguous():
            t = t.clone(memory_format=torch.contiguous_format)
        if t.nbytes:
            storages.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


# ----------------------------------------------------------------------------------------------- reading


def read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Validate and read a safetensors file: (metadata, CPU tensors by name in header order)."""
    header_bytes = _precheck(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            header = parse_json(path, header_bytes, "the header")
            order = [name for name in header if name != "__metadata__"]
            tensors = {name: _copied(path, name, f.get_tensor(name)) for name in order}
    except CheckpointError:
        raise
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file: {_library_message(e)}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint file {path}: {e.strerror or e}") from None
    for name in order:
        if not isinstance(header[name], dict) or set(header[name]) != _TENSOR_FIELDS:
            raise CheckpointError(
                f"{path} is corrupt: tensor {short(name)} must be described by exactly 'dtype', 'shape' and "
                "'data_offsets'"
            )
    return metadata, tensors


def _copied(path: Path, name: str, mapped: torch.Tensor) -> torch.Tensor:
    """The tensor copied out of the memory map; a bool tensor's bytes are checked first (a copy normalizes them)."""
    if mapped.dtype == torch.bool and mapped.numel() and mapped.view(torch.uint8).max() > 1:
        raise CheckpointError(f"{path} is corrupt: bool tensor {short(name)} holds bytes other than 0 and 1")
    return mapped.clone()


def _library_message(e: Exception) -> str:
    text = str(e).removeprefix("Error while deserializing header: ")
    if "incomplete metadata, file not fully covered" in text:
        return "its tensors do not cover the data section exactly (the file is truncated or has extra bytes)"
    return text if len(text) <= 300 else text[:297] + "..."


def _precheck(path: Path) -> bytes:
    """What the library does not name: foreign formats, an impossible header length. Returns the header."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
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
            # every tensor is copied out of the file: its data section must fit in memory (a sparse file of
            # 1 TiB with a consistent header would otherwise end in the allocator's MemoryError)
            check_fits_memory(f"checkpoint file {path} ({size - 8 - n:,} bytes of tensors)", size - 8 - n,
                              "load it on a machine with more memory")
            f.seek(8)
            return f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} does not exist") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint file {path}: {e.strerror or e}") from None
