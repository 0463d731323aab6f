"""The Trainer of one process in a data-parallel run: DDP around the model, its share of every batch."""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..data import Split
from ..errors import UserError
from ..train import Trainer
from ..train.metric_fns import OneProcess
from ..train.rng import seed_torch
from .sharding import ShardedBatches


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_worker() -> bool:
    """True inside a process started by torchrun for a run of more than one process."""
    return world_size() > 1


def backend(device: torch.device) -> str:
    """nccl for CUDA devices, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def _join(backend_name: str) -> None:
    """Join the process group torchrun describes (env://), under a key prefix of its own for each restart: after
    torchrun restarts the workers, the store still holds the failed round's addresses, and a rank that read them
    would wait for a peer that is gone."""
    store, rank_, size = next(dist.rendezvous("env://"))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend_name, store=dist.PrefixStore(f"descend/attempt_{attempt}", store), rank=rank_,
                            world_size=size)


class ProcessGroup(OneProcess):
    """An epoch's running training values over every process of the group (each rank calls ``sum`` and ``cat`` at
    the same point: they are collective operations)."""

    def __init__(self, trainer: DistributedTrainer) -> None:
        self.trainer = trainer

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor)
        return tensor

    def cat(self, tensor: torch.Tensor) -> torch.Tensor:
        # all_gather needs equal sizes: every rank pads its rows to the longest, and the padding is cut off after
        size = torch.tensor([tensor.shape[0]], device=tensor.device)
        sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
        dist.all_gather(sizes, size)
        longest = int(max(sizes))
        padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
        padded[:tensor.shape[0]] = tensor
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([part[:int(n)] for part, n in zip(parts, sizes, strict=True)])

    def loss_weight(self, samples: int) -> float | torch.Tensor:
        """The chunk's part of its global batch's mean loss, in samples: under class weights its share of Σ w[y]
        times the batch's size, so the ranks' parts add up to the one-process batch's loss · size exactly."""
        sharded = self.trainer.sharded
        if sharded is None or sharded.class_weights is None:
            return samples
        return sharded.weight * sharded.batch_samples


def _weighted_all_reduce(trainer, bucket):  # no annotations: DDP checks them, and these would be strings here
    """DDP communication hook: Σ_r w_r g_r with w_r the rank's share of the global batch (1/N for equal chunks),
    so unequal chunks give exactly the gradient of the mean loss over the whole global batch."""
    buffer = bucket.buffer().mul_(trainer.sharded.weight)
    return dist.all_reduce(buffer, async_op=True).get_future().then(lambda fut: fut.value()[0])


def share_commands(commands: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """Babysitting under data parallelism: the commands of the process of rank 0 (its control.toml and keys), on
    every process, combined (learning-rate factors multiplied, added epochs summed, stop): one broadcast of three
    numbers at each epoch end. Every process calls it at the same point."""
    factor = math.prod(value for name, value in commands if name == "lr")
    added = sum(value for name, value in commands if name == "add_epochs")
    stop = any(name == "stop" for name, _ in commands)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    values = torch.tensor([factor, added, float(stop)], dtype=torch.float64, device=device)
    dist.broadcast(values, src=0)
    factor, added, stop = values.tolist()  # note: a host sync, once per epoch
    return ([("lr", factor)] if factor != 1.0 else []) + ([("add_epochs", int(added))] if added else []) + \
        ([("stop", True)] if stop else [])


class DistributedTrainer(Trainer):
    """A :class:`~descend.train.Trainer` for one of ``WORLD_SIZE`` processes started by torchrun.

    Joins the process group on first use (gloo on the CPU, nccl on CUDA with one GPU per local rank), shards the
    batches (:class:`~descend.distributed.ShardedBatches`), trains through ``DistributedDataParallel`` with
    sample-weighted gradient averaging, seeds dropout and augmentation per rank, and sums the epoch's metrics over
    all ranks. ``seed`` still fixes the (shared) data order and initialisation.

    Exact resume holds from checkpoints written at epoch ends (the default); a checkpoint written inside an
    epoch holds rank 0's running sums and random streams only.
    """

    def __init__(self, model, **options):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if options.get("device", "auto") in ("auto", "cuda") and torch.cuda.is_available():
            torch.cuda.set_device(local)
        super().__init__(model, **options)
        if not dist.is_initialized():
            _join(backend(self.device))
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.fit_state.processes = ProcessGroup(self)  # the training sums and logs: those of the global batch
        self._ddp: nn.Module | None = None
        self.sharded: ShardedBatches | None = None  # this process's share of the batches, once prepared

    def _batches(self, train: Split, batch_size: int | str, **options) -> ShardedBatches:
        # a weighted cross-entropy's mean divides by Σ w[y]: each rank's gradient is weighted by its share of that
        weights = self.loss.weight if isinstance(self.loss, nn.CrossEntropyLoss) else None
        self.sharded = ShardedBatches(train, batch_size, rank=self.rank, world=self.world, seed=self.seed,
                                      class_weights=weights, **options)
        return self.sharded

    def _start(self, batches, epochs: int) -> None:
        if getattr(self.optimizer, "needs_closure", False):  # the closure's pass would see one process's batch only
            raise UserError(f"{type(self.optimizer).__name__} takes a second forward-backward pass per step (a "
                            "closure: SAM, Newton), which data-parallel training does not share across processes; "
                            "train it in one process")
        super()._start(batches, epochs)
        if self._ddp is None:
            ids = [self.device.index or 0] if self.device.type == "cuda" else None
            self._ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            self._ddp.register_comm_hook(self, _weighted_all_reduce)

    def _run_epoch(self, batches, val) -> None:
        if self.batch_index == 0:
            # dropout and augmentation: a different stream on every rank, drawn afresh from (seed, rank, epoch) at
            # every epoch start, so a run resumed from an epoch's checkpoint continues every rank's stream exactly
            state = np.random.SeedSequence([self.seed, self.rank, self.epoch]).generate_state(1, dtype=np.uint64)
            seed_torch(int(state[0]))
            self.fit_state.augment_rng.manual_seed(int(state[0]))
        super()._run_epoch(batches, val)

    def _forward_module(self) -> nn.Module:
        return self._ddp
