"""How much memory a request may take: checked before allocating, so an impossible size is one message.

A recipe can ask for sizes no machine holds (a model of 10¹² parameters, an IDX header promising terabytes);
allocating first ends in an allocator error or the OOM killer. Sizes are estimated from the request and compared
with :func:`memory_limit`: what this process may take (the machine's physical memory, lowered by a container's
cgroup limit and the process's address-space and data limits, ``ulimit -v`` / ``-d``), or
``$DESCEND_MEMORY_LIMIT`` (bytes, or with a K, M, G or T suffix) where set.
"""

from __future__ import annotations

import os

from descend.errors import UserError

try:
    import resource
except ImportError:  # Windows
    resource = None

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def memory_limit() -> int:
    """Bytes one request may take: ``$DESCEND_MEMORY_LIMIT`` where set, else the physical memory."""
    text = os.environ.get("DESCEND_MEMORY_LIMIT", "").strip().upper().removesuffix("B").removesuffix("I")
    if text:
        unit = text[-1] if text[-1] in _UNITS else ""
        try:
            limit = float(text.removesuffix(unit)) * _UNITS[unit]
        except ValueError:
            limit = float("nan")
        if not 0 < limit < 2**63:  # NaN, inf, zero and negative sizes too
            raise UserError(f"DESCEND_MEMORY_LIMIT must be a positive size in bytes (e.g. 8G), got "
                            f"{os.environ['DESCEND_MEMORY_LIMIT']!r}") from None
        return int(limit)
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): no limit known
        physical = 1 << 62
    return min([physical, *_process_limits()])


_CGROUP_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")  # v2, v1


def _process_limits() -> list[int]:
    """The cgroup memory limit (v2 or v1) and the soft address-space and data-segment limits, where set."""
    limits = []
    for name in _CGROUP_FILES:
        try:
            with open(name) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 62:  # "max" (v2) or a huge number (v1) mean none
            limits.append(int(text))
    if resource is not None:
        for which in (resource.RLIMIT_AS, resource.RLIMIT_DATA):
            soft = resource.getrlimit(which)[0]
            if soft != resource.RLIM_INFINITY and soft > 0:
                limits.append(soft)
    return limits


def size(nbytes: float) -> str:
    """Bytes in words: '3.7 GiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError


def check_fits_memory(what: str, nbytes: float, fix: str = "") -> None:
    """Refuse ``what`` when its estimated ``nbytes`` exceed :func:`memory_limit`, saying both."""
    limit = memory_limit()
    if nbytes > limit:
        raise UserError(f"{what} needs about {size(nbytes)}, more than the memory limit of {size(limit)} (physical "
                        f"memory, cgroup and ulimit limits, or $DESCEND_MEMORY_LIMIT){'; ' + fix if fix else ''}")
