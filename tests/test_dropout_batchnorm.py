"""torch's Dropout and BatchNorm against their papers' formulas, and MC dropout as an ensemble.

Convention: p is the probability of *dropping* a unit (torch's ``p``). Srivastava et al. 2014 write the mask as
r ~ Bernoulli(1 − p) with E[r ⊙ y] = (1 − p) y, the same keep probability 1 − p.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from descend.ensemble import mc_dropout
from descend.errors import UserError

DT = torch.float64


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_training_masks_are_bernoulli_with_rate_p(p):
    torch.manual_seed(0)
    n = 200_000
    dropout = nn.Dropout(p).train()
    x = torch.ones(n)
    out = dropout(x)
    dropped = out == 0
    # Binomial(n, p): σ of the dropped fraction = √(p(1−p)/n) ≤ 1.2e-3; 5σ
    assert abs(dropped.double().mean().item() - p) < 5 * (p * (1 - p) / n) ** 0.5
    # inverted dropout: kept units are scaled by 1/(1 − p)
    torch.testing.assert_close(out[~dropped], torch.full_like(out[~dropped], 1 / (1 - p)), rtol=1e-6, atol=0)
    # independent units: neighbouring mask entries are uncorrelated (|corr| < 5/√n)
    r = (~dropped).double()
    corr = torch.corrcoef(torch.stack([r[:-1], r[1:]]))[0, 1].item()
    assert abs(corr) < 5 / n**0.5
    # a new mask for every mini-batch: agreement ≈ p² + (1−p)², not 1
    agreement = ((dropout(x) == 0) == dropped).double().mean().item()
    assert abs(agreement - (p**2 + (1 - p) ** 2)) < 0.01


def test_eval_mode_drops_nothing():
    x = torch.randn(64, 32, 5)
    for layer in (nn.Dropout(0.5), nn.Dropout1d(0.5), nn.AlphaDropout(0.5)):
        assert torch.equal(layer.eval()(x), x)
        assert not torch.equal(layer.train()(x), x)


def test_inverted_dropout_equals_test_time_weight_scaling():
    """Srivastava et al. 2014: train without scaling, at test time multiply the weights by (1 − p). torch
    (inverted dropout): scale kept units by 1/(1 − p) in training, change nothing at test time. With W_paper =
    W_torch / (1 − p) the two networks compute the same function in training (same mask) and at test time, so
    the expected activations agree as well."""
    torch.manual_seed(1)
    p = 0.3
    h = torch.randn(16, 10, dtype=DT)
    dropout, layer = nn.Dropout(p), nn.Linear(10, 4).to(DT)
    w_torch, b = layer.weight.detach(), layer.bias.detach()
    w_paper = w_torch / (1 - p)

    kept = dropout.train()(h)
    r = (kept != 0).to(DT)  # the Bernoulli mask torch drew
    train_torch = layer(kept)
    train_paper = (r * h) @ w_paper.T + b
    torch.testing.assert_close(train_torch, train_paper, rtol=1e-12, atol=1e-12)

    test_torch = layer(dropout.eval()(h))
    test_paper = h @ ((1 - p) * w_paper).T + b  # "all the weights times 1 − p"
    torch.testing.assert_close(test_torch, test_paper, rtol=1e-12, atol=1e-12)

    # expectation over masks (E[r ⊙ y] = (1 − p) y): the mean training output → the test output
    dropout.train()
    k = 20_000
    mean = layer(dropout(h.expand(k, *h.shape))).mean(0)  # k independent masks in one call
    assert (mean - test_torch).abs().le(5 * _dropout_std(w_torch, h, p) / k**0.5).all()  # within 5 std errors


def _dropout_std(w, h, p):
    """Std of (W (r ⊙ h)/(1 − p))_j over masks: Var = Σ_i w_ji² h_i² · p/(1 − p), independent r_i."""
    return ((h**2) @ (w**2).T * p / (1 - p)).sqrt()


def _dropout_net():
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.4), nn.Linear(16, 3))


def test_mc_dropout_is_the_mean_of_stochastic_passes_with_batch_norm_in_eval():
    model = _dropout_net()
    model(torch.randn(32, 6))  # non-trivial running statistics
    x = torch.randn(8, 6)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    ours = mc_dropout(model, x, samples=7)
    # by hand: batch norm with running averages, dropout on, softmax per pass, then the mean
    torch.manual_seed(3)
    model.eval()
    model[3].train()
    with torch.no_grad():
        expected = torch.stack([model(x).softmax(1) for _ in range(7)]).mean(0)
    model.train()
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)  # same masks; float32 sum order differs
    torch.testing.assert_close(ours.sum(1), torch.ones(8), rtol=0, atol=1e-6)  # probabilities
    assert all(m.training for m in model.modules())  # modes restored
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in buffers.items())  # running stats untouched
    assert ours.is_inference()


def test_mc_dropout_raw_mean_tends_to_the_eval_prediction_for_a_linear_model():
    """With dropout before a linear layer the ensemble mean is the expected output = eval mode's output."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Dropout(0.5), nn.Linear(20, 2)).to(DT)
    x = torch.randn(4, 20, dtype=DT)
    n = 5000
    mean = mc_dropout(model, x, samples=n, output="raw")
    with torch.no_grad():
        expected = model.eval()(x)
    assert (mean - expected).abs().le(5 * _dropout_std(model[1].weight, x, 0.5) / n**0.5).all()
    assert not model.training and not model[0].training  # eval mode restored too


