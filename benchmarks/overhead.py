"""The trainer's overhead: descend's Trainer against a hand-written PyTorch loop, Lightning, and a DataLoader loop.

    PYTHONPATH=src python -m benchmarks.overhead [--quick] [--epochs 3] [--repeats 5] [--device cuda]

Every side trains the same model from the same initialisation with the same fused AdamW on the MNIST-1D training
split. The hand-written loop is the leanest one would write: in-memory index batches in descend's own epoch order,
the epoch's loss summed on the device (and, in the rows with validation, an eval pass after every epoch). Its final
losses must equal descend's to 5 decimals. "loop + DataLoader" is the same loop fed by
``DataLoader(TensorDataset)``; Lightning (the ``bench`` extra, skipped when absent) runs its own Trainer over that
DataLoader with logging, checkpoints and progress bars off. Each repeat runs every side once, in a rotating order,
so a busy machine slows them alike; the table shows, for whole ``fit`` calls, the median over the repeats of each
side's time over the hand-written loop's in the same repeat, and the quartiles of descend's. With ``--device cuda``
every side trains on the GPU (the data set on the device; the DataLoader sides copy each batch from pinned memory),
where a step is short and the Python work and host syncs around it are a larger share; each side's time ends with
``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import descend as ds
from descend.data.batches import epoch_seed

from . import machine

try:  # the optional `bench` extra
    import lightning as L
except ImportError:
    L = None


@dataclass
class Case:
    name: str
    model: str
    batch: int
    threads: int
    validate: bool = False
    device: str = "cpu"


CASES = [Case("MLP 40-256-256-10, batch 32", "mlp", 32, 2), Case("MLP, batch 128", "mlp", 128, 2),
         Case("MLP, batch 1024", "mlp", 1024, 2), Case("MLP, batch 32, 1 thread", "mlp", 32, 1),
         Case("MLP, batch 128, 1 thread", "mlp", 128, 1), Case("MLP, batch 1024, 1 thread", "mlp", 1024, 1),
         Case("MLP, batch 128, val every epoch", "mlp", 128, 2, True), Case("quickstart CNN, batch 128", "cnn", 128, 2),
         Case("quickstart CNN, val every epoch", "cnn", 128, 2, True)]
QUICK = [CASES[0], CASES[4], CASES[6], CASES[7]]


def build(kind: str, seed: int, device: str = "cpu") -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    else:
        model = ds.models.cnn1d([64, 64, 64], batch_norm=True, input_shape=(40,), num_outputs=10)
    model.to(device)  # before the optimizer: fused AdamW keeps its state where the parameters are
    return model, torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05, fused=True)


@torch.inference_mode()
def validate(model: nn.Module, val) -> float:
    model.eval()
    total = torch.zeros((), device=val.x.device)
    correct = torch.zeros((), dtype=torch.long, device=val.x.device)
    for i in range(0, len(val), 1024):
        out = model(val.x[i:i + 1024])
        total += F.cross_entropy(out, val.y[i:i + 1024], reduction="sum")
        correct += (out.argmax(1) == val.y[i:i + 1024]).sum()
    model.train()
    return (total / len(val)).item()


def raw(case: Case, train, val, epochs: int, seed: int, loader: bool = False) -> float:
    """The hand-written loop; returns the last epoch's mean training loss."""
    model, opt = build(case.model, seed, case.device)
    x, y, n = train.x, train.y, len(train)
    if loader:  # a DataLoader reads host memory; on a GPU each batch is copied from pinned memory
        cuda = x.device.type == "cuda"
        batches = DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=case.batch, shuffle=True, pin_memory=cuda)
    for epoch in range(epochs):
        total = torch.zeros((), device=x.device)
        if loader:
            epoch_batches = ((xb.to(x.device, non_blocking=True), yb.to(x.device, non_blocking=True))
                             for xb, yb in batches)
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
            order = order.to(x.device)
            epoch_batches = ((x.index_select(0, i), y.index_select(0, i)) for i in order.split(case.batch))
        for xb, yb in epoch_batches:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(yb)
        last = (total / n).item()
        if case.validate:
            validate(model, val)
    return last


def trainer(case: Case, train, val, epochs: int, seed: int) -> float:
    model, opt = build(case.model, seed, case.device)
    # the loops' threads and float32 (the automatic settings would choose bf16 for the CNN on a CPU with native bf16)
    fit = ds.Trainer(model, optimizer=opt, device=case.device, seed=seed, threads=case.threads, precision="fp32",
                     channels_last=False)
    history = fit.fit(train, val if case.validate else None, epochs=epochs, batch_size=case.batch)
    return history[-1]["train_loss"]


