"""descend.optim.create and friends: options, validation, parameter groups, state, schedules, closures,
the momentum formulations, L2 versus decoupled decay, AdaGrad's shrinking step, and the property table."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import descend.optim as O
from descend.errors import UserError
from descend.optim.composed import ComposedOptimizer
from test_optim_reference import init_params, loss_at


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)).double()


# ---- options and validation ----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "hyper", "message"), [
    ("adam", {"lr": -1.0}, "optimizer 'adam': option 'lr' must be a number >= 0; got -1.0."),
    ("adam", {"beta1": 1.5}, "option 'beta1' must be a number in [0, 1); got 1.5."),
    ("adam", {"beta2": 1.0}, "option 'beta2' must be a number in [0, 1); got 1.0."),
    ("momentum", {"momentum": -0.1}, "option 'momentum' must be a number in [0, 1); got -0.1."),
    ("momentum", {"momentum_form": "nag"}, "option 'momentum_form' must be one of 'heavy_ball', 'velocity', 'ema'; "
     "got 'nag'."),
    ("adam", {"bias_correction": "yes"}, "option 'bias_correction' must be true or false; got 'yes'."),
    ("adam", {"weight_decay_mode": "both"},
     "option 'weight_decay_mode' must be one of 'l2', 'decoupled'; got 'both'."),
    ("adam", {"betas": (0.9, 0.99)}, "optimizer 'adam': unknown option 'betas'; valid options: lr, beta1,"),
    ("lbfgs", {}, "unknown optimizer 'lbfgs'; valid names:"),
    ("newton", {"damping": 0.0}, "option 'damping' must be a number > 0; got 0.0."),
    ("rmsprop", {"eps": float("nan")}, "option 'eps' must be a number >= 0; got nan."),
])
def test_bad_options_name_the_option_value_and_range(name, hyper, message):
    with pytest.raises(UserError) as info:
        O.create(name, **hyper)
    assert message in str(info.value)


def test_newton_refuses_large_models():
    with pytest.raises(UserError, match="model has 6000 parameters but max_params is 5000"):
        O.create("newton", [torch.zeros(6000)])


def test_spec_validates_eagerly_and_builds_later():
    spec = O.create("adamw", lr=3e-3, weight_decay=0.05)
    assert isinstance(spec, O.OptimizerSpec) and spec.name == "adamw"
    assert json.loads(json.dumps(spec.options)) == spec.options
    assert spec.options["lr"] == 3e-3 and spec.options["weight_decay_mode"] == "decoupled"
    opt = spec.build(small_model())
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["lr"] == 3e-3
    assert O.create("sgd").name == "gd"


def test_every_option_default_passes_its_own_check():
    for name, opts in O.OPTIONS.items():
        for o in opts:
            assert o.check(name, o.default) == o.default


# ---- parameter groups for weight decay -----------------------------------------------------------------

def test_biases_and_normalisation_are_not_decayed_by_default():
    model = small_model()
    opt = O.create("adamw", model, weight_decay=0.1)
    decayed, kept = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and kept["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decayed["params"]) == ids([model[0].weight, model[3].weight])
    assert ids(kept["params"]) == ids([model[0].bias, model[1].weight, model[1].bias, model[3].bias])


def test_exclude_from_decay_patterns_match_parameter_names():
    model = small_model()
    opt = O.create("momentum", model, weight_decay=0.1, exclude_from_decay=["3.*"])
    decayed, kept = opt.param_groups
    assert {id(p) for p in kept["params"]} == {id(model[3].weight), id(model[3].bias)}
    assert len(decayed["params"]) == 4
    assert len(O.create("momentum", model, weight_decay=0.1, exclude_from_decay=[]).param_groups) == 1


def test_bare_tensors_use_the_dimension_rule_and_refuse_name_patterns():
    w, b = torch.zeros(3, 2), torch.zeros(2)
    decayed, kept = O.create("adam", [w, b], weight_decay=0.1).param_groups
    assert decayed["params"][0] is w and kept["params"][0] is b
    with pytest.raises(UserError, match="pass the nn.Module"):
        O.create("adam", [w, b], weight_decay=0.1, exclude_from_decay=["*.bias"])


# ---- the torch.optim.Optimizer contract ----------------------------------------------------------------

def _train(opt_factory, steps, ws=None, opt=None, start=1):
    ws = ws if ws is not None else [w.clone().requires_grad_(True) for w in init_params()]
    opt = opt or opt_factory(ws)
    for t in range(start, start + steps):
        opt.zero_grad(set_to_none=True)
        if getattr(opt, "needs_closure", False):
            opt.step(lambda t=t: loss_at(ws, t))
        else:
            loss_at(ws, t).backward()
            opt.step()
    return ws, opt


def _plain(obj):
    """Replace tensors by None and check that what is left is JSON (no pickled objects)."""
    if isinstance(obj, torch.Tensor):
        return None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    assert obj is None or isinstance(obj, (bool, int, float, str)), type(obj)
    return obj


STATE_CASES = [("adam", {}), ("adam", {"implementation": "composed"}),
               ("nadam", {"implementation": "composed"}),
               ("momentum", {"momentum_form": "velocity", "nesterov": True}), ("rmsprop", {"momentum": 0.5}),
               ("adadelta", {"implementation": "composed"}), ("adagrad", {"eps_placement": "inside"}),
               ("newton", {"lr": 0.5})]


@pytest.mark.parametrize(("name", "hyper"), STATE_CASES, ids=str)
def test_state_dict_round_trip_continues_the_exact_trajectory(name, hyper):
    factory = lambda ws: O.create(name, ws, lr=0.01 if name != "newton" else 0.5, **{  # noqa: E731
        k: v for k, v in hyper.items() if k != "lr"})
    straight, _ = _train(factory, 30)
    ws, opt = _train(factory, 12)
    saved = opt.state_dict()
    json.dumps(_plain(saved))
    saved = copy.deepcopy(saved)
    ws2 = [w.detach().clone().requires_grad_(True) for w in ws]
    opt2 = factory(ws2)
    opt2.load_state_dict(saved)
    resumed, _ = _train(factory, 18, ws=ws2, opt=opt2, start=13)
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a, b)  # bit-identical: same operations on the same numbers


def test_learning_rate_is_read_from_the_group_at_every_step():
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = O.create("adam", [w], lr=0.1, implementation="composed")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: [1.0, 0.0][min(epoch, 1)])
    (w * w).sum().backward()
    opt.step()
    sched.step()
    before = w.detach().clone()
    opt.zero_grad()
    (w * w).sum().backward()
    opt.step()
    assert opt.param_groups[0]["lr"] == 0.0 and torch.equal(w.detach(), before)


def test_closure_is_evaluated_and_its_loss_returned():
    w = torch.ones(2, requires_grad=True)
    opt = O.create("momentum", [w], implementation="composed")

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 2.0
    assert not hasattr(opt, "needs_closure")


def test_chains_are_checked():
    P = O.parts
    with pytest.raises(UserError, match="learning rate exactly once"):
        ComposedOptimizer([torch.zeros(1)], [P.first_moment()], momentum=0.9)
    with pytest.raises(UserError, match="reads hyper-parameters"):
        ComposedOptimizer([torch.zeros(1)], [P.first_moment(), P.scale_by_lr()], lr=0.1)
    with pytest.raises(UserError, match="bias correction applies to moving averages"):
        P.scale_by_rms("sum", bias_correction=True)
    with pytest.raises(UserError, match="bias correction applies to moving averages"):
        P.first_moment("heavy_ball", bias_correction=True)


def test_a_user_chain_is_a_torch_optimizer():
    """RMSProp's decay ρ with an EMA first moment on the raw gradient and bias correction — a chain no name has."""
    P = O.parts
    w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = ComposedOptimizer([w], P.chain(P.scale_by_adam("beta1", "rho", bias_correction=True), P.scale_by_lr()),
                            lr=0.1, rho=0.9, beta1=0.5, eps=1e-8)
    for step in range(1, 4):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
        if step == 1:  # bias-corrected m̂/√v̂ = g/|g| on the first step: a step of exactly η against the sign
            assert torch.allclose(w.detach(), torch.tensor([0.9, -1.9], dtype=torch.float64), rtol=1e-7)
    assert opt.state[w]["step"] == 3 and set(opt.state[w]) == {"step", "m", "v"}


