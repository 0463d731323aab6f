"""Checkpoint storage: round trips, resume equivalence, atomic writes under SIGKILL and I/O errors,
hostile files, weights loading, RNG streams."""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from descend.errors import UserError
from descend.train import rng
from descend.train.checkpoint import CheckpointError, WeightsReport, load, load_weights, save, save_weights

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


# ------------------------------------------------------------------------------------------ atomic writes


def _versioned_states(numel: int) -> list[torch.Tensor]:
    return [torch.full((numel,), float(i)) for i in range(3)]


def _check_complete(path: Path, payloads: list[torch.Tensor]) -> int:
    state = load(path)
    version = state["version"]
    assert state["tag"] == f"v{version}"
    assert torch.equal(state["w"], payloads[version % 3])
    return version


def _fork_writer(path: Path, payloads, first_version: int, sabotage=None) -> int:
    pid = os.fork()
    if pid == 0:  # the child saves forever until it is killed; it never returns into pytest
        try:
            if sabotage:
                sabotage()
            v = first_version
            while True:
                save(path, {"version": v, "tag": f"v{v}", "w": payloads[v % 3]})
                v += 1
        finally:
            os._exit(1)
    return pid


def test_sigkill_at_random_moments_leaves_a_complete_checkpoint(tmp_path):
    path = tmp_path / "last.safetensors"
    payloads = _versioned_states(2_000_000)  # 8 MB per checkpoint
    save(path, {"version": 0, "tag": "v0", "w": payloads[0]})
    draw = random.Random(0)
    seen = {0}
    for k in range(6):
        pid = _fork_writer(path, payloads, first_version=1000 * (k + 1))
        time.sleep(draw.uniform(0.02, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        seen.add(_check_complete(path, payloads))
    assert len(seen) > 1  # the writers did publish new versions between kills


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_sigkill_inside_a_write_keeps_the_previous_checkpoint(tmp_path, where):
    path = tmp_path / "last.safetensors"
    payloads = _versioned_states(100_000)
    save(path, {"version": 5, "tag": "v5", "w": payloads[5 % 3]})
    real = {"write": os.write, "fsync": os.fsync, "replace": os.replace}[where]

    def sabotage():
        calls = []

        def die(*args):
            calls.append(1)
            if where != "write" or len(calls) == 2:  # mid-file: after the header, during the tensor bytes
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args)

        setattr(os, where, die)

    pid = _fork_writer(path, payloads, first_version=6, sabotage=sabotage)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert _check_complete(path, payloads) == 5
    leftovers = list(tmp_path.glob(".last.safetensors.*.tmp"))
    assert len(leftovers) == 1  # the killed writer's temporary file ...
    save(path, {"version": 7, "tag": "v7", "w": payloads[7 % 3]})
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))  # ... is cleaned up
    assert _check_complete(path, payloads) == 7


