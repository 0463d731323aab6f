"""A control file is checked like a recipe: bounded values, a file with any mistake refused whole with one
``descend: warning:`` line, training going on; a checkpoint's babysitting state meets the same bounds; the console
follows added epochs, says when they would train at a learning rate of 0, and prints control messages on lines of
their own. A hypothesis fuzzer feeds control files of every shape to the parser and to a running fit."""

from __future__ import annotations

import io
import re
import warnings

import pytest
import tomli_w
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

import descend as ds
from descend.errors import UserError
from descend.train import Trainer
from descend.train.callbacks import Callback
from descend.train.control import MAX_EPOCHS, Control, parse
from descend.train.logs import ProgressBar


class WriteAt(Callback):
    """Write ``text`` to the control file at the end of epoch ``epoch`` (0-based), as a user would mid-run."""

    order = 5

    def __init__(self, path, epoch, text):
        self.path, self.epoch, self.text = path, epoch, text

    def on_epoch_end(self, trainer, logs):
        if trainer.epoch == self.epoch:
            self.path.write_text(self.text)


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)


def fit(tmp_path, text, *, epochs=3, at=0, schedule=None, extra=(), stream="quiet"):
    path = tmp_path / "control.toml"
    control = Control(path, stream=io.StringIO() if stream == "quiet" else stream)
    trainer = Trainer(
        torch.nn.Linear(4, 3),
        loss="cross_entropy",
        device="cpu",
        schedule=schedule,
        callbacks=[WriteAt(path, at, text), control, *extra],
    )
    x, y = data()
    return trainer, trainer.fit((x, y), (x, y), epochs=epochs, batch_size=16, progress=False)


@pytest.mark.parametrize(
    "text, message",
    [
        (f"add_epochs = {2**63 - 1}", "option 'add_epochs' must be an integer in [1, 1e+06]"),
        ("add_epochs = 1_000_000_000_000_000_000", "option 'add_epochs' must be"),
        ("lr = { a = 1 }", "option 'lr' must be"),
        ("lr = 1e300", "option 'lr' must be"),
        ('lr = "third"', "option 'lr' must be"),
        ('stop = "maybe"', "option 'stop' must be true or false"),
        ('lr = "halve"\nstop = "maybe"', "option 'stop'"),  # a file is applied whole or not at all
        ("epochs = 3", "unknown option 'epochs'"),
    ],
)
def test_a_refused_control_file_is_one_warning_and_training_goes_on(tmp_path, text, message):
    with pytest.warns(UserWarning) as warned:
        trainer, history = fit(tmp_path, text)
    assert [str(w.message) for w in warned if message in str(w.message)] and len(warned) == 1
    assert len(history) == 3 and not any(k.startswith("control_") for row in history for k in row)
    assert (tmp_path / "control.toml").read_text() == text  # left for the user to fix
    with pytest.raises(UserError, match="option|unknown"):
        parse(text)


def test_epochs_are_added_up_to_the_bound_on_the_run_s_total(tmp_path):
    with pytest.warns(UserWarning, match=f"would reach {MAX_EPOCHS + 3:,}|would reach {MAX_EPOCHS + 3}"):
        _, history = fit(tmp_path, f"add_epochs = {MAX_EPOCHS}")
    assert len(history) == 3
    _, history = fit(tmp_path, "add_epochs = 2")
    assert len(history) == 5


@pytest.mark.parametrize(
    "state, message",
    [
        ({"added": 10**30, "stopped": False}, "'added' must be"),
        ({"added": -1}, "'added' must be"),
        ({"added": 2, "stopped": "yes"}, "'stopped' must be"),
        ({"added": 2, "more": 1}, "unknown option 'more'"),
        ([], "must be a table"),
    ],
)
def test_a_checkpoint_s_babysitting_state_is_checked_with_the_same_bounds(tmp_path, state, message):
    with pytest.raises(UserError, match=message):
        Control(tmp_path / "control.toml").load_state_dict(state)


def test_a_checkpoint_claiming_ten_to_the_thirty_added_epochs_is_refused(tmp_path):
    trainer, _ = fit(tmp_path, "add_epochs = 1", epochs=1)
    saved = trainer.state_dict()
    saved["callbacks"]["Control"] = {"added": 10**30, "stopped": False}
    with pytest.raises(UserError, match="'added' must be an integer in"):
        trainer.load_state_dict(saved)


