"""The run report plots the learning rates that ran (logged with every epoch in metrics.jsonl), not the schedule
planned at the start: a babysitting halving, a stop, and a resume that trains longer show where they happened."""

from __future__ import annotations

import base64
import json

import pytest

from descend import config as cfg
from descend.report.run import lr_figure, write_run_report
from descend.runs import experiment
from descend.train.callbacks import Callback
from descend.train.control import Control

RAW = {
    "name": "lr_report",
    "seed": 0,
    "data": {"name": "iris"},
    "model": {"name": "mlp", "hidden": [8]},
    "train": {"epochs": 6, "batch_size": 32},
    "optimizer": {"name": "sgd", "lr": 0.1},
    "schedule": {"name": "cosine"},
}


class WriteAt(Callback):
    order = 5

    def __init__(self, path, epoch, text):
        self.path, self.epoch, self.text = path, epoch, text

    def on_epoch_end(self, trainer, logs):
        if trainer.epoch + 1 == self.epoch:  # after this 1-based epoch
            self.path.write_text(self.text)


def plotted(fig) -> tuple[list[float], list[float], list[str]]:
    ax = fig.axes[0]
    line = ax.lines[0]
    return list(line.get_xdata()), list(line.get_ydata()), [t.get_text() for t in ax.texts]


def test_the_plot_is_the_logged_rates_with_the_babysitting_marks():
    rows = [{"epoch": e, "lr": 0.02 if e <= 7 else 0.01} for e in range(1, 15)]
    rows[6]["control_lr_factor"] = 0.5
    rows[13]["control_stop"] = 1
    epochs, rates, marks = plotted(lr_figure(rows))
    assert epochs == list(range(1, 15)) and rates == [row["lr"] for row in rows]
    assert marks == ["lr x0.5", "stop"]


def test_the_report_shows_the_logged_rates_not_the_plan(tmp_path):
    rows = [{"epoch": e, "train_loss": 1.0 / e, "lr": 0.02 if e <= 7 else 0.01} for e in range(1, 15)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    plan = b"\x89PNG the schedule as planned at the start"
    (tmp_path / "schedule.png").write_bytes(plan)
    report = write_run_report(tmp_path).read_text()
    assert "the learning rate that ran in each epoch" in report
    assert base64.b64encode(plan).decode() not in report


@pytest.mark.slow
def test_a_babysat_and_resumed_run_reports_the_rates_that_ran(tmp_path):
    out = tmp_path / "run"
    config = cfg.validate(RAW)
    halve_and_stop = WriteAt(out / "control.toml", 2, 'lr = "halve"\nstop = true')
    experiment.build(config).fit(
        [halve_and_stop, Control(out / "control.toml", stream=open("/dev/null", "w"))], out=out
    )
    longer = cfg.validate({**RAW, "train": {**RAW["train"], "epochs": 8}})
    experiment.build(longer).fit([Control(out / "control.toml")], out=out, resume=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    report = write_run_report(out).read_text()
    epochs, rates, marks = plotted(lr_figure(rows))
    assert epochs == list(range(1, 9)) and rates == pytest.approx([row["lr"] for row in rows])
    assert rates[2] < rates[1] / 2 + 1e-12 and marks == ["lr x0.5, stop"]  # halved after epoch 2, where it stopped
    if (out / "schedule.png").is_file():  # the plan drawn at the start is not what the report shows
        assert base64.b64encode((out / "schedule.png").read_bytes()).decode() not in report
    assert "the learning rate that ran in each epoch" in report
