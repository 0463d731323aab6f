"""Learning-rate schedules: each textbook formula at chosen steps, equality with torch's schedulers, warmup,
the plateau controller's state across a resume, create() validation and plot()."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.optim import lr_scheduler as tls

from descend import schedules as S
from descend.errors import UserError

SPE = 10  # steps per epoch used throughout


def bound(schedule: S.Schedule, epochs: int = 10, spe: int = SPE) -> S.Schedule:
    schedule.bind(spe, epochs * spe)
    return schedule


def ours(schedule: S.Schedule, base_lr: float, steps: range) -> list[float]:
    return [schedule.lr(base_lr, s) for s in steps]


def torch_lrs(make, base_lr: float, n: int, metrics=None) -> list[float]:
    """The lr torch's scheduler gives for each of ``n`` scheduler periods (read before the optimizer step)."""
    p = torch.nn.Parameter(torch.zeros(1))
    p.grad = torch.zeros(1)
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = make(opt)
    out = []
    for i in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(metrics[i]) if metrics is not None else sched.step()
    return out


# Torch's schedulers mostly update the lr recursively (lr_t = lr_{t-1} · ratio), ours evaluate the closed
# form; each recursive update adds about one ulp (2^-52 ≈ 2.2e-16) of relative error, so over the ≤ 100
# updates here the difference stays below 100 · 2.2e-16 ≈ 2.2e-14 (measured: at most 3e-15); rel 1e-13 leaves
# a margin and still fails on any off-by-one step. The absolute floor 1e-16 · base covers rates that reach 0
# (ends of cosine and polynomial decays), where a relative bound means nothing.
def assert_same(a: list[float], b: list[float], base_lr: float) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert math.isclose(x, y, rel_tol=1e-13, abs_tol=1e-16 * base_lr), (i, x, y)


def per_epoch(values: list[float], spe: int = SPE) -> list[float]:
    """Expand one value per epoch into one per step."""
    return [v for v in values for _ in range(spe)]


# ----------------------------------------------------------------------------------- textbook formulas


def test_constant_is_eta0_everywhere():
    s = bound(S.constant())
    assert ours(s, 0.3, range(100)) == [0.3] * 100


def test_step_defaults_times_point_one_every_30_epochs():
    s = bound(S.step(), epochs=100)  # defaults: step_size=30, gamma=0.1
    at = {e: s.lr(1.0, e * SPE) for e in (0, 29, 30, 59, 60, 90)}
    assert at[0] == at[29] == 1.0
    assert at[30] == pytest.approx(0.1, rel=1e-15)
    assert at[59] == pytest.approx(0.1, rel=1e-15)
    assert at[60] == pytest.approx(0.01, rel=1e-15)
    assert at[90] == pytest.approx(1e-3, rel=1e-15)
    assert s.lr(1.0, 30 * SPE - 1) == 1.0  # last step of epoch 29 is still undecayed


def test_multistep_counts_milestones_passed():
    s = bound(S.multistep(milestones=[3, 7], gamma=0.5), epochs=10)
    assert [s.lr(2.0, e * SPE) for e in range(10)] == [2.0] * 3 + [1.0] * 4 + [0.5] * 3


def test_exponential_gamma_and_percent_alpha_form():
    s = bound(S.exponential(gamma=0.9))
    assert s.lr(1.0, 5 * SPE + 3) == pytest.approx(0.9**5, rel=1e-15)
    # η_t = η₀ (1 − α/100)^t with α = 5 (percent)
    a = bound(S.exponential(alpha=5, per="step"))
    assert a.lr(2.0, 7) == pytest.approx(2.0 * 0.95**7, rel=1e-15)


def test_cosine_annealing_formula_and_floor():
    s = bound(S.cosine(), epochs=10)  # T = 100 steps
    T = 100
    for t in (0, 1, 25, 50, 75, 99):
        assert s.lr(1.0, t) == pytest.approx(0.5 * (1 + math.cos(math.pi * t / T)), rel=1e-15, abs=1e-16)
    assert s.lr(1.0, 50) == pytest.approx(0.5, rel=1e-15)
    f = bound(S.cosine(min_lr=0.01), epochs=10)
    assert f.lr(1.0, 0) == 1.0
    assert f.lr(1.0, 50) == pytest.approx(0.01 + 0.5 * 0.99, rel=1e-15)
    assert f.lr(1.0, 100) == pytest.approx(0.01, rel=1e-15)
    assert f.lr(1.0, 10_000) == pytest.approx(0.01, rel=1e-15)  # past the end: the floor, not a new cycle


