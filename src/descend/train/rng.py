"""Random-number streams as checkpointable data: capture them all, restore them all.

A resumed run draws the same random numbers as one that never stopped only if every stream it uses continues
where it was: Python's ``random`` (Mersenne Twister: 624 words + position, and the cached Gaussian), NumPy's
global ``RandomState`` (the same generator, its own copy), torch's CPU generator and each CUDA device's
(Philox seed + offset). The captured state holds only JSON values and uint8 tensors, so
:func:`descend.train.checkpoint.save` stores it without pickle.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch

from descend.errors import CheckpointError

_MT_WORDS = 624


def capture() -> dict:
    """The state of every global random stream: ``python``, ``numpy``, ``torch``, ``cuda`` (one per device).

    CUDA streams are captured once CUDA is initialized (before that no CUDA random number has been drawn).
    """
    version, internal, gauss_next = random.getstate()
    np_state = np.random.get_state(legacy=False)
    cuda = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda = [s.clone() for s in torch.cuda.get_rng_state_all()]
    return {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": np_state["state"]["key"].tolist(),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def seed_torch(seed: int) -> None:
    """``torch.manual_seed(seed)``: the CPU generator and every GPU's, the same streams.

    torch's own function also queues a deferred seeding, with a recorded stack trace, for each back-end it was
    built for and this machine lacks (CUDA, XPU, MTIA on a CPU-only machine), work that showed in the fixed cost
    of short fits. Here only the back-ends present are seeded.
    """
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        torch.mps.manual_seed(seed)


def restore(state: dict) -> None:
    """Put every stream back where :func:`capture` found it; the next draws repeat exactly.

    The whole state is validated before any stream changes; a malformed one raises :class:`CheckpointError`.
    CUDA states for devices this machine lacks are skipped with a warning (a run resumed on fewer GPUs).
    """
    python, numpy_state, cpu, cuda = validated(state)
    available = torch.cuda.device_count() if cuda and torch.cuda.is_available() else 0
    if len(cuda) > available:
        warnings.warn(f"the saved state has {len(cuda)} CUDA random streams but this machine has {available} "
                      f"CUDA devices; restoring the first {available}", stacklevel=2)  # fmt: skip
    for device, s in enumerate(cuda[:available]):
        expected = torch.cuda.get_rng_state(device).numel()
        if s.numel() != expected:
            raise CheckpointError(
                f"invalid saved random state: CUDA stream {device} has {s.numel()} bytes, not {expected}"
            )
    random.setstate(python)
    np.random.set_state(numpy_state)
    torch.set_rng_state(cpu)
    for device, s in enumerate(cuda[:available]):
        torch.cuda.set_rng_state(s, device=device)


def validated(state: Any) -> tuple[tuple, dict, torch.Tensor, list[torch.Tensor]]:
    """The streams of a :func:`capture` state, checked (else :class:`CheckpointError`), ready to restore."""

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(f"the saved random state is invalid: {problem}")

    if not isinstance(state, dict) or set(state) != {"python", "numpy", "torch", "cuda"}:
        raise fail("expected a dict with exactly the entries python, numpy, torch, cuda")
    py, nps, cpu, cuda = state["python"], state["numpy"], state["torch"], state["cuda"]

    if not isinstance(py, dict) or set(py) != {"version", "state", "gauss_next"}:
        raise fail("'python' must hold version, state and gauss_next")
    words = py["state"]
    if py["version"] != 3 or not _words(words, _MT_WORDS + 1) or not 0 <= words[-1] <= _MT_WORDS:
        raise fail(f"'python' must be Mersenne Twister version 3 with {_MT_WORDS + 1} words")
    if py["gauss_next"] is not None and not isinstance(py["gauss_next"], float):
        raise fail("'python' gauss_next must be a float or None")
    python = (3, tuple(words), py["gauss_next"])

    if not isinstance(nps, dict) or set(nps) != {"bit_generator", "key", "pos", "has_gauss", "gauss"}:
        raise fail("'numpy' must hold bit_generator, key, pos, has_gauss and gauss")
    if nps["bit_generator"] != "MT19937" or not _words(nps["key"], _MT_WORDS):
        raise fail(f"'numpy' must be an MT19937 state with {_MT_WORDS} key words")
    if type(nps["pos"]) is not int or not 0 <= nps["pos"] <= _MT_WORDS or nps["has_gauss"] not in (0, 1):
        raise fail("'numpy' pos must be in [0, 624] and has_gauss 0 or 1")
    if not isinstance(nps["gauss"], float):
        raise fail("'numpy' gauss must be a float")
    numpy_state = {
        "bit_generator": "MT19937",
        "state": {"key": np.array(nps["key"], dtype=np.uint32), "pos": nps["pos"]},
        "has_gauss": nps["has_gauss"],
        "gauss": nps["gauss"],
    }

    expected = torch.get_rng_state().numel()
    if not _bytes(cpu) or cpu.numel() != expected:
        raise fail(f"'torch' must be a uint8 tensor of {expected} bytes")
    if not isinstance(cuda, (list, tuple)) or not all(_bytes(s) for s in cuda):
        raise fail("'cuda' must be a list of uint8 tensors, one per device")
    return python, numpy_state, cpu.cpu(), [s.cpu() for s in cuda]


def _words(values: Any, n: int) -> bool:
    return (
        isinstance(values, (list, tuple))
        and len(values) == n
        and all(type(v) is int and 0 <= v < 2**32 for v in values)
    )


def _bytes(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype == torch.uint8 and t.dim() == 1
