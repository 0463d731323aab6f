"""descend.models: builder shapes, activations (Maxout against its formula), init statistics, block order,
ModelSpec, and the errors bad options give."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import descend.models as dm
from descend.errors import UserError
from descend.models.init import fans, init_weight

TORCH_ACTIVATION = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU,
                    "elu": nn.ELU, "gelu": nn.GELU, "maxout": dm.Maxout}


def types(model: nn.Module) -> list[type]:
    return [type(m) for m in model]


# ---------------------------------------------------------------- shapes


@pytest.mark.parametrize(("builder", "shape", "opts"), [
    (dm.mlp, (20,), {}),
    (dm.mlp, (3, 4, 5), {"hidden": [16, 8]}),           # any shape is flattened
    (dm.mlp, (7,), {"hidden": []}),                      # a linear model
    (dm.cnn1d, (40,), {}),                               # (L,): channel added
    (dm.cnn1d, (3, 40), {"pool": "max", "head": "avg"}),
    (dm.cnn1d, (2, 33), {"channels": [4, 4], "pool": "avg", "pool_size": 3, "head": "max",
                         "head_hidden": [12]}),
    (dm.cnn2d, (28, 28), {}),                            # (H, W): channel added
    (dm.cnn2d, (3, 12, 10), {"pool": "none", "head": "avg", "kernel_size": 5}),
])
def test_output_shape_for_each_input_convention(builder, shape, opts):
    model = builder(input_shape=shape, num_outputs=7, **opts)
    assert isinstance(model, nn.Module)
    model.eval()
    assert model(torch.randn(4, *shape)).shape == (4, 7)
    assert isinstance(list(model)[-1], nn.Linear) and list(model)[-1].out_features == 7


def test_same_padding_keeps_the_length_for_the_flatten_head():
    # 'same' convolutions and no pooling: the head sees channels × L features
    model = dm.cnn1d([8, 6], input_shape=(2, 40), num_outputs=3, kernel_size=5)
    assert list(model)[-1].in_features == 6 * 40
    # two max-pools of 2 on a 28 × 28 image leave 7 × 7
    model = dm.cnn2d([4, 5], input_shape=(1, 28, 28), num_outputs=3)
    assert list(model)[-1].in_features == 5 * 7 * 7


def test_pool_every_makes_conv_conv_pool_stages():
    model = dm.cnn2d([4, 4, 6, 6], input_shape=(1, 28, 28), num_outputs=3, pool_every=2, batch_norm=True)
    kinds = [type(m).__name__ for m in model if not isinstance(m, (nn.BatchNorm2d, nn.ReLU))]
    assert kinds == ["Conv2d", "Conv2d", "MaxPool2d", "Conv2d", "Conv2d", "MaxPool2d", "Flatten", "Linear"]
    assert list(model)[-1].in_features == 6 * 7 * 7  # two poolings, not four


# ---------------------------------------------------------------- activations


@pytest.mark.parametrize("name", dm.ACTIVATIONS)
@pytest.mark.parametrize("builder", [dm.mlp, dm.cnn1d])
def test_each_activation_is_in_the_model(name, builder):
    model = builder([6, 5], input_shape=(12,), num_outputs=3, activation=name, maxout_k=3)
    acts = [m for m in model if isinstance(m, TORCH_ACTIVATION[name])]
    assert len(acts) == 2  # one per block
    assert model(torch.randn(5, 12)).shape == (5, 3)
    if name == "maxout":
        assert all(a.k == 3 for a in acts)


def test_activations_match_their_formulas():
    x = torch.linspace(-4, 4, 101, dtype=torch.float64)
    expected = {
        "sigmoid": 1 / (1 + torch.exp(-x)),
        "tanh": (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
        "relu": torch.clamp(x, min=0),
        "leaky_relu": torch.where(x >= 0, x, 0.2 * x),
        "elu": torch.where(x >= 0, x, torch.exp(x) - 1),
        "gelu": x * 0.5 * (1 + torch.erf(x / math.sqrt(2))),
    }
    for name, want in expected.items():
        got = dm.make_activation(name, negative_slope=0.2)(x)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)  # float64: exact up to rounding


def test_maxout_equals_max_of_affine_pieces():
    torch.manual_seed(0)
    x = torch.randn(6, 5, dtype=torch.float64)
    linear = nn.Linear(5, 4 * 2, dtype=torch.float64)  # 4 units, 2 pieces each
    out = dm.Maxout(2)(linear(x))
    w, b = linear.weight, linear.bias
    for c in range(4):  # unit c owns rows 2c and 2c+1: max(w1ᵀx + b1, w2ᵀx + b2)
        want = torch.maximum(x @ w[2 * c] + b[2 * c], x @ w[2 * c + 1] + b[2 * c + 1])
        # float64; Linear's fused multiply-add rounds differently from x @ w + b, by ~1 ulp
        torch.testing.assert_close(out[:, c], want, rtol=1e-13, atol=1e-13)


def test_maxout_k3_on_conv_channels_keeps_length():
    z = torch.randn(2, 6, 11)  # 2 units × 3 pieces, length 11
    out = dm.Maxout(3)(z)
    assert out.shape == (2, 2, 11)
    torch.testing.assert_close(out[:, 1], z[:, 3:6].max(dim=1).values, rtol=0, atol=0)


def test_maxout_block_makes_k_pieces_per_unit():
    model = dm.mlp([10], input_shape=(4,), num_outputs=2, activation="maxout", maxout_k=3, batch_norm=True)
    assert types(model) == [nn.Flatten, nn.Linear, nn.BatchNorm1d, dm.Maxout, nn.Linear]
    assert model[1].out_features == 30 and model[2].num_features == 30 and model[4].in_features == 10


# ---------------------------------------------------------------- init

# A 512 × 512 weight has n = 262144 entries. The sample variance of n i.i.d. zero-mean draws has relative
# standard error sqrt((kurtosis − 1) / n): 0.28% for a normal (kurtosis 3), 0.17% for a uniform (1.8).
# A 1.5% tolerance is more than 5 standard errors, so these tests fail only when the formula is wrong.
N = 512
REL_TOL = 0.015


def hidden_weight(init: str, activation: str = "relu", **kw) -> torch.Tensor:
    torch.manual_seed(1)
    model = dm.mlp([N], input_shape=(N,), num_outputs=2, init=init, activation=activation, **kw)
    return model[1].weight.detach().double()


@pytest.mark.parametrize(("init", "activation", "var", "bound"), [
    ("xavier_uniform", "tanh", 6 / (2 * N) / 3, math.sqrt(6 / (2 * N))),
    ("xavier_normal", "tanh", 2 / (2 * N), None),
    ("he_uniform", "relu", 2 / N, math.sqrt(2) * math.sqrt(3 / N)),
    ("he_normal", "relu", 2 / N, None),
    ("he_normal", "elu", 2 / N, None),
    ("he_normal", "tanh", (5 / 3) ** 2 / N, None),
    ("he_uniform", "sigmoid", 1 / N, math.sqrt(3 / N)),
    ("he_normal", "maxout", 1 / N, None),
])
def test_init_variance_and_bound_follow_the_formula(init, activation, var, bound):
    w = hidden_weight(init, activation)
    if activation == "maxout":  # the Linear makes 2 pieces per unit: fan_in is still N
        assert w.shape == (2 * N, N)
    assert abs(w.var().item() / var - 1) < REL_TOL
    assert abs(w.mean().item()) < 5 * math.sqrt(var / w.numel())  # mean 0 within 5 standard errors
    if bound is not None:
        assert w.abs().max().item() <= bound
        # P(all n draws below (1 − 1e-3)·b) = (1 − 1e-3)^n ≈ e^−262: the bound is reached
        assert w.abs().max().item() > bound * (1 - 1e-3)


def test_he_gain_for_leaky_relu_uses_the_slope():
    w = hidden_weight("he_normal", "leaky_relu", negative_slope=0.3)
    assert abs(w.var().item() / (2 / ((1 + 0.3**2) * N)) - 1) < REL_TOL
    torch_gain = nn.init.calculate_gain("leaky_relu", 0.3)
    assert dm.he_gain("leaky_relu", 0.3) == pytest.approx(torch_gain, rel=1e-12)
    assert dm.he_gain("relu") == pytest.approx(nn.init.calculate_gain("relu"), rel=1e-12)


def test_normal_init_uses_init_std():
    w = hidden_weight("normal", init_std=0.05)
    assert abs(w.std().item() / 0.05 - 1) < REL_TOL / 2  # std's relative error is half the variance's


def test_conv_fans_count_the_kernel():
    model = dm.cnn1d([N], input_shape=(N // 8, 20), num_outputs=2, kernel_size=8, init="he_normal")
    w = model[0].weight.detach().double()  # (512, 64, 8): fan_in = 64·8 = 512
    assert fans(w) == (N, N * 8)
    assert abs(w.var().item() / (2 / N) - 1) < REL_TOL
    w2 = torch.empty(N, N // 8, 8, dtype=torch.float64)
    init_weight(w2, "xavier_normal")  # fan_in + fan_out = 512 + 4096
    assert abs(w2.var().item() / (2 / (N + 8 * N)) - 1) < REL_TOL


@pytest.mark.parametrize("init", dm.INITS)
def test_biases_zero_and_batch_norm_identity(init):
    for bn in (False, True):
        model = dm.cnn1d([4, 4], input_shape=(10,), num_outputs=3, batch_norm=bn, init=init, head_hidden=[5])
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                if bn and m is not list(model)[-1]:
                    assert m.bias is None  # batch norm's β is the bias
                else:
                    assert torch.count_nonzero(m.bias) == 0
            if isinstance(m, nn.BatchNorm1d):
                assert torch.all(m.weight == 1) and torch.count_nonzero(m.bias) == 0
        assert list(model)[-1].bias is not None and torch.count_nonzero(list(model)[-1].bias) == 0


# ---------------------------------------------------------------- block order


def test_mlp_block_order():
    model = dm.mlp([8, 6], input_shape=(5,), num_outputs=2, batch_norm=True, dropout=0.25, activation="gelu")
    block = [nn.Linear, nn.BatchNorm1d, nn.GELU, nn.Dropout]
    assert types(model) == [nn.Flatten, *block, *block, nn.Linear]
    assert model[4].p == 0.25
    plain = dm.mlp([8], input_shape=(5,), num_outputs=2)
    assert types(plain) == [nn.Flatten, nn.Linear, nn.ReLU, nn.Linear]


def test_cnn_block_order():
    model = dm.cnn1d([4, 4], input_shape=(16,), num_outputs=2, batch_norm=True, dropout=0.1, pool="max",
                     head_hidden=[8])
    block = [nn.Conv1d, nn.BatchNorm1d, nn.ReLU, nn.MaxPool1d, nn.Dropout]
    head = [nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]
    assert types(model) == [nn.Unflatten, *block, *block, *head]
    model = dm.cnn2d([3], input_shape=(2, 8, 8), num_outputs=2, batch_norm=True, head="avg")
    block = [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert types(model) == [*block, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Linear]


# ---------------------------------------------------------------- ModelSpec, build, count


@pytest.mark.parametrize(("name", "shape", "opts"), [
    ("mlp", (6,), {"hidden": [5, 4], "dropout": 0.2, "activation": "tanh"}),
    ("cnn1d", (40,), {"channels": [8, 8, 8], "batch_norm": True, "dropout": 0.1}),
    ("cnn2d", (1, 8, 8), {"channels": [4], "activation": "maxout", "init": "xavier_normal"}),
])
def test_spec_build_equals_direct_call(name, shape, opts):
    builder = dm.BUILDERS[name]
    spec = builder(**opts)
    assert isinstance(spec, dm.ModelSpec) and spec.name == name
    options = json.loads(json.dumps(spec.options))  # JSON-able, and a round trip changes nothing
    assert options == spec.options and set(options) == set(dm.options(name))
    torch.manual_seed(3)
    direct = builder(input_shape=shape, num_outputs=4, **opts)
    torch.manual_seed(3)
    built = spec.build(shape, 4)
    torch.manual_seed(3)
    via_config = dm.build(name, shape, 4, **options)
    for other in (built, via_config):
        assert repr(other) == repr(direct)
        for (ka, a), (kb, b) in zip(direct.state_dict().items(), other.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(a, b)


def test_spec_options_are_plain_json_for_numpy_numbers():
    import numpy as np

    spec = dm.cnn1d(channels=[np.int64(8), 4], maxout_k=np.int64(3), activation="maxout",
                    init_std=np.float32(0.5))
    assert json.loads(json.dumps(spec.options))["channels"] == [8, 4]
    model = spec.build(torch.Size([12]), np.int64(3))
    assert model(torch.randn(2, 12)).shape == (2, 3)


def test_spec_keeps_a_size_given_early():
    spec = dm.mlp([3], num_outputs=5)
    assert isinstance(spec, dm.ModelSpec)
    assert spec.build((4,))(torch.randn(2, 4)).shape == (2, 5)
    with pytest.raises(UserError, match="num_outputs was fixed at 5"):
        spec.build((4,), 3)


def test_count_parameters():
    model = dm.mlp([5], input_shape=(3,), num_outputs=2)
    assert dm.count_parameters(model) == (3 * 5 + 5) + (5 * 2 + 2)
    model = dm.cnn1d([4], input_shape=(2, 10), num_outputs=3, kernel_size=3, batch_norm=True)
    # conv without bias (batch norm has β) + γ, β + Linear(4·10 → 3)
    assert dm.count_parameters(model) == 4 * 2 * 3 + 2 * 4 + (40 * 3 + 3)
    model[0].weight.requires_grad_(False)
    assert dm.count_parameters(model, trainable_only=True) == 2 * 4 + 40 * 3 + 3


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(("call", "message"), [
    (lambda: dm.mlp(activation="swish"),
     "model 'mlp': option 'activation' must be one of 'sigmoid', 'tanh', 'relu', 'leaky_relu', 'elu', 'gelu', "
     "'maxout'; got 'swish'."),
    (lambda: dm.cnn1d(init="kaiming"),
     "model 'cnn1d': option 'init' must be one of 'xavier_uniform', 'xavier_normal', 'he_uniform'"),
    (lambda: dm.mlp(hidden=[16, -3]), r"option 'hidden' must be a list of integers >= 1; got \[16, -3\]"),
    (lambda: dm.mlp(hidden=[0]), r"option 'hidden' must be a list of integers >= 1; got \[0\]"),
    (lambda: dm.cnn1d(channels=[]),
     r"model 'cnn1d': option 'channels' must be a non-empty list of integers >= 1; got \[\]"),
    (lambda: dm.cnn2d(channels=[32, -1]),
     r"model 'cnn2d': option 'channels' must be a non-empty list of integers >= 1; got \[32, -1\]"),
    (lambda: dm.mlp(dropout=1.0),
     r"option 'dropout' must be a number in \[0, 1\) or a list of numbers in \[0, 1\); got 1.0"),
    (lambda: dm.cnn1d(dropout=-0.1),
     r"option 'dropout' must be a number in \[0, 1\) or a list of numbers in \[0, 1\); got -0.1"),
    (lambda: dm.mlp(init="normal", init_std=0.0), "option 'init_std' must be a number > 0; got 0.0"),
    (lambda: dm.mlp(activation="maxout", maxout_k=1), "model 'mlp': option 'maxout_k' must be an integer >= 2; got 1"),
    (lambda: dm.cnn1d(kernel_size=0), "model 'cnn1d': option 'kernel_size' must be an integer >= 1; got 0"),
    (lambda: dm.cnn1d(pool="median"), "option 'pool' must be one of 'none', 'max', 'avg'; got 'median'"),
    (lambda: dm.cnn1d(head="concat"), "option 'head' must be one of 'flatten', 'avg', 'max'; got 'concat'"),
    (lambda: dm.mlp(input_shape=(10,), num_outputs=0),
     "option 'num_outputs' must be an integer >= 1 or none .*; got 0"),
    (lambda: dm.mlp(input_shape=(10, -2), num_outputs=3),
     r"option 'input_shape' must be a non-empty list of integers >= 1 or none .*; got \(10, -2\)"),
    (lambda: dm.cnn1d(input_shape=(1, 2, 40), num_outputs=3), "must have 1 sizes or 2 sizes"),
    (lambda: dm.cnn2d(input_shape=(40,), num_outputs=3), "must have 2 sizes or 3 sizes"),
    (lambda: dm.cnn1d([4, 4, 4], input_shape=(6,), num_outputs=3, pool="max"), "below one element"),
    (lambda: dm.build("resnet", (4,), 2),
     "model: option 'name' must be one of 'mlp', 'cnn1d', 'cnn2d'; got 'resnet'"),
    (lambda: dm.build("mlp", (4,), 2, channels=[3]),
     "model 'mlp': unknown option 'channels'; valid options: hidden, activation"),
    (lambda: dm.Maxout(1), "Maxout: option 'maxout_k' must be an integer >= 2; got 1"),
])
def test_bad_options_raise_user_error_naming_the_choices(call, message):
    with pytest.raises(UserError, match=message):
        call()


def test_user_error_is_a_value_error():
    with pytest.raises(ValueError):
        dm.mlp(activation="nope")


# ---------------------------------------------------------------- the MNIST-1D recipe


@pytest.mark.slow
def test_cnn1d_recipe_reaches_95_percent_on_mnist1d():
    """The quickstart recipe: cnn1d([32] * 5, batch_norm) + AdamW(2e-2, wd 0.05), batch 128, 8 epochs,
    20% linear warmup then cosine decay. Three seeds measured 98.2–98.9% (1 thread) and 97.9–98.5%
    (2 threads); 95% leaves room for seed and platform differences.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())
    x, x_test = (torch.tensor(d[k], dtype=torch.float32) for k in ("x", "x_test"))
    y, y_test = (torch.tensor(d[k]) for k in ("y", "y_test"))
    mean, std = x.mean(), x.std()
    x, x_test = (x - mean) / std, (x_test - mean) / std
    torch.manual_seed(0)
    model = dm.cnn1d(input_shape=(40,), num_outputs=10, batch_norm=True)
    epochs, batch = 8, 128
    total = epochs * -(-len(x) // batch)
    warm = round(0.2 * total)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2, weight_decay=0.05)

    def factor(t: int) -> float:  # linear warmup, then cosine to 0
        return (t + 1) / warm if t < warm else 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.inference_mode():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    assert accuracy >= 0.95


