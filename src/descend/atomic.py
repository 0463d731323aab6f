"""One atomic writer for every file descend writes: checkpoints, weights, summaries, recipes, cached data; and
the reader of the JSON files it wrote (:func:`read_json`, :func:`read_jsonl`), for which a file that is not what
descend writes (edited, truncated, not JSON, too large for memory) is one :class:`~descend.errors.UserError`.

A file is written to a temporary name in its own directory, flushed and fsynced, renamed over the target with
``os.replace`` and the directory fsynced, so a process killed at any moment leaves either the previous file or
the complete new one, never a torn one. A failed write (disk full, permission denied) removes the temporary file,
keeps the previous file and raises :class:`WriteError`, a :class:`~descend.errors.UserError` naming the file and
the reason. Temporary files left by killed writers are removed by the next write to the same path.

A run directory may come from someone else (an archive, a shared disk), so its files are used only where they
are: :func:`inside` refuses a path that a symbolic link leads out of its directory, :func:`links_out` finds every
such link in a directory, and :func:`append_text` never appends through a link (``O_NOFOLLOW``). An atomic
write replaces a link at the target's name by the new file; it never writes through it.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from descend.errors import UserError
from descend.memory import check_fits_memory

_CHUNK = 2**24  # bytes per os.write call


class WriteError(UserError):
    """A file could not be written; the message names the file and the reason, and the previous file is kept."""


def write_bytes(path: str | Path, chunks: bytes | Iterable[Any], *, what: str = "file") -> None:
    """Write ``chunks`` (bytes, or an iterable of buffers written in order) atomically to ``path``."""
    path = Path(path)
    directory = path.parent
    tmp = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        for chunk in [chunks] if isinstance(chunks, (bytes, bytearray, memoryview)) else chunks:
            view = memoryview(chunk).cast("B")
            while view:
                written = os.write(fd, view[:_CHUNK])
                if written <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                view = view[written:]
        os.fsync(fd)
        os.close(fd)
        fd = None
        os.replace(tmp, path)
    except BaseException as e:
        if fd is not None:
            _quietly(os.close, fd)
        _quietly(os.unlink, tmp)
        if isinstance(e, OSError):
            raise WriteError(_failure(path, e, what)) from e
        raise
    _fsync_directory(directory)
    _remove_stale_temps(path)


def inside(root: str | Path, path: str | Path, *, what: str = "file") -> Path:
    """``path`` as given, once checked that it stays inside the directory ``root`` with every symbolic link on
    its way followed (links that stay inside are fine; ``root`` itself may be a link). A path that leaves it is a
    :class:`UserError` naming the link's target: descend reads and writes a run's files only inside its run."""
    path, real_root = Path(path), os.path.realpath(root)
    real = os.path.realpath(path)
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise UserError(f"the {what} {str(path)!r} leads outside {str(root)!r} (a symbolic link to {real!r}): "
                        "descend neither reads nor writes a run's files through a link that leaves its directory; "
                        "put the file itself there, or remove the link")
    return path


def links_out(root: str | Path) -> list[str]:
    """The symbolic links in the directory tree ``root`` (links not followed) that lead outside it."""
    found = []
    for directory, subdirs, files in os.walk(root):
        for name in subdirs + files:
            entry = os.path.join(directory, name)
            if os.path.islink(entry):
                try:
                    inside(root, entry)
                except UserError:
                    found.append(os.path.relpath(entry, root))
    return sorted(found)


def refuse_links_out(root: str | Path, *, what: str = "run directory") -> None:
    """A :class:`UserError` naming the links of :func:`links_out` when ``root`` holds any: a directory that may
    come from someone else is used only where it is."""
    leaving = links_out(root)
    if leaving:
        shown = ", ".join(leaving[:5]) + (f" and {len(leaving) - 5} more" if len(leaving) > 5 else "")
        raise UserError(f"the {what} {str(root)!r} holds symbolic links that lead outside it ({shown}); descend "
                        "neither reads nor writes its files through them (it may come from someone else): put the "
                        "files themselves there, or remove the links")


def append_text(path: str | Path, text: str, *, what: str = "file") -> None:
    """Append ``text`` (UTF-8) to ``path`` (created if missing), never through a symbolic link at ``path``."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UserError(f"could not append to the {what} {path}: it is a symbolic link (to "
                            f"{os.readlink(path)!r}); descend never writes through a link: remove it") from None
        raise WriteError(_failure(Path(path), e, what)) from e
    try:
        view = memoryview(text.encode("utf-8"))
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        raise WriteError(_failure(Path(path), e, what)) from e
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str, *, what: str = "file") -> None:
    """Write ``text`` (UTF-8) atomically to ``path``."""
    write_bytes(path, text.encode("utf-8"), what=what)


