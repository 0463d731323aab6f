"""Data-parallel training: sharding without padding, and (slow) 2 gloo processes through torchrun that end with the
weights of a one-process run with the same global batch, also after a worker is killed and torchrun restarts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from descend.data import Split
from descend.distributed import ShardedBatches
from descend.distributed.trainer import ProcessGroup, backend
from descend.errors import UserError
from descend.train.metrics import MetricSums


def split(n: int) -> Split:
    return Split(torch.arange(n, dtype=torch.float32).reshape(n, 1), torch.zeros(n, dtype=torch.long),
                 "classification", 2)


@pytest.mark.parametrize("n, batch, world", [(103, 10, 2), (100, 32, 3), (64, 64, 4), (50, "full", 2)])
def test_ranks_share_every_global_batch_without_padding(n, batch, world):
    data = split(n)
    ranks = [ShardedBatches(data, batch, rank=r, world=world, seed=5) for r in range(world)]
    for epoch in (0, 1):
        per_rank = [list(rb.epoch(epoch)) for rb in ranks]
        steps = list(zip(*per_rank))
        assert len(steps) == len(ranks[0])
        seen = []
        for step in steps:
            chunks = [x.reshape(-1) for x, _ in step]
            sizes = [len(c) for c in chunks]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
            seen.append(torch.cat(chunks))
        order = torch.cat(seen).long()
        # exactly the epoch's permutation: every sample once, none repeated, none padded
        assert torch.equal(order, ranks[0].order(epoch)) and len(order) == n
    assert not torch.equal(ranks[0].order(0), ranks[0].order(1)) or batch == "full"


def test_chunk_weights_are_the_shares_of_the_global_batch():
    data = split(23)  # batches of 10, 10, 3 shared by 2 ranks: 5+5, 5+5, 2+1
    ranks = [ShardedBatches(data, 10, rank=r, world=2, seed=0) for r in range(2)]
    weights = [[(len(x), rb.weight) for x, _ in rb.epoch(0)] for rb in ranks]
    assert weights[0] == [(5, 0.5), (5, 0.5), (2, 2 / 3)]
    assert weights[1] == [(5, 0.5), (5, 0.5), (1, 1 / 3)]


def test_under_class_weights_a_chunk_s_share_is_its_share_of_the_batch_s_class_weights():
    """A weighted cross-entropy's mean divides by the batch's Σ w[y]: the chunks' shares of it make the weighted sum
    of their mean losses the batch's mean loss (label smoothing included), as one process computes it."""
    g = torch.Generator().manual_seed(0)
    n, classes = 23, 4
    data = Split(torch.randn(n, 3, generator=g), torch.randint(0, classes, (n,), generator=g), "classification", 4)
    weights = torch.tensor([1.0, 3.0, 0.5, 2.0], dtype=torch.float64)
    loss = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=0.1)
    logits = torch.randn(n, classes, generator=g, dtype=torch.float64)
    ranks = [ShardedBatches(data, 10, rank=r, world=3, seed=1, class_weights=weights) for r in range(3)]
    whole = list(_global_batches(data, ranks[0]))
    for steps in zip(*[list(_with_weights(rb)) for rb in ranks], strict=True):
        batch = whole.pop(0)
        shares = [share for _, _, share in steps]
        assert sum(float(share) for share in shares) == pytest.approx(1.0, abs=1e-12)
        combined = sum(share * loss(logits[index], y) for index, y, share in steps)
        assert float(combined) == pytest.approx(float(loss(logits[batch], data.y[batch])), rel=1e-12)