def test_dropout_per_layer_group():
    """A list gives each block its own p (hidden layers, then conv blocks and head layers, in order)."""
    model = dm.mlp([8, 8, 8], input_shape=(4,), num_outputs=2, dropout=[0.0, 0.2, 0.5])
    assert [m.p for m in model if isinstance(m, nn.Dropout)] == [0.2, 0.5]
    cnn = dm.cnn1d([4, 4], head_hidden=[8], input_shape=(16,), num_outputs=2, dropout=[0.1, 0.0, 0.3])
    assert [m.p for m in cnn if isinstance(m, nn.Dropout)] == [0.1, 0.3]
    with pytest.raises(UserError, match="one probability per block: this model has 3 blocks, the list has 2"):
        dm.mlp([8, 8, 8], input_shape=(4,), num_outputs=2, dropout=[0.1, 0.2])
    with pytest.raises(UserError, match=r"option 'dropout' must be .*; got \[1.0\]"):
        dm.mlp([8], input_shape=(4,), num_outputs=2, dropout=[1.0])


def test_batch_norm_running_average_momentum_is_configurable():
    model = dm.mlp([8], input_shape=(4,), num_outputs=2, batch_norm=True, batch_norm_momentum=0.5)
    norm = next(m for m in model if isinstance(m, nn.BatchNorm1d))
    assert norm.momentum == 0.5
    x = torch.randn(32, 4)
    model.train()
    model(x)
    z = model[1](model[0](x))                          # the pre-activations batch norm saw
    expected = 0.5 * 0.0 + 0.5 * z.mean(0)             # r ← (1 − m)·r + m·batch mean, from r = 0
    assert torch.allclose(norm.running_mean, expected.detach(), atol=1e-6)
    cumulative = dm.mlp([8], input_shape=(4,), num_outputs=2, batch_norm=True, batch_norm_momentum=None)
    assert next(m for m in cumulative if isinstance(m, nn.BatchNorm1d)).momentum is None
    with pytest.raises(UserError, match=r"'batch_norm_momentum' must be a number in \(0, 1\] or none .*; got 1.5"):
        dm.mlp([8], input_shape=(4,), num_outputs=2, batch_norm=True, batch_norm_momentum=1.5)
