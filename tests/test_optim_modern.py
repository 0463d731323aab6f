"""The newer optimizers against their authors' code: Lion (lion-pytorch), Muon (torch.optim.Muon on the matrices,
AdamW on the rest), Adafactor (torch.optim.Adafactor), Schedule-Free SGD and AdamW (schedulefree, both modes),
Prodigy (prodigyopt) and D-Adaptation SGD (dadaptation).

Each runs 60 steps on the same small model from the same weights and batches as the reference and the
weights are compared after every step. In float64 the implementations perform the same floating-point operations
in the same order as the reference, so the tolerance is a few ulps (rtol 1e-12 covers reassociation in foreach
versus per-tensor kernels, which changes nothing here but is not promised by torch); Muon orthogonalises in
bfloat16 in both, and runs the very same kernel, so it is compared exactly.
"""

from __future__ import annotations

import copy

import dadaptation
import lion_pytorch
import prodigyopt
import pytest
import schedulefree
import torch
from torch import nn

import descend as ds
from descend.optim.estimates import EstimatingOptimizer

STEPS = 60


def make_model(dtype=torch.float64, conv=False):
    torch.manual_seed(0)
    if conv:
        model = nn.Sequential(
            nn.Conv1d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6, 8), nn.ReLU(), nn.Linear(8, 3)
        )
    else:
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    return model.to(dtype)


def batches(dtype=torch.float64, conv=False):
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x = torch.randn(16, 1, 8, generator=g, dtype=dtype) if conv else torch.randn(16, 5, generator=g, dtype=dtype)
        yield x, torch.randint(0, 3, (16,), generator=g)


def run_both(ours, theirs, model, conv=False, dtype=torch.float64, modes=False):
    """Step both optimizers on twin models; yield both models' flat weights after each step."""
    twin = copy.deepcopy(model)
    opt_a, opt_b = ours(model), theirs(twin)
    for x, y in batches(dtype, conv):
        for m, opt in ((model, opt_a), (twin, opt_b)):
            if modes:
                opt.train()
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
            if modes:
                opt.eval()
        yield (
            torch.cat([p.detach().flatten() for p in model.parameters()]),
            torch.cat([p.detach().flatten() for p in twin.parameters()]),
        )


def assert_equal_trajectories(pairs, rtol=1e-12, atol=1e-14):
    moved = 0
    for a, b in pairs:
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
        moved += 1
    assert moved == STEPS


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_lion_equals_lion_pytorch(wd):
    model = make_model()
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    pairs = list(
        run_both(
            lambda m: ds.optim.create("lion", m, lr=1e-3, weight_decay=wd, exclude_from_decay=[]),
            lambda m: lion_pytorch.Lion(m.parameters(), lr=1e-3, weight_decay=wd),
            model,
        )
    )
    assert_equal_trajectories(pairs, rtol=0, atol=0)  # the same operations: bit for bit
    assert not torch.equal(pairs[-1][0], start)


def test_lion_is_a_chain_of_parts():
    opt = ds.optim.create("lion", make_model())
    assert isinstance(opt, ds.optim.ComposedOptimizer)
    assert [p.name for p in opt.chain] == ["sign_momentum", "scale_by_lr", "decoupled_decay"]


@pytest.mark.parametrize("conv", [False, True])
def test_muon_equals_torch_muon_on_matrices_and_adamw_on_the_rest(conv):
    model = make_model(torch.float32, conv)
    chosen = ds.optim.muon.muon_parameters(model)
    names = [n for n, _ in model.named_parameters()]

    def theirs(m):
        params = dict(m.named_parameters())
        return _Pair(m, chosen, params)

    pairs = run_both(
        lambda m: ds.optim.create("muon", m, lr=0.02, weight_decay=0.01, exclude_from_decay=[]),
        theirs,
        model,
        conv,
        torch.float32,
    )
    assert_equal_trajectories(pairs, rtol=0, atol=0)
    assert names