def test_under_class_weights_the_ranks_logged_loss_adds_up_to_the_one_process_loss():
    """Each rank's chunk counts in the epoch's loss for its share of Σ w[y] times the batch size: the ranks' sums add
    up to the one-process sums (Σ batch loss · batch size), so train_loss is the same number on any count."""
    g = torch.Generator().manual_seed(2)
    n, classes = 23, 4
    data = Split(torch.randn(n, 3, generator=g), torch.randint(0, classes, (n,), generator=g), "classification", 4)
    weights = torch.tensor([1.0, 3.0, 0.5, 2.0], dtype=torch.float64)
    loss = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=0.1)
    logits = torch.randn(n, classes, generator=g, dtype=torch.float64)
    one = MetricSums(loss, torch.device("cpu"), task="classification")
    for batch in _global_batches(data, ShardedBatches(data, 10, rank=0, world=2, seed=1)):
        one.update(logits[batch], data.y[batch], loss(logits[batch], data.y[batch]))
    total = torch.zeros(7, dtype=torch.float64)
    for r in range(2):
        sharded = ShardedBatches(data, 10, rank=r, world=2, seed=1, class_weights=weights)
        sums = MetricSums(loss, torch.device("cpu"), task="classification",
                          processes=ProcessGroup(SimpleNamespace(sharded=sharded)))
        for index, y, _ in _with_weights(sharded):
            sums.update(logits[index], y, loss(logits[index], y))
        total += sums.state_dict()["sums"]
    torch.testing.assert_close(total, one.state_dict()["sums"], rtol=1e-12, atol=0)


def _global_batches(data, sharded):
    """The global batches (sample indices) of an epoch, in order."""
    return sharded.order(0).split(sharded.batch_size)


def _with_weights(sharded):
    """Each chunk of epoch 0 as (sample indices, labels, the chunk's share)."""
    data = sharded.split
    index_of = {float(v): i for i, v in enumerate(data.x[:, 0])}
    for x, y in sharded.epoch(0):
        yield torch.tensor([index_of[float(v)] for v in x[:, 0]]), y, sharded.weight


def test_a_last_batch_too_small_to_share_is_a_user_error():
    with pytest.raises(UserError, match="drop_last"):
        ShardedBatches(split(21), 10, rank=0, world=2)
    ShardedBatches(split(21), 10, rank=0, world=2, drop_last=True)


def test_the_backend_follows_the_device():
    assert backend(torch.device("cpu")) == "gloo"
    assert backend(torch.device("cuda", 0)) == "nccl"


DIGITS = """
name = "digits"
seed = 3
[data]
name = "digits"
val_fraction = 0.1
[model]
name = "mlp"
hidden = [32]
[train]
epochs = {epochs}
batch_size = 40
device = "cpu"
threads = 1
[optimizer]
name = "adamw"
lr = 0.003
"""


def descend_run(tmp_path: Path, out: str, *args: str, epochs: int = 3, wait: bool = True):
    recipe = tmp_path / f"digits{epochs}.toml"
    recipe.write_text(DIGITS.format(epochs=epochs))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "descend.cli", "run", str(recipe), "--out", str(tmp_path / out), "--quiet", *args]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return load_file(tmp_path / out / "model.safetensors")


def assert_close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol)


@pytest.mark.slow
def test_two_processes_end_with_the_weights_of_one(tmp_path):
    one = descend_run(tmp_path, "one")
    two = descend_run(tmp_path, "two", "--nproc", "2")
    assert_close(one, two, atol=1e-5)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through /proc")
def test_a_killed_worker_is_restarted_and_the_run_ends_as_if_it_never_stopped(tmp_path):
    epochs = 12
    straight = descend_run(tmp_path, "straight", "--nproc", "2", epochs=epochs)
    run = descend_run(tmp_path, "killed", "--nproc", "2", "--max-restarts", "1", epochs=epochs, wait=False)
    checkpoint = tmp_path / "killed" / "checkpoints" / "last.safetensors"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = _children(run.pid)
    assert run.poll() is None and workers, "the run ended before a worker could be killed"
    os.kill(workers[-1], signal.SIGKILL)
    output, _ = run.communicate(timeout=600)
    (tmp_path / "killed.log").write_text(output)
    assert run.returncode == 0, output
    assert_close(straight, load_file(tmp_path / "killed" / "model.safetensors"), atol=0)


@pytest.mark.parametrize("nproc", ["0", "-2", "257", "100000"])
def test_a_process_count_out_of_bounds_is_refused(tmp_path, capsys, nproc):
    from descend.cli import main

    recipe = tmp_path / "digits.toml"
    recipe.write_text(DIGITS.format(epochs=1))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run"), "--nproc", nproc]) == 2
    assert f"--nproc {nproc}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
