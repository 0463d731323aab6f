"""Checkpoint storage: round trips, resume equivalence, hostile files, RNG streams (atomic writes under SIGKILL
and I/O errors: test_checkpoint_atomic.py; loading weights into a model: test_checkpoint_weights.py)."""

from __future__ import annotations

import json
import math
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from descend.errors import UserError
from descend.train import rng
from descend.train.checkpoint import CheckpointError, load, load_weights, save, save_weights

pytestmark = pytest.mark.usefixtures("no_unpickling")  # loading must never unpickle (conftest.py)


def header_of(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def write_raw(path: Path, header: dict, body: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return path


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def assert_same(a, b):
    """Structural equality with bit-exact tensors (dtype, shape, bytes), NaN equal to NaN, tuple != list."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(_bits(a), _bits(b))
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert type(k) is type(next(x for x in b if x == k))
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b))


# ------------------------------------------------------------------------------------------ round trips


def test_round_trip_of_every_value_kind(tmp_path):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "ints": {0: "zero", 1: [1, -2, 2**70], "0": "string key"},
        "floats": [1.0, -0.0, 1e-310, float("inf"), float("-inf"), float("nan"), 0.1],
        "flags": (True, False, None, 1, 0),
        "text": "ünïcode ✓ \u0000 \ud7ff",
        "empty": {"dict": {}, "list": [], "tuple": ()},
        "nested": [[[{"deep": (1, (2, [3]))}]]],
        "numpy": np.float32(0.5),
        "dtypes": {
            str(d): torch.arange(6).reshape(2, 3).to(d)
            for d in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32)
            + (torch.int16, torch.int8, torch.uint8, torch.bool, torch.uint16, torch.uint32, torch.uint64)
            + (torch.float8_e4m3fn, torch.float8_e5m2)
        },
        "scalar": torch.tensor(3.5),
        "zero_size": torch.empty(0, 5),
        "transposed": base.t(),
        "strided": base[::2, 1::3],
        "shared_a": base,
        "shared_b": base,
        "view_of_shared": base[1:],
        "param": nn.Parameter(torch.ones(3)),
    }
    path = tmp_path / "ck.safetensors"
    save(path, state)
    loaded = load(path)
    expected = dict(state, numpy=0.5, param=torch.ones(3))
    assert_same(expected, loaded)
    assert loaded["shared_a"] is loaded["shared_b"]  # the same tensor was stored once
    header, _ = header_of(path)
    assert len([k for k in header if k != "__metadata__"]) == len(state["dtypes"]) + 7


def test_torch_optimizer_state_dict_round_trips_and_loads(tmp_path):
    model = nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    model(torch.randn(5, 4)).square().sum().backward()
    opt.step()
    save(tmp_path / "o.safetensors", {"optimizer": opt.state_dict()})
    loaded = load(tmp_path / "o.safetensors")["optimizer"]
    assert_same(opt.state_dict(), loaded)
    assert set(loaded["state"]) == {0, 1} and loaded["param_groups"][0]["betas"] == (0.8, 0.99)
    fresh = torch.optim.Adam(nn.Linear(4, 3).parameters())
    fresh.load_state_dict(loaded)
    assert fresh.param_groups[0]["lr"] == 1e-2


def test_file_is_plain_safetensors_with_readable_names(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    save(tmp_path / "ck.safetensors", {"model": model.state_dict(), "step": 7})
    tensors = safetensors.torch.load_file(tmp_path / "ck.safetensors")
    assert set(tensors) == {f"model/{k}" for k in model.state_dict()}
    save_weights(model, tmp_path / "model.safetensors")
    plain = safetensors.torch.load_file(tmp_path / "model.safetensors")
    assert_same(dict(model.state_dict()), {name: plain[name] for name in model.state_dict()})


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
        lambda p: torch.optim.Adam(p, lr=1e-2),
    ],
    ids=["sgd-momentum", "adam"],
)
def test_resume_from_checkpoint_is_bit_identical_to_never_stopping(tmp_path, make_optimizer):
    """Dropout and batch sampling draw from torch's RNG, so this also checks the RNG round trip."""
    x, y = torch.randn(64, 8, generator=torch.Generator().manual_seed(0)), torch.randn(64, 1)

    def build():
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
        return model, make_optimizer(model.parameters())

    def train(model, opt, steps):
        for _ in range(steps):
            idx = torch.randint(0, 64, (16,))
            opt.zero_grad(set_to_none=True)
            nn.functional.mse_loss(model(x[idx]), y[idx]).backward()
            opt.step()

    model, opt = build()
    train(model, opt, 10)
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": rng.capture(),
        "step": 10,
    }
    save(tmp_path / "last.safetensors", checkpoint)
    train(model, opt, 10)
    never_stopped = [p.detach().clone() for p in model.parameters()]

    model, opt = build()  # a fresh process would start like this, then resume
    torch.manual_seed(12345)
    state = load(tmp_path / "last.safetensors")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    rng.restore(state["rng"])
    train(model, opt, 20 - state["step"])
    for p, q in zip(model.parameters(), never_stopped, strict=True):
        assert torch.equal(p, q)  # bit-identical: same arithmetic in the same order on the CPU


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_are_written_from_the_host_and_loaded_to_a_device(tmp_path):
    t = torch.arange(10.0, device="cuda")
    save(tmp_path / "c.safetensors", {"t": t, "rng": rng.capture()})
    assert load(tmp_path / "c.safetensors")["t"].device.type == "cpu"
    loaded = load(tmp_path / "c.safetensors", device="cuda")
    assert torch.equal(loaded["t"], t)
    rng.restore(loaded["rng"])


# ------------------------------------------------------------------------------------------ RNG streams


@pytest.mark.parametrize(
    "draw",
    [
        lambda: [random.random() for _ in range(3)] + [random.gauss(0, 1)],
        lambda: np.random.rand(3).tolist() + [np.random.normal()],
        lambda: torch.rand(3).tolist() + torch.randn(1).tolist(),
    ],
    ids=["python", "numpy", "torch"],
)
def test_rng_round_trip_through_a_file_repeats_the_next_draws(tmp_path, draw):
    random.gauss(0, 1), np.random.normal()  # leave a cached Gaussian in python's and numpy's state
    save(tmp_path / "r.safetensors", {"rng": rng.capture()})
    first = draw()
    draw()
    rng.restore(load(tmp_path / "r.safetensors")["rng"])
    assert draw() == first


def test_rng_restore_rejects_malformed_state_and_changes_nothing():
    good = rng.capture()
    bad_states = [
        {},
        dict(good, python={"version": 3, "state": [0] * 10, "gauss_next": None}),
        dict(good, numpy=dict(good["numpy"], key=[2**32] * 624)),
        dict(good, torch=torch.zeros(7, dtype=torch.uint8)),
        dict(good, torch=good["torch"].float()),
        dict(good, cuda=["not a tensor"]),
    ]
    for bad in bad_states:
        rng.restore(good)
        before = random.random(), np.random.rand(), torch.rand(1).item()
        rng.restore(good)
        with pytest.raises(CheckpointError, match="random state"):
            rng.restore(bad)
        assert (random.random(), np.random.rand(), torch.rand(1).item()) == before


# ------------------------------------------------------------------------------------------ hostile files


@pytest.fixture
def valid(tmp_path) -> Path:
    model = nn.Linear(3, 2)
    save(tmp_path / "valid.safetensors", {"model": model.state_dict(), "step": 3, "lr": [0.1, float("nan")]})
    return tmp_path / "valid.safetensors"


def test_every_truncation_is_a_clear_error(valid, tmp_path):
    data = valid.read_bytes()
    cut = tmp_path / "cut.safetensors"
    for size in [*range(0, 40), *range(40, len(data), 7), len(data) - 1]:
        cut.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match="cut.safetensors") as info:
            load(cut)
        assert any(w in str(info.value) for w in ("truncated", "not a valid", "corrupt")), str(info.value)


