"""What a recipe costs: FLOPs per training image, images and FLOPs of the whole recipe, and fp32 images/s here.

    PYTHONPATH=src python -m benchmarks.recipe_cost examples/fashion_mnist.toml [more recipes] [--images 2048]

Wall time on a shared machine moves with the load, so recipes are compared by what they compute: the multiply-adds
of the linear and convolution layers (:func:`descend.train.threads.step_flops`, forward and backward per training
image, a third of that per evaluated image), times the images the recipe trains on (``epochs`` × the training
split) and evaluates (the validation split every epoch, the test split once). Each recipe's ``[model]`` is then
trained on ``--images`` images in float32 with channels-last memory for images (what ``precision = "auto"`` and
``channels_last = "auto"`` choose on a CPU without native bf16, e.g. AVX2-only ones) and its images/s and GFLOP/s
are shown against the float32 matmul GFLOP/s of the same run (:mod:`benchmarks.machine`). A recipe's seconds on
another machine are then about its images/s ratio to a recipe timed there, times that recipe's seconds.
"""

from __future__ import annotations

import argparse

import torch

import descend as ds
from descend import config as cfg
from descend.runs import experiment
from descend.train.threads import step_flops

from . import machine, speed


def cost(recipe: str, overrides: list[str]) -> dict:
    """The recipe's FLOPs per training image and over the whole recipe, and the images it trains on."""
    config = cfg.load(recipe, overrides)
    bundle = experiment.load_data(config)
    spec = config.model
    model = ds.models.spec(spec.name, **spec.options).build(bundle.info.input_shape, bundle.info.num_outputs)
    per_image = step_flops(model, bundle.train.x[:1])
    sizes = {
        name: len(getattr(bundle, name)) if getattr(bundle, name) is not None else 0
        for name in ("train", "val", "test")
    }
    epochs = config.train.epochs
    trained = epochs * sizes["train"]
    evaluated = epochs * sizes["val"] + sizes["test"]
    return {
        "recipe": recipe,
        "config": config,
        "train": bundle.train,
        "per_image": per_image,
        "epochs": epochs,
        "trained": trained,
        "evaluated": evaluated,
        "tflop": (trained + evaluated / 3) * per_image / 1e12,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", help="recipe files")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a field of every recipe (repeatable)",
    )
    parser.add_argument("--images", type=int, default=2048, help="images timed per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (the first is a warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fields = machine.describe()
    print(machine.line(fields), flush=True)
    rows = []
    for recipe in args.recipes:
        row = cost(recipe, args.overrides)
        train = row.pop("train")
        config = row.pop("config")
        n = min(args.images, len(train))
        data = ds.data.Split(train.x[:n], train.y[:n], train.task, train.num_classes)
        options = {"precision": "fp32", "channels_last": train.x.dim() == 4}
        rate = speed.measure(data, options, max(args.epochs, 2), config.train.batch_size, args.threads, recipe=recipe)[
            "steady"
        ]
        row.update(
            rate=rate, gflops=rate * row["per_image"] / 1e9, seconds=(row["trained"] + row["evaluated"] / 3) / rate
        )
        rows.append(row)
        print(
            f"{recipe}: {row['per_image'] / 1e6:.1f} MFLOP per training image, {row['epochs']} epochs, "
            f"{row['trained']:,} images trained + {row['evaluated']:,} evaluated = {row['tflop']:.1f} TFLOP; "
            f"fp32 {rate:.0f} images/s = {row['gflops']:.1f} GFLOP/s "
            f"({row['gflops'] / fields['matmul_gflops']:.0%} of the matmul), about {row['seconds']:.0f} s here",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
