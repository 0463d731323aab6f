"""An optimizer step reads nothing back from the device: on a GPU each read (``.item()``, ``float()``, ``bool()``,
``tolist()`` of a tensor) makes the host wait until the device has finished its queued work.

Reads are counted on the CPU in two ways: the four Python methods, patched to count their calls, and torch's own
reads, seen by a ``TorchDispatchMode``: every one of them runs ``aten._local_scalar_dense``, also when torch's
argument parsing turns a 0-dim tensor into a number (``torch._foreach_add_(tensors, t)`` does; with ``alpha=`` it
keeps ``t`` a tensor). Every optimizer ``descend.optim.create`` knows is either checked here or listed with the
reads it makes (strict xfail: a fix shows up as a failure here, to move the name to the checked ones).

Prodigy and D-Adaptation keep their estimates as 0-dim tensors on the device (:mod:`descend.optim.estimates`),
except on the CPU, where a read costs nothing to wait for and they step as the authors' code does: the read counts
here force the device's way (``resident = True``) on the CPU, and the tests of behaviour run both ways. They check
what keeping the estimates on the device must not change: the authors' early return while no gradient has
arrived (against prodigyopt, whose bias correction counts only the steps after it), an exact resume from
``state_dict()``, and a stand-in built from the groups (as the checkpoint check builds one) leaving the original's
estimates alone.

On a CUDA GPU (``pytest -k cuda``, run by ``benchmarks/gpu_check.sh``) the steps also run under
``torch.cuda.set_sync_debug_mode("error")``, which catches what the counters cannot see: a wait inside torch's C++
(a copy from host memory, an error check). Newton is left out there: an eigendecomposition per step, for small
models.
"""

from __future__ import annotations

import copy

import dadaptation
import prodigyopt
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import descend as ds
from descend.optim.estimates import EstimatingOptimizer


@pytest.fixture(autouse=True)
def _on_device(monkeypatch):
    """Prodigy and D-Adaptation step as on a GPU (estimates kept on the device), here on the CPU."""
    monkeypatch.setattr(EstimatingOptimizer, "resident", True)


@pytest.fixture(params=[True, False], ids=["on_device", "on_host"])
def either_way(request, monkeypatch):
    """Both ways of stepping: the estimates on the device, and as numbers on the host (the CPU's way)."""
    monkeypatch.setattr(EstimatingOptimizer, "resident", request.param)
    return request.param

CHECKED = {
    "gd": {}, "momentum": {}, "nesterov": {}, "adagrad": {}, "rmsprop": {}, "adadelta": {}, "adam": {}, "adamw": {},
    "newton": {}, "lion": {}, "schedule_free_sgd": {}, "schedule_free_adamw": {}, "sam": {}, "lookahead": {},
    "prodigy": {}, "dadapt_sgd": {},
}  # fmt: skip
VARIANTS = [
    ("prodigy", dict(weight_decay=0.01, bias_correction=True, growth_rate=1.02)),
    ("prodigy", dict(weight_decay=0.01, weight_decay_mode="l2", safeguard_warmup=True, beta3=0.99)),
    ("dadapt_sgd", dict(momentum=0.9, weight_decay=0.01, growth_rate=1.02)),
]
READS = {  # what each one reads per step, found with these counters and torch's source
    "nadam": "torch's NAdam reads its step count and μ product, which it keeps on the CPU (no device wait)",
    "muon": "its AdamW part runs torch's single-tensor Adam kernel, which reads the step count kept on the CPU",
    "adafactor": "torch's Adafactor reads its step count and, per parameter, ‖w‖₂ and ‖update‖₂ (device reads)",
}


class _ScalarReads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