def test_mc_dropout_errors():
    model = _dropout_net()
    x = torch.randn(2, 6)
    with pytest.raises(UserError, match=r"mc_dropout: option 'samples' must be an integer in \[1, 10000\]; got 0"):
        mc_dropout(model, x, samples=0)
    with pytest.raises(UserError, match="option 'output' must be one of 'probabilities', 'raw'; got 'logits'"):
        mc_dropout(model, x, output="logits")
    with pytest.raises(UserError, match="no"):
        mc_dropout(nn.Linear(6, 2), x)


def _bn_by_hand(x, mean, var, gamma, beta, eps):
    return gamma * (x - mean) / torch.sqrt(var + eps) + beta


def test_batch_norm_training_uses_the_batch_statistics():
    """Ioffe & Szegedy 2015, Algorithm 1: μ_B = mean, σ²_B = 1/m Σ(x − μ_B)² (biased),
    x̂ = (x − μ_B)/√(σ²_B + ε), y = γx̂ + β."""
    torch.manual_seed(5)
    bn = nn.BatchNorm1d(3).to(DT).train()
    x = torch.randn(10, 3, dtype=DT) * 3 + 2
    expected = _bn_by_hand(x, x.mean(0), x.var(0, unbiased=False), bn.weight, bn.bias, bn.eps)
    torch.testing.assert_close(bn(x), expected, rtol=1e-12, atol=1e-12)
    # the output of a sample depends on the rest of the batch in training mode
    assert not torch.allclose(bn(x)[:5], bn(x[:5]))


@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_running_averages_use_the_configured_momentum(momentum):
    """The usual practical solution: moving averages of the batch statistics, r ← (1 − m)·r + m·stat.

    torch averages the unbiased batch variance (1/(m−1)); the normalisation itself uses the biased one.
    """
    torch.manual_seed(6)
    bn = nn.BatchNorm1d(3, momentum=momentum).to(DT).train()
    mean, var = torch.zeros(3, dtype=DT), torch.ones(3, dtype=DT)
    for _ in range(4):
        x = torch.randn(8, 3, dtype=DT) * 2 - 1
        bn(x)
        mean = (1 - momentum) * mean + momentum * x.mean(0)
        var = (1 - momentum) * var + momentum * x.var(0, unbiased=True)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-12, atol=1e-14)


def test_momentum_none_gives_whole_training_set_statistics():
    """The population statistics of Ioffe & Szegedy's inference step, μ over the whole training set:
    momentum=None is the cumulative average."""
    torch.manual_seed(7)
    bn = nn.BatchNorm1d(2, momentum=None).to(DT).train()
    data = torch.randn(40, 2, dtype=DT) * 4 + 3
    for batch in data.split(10):
        bn(batch)
    torch.testing.assert_close(bn.running_mean, data.mean(0), rtol=1e-12, atol=1e-12)


def test_batch_norm_evaluation_uses_the_running_averages():
    torch.manual_seed(8)
    bn = nn.BatchNorm2d(3).to(DT).train()
    for _ in range(3):
        bn(torch.randn(4, 3, 5, 5, dtype=DT) + 1)
    bn.eval()
    x = torch.randn(6, 3, 5, 5, dtype=DT)
    view = lambda t: t.view(1, 3, 1, 1)  # noqa: E731
    stats = view(bn.running_mean), view(bn.running_var)
    expected = _bn_by_hand(x, *stats, view(bn.weight), view(bn.bias), bn.eps)
    torch.testing.assert_close(bn(x), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bn(x)[:2], bn(x[:2]), rtol=0, atol=0)  # independent of the rest of the batch
    before = bn.running_mean.clone()
    bn(x)
    assert torch.equal(bn.running_mean, before)  # evaluation does not update them


def test_gamma_and_beta_scale_and_shift():
    """ŷ = γ ⊙ x̂ + β: the learned γ, β can undo the normalisation (γ = √(σ² + ε), β = μ give back x)."""
    torch.manual_seed(9)
    x = torch.randn(12, 3, dtype=DT) * 5 - 2
    bn = nn.BatchNorm1d(3).to(DT).train()
    normalised = bn(x).detach()
    gamma, beta = torch.tensor([2.0, 0.5, -1.0], dtype=DT), torch.tensor([1.0, -3.0, 0.25], dtype=DT)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    torch.testing.assert_close(bn(x), gamma * normalised + beta, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        bn.weight.copy_((x.var(0, unbiased=False) + bn.eps).sqrt())
        bn.bias.copy_(x.mean(0))
    torch.testing.assert_close(bn(x), x, rtol=1e-12, atol=1e-12)