def test_the_console_follows_added_epochs_and_prints_control_lines_of_their_own(tmp_path):
    shown = io.StringIO()
    bar = ProgressBar()
    bar.console, bar.plain = Console(file=shown, force_terminal=True, width=120), False  # a live bar
    # the control message goes to sys.stderr as it is when printed: rich redirects it above the live bar
    trainer, history = fit(tmp_path, "add_epochs = 2", epochs=2, extra=[bar], stream=None)
    lines = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown.getvalue()).replace("\r", "\n").splitlines()
    assert len(history) == 4 and lines[-1].startswith("epoch 4/4 ") and " 16/16 " in lines[-1]
    assert not any(re.match(r"epoch [34]/2", line) for line in lines)  # the bar's total follows the added epochs
    assert sum(line.startswith("control: 2 epochs added after epoch 1") for line in lines) == 1, lines
    plain = io.StringIO()
    fit(tmp_path, "add_epochs = 2", epochs=2, extra=[ProgressBar(stream=plain, force_plain=True)])
    assert [line.split()[1] for line in plain.getvalue().splitlines()] == ["1/4", "2/4", "3/4", "4/4"]


def test_epochs_added_after_a_schedule_decayed_to_zero_are_warned_about(tmp_path):
    with pytest.warns(UserWarning, match="train at learning rate 0,.*descend resume RUN --set train.epochs"):
        _, history = fit(tmp_path, "add_epochs = 2", at=2, schedule=ds.schedules.cosine())
    assert history["lr"][3:] == [0.0, 0.0]  # what the warning says happens
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a floor, or no decay: nothing to say
        fit(tmp_path, "add_epochs = 2", at=2, schedule=ds.schedules.cosine(min_lr=1e-4))
        fit(tmp_path, "add_epochs = 2", at=2)


# ---------------------------------------------------------------------------------------------- fuzzing

SCALARS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([10**30, 2**63 - 1, 0, -1]),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=8),
    st.sampled_from(["halve", "double", "maybe", ""]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2),
    max_leaves=5,
)
FILES = st.dictionaries(st.sampled_from(["lr", "add_epochs", "stop", "Stop", "epochs", "lr "]), VALUES, max_size=3)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@FUZZ
@given(raw=FILES)
def test_fuzzed_control_files_parse_to_bounded_commands_or_one_user_error(raw):
    try:
        commands = parse(tomli_w.dumps(raw))
    except UserError as e:
        assert "\n" not in str(e).strip() or "TOML" in str(e)
        return
    for name, value in commands:
        assert {
            "lr": lambda v: 1e-4 <= v <= 1e4,
            "add_epochs": lambda v: 1 <= v <= MAX_EPOCHS,
            "stop": lambda v: v is True,
        }[name](value)


@FUZZ
@given(text=st.text(max_size=40) | FILES.map(tomli_w.dumps))
def test_a_fuzzed_control_file_never_stops_a_fit_with_an_exception(tmp_path_factory, text):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        trainer, history = fit(tmp_path, text, epochs=2)
    assert 1 <= len(history) <= 2 + MAX_EPOCHS
    assert trainer.end_epoch <= MAX_EPOCHS


class WriteTwice(Callback):
    order = 5

    def __init__(self, path, text):
        self.path, self.text = path, text

    def on_epoch_end(self, trainer, logs):
        if trainer.epoch in (0, 2):
            self.path.write_text(self.text + "\n" * trainer.epoch)  # the same mistake, written again


def test_the_same_mistake_made_twice_is_said_twice(tmp_path):
    path = tmp_path / "control.toml"
    trainer = Trainer(
        torch.nn.Linear(4, 3),
        loss="cross_entropy",
        device="cpu",
        callbacks=[WriteTwice(path, 'stop = "maybe"'), Control(path, stream=io.StringIO())],
    )
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("default")  # Python's own: a repeated warning from one place is shown once
        trainer.fit(data(), epochs=4, batch_size=16, progress=False)
    assert [str(w.message).split(":")[0] for w in said] == ["control, after epoch 1", "control, after epoch 3"]