def write_json(path: str | Path, value: Any, *, what: str = "file") -> None:
    """Write ``value`` as indented JSON (with a final newline) atomically to ``path``."""
    write_text(path, json.dumps(value, indent=2) + "\n", what=what)


def read_json(path: str | Path, *, what: str = "file", kind: type = dict) -> Any:
    """The JSON value in ``path``, which must be a ``kind`` (an object by default); a file that is missing,
    unreadable, not JSON, nested past Python's recursion limit or of another kind is a :class:`UserError`."""
    if Path(path).is_file():
        _check_size(Path(path), what)
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        reason = getattr(e, "strerror", None) or ("nested too deeply" if isinstance(e, RecursionError) else e)
        raise UserError(f"cannot read the {what} {str(path)!r}: {reason}") from None
    if not isinstance(value, kind):
        raise UserError(f"the {what} {str(path)!r} is not what descend writes: it holds a JSON "
                        f"{type(value).__name__}, not {'an object' if kind is dict else 'a ' + kind.__name__}")
    return value


def read_jsonl(path: str | Path, *, what: str = "file") -> list[dict]:
    """The JSON objects of ``path``, one a line (blank lines skipped; no file: none); a line that is not a JSON
    object is a :class:`UserError` naming the line."""
    if Path(path).is_file():
        _check_size(Path(path), what)
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines() if Path(path).exists() else []
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read the {what} {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            row = None
        if not isinstance(row, dict):
            raise UserError(f"the {what} {str(path)!r} line {number} is not a JSON object: was the file edited?")
        rows.append(row)
    return rows


_JSON_BYTES_PER_BYTE = 16  # Python objects parsed from JSON text: up to ~16 bytes of memory per byte of text


def _check_size(path: Path, what: str) -> None:
    """Refuse a JSON file whose parsed value would not fit in memory, before reading it (a file that is not what
    descend writes may be of any size)."""
    check_fits_memory(f"the {what} {str(path)!r} ({path.stat().st_size:,} bytes)",
                      path.stat().st_size * _JSON_BYTES_PER_BYTE)


def _failure(path: Path, e: OSError, what: str) -> str:
    reasons = {
        errno.ENOSPC: "the disk is full (no space left on device); free space or write the run elsewhere",
        errno.EDQUOT: "the disk quota is exceeded; free space or write the run elsewhere",
        errno.EACCES: f"permission denied; check that {path.parent} is writable",
        errno.EPERM: f"operation not permitted; check that {path.parent} is writable",
        errno.EROFS: f"{path.parent} is on a read-only file system",
    }
    reason = reasons.get(e.errno, e.strerror or str(e))
    return f"could not write {what} {path}: {reason}. The previous file at that path, if any, is unchanged"


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable. Best effort: the new file is already complete and in place."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    """Remove temporary files that killed writers left next to ``path`` (their process no longer exists)."""
    if os.name != "posix":
        return
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2 :].split(".")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            _quietly(os.unlink, tmp)
        except OSError:
            pass


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:
        pass
