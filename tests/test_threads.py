"""The thread policy: "auto" picks one thread for small steps or a busy machine, a number is obeyed, and the
process's setting is restored after the fit; descend's package import stays light."""

import io
import subprocess
import sys

import pytest
import torch
from torch import nn

import descend as ds
from descend.errors import UserError
from descend.train import threads


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_step_flops_counts_forward_and_backward():
    model = nn.Linear(10, 4)
    # forward: 2·10·4 multiply-adds per sample, 8 samples; backward taken as twice the forward
    assert threads.step_flops(model, torch.zeros(8, 10)) == 3 * 2 * 10 * 4 * 8
    assert model.training
    conv = nn.Conv2d(4, 8, 3, groups=2)  # 8 channels × 3×3 outputs, each over 2 input channels × 3×3
    assert threads.step_flops(conv, torch.zeros(1, 4, 5, 5)) == 3 * 2 * (8 * 9) * (2 * 9)


def test_step_flops_runs_the_model_on_one_sample_only():
    """The count grows with the batch in proportion: one sample is run, not the whole batch, at every fit."""
    model, seen = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(3)), []
    model(torch.zeros(1, 1, 6, 6))  # the lazy layer takes its size
    model.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs[0])))
    batch = torch.zeros(1024, 1, 6, 6)
    assert threads.step_flops(model, batch) == 1024 * threads.step_flops(model, batch[:1]) == 1024 * 6 * (
        4 * 16 * 9 + 3 * 64)
    assert seen == [1, 1]


def test_auto_uses_one_thread_for_a_small_step(two_threads, monkeypatch):
    monkeypatch.setattr(threads, "idle_cores", lambda: 2.0)
    assert threads.choose("auto", nn.Linear(10, 4), torch.zeros(8, 10)) == 1
    big = nn.Sequential(nn.Linear(512, 2048), nn.Linear(2048, 512))
    assert threads.choose("auto", big, torch.zeros(64, 512)) == 2


def test_auto_uses_one_thread_on_a_busy_machine(two_threads, monkeypatch):
    monkeypatch.setattr(threads, "idle_cores", lambda: 1.0)
    big = nn.Sequential(nn.Linear(512, 2048), nn.Linear(2048, 512))
    assert threads.choose("auto", big, torch.zeros(64, 512)) == 1


def test_idle_cores_leaves_out_this_process(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threads, "_others_runnable_now", lambda: None)  # a system without /proc/loadavg
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.0, 0.0, 0.0))
    assert threads.idle_cores() == 2.0
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.5, 0.0, 0.0))
    assert threads.idle_cores() == 0.5


def test_a_machine_quiet_now_is_not_taken_for_busy_by_the_lagging_load_average(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.97, 1.5, 1.0))  # a run that ended a moment ago
    monkeypatch.setattr(threads, "_others_runnable_now", lambda: 0)         # only this process runs now
    assert threads.idle_cores() == 2.0
    monkeypatch.setattr(threads, "_others_runnable_now", lambda: 2)         # spinning processes are in both
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.2, 1.5, 1.0))
    assert threads.idle_cores() == pytest.approx(0.8)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.0, 1.0, 1.0))  # one look at a busy queue: the average
    monkeypatch.setattr(threads, "_others_runnable_now", lambda: 3)
    assert threads.idle_cores() == 2.0


def test_a_quiet_load_average_needs_no_look_at_the_run_queue(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.9, 1.0, 1.0))  # this process alone

    def look():
        raise AssertionError("looked at the run queue")

    monkeypatch.setattr(threads, "_others_runnable_now", look)
    assert threads.idle_cores() == 2.0


def _fake_proc(monkeypatch, runnable: int, tasks: dict[str, str] | None = None):
    """/proc/loadavg says ``runnable`` threads run machine-wide; ``tasks`` (thread id: state) replace this process's
    own threads, or the real /proc/self/task is read. Nothing depends on what else the machine runs."""
    real_open = open

    def fake_open(path, *args, **kwargs):
        if path == "/proc/loadavg":
            return io.StringIO(f"0.50 0.40 0.30 {runnable}/300 4242\n")
        if tasks is not None and path.startswith("/proc/self/task/"):
            tid = path.split("/")[4]
            return io.StringIO(f"{tid} (py thread) {tasks[tid]} 1 2 3\n")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(threads, "open", fake_open, raising=False)
    if tasks is not None:
        monkeypatch.setattr(threads.os, "listdir", lambda path: list(tasks))


def test_the_run_queue_leaves_out_this_process_s_own_threads(monkeypatch):
    # 5 runnable machine-wide, 2 of them ours (the caller and a spinning OpenMP worker; a third thread sleeps)
    _fake_proc(monkeypatch, 5, {"100": "R", "101": "S", "102": "R"})
    assert threads._others_runnable_now() == 3
    _fake_proc(monkeypatch, 1, {"100": "R"})  # only the caller runs: nobody else
    assert threads._others_runnable_now() == 0


def test_the_calling_thread_counts_as_its_own(monkeypatch):
    # the real /proc/self/task: the thread that reads its own state is running, so a machine where only it runs
    # has no other runnable thread, however busy the real machine is
    _fake_proc(monkeypatch, 1)
    assert threads._others_runnable_now() in (0, None)


@pytest.mark.parametrize("bad", [0, -1, "two", True])
def test_a_bad_setting_is_a_user_error(bad):
    with pytest.raises(UserError, match="threads must be"):
        threads.choose(bad, nn.Linear(2, 2), torch.zeros(1, 2))


def test_fit_runs_with_the_asked_threads_and_restores_the_setting(two_threads):
    seen = []

    class Spy(ds.callbacks.Callback):
        def on_epoch_end(self, trainer, logs):
            seen.append(torch.get_num_threads())

    x, y = torch.randn(64, 3), torch.randn(64)
    ds.Trainer(nn.Linear(3, 1), threads=1, callbacks=[Spy()], device="cpu").fit((x, y), epochs=2, batch_size=16)
    assert seen == [1, 1] and torch.get_num_threads() == 2


def test_the_recipe_option_is_checked():
    from descend import config

    raw = config.load("examples/quickstart.toml").model_dump()
    raw["train"]["threads"] = 0
    with pytest.raises(UserError, match="threads"):
        config.validate(raw)
    raw["train"]["threads"] = 1
    assert config.validate(raw).train.threads == 1


def test_importing_descend_and_its_errors_does_not_import_torch():
    code = "import sys, descend, descend.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
