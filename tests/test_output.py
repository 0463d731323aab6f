"""Honest, consistent output: epochs and steps numbered alike in every file and message, progress from Python,
`descend show` / `--version`, readable config.toml, one-line warnings, an untruncated `descend datasets`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import descend as ds
from descend import config
from descend.cli import main

DIVERGING = """
[data]
name = "diabetes"
[model]
hidden = [16]
[train]
epochs = 30
batch_size = 32
device = "cpu"
loss = "mse"
log_every = 1
[optimizer]
name = "gd"
lr = 0.5
"""


def test_the_divergence_message_and_summary_name_the_same_step_and_epoch(tmp_path, capsys):
    recipe, out = tmp_path / "r.toml", tmp_path / "run"
    recipe.write_text(DIVERGING)
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 3
    message = capsys.readouterr().err
    step, epoch = map(int, re.search(r"non-finite at step (\d+) \(epoch (\d+)\)", message).groups())
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["step"], summary["epoch"]) == (step, epoch) and epoch >= 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, epoch))          # the epochs that finished, from 1
    assert all(r["step"] < step for r in rows)


def test_progress_from_python_learns_the_epoch_count(capsys):
    x = torch.randn(32, 3)
    trainer = ds.Trainer(nn.Linear(3, 1), device="cpu")
    trainer.fit((x, x.sum(1, keepdim=True)), epochs=2, batch_size=16)
    assert capsys.readouterr().out == ""                                 # not a terminal: quiet by default
    trainer.fit((x, x.sum(1, keepdim=True)), epochs=2, batch_size=16, progress=True)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ["3/4", "4/4"]        # the second fit counts on
    assert trainer.callbacks == []                                        # the bar is the fit's own


def test_show_and_version(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.toml").write_text('[data]\nname = "iris"\n[model]\nhidden = [16, 16]\n')
    assert main(["show", "r.toml", "--set", "train.epochs=4"]) == 0
    text = capsys.readouterr().out
    assert "hidden = [16, 16]\n" in text and "epochs = 4\n" in text and "batch_size = 128\n" in text
    assert "beta1 = 0.9\n" in text and 'activation = "relu"\n' in text   # the parts' own defaults too
    assert config.validate(__import__("tomllib").loads(text)).train.epochs == 4
    assert [p.name for p in tmp_path.iterdir()] == ["r.toml"]            # nothing trained, nothing written
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"descend {ds.__version__}\n"


def test_show_prints_the_data_fields_loading_resolves(tmp_path, capsys, monkeypatch):
    """The dataset's options, the task, a CSV's target and test_fraction: printed, and the printed recipe is itself
    a recipe that shows the same (nothing left for a reader to guess)."""
    import tomllib

    monkeypatch.chdir(tmp_path)
    rows = "\n".join(f"{i},{i % 3},{'abc'[i % 3]}" for i in range(120))
    (tmp_path / "t.csv").write_text("size,colour,kind\n" + rows + "\n")
    (tmp_path / "csv.toml").write_text('[data]\nname = "t.csv"\n[model]\nhidden = [4]\n')
    (tmp_path / "gen.toml").write_text('[data]\nname = "mnist1d"\n[model]\nname = "cnn1d"\nchannels = [4]\n')
    for name, expected in (("csv.toml", {"target": "kind", "test_fraction": 0.2, "task": "classification",
                                         "delimiter": ","}),
                           ("gen.toml", {"task": "classification", "num_samples": 5000, "data_seed": 42})):
        assert main(["show", name]) == 0
        text = capsys.readouterr().out
        assert expected.items() <= tomllib.loads(text)["data"].items(), text
        (tmp_path / f"again-{name}").write_text(text)
        assert main(["show", f"again-{name}"]) == 0
        first, again = tomllib.loads(text)["data"], tomllib.loads(capsys.readouterr().out)["data"]
        assert again == {**first, "name": again["name"]}
    assert "# test_fraction unset: the dataset's own test split is used (1000 rows)" in text


def test_warnings_print_as_one_line(tmp_path):
    """A real process (pytest records warnings itself): one ``descend: warning:`` line, no file:line or source."""
    (tmp_path / "r.toml").write_text('[data]\nname = "mnist1d"\n[train]\nepochs = 1\n[augment]\nhflip = 0.5\n')
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run([sys.executable, "-m", "descend.cli", "run", str(tmp_path / "r.toml"), "--quiet", "--out",
                           str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("descend: warning: ") and "flip" in lines[0], done.stderr


@pytest.mark.parametrize("command", [["show", "examples/quickstart.toml"], ["datasets"]])
def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(command):
    """`descend show … | head -1`: the pipe closes while descend still writes; it stops quietly (exit 141, SIGPIPE's
    code, as Unix tools end) with nothing on stderr, not a BrokenPipeError traceback."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    reader = subprocess.Popen([sys.executable, "-m", "descend.cli", *command], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reader.stdout.close()  # the reader has gone before descend's first line (as `head` after its lines)
    stderr = reader.stderr.read().decode()
    # 141 from descend's own handler; rich's console, which prints the tables, ends with 1 on a closed pipe
    assert reader.wait(timeout=120) in (141, 1), stderr
    assert stderr == ""