def lightning(case: Case, train, val, epochs: int, seed: int) -> float:
    model, opt = build(case.model, seed, case.device)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def training_step(self, batch, index):
            return F.cross_entropy(self.model(batch[0]), batch[1])

        def validation_step(self, batch, index):
            self.log("val_loss", F.cross_entropy(self.model(batch[0]), batch[1]))

        def configure_optimizers(self):
            return opt

    accelerator = "gpu" if case.device == "cuda" else "cpu"
    run = L.Trainer(max_epochs=epochs, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    pin = case.device == "cuda"
    batches = DataLoader(TensorDataset(train.x.cpu(), train.y.cpu()), batch_size=case.batch, shuffle=True,
                         pin_memory=pin)
    vals = None
    if case.validate:
        vals = DataLoader(TensorDataset(val.x.cpu(), val.y.cpu()), batch_size=1024, pin_memory=pin)
    run.fit(Module(), batches, vals)
    return float("nan")


def measure(case: Case, data, epochs: int, repeats: int) -> tuple[dict[str, list[float]], float, float]:
    """Seconds per side and repeat, and the final training losses of the raw loop and descend (seed 0)."""
    torch.set_num_threads(case.threads)
    sides = {"raw": raw, "descend": trainer, "loop + DataLoader": lambda *a: raw(*a, loader=True)}
    if L is not None:
        sides["Lightning"] = lightning
    times: dict[str, list[float]] = {name: [] for name in sides}
    losses = {}
    names = list(sides)
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            started = time.perf_counter()
            loss = sides[name](case, data.train, data.val, epochs, 0)
            if case.device == "cuda":
                torch.cuda.synchronize()  # the side's queued kernels belong to its time
            times[name].append(time.perf_counter() - started)
            losses[name] = loss
    return times, losses["raw"], losses["descend"]


def ratios(times: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each side's time over the raw loop's in the same repeat: sides timed moments apart share the machine's
    speed of the moment, which on a VM drifts by 10-20% within minutes, so these ratios vary less than the
    ratio of the medians."""
    return {name: [t / r for t, r in zip(ts, times["raw"], strict=True)] for name, ts in times.items()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="four rows, 2 epochs, 3 repeats")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="run every row with this many threads (e.g. 1 on a busy machine)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where every side trains")
    args = parser.parse_args(argv)
    print(machine.line(), flush=True)
    cases, epochs, repeats = (QUICK, 2, 3) if args.quick else (CASES, args.epochs, args.repeats)
    if args.threads:
        cases = list({(c.model, c.batch, c.validate): replace(c, threads=args.threads) for c in cases}.values())
    if args.device != "cpu":  # the threads feed one GPU: the rows that differ only in threads are one row there
        cases = list({(c.model, c.batch, c.validate): replace(c, device=args.device) for c in cases}.values())
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    data = ds.data.load("mnist1d", val_fraction=0.1)
    data = replace(data, train=data.train.to(args.device), val=data.val.to(args.device))
    load_before = os.getloadavg()[0]
    raw(cases[0], data.train, data.val, 1, 0)  # warm-up: kernels, allocator
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {load_before:.1f} at the start; "
          f"MNIST-1D train split ({len(data.train)} samples), {epochs} epochs, median of {repeats} interleaved repeats")
    header = ["case", "threads", "raw s", "descend", "(quartiles)", "Lightning", "loop+DataLoader", "loss raw",
              "loss descend"]
    print(f"{header[0]:<34}{header[1]:>8}{header[2]:>8}" + "".join(f"{h:>16}" for h in header[3:]))
    rows = []
    for case in cases:
        times, loss_raw, loss_ours = measure(case, data, epochs, repeats)
        per_repeat = ratios(times)
        ratio = {name: statistics.median(values) for name, values in per_repeat.items()}
        low, _, high = statistics.quantiles(per_repeat["descend"], n=4) if repeats > 1 else [ratio["descend"]] * 3
        lit = f"{ratio['Lightning']:.2f}x" if "Lightning" in ratio else "-"
        same = "" if round(loss_raw, 5) == round(loss_ours, 5) else "  LOSSES DIFFER"
        print(f"{case.name:<34}{case.threads:>8}{statistics.median(times['raw']):>8.3f}{ratio['descend']:>15.2f}x"
              f"{f'{low:.2f}-{high:.2f}':>16}{lit:>16}{ratio['loop + DataLoader']:>15.2f}x{loss_raw:>16.5f}"
              f"{loss_ours:>16.5f}{same}", flush=True)
        rows.append({"case": case.name, "descend": ratio["descend"], "equal_loss": not same})
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return rows


if __name__ == "__main__":
    main()
