"""Single model vs EMA vs SWA (each batch-norm policy) vs a K-member ensemble vs K snapshots, at equal epochs.

    PYTHONPATH=src python -m benchmarks.averaging_ensembles --recipe examples/quickstart.toml --epochs 10
    PYTHONPATH=src python -m benchmarks.averaging_ensembles --recipe examples/fashion_mnist.toml --epochs 5 \\
        --train-subset 10000

Every method trains ``--epochs`` epochs of the recipe (early stopping removed) on one data split (the recipe's
seed). Per repetition r (``--seeds``), the members use seeds rK … rK+K−1; the first member's run also carries an
EMA and an SWA callback that do not change its training (``evaluate_with = "raw"``, SWA without its own learning
rate), so "single", "EMA" and "SWA" are the same trajectory and share its seconds, and each batch-norm policy is
applied to the same averaged weights after training. "SWA + swa_lr" is a separate run whose last 25% of epochs use
a constant learning rate (``--swa-lr`` × the recipe's lr; 0 skips it). The snapshot ensemble is one run with K
cosine cycles (the recipe's schedule replaced). Seconds are training wall time on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from descend import averaging, config
from descend.data import DataBundle
from descend.ensemble import Ensemble
from descend.runs import experiment
from descend.runs.ensemble import fit as fit_ensemble

from . import machine


def recipe(base: dict, seed: int, **sections) -> config.Config:
    raw = json.loads(json.dumps(base))
    raw["seed"] = seed
    raw.update(sections)
    return config.validate({k: v for k, v in raw.items() if v is not None})


def test_metrics(trainer, test) -> dict:
    m = trainer.evaluate(test, prefix="")
    return {"accuracy": m["accuracy"], "loss": m["loss"]}


def averaged_metrics(trainer, callback, test) -> dict:
    """The averaged weights under each batch-norm policy, evaluated on the test split; the raw weights restored."""
    raw = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    out = {}
    for policy in averaging.BATCH_NORM:
        callback.batch_norm = policy
        callback.install(trainer)
        out[policy] = test_metrics(trainer, test)
        trainer.model.load_state_dict(raw)
    return out


def mean_std(values: list[dict], key: str, scale: float = 1.0, digits: int = 2) -> str:
    """"mean ± sample standard deviation" of ``key`` over the repetitions that have it ("–" when none do)."""
    xs = [v[key] * scale for v in values if key in v]
    if not xs:
        return "–"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.{digits}f} ± {sd:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipe", default="examples/quickstart.toml")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--ema-decay", type=float, default=0.99)
    parser.add_argument("--swa-lr", type=float, default=0.25, help="SWA's constant rate, × the recipe's lr")
    parser.add_argument("--train-subset", type=int, default=0, help="train on the first N (shuffled) samples")
    parser.add_argument("--val-subset", type=int, default=0, help="validate on N (shuffled) validation samples")
    parser.add_argument("--test-subset", type=int, default=0, help="test on N (shuffled) test samples")
    parser.add_argument("--json", help="write the raw numbers here")
    args = parser.parse_args()
    print(machine.line(), flush=True)

    base = config.load(args.recipe).model_dump(exclude_none=True)
    base["train"]["epochs"] = args.epochs
    base.pop("early_stopping", None)
    data = experiment.load_data(config.validate(base))
    if args.train_subset or args.val_subset or args.test_subset:
        def first(split, n):
            return split.subset(torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n]) if n \
                else split
        data = DataBundle(first(data.train, args.train_subset), first(data.val, args.val_subset),
                          first(data.test, args.test_subset), data.info)
    rows: dict[str, list[dict]] = {}

    def add(name, metrics, seconds):
        rows.setdefault(name, []).append({**metrics, "seconds": seconds})

    for r in range(args.seeds):
        members, member_seconds = [], []
        for k in range(args.members):
            ema = averaging.EMA(args.ema_decay, evaluate_with="raw")
            swa = averaging.SWA(evaluate_with="raw")
            built = experiment.build(recipe(base, r * args.members + k), data)
            result = built.fit([ema, swa] if k == 0 else [])
            members.append(built.trainer.model)
            member_seconds.append(result.seconds)
            if k == 0:
                add("single model", test_metrics(built.trainer, data.test), result.seconds)
                for name, cb in (("EMA", ema), ("SWA", swa)):
                    for policy, m in averaged_metrics(built.trainer, cb, data.test).items():
                        add(f"{name} (batch_norm = {policy})", m, result.seconds)
            print(f"rep {r} member {k}: {result.seconds:.1f}s", flush=True)
        ens = Ensemble(members, data.info.task).evaluate(data.test.x, data.test.y, prefix="")
        add(f"{args.members}-member ensemble", {"accuracy": ens["accuracy"], "loss": ens["loss"],
                                                "disagreement": ens["disagreement"]}, sum(member_seconds))
        if args.swa_lr > 0:
            swa = averaging.SWA(swa_lr=args.swa_lr * base["optimizer"]["lr"], anneal_epochs=1, evaluate_with="raw")
            built = experiment.build(recipe(base, r * args.members), data)
            result = built.fit([swa])
            add("SWA + swa_lr, raw weights", test_metrics(built.trainer, data.test), result.seconds)
            for policy, m in averaged_metrics(built.trainer, swa, data.test).items():
                add(f"SWA + swa_lr (batch_norm = {policy})", m, result.seconds)
        snap = fit_ensemble(recipe(base, r * args.members, schedule=None, ensemble={"snapshots": args.members}),
                            data)
        add(f"{args.members} snapshots", {"accuracy": snap.metrics["test_accuracy"],
                                          "loss": snap.metrics["test_loss"],
                                          "disagreement": snap.metrics["test_disagreement"]}, snap.seconds)
        add("last snapshot alone", {"accuracy": snap.members[-1]["test_accuracy"],
                                    "loss": snap.members[-1]["test_loss"]}, snap.seconds)
        print(f"rep {r} done at {time.strftime('%H:%M:%S')}", flush=True)

    print(f"\n{args.recipe}: {args.epochs} epochs, train {len(data.train)}, val {len(data.val)}, "
          f"test {len(data.test)}, "
          f"{args.seeds} repetitions, torch threads {torch.get_num_threads()}\n")
    print("| method | test accuracy | test loss | disagreement | seconds |\n|---|---|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {mean_std(values, 'accuracy', 100)} % | {mean_std(values, 'loss', digits=3)} | "
              f"{mean_std(values, 'disagreement', 100, 1)} | {mean_std(values, 'seconds', digits=1)} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