@pytest.mark.parametrize(("name", "hyper", "keys"), [
    ("gd", {}, {"step"}), ("momentum", {}, {"step", "m"}), ("nesterov", {}, {"step", "m"}),
    ("adagrad", {}, {"step", "v"}), ("rmsprop", {"momentum": 0.9}, {"step", "v", "m"}),
    ("adadelta", {}, {"step", "v", "delta_sq"}), ("adam", {}, {"step", "v", "m"}), ("adamw", {}, {"step", "v", "m"}),
    ("nadam", {}, {"step", "v", "m", "mu_product"}), ("lion", {}, {"step", "m"}),
])
def test_composed_state_keeps_the_checkpoint_layout(name, hyper, keys):
    """The per-parameter state keys are what checkpoints hold: a composed optimizer that renamed a buffer could
    not resume a run written before. Every name in named.CHAINS is covered."""
    from descend.optim import named
    assert set(named.CHAINS) == {"gd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "adamw",
                                 "nadam", "lion"}
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = O.create(name, [w], implementation="composed", **hyper)
    (w**2).sum().backward()
    opt.step()
    assert set(opt.state[w]) == keys


# ---- textbook claims -----------------------------------------------------------------------------------

def test_momentum_formulations_agree_under_a_constant_rate_and_differ_when_it_changes():
    """Momentum is "formulated different ways, but they are equivalent - give same sequence of x".
    heavy_ball (v=ρv+g, w−=ηv) and velocity (v=ρv−ηg, w+=v) coincide for constant η (v_velocity = −η·v);
    ema (v=βv+(1−β)g) is heavy_ball with η scaled by (1−β). When η changes, heavy_ball rescales the whole
    accumulated velocity by the new η, while velocity keeps each past gradient at the η it was taken with."""
    from test_optim_reference import assert_close, run_descend
    heavy = run_descend("momentum", 0.02, schedule=False, momentum=0.9)
    assert_close(run_descend("momentum", 0.02, schedule=False, momentum=0.9, momentum_form="velocity"), heavy,
                 tol=1e-12)
    ema = run_descend("momentum", 0.2, schedule=False, momentum=0.9, momentum_form="ema")
    assert_close(ema, heavy, tol=1e-12)
    # two steps on f(w) = c·w (constant gradient c), η1 = 1 then η2 = 0.1, ρ = 0.5:
    for form, second_step in [("heavy_ball", -0.1 * (0.5 * 1 + 1)), ("velocity", 0.5 * -1.0 - 0.1 * 1)]:
        w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = O.create("momentum", [w], lr=1.0, momentum=0.5, momentum_form=form, implementation="composed")
        for lr in (1.0, 0.1):
            opt.param_groups[0]["lr"] = lr
            opt.zero_grad()
            w.sum().backward()
            before = w.item()
            opt.step()
        assert w.item() - before == pytest.approx(second_step, abs=1e-15)