def test_linear_decay_formula():
    s = bound(S.linear(), epochs=10)
    for t in (0, 10, 50, 99):
        assert s.lr(0.4, t) == pytest.approx(0.4 * (1 - t / 100), rel=1e-15)
    e = bound(S.linear(per="epoch"), epochs=10)  # T = 10 epochs, t = epoch index
    assert e.lr(1.0, 35) == pytest.approx(1 - 3 / 10, rel=1e-15)


def test_polynomial_power():
    s = bound(S.polynomial(power=2.0, min_lr=0.1), epochs=10)
    assert s.lr(1.0, 30) == pytest.approx(0.1 + 0.9 * 0.7**2, rel=1e-15)


def test_inverse_time_and_inverse_sqrt():
    s = bound(S.inverse_time(decay_rate=0.5))
    assert s.lr(1.0, 4 * SPE) == pytest.approx(1 / (1 + 0.5 * 4), rel=1e-15)
    r = bound(S.inverse_sqrt())
    for e in (0, 3, 8):  # η^t = η / √(t + 1)
        assert r.lr(0.3, e * SPE + 9) == pytest.approx(0.3 / math.sqrt(e + 1), rel=1e-15)


def test_cosine_restarts_cycles_grow_by_mult():
    s = bound(S.cosine_restarts(period=1, mult=2), epochs=7)  # cycles of 10, 20, 40 steps
    assert s.lr(1.0, 0) == s.lr(1.0, 10) == s.lr(1.0, 30) == 1.0
    assert s.lr(1.0, 5) == pytest.approx(0.5, rel=1e-15)
    assert s.lr(1.0, 20) == pytest.approx(0.5, rel=1e-15)  # middle of the 20-step cycle
    assert s.lr(1.0, 50) == pytest.approx(0.5, rel=1e-15)  # middle of the 40-step cycle


def test_cyclic_triangle():
    s = bound(S.cyclic(half_period=1, div_factor=4))  # 10 steps up, 10 down, from 0.25 to 1
    assert [round(s.lr(1.0, t), 12) for t in (0, 5, 10, 15, 20, 25)] == [0.25, 0.625, 1.0, 0.625, 0.25, 0.625]


def test_one_cycle_endpoints():
    s = bound(S.one_cycle(pct_start=0.3, div_factor=25, final_div_factor=1e4), epochs=10)
    assert s.lr(1.0, 0) == pytest.approx(1 / 25, rel=1e-15)
    assert s.lr(1.0, 29) == pytest.approx(1.0, rel=1e-15)  # peak at pct_start · T − 1
    assert s.lr(1.0, 99) == pytest.approx(1 / 25 / 1e4, rel=1e-12)


def test_per_epoch_is_constant_within_an_epoch_and_per_step_is_not():
    e = bound(S.cosine(per="epoch"))
    for epoch in range(10):
        assert len({e.lr(1.0, epoch * SPE + j) for j in range(SPE)}) == 1
    assert e.lr(1.0, 3 * SPE) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 10)), rel=1e-15)
    s = bound(S.cosine(per="step"))
    assert len({s.lr(1.0, j) for j in range(SPE)}) == SPE


def test_each_group_scales_its_own_base_lr():
    s = bound(S.cosine_restarts(period=2, mult=1, min_lr=0.0))
    for t in (0, 7, 13, 31):
        assert s.lr(0.2, t) == pytest.approx(2 * s.lr(0.1, t), rel=1e-15)


# -------------------------------------------------------------------------------------- equal to torch


