"""Transfer learning on Fashion-MNIST: pretrain on classes 0–4, learn classes 5–9 from 100 labelled images each.

    PYTHONPATH=src python -m benchmarks.transfer_fashion --pretrain-epochs 3 --pretrain-subset 15000 --epochs 16

The network is the Fashion-MNIST example's CNN (two conv blocks with batch norm, a 128-unit block, dropout).
Pretraining: ``--pretrain-subset`` images of classes 0–4 (T-shirt, trouser, pullover, dress, coat), the example's
optimizer, schedule and augmentation, once (seed 0). Target: classes 5–9 (sandal, shirt, sneaker, bag, ankle
boot) relabelled 0–4; 100 training and 100 validation images per class drawn once from the training split; the
test split's 5000 images of those classes. Every target run uses the same split, 3 seeds (initialisation of what
is not transferred, data order), ``--epochs`` epochs at batch size 32, AdamW lr 2e-3 with warmup + cosine, no
augmentation (cached features could not see it). Seconds are wall time of build + training (build loads the
weights and caches the features).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import machine
from benchmarks.averaging_ensembles import mean_std
from descend import config
from descend.data import DataBundle, Split
from descend.runs import experiment
from descend.train.checkpoint import save_weights


def classes(split: Split, wanted: range, per_class: int | None = None, skip: int = 0) -> Split:
    picks = []
    for c in wanted:
        index = (split.y == c).nonzero().flatten()
        picks.append(index[skip:skip + per_class] if per_class else index)
    pick = torch.cat(picks)
    return Split(split.x[pick], split.y[pick] - wanted.start, split.task, len(wanted))


def bundle(full: DataBundle, train: Split, val: Split, test: Split) -> DataBundle:
    info = dataclasses.replace(full.info, num_classes=5, num_outputs=5,
                               sizes={"train": len(train), "val": len(val), "test": len(test)})
    return DataBundle(train, val, test, info)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--pretrain-subset", type=int, default=15000)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test-per-class", type=int, default=0, help="test images per class (0: all 1000)")
    parser.add_argument("--all-methods", action="store_true", help="also lr_scale 1 and gradual with trainable BN")
    parser.add_argument("--json")
    args = parser.parse_args()
    print(machine.line(), flush=True)

    base = config.load("examples/fashion_mnist.toml").model_dump(exclude_none=True)
    base.pop("early_stopping")
    full = experiment.load_data(config.validate(base))
    generator = torch.Generator().manual_seed(0)
    source = classes(full.train, range(0, 5))
    source = source.subset(torch.randperm(len(source), generator=generator)[:args.pretrain_subset])
    pre_data = bundle(full, source, classes(full.val, range(0, 5)), classes(full.test, range(0, 5)))
    pre_raw = {**base, "train": {**base["train"], "epochs": args.pretrain_epochs}}
    pretrained = experiment.build(config.validate(pre_raw), pre_data)
    pre = pretrained.fit()
    print(f"pretrained in {pre.seconds:.1f}s: val accuracy {pre.final['val_accuracy']:.4f}", flush=True)
    weights = Path(tempfile.mkdtemp()) / "pretrained.safetensors"
    save_weights(pretrained.trainer.model, weights)

    target = bundle(full, classes(full.train, range(5, 10), 100), classes(full.train, range(5, 10), 100, skip=100),
                    classes(full.test, range(5, 10), args.test_per_class or None))
    target_raw = {k: v for k, v in base.items() if k != "augment"}
    target_raw["train"] = {**base["train"], "epochs": args.epochs, "batch_size": 32}
    new_head = {"from": str(weights), "replace_head": True}   # classes 5-9 get a newly initialised head
    fe = {**new_head, "mode": "feature_extraction"}
    methods = {
        "from scratch": None,
        "feature extraction, cached features": fe,
        "feature extraction, cached features, new head = top 2 layers": {**fe, "head_groups": 2},
        "feature extraction, backbone every step (frozen BN in eval mode)": {**fe, "cache_features": False},
        "feature extraction, backbone every step (frozen BN trainable, fastai)": {
            **fe, "cache_features": False, "train_batch_norm": True},
        "fine-tune, discriminative lr (lr_scale 0.01)": {**new_head, "mode": "fine_tune"},
        **({"fine-tune, one lr for all (lr_scale 1)": {**new_head, "mode": "fine_tune", "lr_scale": 1.0}}
           if args.all_methods else {}),
        "gradual unfreezing, frozen BN in eval mode": {**new_head, "mode": "gradual",
                                                       "unfreeze_every": args.epochs // 4},
        **({"gradual unfreezing, frozen BN trainable": {**new_head, "mode": "gradual",
                                                        "unfreeze_every": args.epochs // 4, "train_batch_norm": True}}
           if args.all_methods else {}),
    }
    rows: dict[str, list[dict]] = {}
    for seed in range(args.seeds):
        for name, options in methods.items():
            raw = {**target_raw, "seed": seed, **({"transfer": options} if options else {})}
            started = time.perf_counter()  # build included: it loads the weights and caches the features
            built = experiment.build(config.validate(raw), target)
            built.fit()
            seconds = time.perf_counter() - started
            test = built.trainer.evaluate(built.data.test, prefix="")
            rows.setdefault(name, []).append({"accuracy": test["accuracy"], "loss": test["loss"],
                                              "seconds": seconds})
            print(f"seed {seed} {name}: {test['accuracy']:.4f} in {seconds:.1f}s", flush=True)

    print(f"\npretrained: {len(source)} images of classes 0-4, {args.pretrain_epochs} epochs, {pre.seconds:.1f}s; "
          f"target: {len(target.train)} train / {len(target.val)} val / {len(target.test)} test images of classes "
          f"5-9, {args.epochs} epochs, {args.seeds} seeds, torch threads {torch.get_num_threads()}\n")
    print("| method | test accuracy | test loss | seconds |\n|---|---|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {mean_std(values, 'accuracy', 100)} % | {mean_std(values, 'loss', digits=3)} | "
              f"{mean_std(values, 'seconds', digits=1)} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