def _decay_run(name, mode, steps=30, **hyper):
    from test_optim_reference import run_descend
    return run_descend(name, 0.05, steps=steps, weight_decay=0.1, weight_decay_mode=mode,
                       exclude_from_decay=[], **hyper)


def test_l2_and_decoupled_decay_are_the_same_for_sgd_and_not_for_adam():
    """w ← w − η(g + λw) = (1 − ηλ)w − ηg for plain SGD, with the same λ in both modes;
    for Adam the L2 term is divided by √v̂ with the rest of the gradient, so the trajectories part."""
    from test_optim_reference import assert_close
    assert_close(_decay_run("gd", "decoupled", implementation="composed"),
                 _decay_run("gd", "l2", implementation="composed"), tol=1e-12)
    l2, dec = _decay_run("adam", "l2"), _decay_run("adam", "decoupled")
    assert max((a - b).abs().max().item() for a, b in zip(l2, dec, strict=True)) > 1e-3


def test_l2_and_decoupled_decay_with_momentum_differ_by_the_velocity():
    """L2 and weight decay are often called "equivalent for SGD+Momentum". Exactly: with L2 the decay term λw
    passes through the velocity (v = ρv + g + λw, w −= ηv), with decoupled decay it does not
    (v = ρv + g, w ← (1 − ηλ)w − ηv). Neither rescales λw per weight (unlike Adam), and on a flat loss both
    shrink w geometrically: decoupled by exactly (1 − ηλ) per step, L2 — once the velocity has built up — by
    the dominant root of its recursion, ≈ 1 − ηλ/(1 − ρ). So they match only as families (λ_L2 ≈ (1 − ρ)λ),
    not step for step with the same λ."""
    eta, lam, rho = 0.1, 0.1, 0.5  # real roots: the ratio w_{t+1}/w_t converges
    results = {}
    for mode in ("l2", "decoupled"):
        w = torch.ones(1, dtype=torch.float64, requires_grad=True)
        opt = O.create("momentum", [w], lr=eta, momentum=rho, weight_decay=lam, weight_decay_mode=mode,
                       exclude_from_decay=[], implementation="composed")
        trace = []
        for _ in range(200):
            opt.zero_grad()
            (0.0 * w).sum().backward()  # flat loss: only the decay moves w
            opt.step()
            trace.append(w.item())
        results[mode] = trace
    dec, l2 = results["decoupled"], results["l2"]
    assert dec[-1] == pytest.approx((1 - eta * lam) ** 200, rel=1e-12)
    root = torch.linalg.eigvals(torch.tensor([[1 - eta * lam * 1.0, -eta * rho], [lam, rho]],
                                             dtype=torch.float64)).real.max().item()  # (w, v) ← M (w, v)
    assert l2[-1] / l2[-2] == pytest.approx(root, rel=1e-9)
    # the closed form is first order in ηλ = 0.01; its second-order error here is 4.3e-4 relative
    assert root == pytest.approx(1 - eta * lam / (1 - rho), rel=1e-3)
    assert abs(l2[-1] - dec[-1]) > 0.05