def test_datasets_are_listed_whole_when_piped(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    for row in ds.data.datasets():
        assert re.search(rf"│ {re.escape(row['name'])} +│", out) and row["source"][:60] in out


def test_model_summary_lists_layers_shapes_and_parameters():
    model = ds.models.mlp([8], input_shape=(4,), num_outputs=3)
    summary = ds.models.summary(model, (4,))
    assert [(kind, shape) for _, kind, shape, _ in summary.rows if kind == "Linear"] == [("Linear", (8,)),
                                                                                          ("Linear", (3,))]
    assert summary.total == summary.trainable == 4 * 8 + 8 + 8 * 3 + 3 == sum(r[3] for r in summary.rows)
    assert str(summary).splitlines()[-1] == "total 67 parameters (67 trainable)"
    assert "(B, 8)" in str(summary) and "(2, 8)" not in str(summary)    # the probe's batch of 2 is not shown
    assert "(128, 8)" in str(ds.models.summary(model, (4,), batch_size=128))
    with pytest.raises(ds.UserError, match=r"cannot take inputs of shape \(5,\)"):
        ds.models.summary(model, (5,))


def test_model_summary_columns_line_up_past_ten_layers():
    """Every column starts at the same character on every line, with one- and two-digit layer names."""
    model = ds.models.mlp([8] * 12, input_shape=(4,), num_outputs=3)
    lines = str(ds.models.summary(model, (4,))).splitlines()[:-1]
    assert len(lines) > 12 and any(line.startswith("10 ") for line in lines)
    header = lines[0]
    starts = [header.index(word) for word in ("type", "output shape")]
    for line in lines[1:]:
        for start in starts:
            assert line[start - 2:start] == "  " and line[start] != " ", (line, start)
        assert line.endswith(line.split()[-1]) and len(line) == len(header)   # parameters right-aligned


def test_a_run_prints_its_model_and_logs_loss_and_lr_every_log_every_steps(tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe, out = tmp_path / "r.toml", tmp_path / "run"
    recipe.write_text('[data]\nname = "iris"\n[model]\nhidden = [8]\n[train]\nepochs = 2\nbatch_size = 16\n'
                      'device = "cpu"\nlog_every = 2\n[schedule]\nname = "cosine"\nwarmup_fraction = 0.5\n')
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "output shape" in printed and "total 67 parameters" in printed
    steps = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    events = EventAccumulator(str(out / "tb" / "steps"))
    events.Reload()
    lrs = events.Scalars("step/lr")
    assert [e.step for e in lrs] == list(range(2, steps + 1, 2)) and len({round(e.value, 8) for e in lrs}) > 2
    assert [e.step for e in events.Scalars("step/train_loss")] == [e.step for e in lrs]
    epochs = EventAccumulator(str(out / "tb"))
    epochs.Reload()
    assert [e.step for e in epochs.Scalars("loss/train")] == [1, 2]


def test_ctrl_c_ends_the_progress_bar_and_its_line_before_any_message():
    """On a terminal the bar redraws itself; a Ctrl-C must stop it and end its line, so the message printed next
    (the resume hint) is not drawn over."""
    import io

    from rich.console import Console

    from descend.train.callbacks import Callback
    from descend.train.logs import ProgressBar

    class CtrlCAt(Callback):
        def on_batch_end(self, trainer):
            if trainer.global_step == 3:
                raise KeyboardInterrupt

    screen = io.StringIO()
    bar = ProgressBar()
    bar.console, bar.plain = Console(file=screen, force_terminal=True, width=100), False
    x = torch.randn(64, 3)
    trainer = ds.Trainer(nn.Linear(3, 1), device="cpu", callbacks=[bar, CtrlCAt()])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit((x, x.sum(1, keepdim=True)), epochs=2, batch_size=16)
    assert bar._progress is None                           # stopped: nothing redraws over what follows
    shown = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", screen.getvalue())  # the text without terminal codes
    assert "2/8" in shown and shown.endswith("\n")                # the step before the Ctrl-C, then a new line


def test_relative_data_paths_are_read_from_the_recipes_folder_and_set_paths_from_the_working_one(tmp_path,
                                                                                                  monkeypatch):
    (tmp_path / "recipes" / "data").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "recipes" / "r.toml").write_text('[data]\nname = "data/x.csv"\n')
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert config.load("../recipes/r.toml").data.name == str(tmp_path / "recipes" / "data" / "x.csv")
    assert config.load("../recipes/r.toml", ['data.name="y.csv"']).data.name == str(tmp_path / "elsewhere" / "y.csv")
    assert config.load("../recipes/r.toml", ['data.name="iris"']).data.name == "iris"   # a dataset name stays


READ_ONLY = """
import numpy as np, pandas as pd, sklearn.datasets
import descend as ds
wine = sklearn.datasets.load_wine()
x = np.asarray(wine.data, dtype=np.float32)
x.setflags(write=False)                                   # as a DataFrame's values under copy-on-write
y = wine.target.copy()
y.setflags(write=False)
trainer = ds.Trainer(ds.models.mlp(hidden=[8]), seed=0)
trainer.fit((x, y), (x[::9], y[::9]), epochs=1, batch_size=32, progress=False)
trainer.predict(x)
frame = pd.DataFrame(wine.data, columns=wine.feature_names)
from descend.ensemble import Ensemble
ensemble = Ensemble([trainer.model, trainer.model], "classification")
ensemble.evaluate(x, y)
from descend.sklearn import DescendClassifier
DescendClassifier(train={"epochs": 1}).fit(x, y).predict(x)
print(trainer.predict(frame.to_numpy()).shape[0])
"""


def test_read_only_arrays_and_data_frames_give_no_torch_warning(tmp_path):
    """torch warns once per process when it is handed a non-writable array: a fresh process, warnings as errors."""
    done = subprocess.run([sys.executable, "-W", "error", "-c", READ_ONLY], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "178", done.stderr[-2000:]
    assert done.stderr == ""


def test_a_notebook_without_ipywidgets_gets_plain_epoch_lines_and_no_rich_warning(monkeypatch):
    import importlib.util

    import rich.console

    monkeypatch.setattr(rich.console, "_is_jupyter", lambda: True)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ipywidgets" else real(name, *a))
    bar = ds.train.logs.ProgressBar()
    assert bar.console.is_jupyter and bar.plain
    lines = []
    monkeypatch.setattr(bar.console, "print", lambda line, **kw: lines.append(line))   # a notebook's display
    data = ds.data.load("iris", val_fraction=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.Trainer(ds.models.mlp(hidden=[4]), callbacks=[bar], seed=0).fit(data.train, data.val, epochs=2,
                                                                            batch_size=32)
    assert [line[:9] for line in lines] == ["epoch 1/2", "epoch 2/2"]


@pytest.mark.parametrize(("name", "options", "message"), [
    ("sine", {}, r"validation split of 'sine' has 2 rows: its mean loss rests on 2 samples.*data.val_fraction"),
    ("iris", {"val_fraction": 0.05, "test_fraction": 0.2}, r"validation split of 'iris' has 6 rows: one row moves "
                                                            r"its accuracy by 17%.*at least 10 rows"),
    ("iris", {"test_fraction": 0.033}, r"test split of 'iris' has 5 rows.*data.test_fraction"),
    ("digits", {"val_fraction": 0.005}, r"has 7 rows: fewer rows than the 10 classes, so some class is missing"),
])
def test_tiny_validation_and_test_splits_are_warned_about_with_their_size(name, options, message):
    with pytest.warns(UserWarning, match=message):
        ds.data.load(name, **options)


def test_held_out_splits_of_ten_rows_or_more_pass_without_a_word():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds.data.load("wine")                                       # 36 test rows, 14 validation rows
        ds.data.load("sine", val_fraction=0.5)                     # 10 fresh validation samples
        ds.data.load("iris", val_fraction=0.0)                     # no validation split at all


def test_doctor_writes_under_runs_by_default_not_into_the_current_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.toml").write_text('[data]\nname = "iris"\n[model]\nhidden = [8]\n[train]\nepochs = 2\n')
    assert main(["doctor", "r.toml", "--budget", "1"]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert re.fullmatch(r"runs/doctor-r-\d{8}-\d{6}/doctor\.html", written[1]) and written[0] == "r.toml"
    assert len(written) == 3 and written[2].endswith("/doctor.json")
    assert f"report: {written[1]}, {written[2]}" in capsys.readouterr().out