@pytest.mark.parametrize(
    "ours_schedule, make, step_every_epoch",
    [
        (S.step(step_size=3, gamma=0.5), lambda o: tls.StepLR(o, step_size=3, gamma=0.5), True),
        (S.multistep(milestones=[2, 5, 6], gamma=0.3),
         lambda o: tls.MultiStepLR(o, [2, 5, 6], gamma=0.3), True),
        (S.exponential(gamma=0.8), lambda o: tls.ExponentialLR(o, gamma=0.8), True),
        (S.exponential(alpha=3, per="step"), lambda o: tls.ExponentialLR(o, gamma=0.97), False),
        (S.cosine(min_lr=0.001), lambda o: tls.CosineAnnealingLR(o, T_max=100, eta_min=0.001), False),
        (S.cosine(per="epoch"), lambda o: tls.CosineAnnealingLR(o, T_max=10), True),
        (S.polynomial(power=2.0), lambda o: tls.PolynomialLR(o, total_iters=100, power=2.0), False),
        (S.linear(), lambda o: tls.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=100), False),
        (S.cosine_restarts(period=1, mult=2, min_lr=0.01),
         lambda o: tls.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=0.01), False),
        (S.cosine_restarts(period=3, mult=1),
         lambda o: tls.CosineAnnealingWarmRestarts(o, T_0=30, T_mult=1), False),
        (S.cyclic(half_period=0.5, div_factor=5),
         lambda o: tls.CyclicLR(o, base_lr=0.02, max_lr=0.1, step_size_up=5, mode="triangular",
                                cycle_momentum=False), False),
        (S.one_cycle(),
         lambda o: tls.OneCycleLR(o, max_lr=0.1, total_steps=100, cycle_momentum=False), False),
        (S.one_cycle(pct_start=0.25, anneal="linear", div_factor=10, final_div_factor=100),
         lambda o: tls.OneCycleLR(o, max_lr=0.1, total_steps=100, pct_start=0.25, anneal_strategy="linear",
                                  div_factor=10, final_div_factor=100, cycle_momentum=False), False),
    ],
    ids=lambda v: repr(v) if isinstance(v, S.Schedule) else "",
)
def test_equals_torch_scheduler(ours_schedule, make, step_every_epoch):
    base = 0.1
    s = bound(ours_schedule, epochs=10)
    theirs = torch_lrs(make, base, 10 if step_every_epoch else 100)
    assert_same(ours(s, base, range(100)), per_epoch(theirs) if step_every_epoch else theirs, base)


def test_warmup_then_cosine_equals_torch_sequential():
    base, w = 0.1, 20
    s = bound(S.warmup(S.cosine(min_lr=0.001), epochs=2, start=0.1), epochs=10)

    def make(o):
        return tls.SequentialLR(o, [tls.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=w),
                                    tls.CosineAnnealingLR(o, T_max=100 - w, eta_min=0.001)], milestones=[w])

    assert_same(ours(s, base, range(100)), torch_lrs(make, base, 100), base)


@pytest.mark.parametrize("mode, sign", [("min", 1.0), ("max", -1.0)])
def test_plateau_equals_torch_reduce_on_plateau(mode, sign):
    base = 0.1
    # a noisy curve that improves, stalls, improves by less than min_delta, then improves again
    metric = [1.0, 0.9, 0.8, 0.81, 0.805, 0.82, 0.799, 0.83, 0.84, 0.85, 0.6, 0.6, 0.61, 0.62, 0.6, 0.59,
              0.63, 0.64, 0.65, 0.66, 0.67, 0.68, 0.69, 0.7, 0.71]
    metric = [sign * m for m in metric]
    options = dict(factor=0.5, patience=2, cooldown=1, min_lr=0.01, min_delta=0.005)
    s = bound(S.plateau(monitor="val_metric", mode=mode, **options), epochs=len(metric))
    got = []
    for epoch, m in enumerate(metric):
        got.append(s.lr(base, epoch * SPE))
        assert s.lr(base, epoch * SPE + SPE - 1) == got[-1]
        s.observe({"val_metric": m, "train_loss": 0.0})
    theirs = torch_lrs(lambda o: tls.ReduceLROnPlateau(o, mode=mode, factor=0.5, patience=2, cooldown=1,
                                                       min_lr=0.01, threshold=0.005, threshold_mode="abs"),
                       base, len(metric), metrics=metric)
    assert_same(got, theirs, base)
    assert len(set(got)) >= 3  # the sequence exercised at least two reductions, down to the floor
    assert got[-1] == 0.01


# ------------------------------------------------------------------------------------ state and resume


def test_plateau_state_survives_a_json_round_trip_and_resume_continues_the_same_curve():
    metric = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98, 0.85, 0.9, 0.91, 0.92, 0.93, 0.94]

    def run(s, values):
        lrs = []
        for m in values:
            lrs.append(s.lr(1.0, 0))
            s.observe({"val_loss": m})
        return lrs

    straight = run(bound(S.plateau(patience=1, factor=0.5)), metric)
    first = bound(S.plateau(patience=1, factor=0.5))
    head = run(first, metric[:5])
    state = json.loads(json.dumps(first.state_dict()))  # JSON-able values only
    resumed = S.plateau(patience=1, factor=0.5)
    resumed.load_state_dict(state)
    resumed.bind(SPE, 100)
    assert head + run(resumed, metric[5:]) == straight
    assert min(straight) < 0.5  # the resumed part reduced too


def test_warmup_forwards_observe_and_state_to_the_inner_schedule():
    s = bound(S.warmup(S.plateau(patience=0, factor=0.5), steps=5))
    s.observe({"val_loss": 1.0})
    s.observe({"val_loss": 2.0})
    assert s.state_dict()["reductions"] == 1
    assert s.lr(1.0, 50) == 0.5