def test_adagrad_effective_step_shrinks():
    """AdaGrad's "learning rate effectively decreases over time": with a constant gradient c the t-th step
    is η·c/(√(t·c²) + ε) ≈ η/√t."""
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = O.create("adagrad", [w], lr=0.1)
    steps = []
    for t in range(1, 21):
        opt.zero_grad()
        (3.0 * w).sum().backward()
        before = w.item()
        opt.step()
        steps.append(before - w.item())
        assert steps[-1] == pytest.approx(0.1 / t**0.5, rel=1e-9)
    assert all(a > b for a, b in zip(steps[:-1], steps[1:], strict=True))


CLASSIC_TABLE = """\
SGD	✗	✗	✗	✗
SGD+Momentum	✓	✗	✗	✗
Nesterov	✓	✗	✗	✗
AdaGrad	✗	✓	✗	✗
RMSProp	✗	✓	✓	✗
Adam	✓	✓	✓	✓"""  # the classic "Algorithm / Tracks first moments / ..." table


def test_table_reproduces_the_classic_property_table(capsys):
    O.table()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Algorithm\tTracks first moments (Momentum)")
    got = {line.split("\t")[0]: "\t".join(line.split("\t")[:5]) for line in lines[1:]}
    for row in CLASSIC_TABLE.splitlines():
        assert got[row.split("\t")[0]] == row
    assert len(lines) - 1 == len(O.names())  # one row per optimizer descend has