class _Pair:
    """torch.optim.Muon on the chosen matrices (conv kernels as flattened views), torch.optim.AdamW on the rest."""

    def __init__(self, model, chosen, params):
        self.views = {}
        matrices = []
        for n in sorted(chosen, key=list(params).index):
            p = params[n]
            if p.ndim > 2:
                v = p.detach().view(p.shape[0], -1)
                self.views[n] = (p, v)
                matrices.append(v)
            else:
                matrices.append(p)
        self.muon = torch.optim.Muon(matrices, lr=0.02, weight_decay=0.01)
        self.adamw = torch.optim.AdamW([p for n, p in params.items() if n not in chosen], lr=0.02, weight_decay=0.01)
        self.model = model

    def zero_grad(self):
        self.model.zero_grad(set_to_none=True)

    def step(self):
        for p, v in self.views.values():
            v.grad = p.grad.view(v.shape)
        self.muon.step()
        self.adamw.step()


def test_muon_split_follows_its_authors():
    """2-D hidden weights and conv kernels get Muon; embeddings, biases, norms and the output layer never."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.conv = nn.Conv1d(4, 4, 3)
            self.norm = nn.LayerNorm(4)
            self.hidden = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

    assert ds.optim.muon.muon_parameters(Net()) == {"conv.weight", "hidden.weight"}
    opt = ds.optim.create("muon", Net())
    muon_group = [g for g in opt.param_groups if g["muon"]]
    assert [p.shape for p in muon_group[0]["params"]] == [torch.Size([4, 4, 3]), torch.Size([4, 4])]
    with pytest.raises(ds.UserError, match="pass the nn.Module"):
        ds.optim.create("muon", list(Net().parameters()))


def test_adafactor_is_torch_adafactor():
    model = make_model()
    pairs = run_both(
        lambda m: ds.optim.create("adafactor", m, lr=1e-2, weight_decay=0.01, exclude_from_decay=[]),
        lambda m: torch.optim.Adafactor(m.parameters(), lr=1e-2, weight_decay=0.01, foreach=True),
        model,
    )
    assert_equal_trajectories(pairs, rtol=0, atol=0)


@pytest.mark.parametrize("wd, warmup", [(0.0, 0), (0.05, 10)])
def test_schedule_free_sgd_equals_schedulefree_in_both_modes(wd, warmup):
    model = make_model()
    twin = copy.deepcopy(model)
    ours = ds.optim.create(
        "schedule_free_sgd", model, lr=0.5, weight_decay=wd, warmup_steps=warmup, exclude_from_decay=[]
    )
    theirs = schedulefree.SGDScheduleFree(twin.parameters(), lr=0.5, weight_decay=wd, warmup_steps=warmup, foreach=True)
    _check_modes(model, twin, ours, theirs)


@pytest.mark.parametrize("wd, warmup", [(0.0, 0), (0.05, 10)])
def test_schedule_free_adamw_equals_schedulefree_in_both_modes(wd, warmup):
    model = make_model()
    twin = copy.deepcopy(model)
    ours = ds.optim.create(
        "schedule_free_adamw", model, lr=0.01, weight_decay=wd, warmup_steps=warmup, exclude_from_decay=[]
    )
    theirs = schedulefree.AdamWScheduleFree(
        twin.parameters(), lr=0.01, weight_decay=wd, warmup_steps=warmup, foreach=True
    )
    _check_modes(model, twin, ours, theirs)


def _check_modes(model, twin, ours, theirs):
    """Train-mode weights (y) after every step and eval-mode weights (x) every 10 steps agree."""
    theirs.train()
    for i, (x, y) in enumerate(batches()):
        for m, opt in ((model, ours), (twin, theirs)):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
        for a, b in zip(model.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        if i % 10 == 9:
            ours.eval(), theirs.eval()
            for a, b in zip(model.parameters(), twin.parameters(), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
            ours.train(), theirs.train()


def test_schedule_free_steps_only_in_train_mode():
    opt = ds.optim.create("schedule_free_adamw", make_model())
    opt.eval()
    with pytest.raises(ds.UserError, match="train mode"):
        opt.step()


@pytest.fixture(params=[False, True], ids=["on_host", "on_device"])
def resident(request, monkeypatch):
    """Prodigy and D-Adaptation both ways: estimates as numbers read back (the CPU's way), and kept on the device as
    0-dim tensors (a GPU's way, run here on the CPU)."""
    monkeypatch.setattr(EstimatingOptimizer, "resident", request.param)


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(weight_decay=0.01, bias_correction=True),
        dict(weight_decay=0.01, weight_decay_mode="l2", safeguard_warmup=True),
    ],
)
def test_prodigy_equals_prodigyopt(options, resident):
    model = make_model()
    decouple = options.get("weight_decay_mode", "decoupled") == "decoupled"
    ref = dict(
        weight_decay=options.get("weight_decay", 0.0),
        use_bias_correction=options.get("bias_correction", False),
        safeguard_warmup=options.get("safeguard_warmup", False),
        decouple=decouple,
    )
    pairs = list(
        run_both(
            lambda m: ds.optim.create("prodigy", m, exclude_from_decay=[], **options),
            lambda m: prodigyopt.Prodigy(m.parameters(), **ref),
            model,
        )
    )
    assert_equal_trajectories(pairs)