@pytest.mark.slow
def test_sigkill_of_a_fresh_interpreter_many_times_leaves_a_complete_checkpoint(tmp_path):
    path = tmp_path / "last.safetensors"
    payloads = _versioned_states(8_000_000)
    save(path, {"version": 0, "tag": "v0", "w": payloads[0]})
    script = textwrap.dedent(f"""
        import torch
        from descend.train.checkpoint import save
        payloads = [torch.full((8_000_000,), float(i)) for i in range(3)]
        v = 1
        while True:
            save({str(path)!r}, {{"version": v, "tag": f"v{{v}}", "w": payloads[v % 3]}})
            print(v, flush=True)
            v += 1
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    draw = random.Random(1)
    for _ in range(15):
        proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE)
        proc.stdout.readline()  # wait until it has written once, then kill it at a random moment
        time.sleep(draw.uniform(0.0, 0.5))
        proc.kill()
        proc.wait()
        proc.stdout.close()
        _check_complete(path, payloads)


def _failing(real, err: int, after_calls: int = 0):
    calls = []

    def fn(*args):
        calls.append(1)
        if len(calls) > after_calls:
            raise OSError(err, os.strerror(err))
        return real(*args)

    return fn


@pytest.mark.parametrize(
    ("target", "err", "after", "message"),
    [
        ("write", errno.ENOSPC, 1, "disk is full"),
        ("write", errno.EDQUOT, 0, "quota"),
        ("open", errno.EACCES, 0, "permission denied"),
        ("open", errno.EROFS, 0, "read-only"),
        ("fsync", errno.EIO, 0, "Input/output error"),
        ("replace", errno.EXDEV, 0, "cross-device"),
    ],
)
def test_write_errors_keep_the_previous_checkpoint(tmp_path, monkeypatch, target, err, after, message):
    path = tmp_path / "last.safetensors"
    save(path, {"step": 1, "w": torch.zeros(100_000)})
    before = path.read_bytes()
    monkeypatch.setattr(os, target, _failing(getattr(os, target), err, after))
    with pytest.raises(CheckpointError, match=message) as info:
        save(path, {"step": 2, "w": torch.ones(100_000)})
    monkeypatch.undo()
    assert str(path) in str(info.value) and "previous" in str(info.value)
    assert path.read_bytes() == before and load(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]  # no temporary file left


def test_write_into_a_directory_path_or_a_file_as_directory_is_a_clear_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(CheckpointError, match="could not write"):
        save(tmp_path / "d", {"x": 1})
    (tmp_path / "f").write_text("")
    with pytest.raises(CheckpointError, match=r"f[/\\]x"):
        save(tmp_path / "f" / "x", {"x": 1})


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"s": {1, 2}}, r"state\['s'\] has type set"),
        ({"a": np.zeros(3)}, r"state\['a'\] has type ndarray"),
        ({"k": {(1, 2): 3}}, r"state\['k'\] has a key \(1, 2\)"),
        ({"k": {True: 3}}, "key True"),
        ({"c": torch.zeros(2, dtype=torch.complex64)}, r"state\['c'\].*complex64"),
        ({"s": torch.zeros(2, 2).to_sparse()}, "sparse"),
        ([1, 2], "must be a dict"),
    ],
)
def test_unsupported_values_are_named_and_nothing_is_written(tmp_path, state, message):
    with pytest.raises(CheckpointError, match=message):
        save(tmp_path / "x.safetensors", state)
    assert not list(tmp_path.iterdir())


def test_too_deep_structures_are_refused_on_save(tmp_path):
    deep: list = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(CheckpointError, match="deeper"):
        save(tmp_path / "x.safetensors", {"deep": deep})


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


# ------------------------------------------------------------------------------------------ load_weights


class Net(nn.Module):
    def __init__(self, hidden=4, out=2):
        super().__init__()
        self.body = nn.Linear(3, hidden)
        self.head = nn.Linear(hidden, out)


def test_load_weights_reports_by_name_and_loads_what_matches(tmp_path):
    source = Net()
    sd = dict(source.state_dict())
    sd["head.weight"] = torch.zeros(5, 4)  # shape mismatch
    sd["head.bias"] = sd["head.bias"].double()  # dtype mismatch
    sd["extra.weight"] = torch.ones(1)
    del sd["body.bias"]
    save_weights(sd, tmp_path / "w.safetensors")
    target = Net()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_weights(target, tmp_path / "w.safetensors")
    assert report == WeightsReport(
        missing=["body.bias"], unexpected=["extra.weight"], mismatched=[("head.weight", (2, 4), (5, 4))],
        dtype_mismatched=[("head.bias", "float32", "float64")], loaded=["body.weight"],
    )  # fmt: skip
    assert torch.equal(target.body.weight, source.body.weight)
    for name in ("body.bias", "head.weight", "head.bias"):
        assert torch.equal(target.state_dict()[name], before[name])
    text = str(report)
    assert "loaded 1 of 4" in text and "body.bias" in text and "extra.weight" in text
    assert (
        "head.weight (model (2, 4), file (5, 4))" in text
        and "head.bias (model float32, file float64)" in text
    )


def test_load_weights_strict_lists_every_problem_and_loads_nothing(tmp_path):
    save_weights(Net(hidden=5), tmp_path / "w.safetensors")
    target = Net()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match="w.safetensors") as info:
        load_weights(target, tmp_path / "w.safetensors", strict=True)
    for name in ("body.weight", "body.bias", "head.weight"):
        assert name in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_load_weights_from_a_checkpoint_and_with_a_prefix(tmp_path):
    source = Net()
    save(tmp_path / "ck.safetensors", {"model": source.state_dict(), "step": 1})
    target = Net()
    assert load_weights(target, tmp_path / "ck.safetensors", strict=True).ok
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), source.parameters(), strict=True))
    body = nn.Linear(3, 4)
    report = load_weights(body, tmp_path / "ck.safetensors", prefix="body.", strict=True)
    assert report.loaded == ["weight", "bias"] and torch.equal(body.weight, source.body.weight)
    save(tmp_path / "nomodel.safetensors", {"step": 1})
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        load_weights(target, tmp_path / "nomodel.safetensors")


def test_load_weights_reads_files_written_by_safetensors(tmp_path):
    source = Net()
    safetensors.torch.save_file(source.state_dict(), tmp_path / "model.safetensors")
    target = Net()
    assert load_weights(target, tmp_path / "model.safetensors", strict=True).ok
    assert torch.equal(target.head.weight, source.head.weight)
