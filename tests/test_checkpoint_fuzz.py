"""Fuzzing the checkpoint reader: random bytes, byte-level mutations of a valid file and structure-aware
mutations of its JSON header must each give a CheckpointError or a well-formed state, never anything else."""

from __future__ import annotations

import json
import math
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from descend.train.checkpoint import CheckpointError, WeightsReport, load, load_weights, save

FAST = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
LONG = settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
PROFILES = [pytest.param(FAST, id="fast"), pytest.param(LONG, id="long", marks=pytest.mark.slow)]

pytestmark = pytest.mark.usefixtures("no_unpickling")  # loading must never unpickle (conftest.py)


def _valid_file() -> bytes:
    """A small checkpoint with every structural feature, so mutations reach every branch of the reader."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "misc": {"epoch": 3, "best": float("inf"), "t": (1, None, True), "mask": torch.tensor([True, False])},
        "half": torch.ones(2, dtype=torch.float16),
    }
    with tempfile.TemporaryDirectory() as d:
        save(Path(d) / "v.safetensors", state)
        return (Path(d) / "v.safetensors").read_bytes()


VALID = _valid_file()
(_N,) = struct.unpack("<Q", VALID[:8])
HEADER = json.loads(VALID[8 : 8 + _N])
BODY = VALID[8 + _N :]


def _well_formed(value, depth=0) -> bool:
    if isinstance(value, torch.Tensor):
        return value.device.type == "cpu" and value.layout == torch.strided
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _well_formed(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_well_formed(v, depth + 1) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _check(data: bytes) -> None:
    """The property: CheckpointError, or a well-formed dict (load) or a WeightsReport (load_weights)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.safetensors"
        path.write_bytes(data)
        try:
            state = load(path)
        except CheckpointError as e:
            assert str(path) in str(e)
        else:
            assert isinstance(state, dict) and _well_formed(state)
        try:
            report = load_weights(nn.Linear(3, 2), path)
        except CheckpointError as e:
            assert str(path) in str(e)
        else:
            assert isinstance(report, WeightsReport)


def _mutate(data: bytes, ops: list[tuple[str, int, bytes]]) -> bytes:
    out = bytearray(data)
    for op, position, payload in ops:
        at = position % (len(out) + 1)
        if op == "flip" and out:
            out[at % len(out)] ^= payload[0] if payload and payload[0] else 0xFF
        elif op == "truncate":
            del out[at:]
        elif op == "insert":
            out[at:at] = payload
        elif op == "delete":
            del out[at : at + 1 + len(payload)]
        elif op == "length":
            out[:8] = struct.pack("<Q", int.from_bytes(payload[:8].ljust(8, b"\0"), "little"))
    return bytes(out)


operations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "truncate", "insert", "delete", "length"]),
        st.integers(min_value=0, max_value=len(VALID)),
        st.binary(min_size=0, max_size=16),
    ),
    min_size=1,
    max_size=4,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _paths(node, prefix=()):
    """Every location in a JSON document: (path, value)."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _replaced(node, path, value):
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[path[0]] = _replaced(node[path[0]], path[1:], value)
    return copy


def _with_header(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


HEADER_PATHS = [p for p, _ in _paths(HEADER)]
STRUCTURE = json.loads(HEADER["__metadata__"]["structure"])
STRUCTURE_PATHS = [p for p, _ in _paths(STRUCTURE)]


@pytest.mark.parametrize("profile", PROFILES)
def test_random_bytes(profile):
    @profile
    @given(st.binary(max_size=2048) | st.binary(max_size=64).map(lambda b: struct.pack("<Q", len(b)) + b))
    def run(data):
        _check(data)

    run()


@pytest.mark.parametrize("profile", PROFILES)
def test_byte_mutations_of_a_valid_file(profile):
    @profile
    @given(operations)
    def run(ops):
        _check(_mutate(VALID, ops))

    run()


@pytest.mark.parametrize("profile", PROFILES)
def test_header_value_mutations(profile):
    """Replace any value of the JSON header (dtypes, shapes, offsets, metadata) with another JSON value."""

    @profile
    @given(st.sampled_from(HEADER_PATHS), json_values, st.integers(-3, 3))
    def run(path, value, body_change):
        body = BODY[: len(BODY) + body_change] if body_change < 0 else BODY + b"\0" * body_change
        _check(_with_header(_replaced(HEADER, path, value), body))

    run()


@pytest.mark.parametrize("profile", PROFILES)
def test_structure_mutations(profile):
    """Replace any node of the saved structure: wrong tags, dangling or repeated tensor references, keys."""
    names = [k for k in HEADER if k != "__metadata__"]
    nodes = (
        json_values
        | st.sampled_from(names).map(lambda n: {"tensor": n})
        | st.sampled_from(
            [
                {"float": "nan"},
                {"float": "1"},
                {"tuple": 1},
                {"dict": [[1, 2], [1, 3]]},
                {"dict": [[None, 1]]},
                {},
            ]
        )
    )

    @profile
    @given(st.sampled_from(STRUCTURE_PATHS), nodes)
    def run(path, node):
        structure = _replaced(STRUCTURE, path, node)
        header = dict(HEADER, __metadata__=dict(HEADER["__metadata__"], structure=json.dumps(structure)))
        _check(_with_header(header, BODY))

    run()


def test_the_valid_file_itself_loads():
    state = load_from_bytes(VALID)
    assert state["misc"]["best"] == math.inf and state["misc"]["t"] == (1, None, True)


def load_from_bytes(data: bytes) -> dict:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "v.safetensors").write_bytes(data)
        return load(Path(d) / "v.safetensors")