def test_extra_trailing_bytes_are_refused(valid):
    valid.write_bytes(valid.read_bytes() + b"\0" * 4)
    with pytest.raises(CheckpointError, match="extra bytes"):
        load(valid)


def test_pickle_renamed_to_safetensors_is_recognized_and_not_loaded(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "zip.safetensors")
    with pytest.raises(CheckpointError, match="torch.save"):
        load(tmp_path / "zip.safetensors")
    (tmp_path / "raw.safetensors").write_bytes(pickle.dumps({"w": [1.0] * 50}, protocol=4))
    with pytest.raises(CheckpointError, match="a pickle"):
        load(tmp_path / "raw.safetensors")
    with pytest.raises(CheckpointError, match="a pickle"):
        load_weights(nn.Linear(1, 1), tmp_path / "raw.safetensors")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: b"GARBAGE!" + b"x" * 100, "claims"),
        (lambda: struct.pack("<Q", 2**63) + b"{}", r"over the \d+ byte limit"),
        (lambda: struct.pack("<Q", 90 * 2**20) + b"{}", "only 2 follow"),
        (lambda: struct.pack("<Q", 5) + b"[1,2]", "invalid type: sequence"),
        (lambda: struct.pack("<Q", 6) + b"{'a':}", "invalid JSON"),
        (lambda: struct.pack("<Q", 4) + b"{\xff\xfe}", "UTF-8"),
        (lambda: struct.pack("<Q", 9) + b'{"a":NaN}', "invalid JSON"),
        (lambda: struct.pack("<Q", 2 + 20000) + b"{" + b"[" * 20000 + b"}", "invalid JSON"),
    ],
)
def test_malformed_headers_are_clear_errors(tmp_path, make, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(make())
    with pytest.raises(CheckpointError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


def _corrupt_entry(valid: Path, tmp_path: Path, change) -> Path:
    header, body = header_of(valid)
    change(header)
    return write_raw(tmp_path / "bad.safetensors", header, body)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h["model/weight"].update(data_offsets=[0, 10**9]), "invalid offset for tensor `model/weight`"),
        (lambda h: h["model/weight"].update(data_offsets=[10**9, 10**9 + 24]), "invalid offset"),
        (lambda h: h["model/weight"].update(shape=[2**62, 2**62]), "overflow"),
        (lambda h: h["model/weight"].update(shape=[-1, 3]), "integer `-1`, expected usize"),
        (lambda h: h["model/weight"].update(shape=[2.0, 3]), "floating point `2.0`, expected usize"),
        (lambda h: h["model/weight"].update(dtype="F128"), "unknown variant `F128`"),
        (lambda h: h["model/weight"].update(extra=1), "exactly"),
        (lambda h: h.update(dup=h["model/weight"]), "invalid offset"),
        (lambda h: h.update(__metadata__={"format": 3}), "expected a string"),
        (lambda h: h["__metadata__"].update(version="99"), "version '99'"),
        (lambda h: h["__metadata__"].pop("structure"), "lacks the 'structure'"),
        (lambda h: h["__metadata__"].update(structure="{not json"), "not valid JSON"),
        (lambda h: h["__metadata__"].update(structure="[1]"), "not a dict"),
        (lambda h: h["__metadata__"].update(structure='{"dict": [["a", {"tensor": "nope"}]]}'), "'nope'"),
        (lambda h: h["__metadata__"].update(structure='{"dict": []}'), "not referenced"),
        (lambda h: h["__metadata__"].update(structure='{"set": [1]}'), "unknown or malformed tag 'set'"),
        (lambda h: h["__metadata__"].update(structure='{"dict": [[true, 1]]}'), "key, value"),
        (lambda h: h["__metadata__"].update(structure='{"dict": [["a", 1], ["a", 2]]}'), "twice"),
        (lambda h: h["__metadata__"].update(structure='{"float": "1e3"}'), "tag 'float'"),
    ],
)
def test_inconsistent_headers_are_named_errors(valid, tmp_path, change, message):
    with pytest.raises(CheckpointError, match=message) as info:
        load(_corrupt_entry(valid, tmp_path, change))
    assert "bad.safetensors" in str(info.value)


def test_plain_safetensors_file_is_not_a_checkpoint(tmp_path):
    safetensors.torch.save_file({"w": torch.ones(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="load_weights"):
        load(tmp_path / "plain.safetensors")


def test_missing_unreadable_and_directory_paths(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "nothing.safetensors")
    with pytest.raises(CheckpointError, match="cannot read"):
        load(tmp_path)
    with pytest.raises(UserError, match="device"):
        load(tmp_path / "x", device="warp-drive")


def test_bool_tensor_with_other_bytes_is_corrupt(tmp_path):
    save(tmp_path / "b.safetensors", {"mask": torch.tensor([True, False])})
    data = bytearray((tmp_path / "b.safetensors").read_bytes())
    data[-1] = 7
    (tmp_path / "b.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="bool tensor 'mask'"):
        load(tmp_path / "b.safetensors")
