"""Readers for the user's own data files (CSV, NPZ, IDX) and the atomic cache writer.

Every problem with a file (missing, unreadable, NaN or non-numeric cells, bad keys, a truncated IDX file)
raises one :class:`~descend.errors.UserError` that names the file and what is wrong; nothing is written.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from descend import atomic
from descend.errors import UserError
from descend.memory import check_fits_memory

# IDX type codes (LeCun's format): byte 3 of the magic number
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def is_idx_path(path: str | Path) -> bool:
    """Whether a file name looks like IDX: ``*.idx``, ``*.idx1``..``*.idx4``, ``*-ubyte`` (and ``.gz``)."""
    name = Path(path).name.lower().removesuffix(".gz")
    return name.endswith(("ubyte", ".idx")) or (
        len(name) > 5 and name[-5:-1] == ".idx" and name[-1].isdigit()
    )


def file_kind(path: str | Path) -> str | None:
    """``"csv"``, ``"npz"``, ``"idx"`` or ``None`` for a file name descend cannot read."""
    name = Path(path).name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".npz"):
        return "npz"
    if is_idx_path(name):
        return "idx"
    return None


def is_file(path: str | Path) -> bool:
    """Whether ``path`` is a file; a name the system refuses (too long, a NUL byte) is a UserError, not an
    OSError, so a mistyped path is one message."""
    p = Path(path).expanduser()
    try:
        return p.is_file()
    except (OSError, ValueError) as e:
        shown = str(p) if len(str(p)) <= 80 else f"{str(p)[:60]}...({len(str(p))} characters)"
        raise UserError(f"cannot use the path {shown!r}: {getattr(e, 'strerror', None) or e}") from None


def require_file(path: str | Path, what: str = "data file") -> Path:
    p = Path(path).expanduser()
    if not is_file(p):
        raise UserError(f"{what} not found: {str(p)!r}")
    return p


_CHUNK = 1 << 20


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzip-compressed) as a numpy array of its stored shape and type.

    Format: 2 zero bytes, 1 type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
    0x0E float64), 1 byte giving the number of dimensions n, then n big-endian int32 sizes, then the data.
    The header is checked first and the data streamed against it: a file (or a gzip stream) holding more or
    fewer bytes than its header says is refused without reading past what the header promises, and a header
    promising more than this machine's memory is refused before reading anything.
    """
    p = require_file(path, "IDX file")
    try:
        with (gzip.open(p, "rb") if p.name.lower().endswith(".gz") else open(p, "rb")) as f:
            return _read_idx_stream(p, f)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {str(p)!r}: {e}") from None