def test_pure_schedules_are_functions_of_step_alone():
    s = bound(S.create("cosine", warmup_epochs=1))
    forward = ours(s, 1.0, range(100))
    assert [s.lr(1.0, t) for t in reversed(range(100))] == forward[::-1]
    assert s.state_dict() == {}


def test_lr_before_bind_is_an_error():
    with pytest.raises(RuntimeError, match="bind"):
        S.cosine().lr(1.0, 0)


# ---------------------------------------------------------------------------------------------- create


def test_create_builds_every_name_with_defaults_except_multistep():
    for name in S.NAMES:
        options = {"milestones": [3]} if name == "multistep" else {}
        s = bound(S.create(name, **options))
        assert s.name == name
        assert all(v > 0 for v in ours(s, 1.0, range(0, 99, 7)))


def test_create_with_warmup_options_matches_the_warmup_function():
    a = bound(S.create("cosine", min_lr=1e-5, warmup_epochs=2, warmup_start=0.1, per="step"))
    b = bound(S.warmup(S.cosine(min_lr=1e-5), epochs=2, start=0.1))
    assert ours(a, 1.0, range(100)) == ours(b, 1.0, range(100))
    assert a.lr(1.0, 0) == pytest.approx(0.1, rel=1e-15)
    assert a.lr(1.0, 10) == pytest.approx(0.55, rel=1e-15)  # halfway through the 20 warmup steps
    assert a.lr(1.0, 20) == 1.0


def test_create_treats_none_as_default():
    assert repr(S.create("step", gamma=None)) == repr(S.step())


@pytest.mark.parametrize(
    "name, options, words",
    [
        ("cosinus", {}, ["cosinus", "cosine", "one_cycle", "plateau"]),
        ("cosine", {"eta_min": 0.1}, ["eta_min", "min_lr", "warmup_epochs"]),
        ("cosine", {"min_lr": -1.0}, ["min_lr", "-1.0", ">= 0"]),
        ("step", {"gamma": 1.5}, ["gamma", "1.5", "(0, 1]"]),
        ("step", {"per": "batch"}, ["per", "batch", "'step'", "'epoch'"]),
        ("multistep", {}, ["milestones"]),
        ("multistep", {"milestones": [5, 3]}, ["milestones", "increasing"]),
        ("exponential", {"gamma": 0.9, "alpha": 5}, ["gamma", "alpha"]),
        ("plateau", {"patience": 2.5}, ["patience", "2.5", "integer"]),
        ("plateau", {"per": "step"}, ["per", "monitor"]),
        ("plateau", {"monitor": "throughput"}, ["throughput", "mode"]),
        ("one_cycle", {"anneal": "cosine"}, ["anneal", "'cos'", "'linear'"]),
        ("cosine", {"warmup_start": 0.2}, ["warmup_start", "warmup_epochs"]),
        ("cosine", {"warmup_epochs": 1, "warmup_steps": 3}, ["epochs", "steps"]),
        ("cosine", {"warmup_epochs": 1, "warmup_start": 2}, ["start", "2", "[0, 1]"]),
        ("cyclic", {"div_factor": True}, ["div_factor", "True"]),
    ],
)
def test_create_rejects_bad_input_naming_option_value_and_allowed(name, options, words):
    with pytest.raises(UserError) as err:
        S.create(name, **options)
    for word in words:
        assert word in str(err.value)


def test_warmup_longer_than_training_is_a_user_error():
    s = S.warmup(S.cosine(), epochs=12)
    with pytest.raises(UserError, match="120 warmup steps"):
        s.bind(SPE, 100)


def test_plateau_missing_metric_lists_the_logged_names():
    s = bound(S.plateau(monitor="val_loss"))
    with pytest.raises(UserError, match="train_loss, val_accuracy"):
        s.observe({"val_accuracy": 0.5, "train_loss": 1.0})


# ------------------------------------------------------------------------------------------------ plot


def test_plot_draws_the_curve_and_leaves_the_schedule_unbound(tmp_path):
    from matplotlib.figure import Figure

    s = S.warmup(S.cosine(), epochs=1)
    path = tmp_path / "lr.png"
    fig = S.plot(s, steps_per_epoch=SPE, total_steps=100, base_lr=0.5, path=path)
    assert isinstance(fig, Figure)
    assert path.stat().st_size > 1000
    x, y = fig.axes[0].lines[0].get_data()
    assert list(x[:2]) == [0.0, 0.1] and x[-1] == pytest.approx(9.9)
    assert max(y) == 0.5 and y[0] == pytest.approx(0.05)
    assert s.steps_per_epoch is None  # plot worked on a copy
