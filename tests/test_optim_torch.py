"""The composed optimizers against torch's own, where torch has the same algorithm (float64, 50 steps).

Both sides run the same float64 operations up to order, so the trajectories agree to ~1e-16 per step; 1e-12
relative over 50 steps leaves room for that and nothing else. NAdam runs with float64 as torch's default dtype
because torch keeps NAdam's μ-product in the default dtype.
"""

from __future__ import annotations

import pytest
import torch

import descend.optim as O
from descend.optim.composed import ComposedOptimizer
from test_optim_reference import assert_close, run_descend

TORCH_CASES = [
    ("gd", {}, torch.optim.SGD, 0.1),
    ("momentum", {"momentum": 0.9}, torch.optim.SGD, 0.02),
    ("nesterov", {"momentum": 0.9}, torch.optim.SGD, 0.02),
    ("adagrad", {}, torch.optim.Adagrad, 0.1),
    ("rmsprop", {}, torch.optim.RMSprop, 0.01),
    ("rmsprop", {"momentum": 0.5}, torch.optim.RMSprop, 0.01),
    ("adadelta", {}, torch.optim.Adadelta, 1.0),
    ("adam", {}, torch.optim.Adam, 0.01),
    ("adamw", {}, torch.optim.AdamW, 0.01),
    ("nadam", {}, torch.optim.NAdam, 0.01),
]


@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize(("name", "opts", "cls", "lr"), TORCH_CASES, ids=lambda v: str(v)[:30])
def test_composed_equals_torch(name, opts, cls, lr, wd, float64_default):
    kw = dict(opts, weight_decay=wd, exclude_from_decay=[]) if wd else dict(opts)
    built = O.create(name, [torch.zeros(2)], **kw)
    assert type(built) is cls                              # create picks torch's kernel for an exact match
    composed = run_descend(name, lr, implementation="composed", **kw)
    native = run_descend(name, lr, implementation="torch", **kw)
    assert_close(composed, native, tol=1e-12)


@pytest.mark.parametrize(("name", "opts"), [
    ("momentum", {"momentum_form": "velocity"}), ("momentum", {"momentum_form": "ema"}),
    ("adam", {"bias_correction": False}), ("adam", {"eps_placement": "inside"}), ("adam", {"nesterov": True}),
    ("adagrad", {"weight_decay": 0.1, "weight_decay_mode": "decoupled"}),
    ("momentum", {"weight_decay": 0.1, "weight_decay_mode": "decoupled"}),
])
def test_non_torch_requests_get_the_composed_optimizer(name, opts):
    assert isinstance(O.create(name, [torch.zeros(2)], **opts), ComposedOptimizer)
    with pytest.raises(ValueError, match="implementation='torch'"):
        O.create(name, implementation="torch", **opts)


def test_torch_path_uses_multi_tensor_kernels():
    opt = O.create("adam", [torch.zeros(3), torch.zeros(4)])
    group = opt.param_groups[0]
    assert group["foreach"] or group["fused"]
