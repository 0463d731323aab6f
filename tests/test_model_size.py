"""Sizes a recipe may ask for that no machine holds: the model's parameters are counted on torch's meta device
(shapes, no memory) and refused, with the estimate and the limit, before anything is allocated; a schedule's
figure over 10^9 epochs samples its steps instead of listing them."""

from __future__ import annotations

import time

import pytest

from descend import models, schedules
from descend.errors import UserError


@pytest.fixture(autouse=True)
def _no_limit(monkeypatch):
    monkeypatch.delenv("DESCEND_MEMORY_LIMIT", raising=False)


@pytest.mark.parametrize(("name", "shape", "options"), [
    ("mlp", (4,), {"hidden": [1_000_000, 1_000_000]}),
    ("mlp", (10**6,), {"hidden": [10**6]}),
    ("cnn2d", (3, 4096, 4096), {"channels": [512], "pool": "none"}),
    ("cnn1d", (1, 10**7), {"channels": [4096], "kernel_size": 1}),
])
def test_a_model_too_large_for_memory_is_refused_before_allocating(name, shape, options):
    started = time.perf_counter()
    with pytest.raises(UserError, match=rf"model '{name}' with [\d,]+ parameters .* needs about [\d.]+ [GT]iB, "
                                         r"more than the memory limit of"):
        models.build(name, shape, 10, **options)
    assert time.perf_counter() - started < 5


def test_the_limit_can_be_set_and_the_estimate_is_the_parameter_count(monkeypatch):
    model = models.build("mlp", (4,), 3, hidden=[8])
    count = models.count_parameters(model)  # 4*8+8 + 8*3+3 = 67
    monkeypatch.setenv("DESCEND_MEMORY_LIMIT", str(count * models.networks.BYTES_PER_PARAMETER))
    assert models.count_parameters(models.build("mlp", (4,), 3, hidden=[8])) == count
    monkeypatch.setenv("DESCEND_MEMORY_LIMIT", str(count * models.networks.BYTES_PER_PARAMETER - 1))
    with pytest.raises(UserError, match=r"model 'mlp' with 67 parameters .* needs about 1.0 KiB, more than the "
                                        r"memory limit of 1.0 KiB"):
        models.build("mlp", (4,), 3, hidden=[8])


@pytest.mark.parametrize("limit", ["lots", "1e400", "-5G", "0", "nan", "inf"])
def test_a_memory_limit_that_is_not_a_positive_size_is_one_message(monkeypatch, limit):
    monkeypatch.setenv("DESCEND_MEMORY_LIMIT", limit)
    with pytest.raises(UserError, match="DESCEND_MEMORY_LIMIT must be a positive size in bytes"):
        models.build("mlp", (4,), 3)


def test_a_schedule_over_a_billion_epochs_is_drawn_from_sampled_steps():
    started = time.perf_counter()
    figure = schedules.plot(schedules.create("cosine"), steps_per_epoch=10, total_steps=10**10)
    (line,) = figure.axes[0].get_lines()
    assert len(line.get_xdata()) <= schedules.registry.PLOT_POINTS
    assert line.get_xdata()[-1] > 0.99e9 and time.perf_counter() - started < 10
    (short,) = schedules.plot(schedules.create("step", step_size=1), steps_per_epoch=3,
                              total_steps=30).axes[0].get_lines()
    assert len(short.get_xdata()) == 30  # short runs keep every step
