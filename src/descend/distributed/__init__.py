"""Data-parallel training on torch.distributed (DDP), launched with ``torchrun``.

``descend run RECIPE --nproc N`` (``--nnodes``, ``--rdzv-endpoint`` for many machines) starts N processes through
``torch.distributed.run``; each trains a copy of the model on its share of every batch and DDP averages the
gradients (gloo on the CPU, nccl on CUDA). ``train.batch_size`` stays the *global* batch, so a recipe means the same
optimisation on any number of processes:

- one permutation of the training set per epoch, the same on every rank and new every epoch, and each global
  batch cut into N contiguous chunks without padding (``DistributedSampler`` pads with duplicates, which changes
  the result: PyTorch #25162; and its order repeats unless ``set_epoch`` is called: #31771);
- each chunk's gradient is weighted by its share of the global batch's mean loss in the all-reduce (its share of
  the samples; under class weights its share of Σ w[y], which a weighted cross-entropy divides by), so the step
  equals the one-process step on the whole batch also for chunks of unequal size (a last, smaller batch). A loss
  of your own must be a mean over the batch's samples, as torch's losses are by default;
- initialisation is identical on every rank (same seed; DDP also broadcasts rank 0's weights), while dropout and
  augmentation draw from a per-rank stream;
- the epoch's training loss, metrics, penalty and gradient norm are built by the one-process trainer's own code
  (the run's loss, task and metrics) and summed over all ranks, over exactly the real samples;
- warnings are said once, by rank 0; babysitting (``control.toml`` in the run directory) is read by rank 0 and
  applied by every rank at the same epoch end;
- only rank 0 writes the run directory (logs, checkpoints, report); every rank evaluates the full validation split.

Batch norm: each rank normalises with its own chunk's statistics (torch's SyncBatchNorm works on CUDA only), so
a model with batch norm trained on N processes matches a one-process run with batch ``batch_size / N`` in its
normalisation, not one with ``batch_size``.
"""

from .sharding import ShardedBatches
from .trainer import DistributedTrainer, is_worker, rank, share_commands, world_size

__all__ = ["DistributedTrainer", "ShardedBatches", "is_worker", "rank", "share_commands", "world_size"]