@pytest.mark.parametrize("options", [dict(), dict(momentum=0.9, weight_decay=0.01)])
def test_dadapt_sgd_equals_dadaptation(options, resident):
    model = make_model()
    pairs = run_both(
        lambda m: ds.optim.create("dadapt_sgd", m, exclude_from_decay=[], **options),
        lambda m: dadaptation.DAdaptSGD(m.parameters(), **options),
        model,
    )
    assert_equal_trajectories(pairs)


def test_learning_rate_free_methods_report_their_step_size():
    for name in ("prodigy", "dadapt_sgd"):
        model = make_model()
        opt = ds.optim.create(name, model)
        for x, y in batches():
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        assert opt.logs()["d_lr"] > 1e-6  # the estimate grew from d0


def test_property_table_rows_of_the_newer_methods(capsys):
    ds.optim.table()
    rows = {line.split("\t")[0]: line.split("\t")[6:] for line in capsys.readouterr().out.splitlines()[1:]}
    # state per parameter, learning-rate-free, needs a closure, schedule-free
    assert rows["Lion"] == ["1", "✗", "✗", "✗"]
    assert rows["Prodigy"] == ["4", "✓", "✗", "✗"]
    assert rows["D-Adaptation SGD"] == ["3", "✓", "✗", "✗"]
    assert rows["Schedule-Free AdamW"] == ["2", "✗", "✗", "✓"]
    assert rows["SAM (SGD+Momentum)"] == ["1", "✗", "✓", "✗"]
    assert rows["Lookahead (Adam)"] == ["3", "✗", "✗", "✗"]


@pytest.mark.parametrize(
    "name, bad, message",
    [
        ("lion", dict(beta2=1.0), "beta2"),
        ("muon", dict(ns_steps=0), "ns_steps"),
        ("prodigy", dict(d0=0.0), "d0"),
        ("schedule_free_adamw", dict(lookahead_k=5), "unknown option"),
        ("adafactor", dict(weight_decay_mode="l2"), "weight_decay_mode"),
        ("sam", dict(sam_rho=0.0), "sam_rho"),
    ],
)
def test_options_are_checked(name, bad, message):
    with pytest.raises(ds.UserError, match=message):
        ds.optim.create(name, **bad)


def test_readme_property_table_is_the_generated_one():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "README.md").read_text()
    start, end = "<!-- optimizer-table:start -->\n", "\n<!-- optimizer-table:end -->"
    assert text[text.index(start) + len(start) : text.index(end)] == ds.optim.markdown(), (
        "README.md's optimizer table is out of date: paste descend.optim.markdown() between its markers"
    )


def test_describe_gives_every_optimizer_its_update_and_source():
    text = ds.optim.describe()
    for name in ds.optim.names():
        line = next(line for line in text.splitlines() if line.startswith(f"{name}: "))
        assert "(" in line and any(ch.isdigit() for ch in line)  # a formula with its source's year


def test_muon_decays_what_every_optimizer_decays():
    """exclude_from_decay applies to both halves: norms and biases (AdamW's) and a matrix a pattern names (Muon's)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 8), nn.Linear(8, 2))
    opt = ds.optim.create(
        "muon", model, weight_decay=0.1, exclude_from_decay=["bias", "*.bias", "<normalization>", "2.weight"]
    )
    decay = {(g["muon"], g["weight_decay"]): [tuple(p.shape) for p in g["params"]] for g in opt.param_groups}
    assert decay[(True, 0.1)] == [(8, 4)] and decay[(True, 0.0)] == [(8, 8)]
    assert decay[(False, 0.1)] == [(2, 8)]  # the output layer: AdamW, decayed
    assert sorted(decay[(False, 0.0)]) == [(2,), (8,), (8,), (8,), (8,)]  # 3 biases, batch norm's scale and shift