def reads_during_steps(name, options, monkeypatch, steps=3):
    """Python-level and torch-level reads during ``steps`` steps of a fresh optimizer (state creation included)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = ds.optim.create(name, model, **options)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))

    def closure():
        loss = nn.functional.cross_entropy(model(x), y)
        if getattr(opt, "closure_backward", name != "newton"):
            opt.zero_grad()
            loss.backward()
        return loss

    python_reads, stepping = [], []
    for method in ("item", "__float__", "__bool__", "tolist"):
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _original=original, **kwargs):
            python_reads.extend(stepping)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)
    torch_reads = _ScalarReads()
    for _ in range(steps):
        closure()
        stepping.append(1)
        with torch_reads:
            opt.step(closure) if getattr(opt, "needs_closure", False) else opt.step()
        stepping.clear()
    monkeypatch.undo()
    return len(python_reads), torch_reads.count


@pytest.mark.parametrize(
    "name, options",
    [pytest.param(*case, id=case[0]) for case in CHECKED.items()]
    + [pytest.param(*case, id=f"{case[0]}-{'-'.join(case[1])}") for case in VARIANTS],
)
def test_a_step_reads_nothing_from_the_device(name, options, monkeypatch):
    assert reads_during_steps(name, options, monkeypatch) == (0, 0)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.xfail(reason=r, strict=True)) for n, r in READS.items()]
)
def test_the_optimizers_known_to_read_still_do(name, monkeypatch):
    assert reads_during_steps(name, {}, monkeypatch) == (0, 0)


def test_every_optimizer_is_checked_or_listed():
    assert sorted(ds.optim.names()) == sorted([*CHECKED, *READS])


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def _train(model, opt, steps, first_zero=0, seed=1):
    g = torch.Generator().manual_seed(seed)
    for i in range(steps):
        x, y = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if i < first_zero:  # no gradient yet (a frozen start): the step must move nothing and keep the estimates
            for p in model.parameters():
                p.grad.zero_()
        opt.step()
        yield torch.cat([p.detach().flatten() for p in model.parameters()])


def test_prodigy_steps_with_zero_gradients_as_the_authors_code(either_way):
    """While ‖s‖₁ = 0 prodigyopt returns before its estimates and its step count k change; the bias correction
    counts from the first step that moves. Float64, the tolerance of tests/test_optim_modern.py."""
    ours, theirs = _model(), _model()
    a = ds.optim.create("prodigy", ours, exclude_from_decay=[], weight_decay=0.01, bias_correction=True)
    b = prodigyopt.Prodigy(theirs.parameters(), weight_decay=0.01, use_bias_correction=True)
    start = torch.cat([p.detach().flatten() for p in ours.parameters()])
    pairs = list(zip(_train(ours, a, 30, first_zero=3), _train(theirs, b, 30, first_zero=3), strict=True))
    assert all(torch.equal(w, start) for w, _ in pairs[:3])
    for w, v in pairs:
        torch.testing.assert_close(w, v, rtol=1e-12, atol=1e-14)
    assert a.state_dict()["param_groups"][0]["k"] == b.param_groups[0]["k"] == 27


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda g: ds.optim.Prodigy(g, weight_decay=0.01), lambda g: prodigyopt.Prodigy(g, weight_decay=0.01)),
        (lambda g: ds.optim.DAdaptSGD(g, momentum=0.9), lambda g: dadaptation.DAdaptSGD(g, momentum=0.9)),
    ],
    ids=["prodigy", "dadapt_sgd"],
)
def test_a_group_with_lr_0_steps_as_in_the_authors_code(ours, theirs, either_way):
    """Groups may differ in lr only by lr = 0 (a frozen group: the authors' code still applies its other terms to
    it); any other difference is one clear error."""
    a, b = _model(), _model()
    opt_a = ours([{"params": a[0].parameters(), "lr": 0.0}, {"params": a[2].parameters()}])
    opt_b = theirs([{"params": b[0].parameters(), "lr": 0.0}, {"params": b[2].parameters()}])
    for w, v in zip(_train(a, opt_a, 30), _train(b, opt_b, 30), strict=True):
        torch.testing.assert_close(w, v, rtol=1e-12, atol=1e-14)
    opt_a.param_groups[0]["lr"] = 0.5
    with pytest.raises(ds.UserError, match="may differ in lr only by having lr = 0"):
        list(_train(a, opt_a, 1))


@pytest.mark.parametrize("name", ["prodigy", "dadapt_sgd"])
def test_zero_gradients_move_nothing_and_keep_the_estimates(name, either_way):
    model = _model()
    opt = ds.optim.create(name, model, weight_decay=0.01, lr=1.0)
    before = copy.deepcopy(opt.state_dict()["param_groups"])
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    *_, last = _train(model, opt, 2, first_zero=2)
    assert torch.equal(last, start) and opt.state_dict()["param_groups"] == before
    *_, last = _train(model, opt, 2)
    assert not torch.equal(last, start) and opt.state_dict()["param_groups"][0]["k"] == 2


@pytest.mark.parametrize("name", ["prodigy", "dadapt_sgd"])
def test_a_state_dict_resumes_exactly(name, either_way):
    """state_dict() holds the estimates as numbers (k an int), and a fresh optimizer loaded from it continues bit
    for bit."""
    model = _model()
    opt = ds.optim.create(name, model)
    list(_train(model, opt, 5))
    saved = opt.state_dict()
    group = saved["param_groups"][0]
    assert all(type(group[key]) is float for key in opt.estimates if key != "k") and type(group["k"]) is int
    twin = copy.deepcopy(model)
    resumed = ds.optim.create(name, twin)
    resumed.load_state_dict(copy.deepcopy(saved))
    for a, b in zip(_train(model, opt, 5, seed=2), _train(twin, resumed, 5, seed=2), strict=True):
        assert torch.equal(a, b)
    assert opt.state_dict()["param_groups"] == resumed.state_dict()["param_groups"]


@pytest.mark.parametrize("name", ["prodigy", "dadapt_sgd"])
def test_a_stand_in_built_from_the_groups_leaves_the_estimates_alone(name, either_way):
    """The checkpoint check steps a stand-in optimizer built from the live groups (their estimate tensors
    shared): new tensors are stored, never written in place."""
    model = _model()
    opt = ds.optim.create(name, model)
    list(_train(model, opt, 3))
    before = opt.state_dict()["param_groups"]
    stand_ins = [
        {**g, "params": [torch.ones_like(p, requires_grad=True) for p in g["params"]]} for g in opt.param_groups
    ]
    for group in stand_ins:
        for p in group["params"]:
            p.grad = torch.ones_like(p)
    type(opt)(stand_ins).step()
    assert opt.state_dict()["param_groups"] == before


CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize(
    "name, options",
    [pytest.param(*case, id=case[0], marks=CUDA) for case in CHECKED.items() if case[0] != "newton"]
    + [pytest.param(*case, id=f"{case[0]}-{'-'.join(case[1])}", marks=CUDA) for case in VARIANTS],
)
def test_a_cuda_step_never_waits_for_the_device(name, options):
    """Prodigy's and D-Adaptation's weights also match a CPU run in float64 (the sums' order differs between the
    CPU's and the GPU's kernels: ulps, which 30 steps keep far below rtol 1e-9)."""
    on_gpu, on_cpu = _thirty_steps(name, options, "cuda"), _thirty_steps(name, options, "cpu")
    if name in ("prodigy", "dadapt_sgd"):
        torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-9, atol=1e-12)


def _thirty_steps(name, options, device):
    """The flat weights after 30 steps on ``device``; on a GPU every step runs where a synchronisation raises."""
    model = _model().to(device)
    opt = ds.optim.create(name, model, **options)
    g = torch.Generator().manual_seed(1)
    for _ in range(30):
        x, y = torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
        x, y = x.to(device), y.to(device)

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        closure()
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step(closure) if getattr(opt, "needs_closure", False) else opt.step()
        finally:
            if device == "cuda":
                torch.cuda.set_sync_debug_mode(0)
    return torch.cat([p.detach().flatten() for p in model.parameters()]).cpu()


def test_on_the_cpu_the_step_reads_its_sums_as_the_authors_code(monkeypatch):
    """By default (``resident = None``) parameters on the CPU step on the host, with Python numbers as estimates."""
    monkeypatch.setattr(EstimatingOptimizer, "resident", None)
    for name in ("prodigy", "dadapt_sgd"):
        model = nn.Linear(3, 2)
        optimizer = ds.optim.create(name, model, lr=1.0)
        model(torch.randn(4, 3)).square().sum().backward()
        assert not optimizer.on_device()
        optimizer.step()
        assert all(not isinstance(optimizer.param_groups[0][key], torch.Tensor) for key in optimizer.estimates)
