"""Sizes a recipe gives are bounded before they are used: generated over the whole option vocabulary, every
integer option and every list either has an upper bound in its declaration or is named here with what bounds it
(a memory estimate made before anything is allocated), and the bound is enforced with the one message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from descend.cli import main
from descend.errors import UserError
from descend.options import reference, refusal
from descend.options.constraints import Either, Interval, ListOf, Optional

# integer options without an upper bound of their own, and why none is needed there
BOUNDED_ELSEWHERE = {
    "seed": "a seed sizes nothing",
    "data_seed": "a seed sizes nothing",
    "num_classes": "must match the labels of the data",
    "n_train": "the generated data's memory estimate (descend.memory) before it is made",
    "n_test": "the generated data's memory estimate before it is made",
    "d": "the generated data's memory estimate before it is made",
    "num_samples": "the generated data's memory estimate before it is made",
    **{
        name: "the model's parameter-count memory estimate before it is built"
        for name in (
            "hidden",
            "channels",
            "head_hidden",
            "input_shape",
            "num_outputs",
            "kernel_size",
            "pool_size",
            "pool_every",
            "maxout_k",
            "dropout",
        )
    },
    "lookahead_k": "a synchronisation period: no loop, no memory",
    "max_params": "itself a cap on the model (n x n Hessian)",
    "warmup_steps": "a formula of the step: no loop, no memory",
    "patience": "compared with the epoch count",
    "cooldown": "compared with the epoch count",
    "start_from_epoch": "compared with the epoch count",
    "batch_size": "a batch holds at most the training split's rows, which are in memory already",
    "class_weights": "one weight per class: its length must match the data's classes, checked before training",
    "log_every": "a period of steps: no loop, no memory",
    "checkpoint_every": "a period of steps or epochs: no loop, no memory",
    "every": "a period of optimizer steps: no loop, no memory",
    "unfreeze_every": "a period of epochs: no loop, no memory",
    "max_rollbacks": "each rollback follows a divergence, so the run's steps bound them",
    "head_groups": "must leave a backbone below the head: checked against the model's layer groups",
}


def _sizes(constraint):
    """The integer intervals and lists inside a constraint."""
    if isinstance(constraint, Interval) and constraint.kind is int:
        return [constraint]
    if isinstance(constraint, ListOf):
        return [constraint, *_sizes(constraint.item)]
    if isinstance(constraint, Optional):
        return _sizes(constraint.inner)
    if isinstance(constraint, Either):
        return [c for member in constraint.members for c in _sizes(member)]
    return []


CASES = [(part, option, c) for part in reference.parts() for option in part.table for c in _sizes(option.constraint)]


@pytest.mark.parametrize(
    ("part", "option", "size"), CASES, ids=[f"{p.name}-{o.name}-{type(c).__name__}" for p, o, c in CASES]
)
def test_every_size_in_the_vocabulary_is_bounded(part, option, size):
    if isinstance(size, ListOf):
        bounded = size.length is not None or size.max_length is not None
    else:
        bounded = size.high is not None
    assert bounded or option.name in BOUNDED_ELSEWHERE, (
        f"{part.where}: option {option.name!r} has no upper bound: bound it in its declaration, or name here "
        "the check that bounds it before anything is allocated or looped over"
    )


BOUNDED = [
    (part, option, c)
    for part, option, c in CASES
    if isinstance(c, Interval) and c.high is not None and option.constraint is c
]


@pytest.mark.parametrize(("part", "option", "size"), BOUNDED, ids=[f"{p.name}-{o.name}" for p, o, _ in BOUNDED])
def test_a_value_past_the_bound_gives_the_one_message(part, option, size):
    value = int(size.high) + 1
    with pytest.raises(UserError) as err:
        part.build(**{option.name: value})
    assert str(err.value) == refusal(part.where, option.name, option.allowed(), value)


RECIPE = """
name = "bounds"
[data]
name = "{data}"
[model]
name = "{model}"
{model_options}
[train]
epochs = 2
device = "cpu"
{extra}
"""
HUGE = {
    "crop padding of 10**9": dict(
        data="digits", model="cnn2d", extra="[augment]\ncrop_padding = 1000000000", message="crop_padding"
    ),
    "100,000 milestones": dict(
        extra="[schedule]\nname = 'multistep'\nmilestones = [{}]".format(", ".join(str(k) for k in range(1, 100_001))),
        message="milestones",
    ),
    "a signal shift of 10**12": dict(
        data="mnist1d", model="cnn1d", extra="[augment]\nshift = 1000000000000", message="shift"
    ),
    "a hidden layer of 10**12 units": dict(model_options="hidden = [1000000000000]", message="memory"),
    "an ensemble of 10**6 members": dict(extra="[ensemble]\nmembers = 1000000", message="members"),
    "a million epochs and one": dict(extra="", epochs=1_000_001, message="epochs"),
}


@pytest.mark.parametrize("case", HUGE, ids=list(HUGE))
def test_a_huge_size_in_a_recipe_is_one_message_at_once(case, tmp_path, capsys):
    spec = {"data": "iris", "model": "mlp", "model_options": "", "extra": "", **HUGE[case]}
    message, epochs = spec.pop("message"), spec.pop("epochs", 2)
    path = tmp_path / "r.toml"
    path.write_text(RECIPE.format(**spec).replace("epochs = 2", f"epochs = {epochs}"))
    out = tmp_path / "run"
    started = time.monotonic()
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("descend: error: ") and message in err and "Traceback" not in err, err[:400]
    assert not Path(out).exists()
    assert time.monotonic() - started < 60  # refused, not trained or allocated (a generous bound for busy machines)