def _read_idx_stream(p: Path, f) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES or magic[3] == 0:
        raise UserError(f"{str(p)!r} is not an IDX file (bad magic number {magic.hex() or 'empty'})")
    ndim = magic[3]
    sizes = f.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise UserError(f"IDX file {str(p)!r} is truncated (header needs {4 + 4 * ndim} bytes, file has "
                        f"{4 + len(sizes)})")
    shape = tuple(int(s) for s in np.frombuffer(sizes, dtype=">i4"))
    if min(shape) < 0:
        raise UserError(f"IDX file {str(p)!r} has a negative size in its header {shape}")
    dtype = np.dtype(_IDX_DTYPES[magic[2]])
    expected = math.prod(shape) * dtype.itemsize
    header = 4 + 4 * ndim
    check_fits_memory(f"IDX file {str(p)!r} (header {shape})", expected)
    data = bytearray()
    while len(data) <= expected:  # one byte past the promise is enough to know the file holds more
        chunk = f.read(min(_CHUNK, expected + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) != expected:
        held = f"{header + len(data)}" if len(data) < expected else f"more than {header + expected}"
        raise UserError(f"IDX file {str(p)!r} has {held} bytes, its header {shape} says {header + expected}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def idx_labels_path(images: Path) -> Path:
    """The labels file conventionally beside an IDX images file (``images-idx3`` → ``labels-idx1``)."""
    return images.with_name(images.name.replace("images", "labels").replace("idx3", "idx1"))


def _column_index(spec: str | int, header: list[str] | None, ncols: int, option: str) -> int:
    if isinstance(spec, bool):
        raise UserError(f"{option} must be a column name or index, got {spec!r}")
    if isinstance(spec, int):
        if not -ncols <= spec < ncols:
            raise UserError(f"{option} column index {spec} is out of range for {ncols} columns")
        return spec % ncols
    if isinstance(spec, str):
        if header is None:
            raise UserError(
                f"{option} {spec!r} names a column, but the CSV file has no header row; "
                f"use a column index 0..{ncols - 1}"
            )
        if spec not in header:
            raise UserError(
                f"{option} {spec!r} is not a column of the CSV file; columns: {', '.join(header)}"
            )
        return header.index(spec)
    raise UserError(f"{option} must be a column name or index, got {spec!r}")


def is_number(cell: str) -> bool:
    """Whether a CSV cell reads as a number (as ``float`` reads it, so 'nan' and 'inf' count)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


MAX_CSV_COLUMNS = 1 << 20  # cells in one line: a table of features is narrower; wider is a wrong delimiter or junk
# memory per cell while a CSV file is read: a Python string in its row's list, then a float64 (and float32) value
_CSV_CELL_BYTES = 8 + 50 + 8 + 4


def check_csv_size(p: Path, delimiter: str = ",") -> None:
    """Refuse a CSV file before parsing it when a line holds more than :data:`MAX_CSV_COLUMNS` cells or its cells
    would take more memory than :func:`~descend.memory.memory_limit`: one streaming pass counts delimiters and
    line ends (quoted delimiters count too, so the estimate is an upper bound), in bounded memory."""
    sep = delimiter.encode("utf-8")
    cells = line = lines = 0  # cells so far, cells of the current line, lines ended
    try:
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK * 16):
                pieces = chunk.split(b"\n")
                for k, piece in enumerate(pieces):
                    line += piece.count(sep) + (1 if piece.strip() else 0)
                    if line > MAX_CSV_COLUMNS:
                        raise UserError(f"CSV file {str(p)!r} line {lines + 1} has more than {MAX_CSV_COLUMNS:,} "
                                        f"cells (separated by {delimiter!r}); descend reads tables of at most "
                                        f"{MAX_CSV_COLUMNS:,} columns: is the delimiter or the line ending wrong?")
                    if k < len(pieces) - 1:  # a line ends here
                        cells, lines, line = cells + line, lines + 1, 0
            cells, lines = cells + line, lines + (1 if line else 0)
    except OSError as e:
        raise UserError(f"cannot read CSV file {str(p)!r}: {e.strerror or e}") from None
    check_fits_memory(f"CSV file {str(p)!r} ({lines:,} lines, up to {cells:,} cells)",
                      p.stat().st_size + cells * _CSV_CELL_BYTES, "read a part of it, or store it as .npz")


def read_table(path: str | Path, *, delimiter: str = ",") -> tuple[Path, list[str] | None, list[list[str]]]:
    """``(path, header, rows)`` of a CSV file: the first row is a header when any of its cells is not a number;
    blank lines are skipped; every row must have as many cells as the first. A file too wide or too large for
    memory is refused before it is parsed (:func:`check_csv_size`)."""
    p = require_file(path, "CSV file")
    check_csv_size(p, delimiter)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f, delimiter=delimiter) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"cannot read CSV file {str(p)!r}: {e}") from None
    if not rows:
        raise UserError(f"CSV file {str(p)!r} is empty")
    header = None
    if not all(is_number(c) for c in rows[0]):
        header = [c.strip() for c in rows[0]]
        rows = rows[1:]
    if not rows:
        raise UserError(f"CSV file {str(p)!r} has a header but no data rows")
    twice = [name for name, count in Counter(header or []).items() if count > 1]
    if twice:  # columns are chosen and matched by name: a second one of a name would be silently ignored
        raise UserError(f"CSV file {str(p)!r} names the column {twice[0]!r} more than once in its header; "
                        "give each column its own name")
    ncols = len(header) if header is not None else len(rows[0])
    first_line = 2 if header is not None else 1
    for i, row in enumerate(rows):
        if len(row) != ncols:
            raise UserError(
                f"CSV file {str(p)!r} row {i + first_line} has {len(row)} cells, expected {ncols}"
            )
    return p, header, rows


def numeric_columns(
    p: Path, header: list[str] | None, rows: list[list[str]], cols: list[int]
) -> np.ndarray:
    """The cells of columns ``cols`` as float64 ``(rows, len(cols))``; an empty, non-numeric, NaN or infinite
    cell is an error naming its row and column."""
    first_line = 2 if header is not None else 1
    values = np.empty((len(rows), len(cols)), dtype=np.float64)
    for i, row in enumerate(rows):
        for k, j in enumerate(cols):
            cell = row[j].strip()
            name = header[j] if header is not None else str(j)
            try:
                v = float(cell)
            except ValueError:
                raise UserError(
                    f"CSV file {str(p)!r} row {i + first_line}, column {name!r}: {cell!r} is not a number"
                ) from None
            if not np.isfinite(v):
                raise UserError(
                    f"CSV file {str(p)!r} row {i + first_line}, column {name!r}: "
                    f"{cell!r} is not a finite number (NaN or infinite values are not allowed)"
                )
            values[i, k] = v
    return values


def read_csv(
    path: str | Path,
    *,
    target: str | int | None = None,
    features: list[str | int] | None = None,
    delimiter: str = ",",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(x, y, feature_names)`` from a CSV file.

    The first row is a header when any of its cells is not a number. ``target`` picks the label/target
    column by name or index (default: the last column); ``features`` picks the input columns (default: all
    other columns). Inputs are numbers, or a table with text columns or missing cells (empty, NA, NaN, ...) that
    :mod:`descend.data.tables` encodes; an infinite cell is an error naming its row and column. Targets are numbers,
    or text labels (``"setosa"``), which come back
    as a string array for :mod:`descend.data.labels` to encode.
    """
    p, header, rows = read_table(path, delimiter=delimiter)
    ncols = len(header) if header is not None else len(rows[0])
    if ncols < 2:
        raise UserError(f"CSV file {str(p)!r} needs at least 2 columns (inputs and a target), it has {ncols}")
    t = _column_index(-1 if target is None else target, header, ncols, "target")
    if features is None:
        cols = [c for c in range(ncols) if c != t]
    else:
        if isinstance(features, (str, int)) or not features:
            raise UserError(f"features must be a non-empty list of column names or indices, got {features!r}")
        cols = [_column_index(c, header, ncols, "features") for c in features]
        if t in cols:
            raise UserError(f"features must not contain the target column {target!r}")
        if len(set(cols)) != len(cols):  # a column twice is a mistake, and would be named twice in the run
            raise UserError(f"features names a column more than once: {features!r}")
    names = [header[c] if header is not None else f"x{c}" for c in cols]
    return feature_columns(p, header, rows, cols), target_column(p, header, rows, t), names


def feature_columns(p: Path, header: list[str] | None, rows: list[list[str]], cols: list[int]) -> np.ndarray:
    """Columns ``cols`` as float64 numbers where every cell is a finite number, else as a table of text cells
    for :class:`descend.data.tables.TableEncoder` (text columns, missing cells)."""
    cells = [[row[j].strip() for j in cols] for row in rows]
    if all(is_number(c) and c.lower() not in ("nan", "-nan", "+nan") for row in cells for c in row):
        return numeric_columns(p, header, rows, cols)  # infinite values are refused there, by row and column
    return np.array(cells, dtype=object).reshape(len(rows), len(cols))


def target_column(p: Path, header: list[str] | None, rows: list[list[str]], t: int) -> np.ndarray:
    """Column ``t`` as float64 numbers, or as a string array when any cell is text (class labels)."""
    labels = [row[t].strip() for row in rows]
    if all(is_number(cell) for cell in labels):
        return numeric_columns(p, header, rows, [t])[:, 0]
    empty = next((i for i, cell in enumerate(labels) if not cell), None)
    if empty is not None:
        first_line = 2 if header is not None else 1
        raise UserError(f"CSV file {str(p)!r} row {empty + first_line} has an empty target cell")
    return np.array(labels, dtype=str)


def csv_target(path: str | Path, target: str | int | None = None, *, delimiter: str = ",") -> np.ndarray:
    """The target column of a CSV file (by name or index; default the last), as :func:`read_csv` reads it."""
    p, header, rows = read_table(path, delimiter=delimiter)
    t = _column_index(-1 if target is None else target, header, len(rows[0]), "target")
    return target_column(p, header, rows, t)


def read_npz(path: str | Path, keys: list[str], *, optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (and those of ``optional`` that exist) of a ``.npz`` file, without pickle."""
    p = require_file(path, "NPZ file")
    try:
        with np.load(p, allow_pickle=False) as z:
            available = list(z.files)
            missing = [k for k in keys if k not in available]
            if missing:
                raise UserError(
                    f"NPZ file {str(p)!r} has no array {missing[0]!r}; its arrays: "
                    f"{', '.join(available) or '(none)'}"
                )
            wanted = [k for k in (*keys, *optional) if k in available]
            for k in wanted:  # a compressed array inflates to what its header says: checked before it is read
                check_fits_memory(f"array {k!r} of NPZ file {str(p)!r}", _npy_bytes(z.zip, k))
            return {k: z[k] for k in wanted}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        if isinstance(e, UserError):
            raise
        raise UserError(f"cannot read NPZ file {str(p)!r}: {e}") from None


def _npy_bytes(archive: zipfile.ZipFile, key: str) -> int:
    """The bytes array ``key`` of an NPZ archive takes once loaded, from its ``.npy`` header alone."""
    with archive.open(key if key in archive.namelist() else f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return math.prod(shape) * dtype.itemsize


def check_finite(name: str, array: np.ndarray) -> None:
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise UserError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise UserError(f"{name} has {bad} NaN or infinite values; remove or impute them first")


def check_float32_range(name: str, array: np.ndarray) -> None:
    """descend trains in float32: values beyond its range (about ±3.4e38) would become infinite."""
    if array.size and np.issubdtype(array.dtype, np.floating) and array.dtype.itemsize > 4:
        largest = float(np.abs(array).max())
        if largest > float(np.finfo(np.float32).max):
            raise UserError(f"{name} reach {largest:.3g}, beyond float32's range (±3.4e38) that training uses; "
                            "rescale them first")


def cache_dir() -> Path:
    """Where descend caches generated data: ``$DESCEND_CACHE`` or ``~/.cache/descend``."""
    return Path(os.environ.get("DESCEND_CACHE") or Path.home() / ".cache" / "descend").expanduser()


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as ``.npz`` atomically (see :mod:`descend.atomic`)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic.write_bytes(path, buffer.getbuffer(), what="data cache")
