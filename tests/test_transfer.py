"""Transfer learning: key matching and its errors, the head, cached features, frozen batch norm, learning rates."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import descend as ds
from descend import config, transfer
from descend.runs import experiment

PRE = {"name": "pre", "seed": 0, "data": {"name": "iris"},
       "model": {"name": "mlp", "hidden": [16, 16], "batch_norm": True, "dropout": 0.1},
       "train": {"epochs": 3, "batch_size": 16, "device": "cpu", "deterministic": True},
       "optimizer": {"name": "adam", "lr": 0.02}}


def recipe(model=None, **options) -> config.Config:
    raw = json.loads(json.dumps(PRE))
    raw["model"].update(model or {})
    raw["transfer"] = options
    return config.validate(raw)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "run"
    experiment.build(config.validate(PRE)).fit(out=out)
    return out


def weights(path):
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_fine_tune_loads_every_tensor_and_spreads_learning_rates(pretrained):
    built = experiment.build(recipe(**{"from": str(pretrained), "mode": "fine_tune", "lr_scale": 0.01}))
    for name, value in weights(pretrained).items():
        assert torch.equal(built.trainer.model.state_dict()[name], value), name
    lrs = sorted({group["lr"] for group in built.trainer.optimizer.param_groups})
    assert lrs == pytest.approx([0.02 * 0.01, 0.02 * 0.1, 0.02])   # three groups: 0.01^(2/2), 0.01^(1/2), 1


def test_the_head_is_replaced_when_the_outputs_differ(pretrained, tmp_path):
    file = tmp_path / "w.safetensors"
    saved = weights(pretrained)
    saved["9.weight"], saved["9.bias"] = saved["9.weight"][:2].clone(), saved["9.bias"][:2].clone()  # 2 outputs
    save_file(saved, file)
    model = ds.models.build("mlp", (4,), 3, hidden=[16, 16], batch_norm=True, dropout=0.1)
    before = model[9].weight.detach().clone()
    fresh = transfer.load_pretrained(model, transfer.create(**{"from": str(file)}))
    assert fresh == ["9.bias", "9.weight"] and torch.equal(model[9].weight, before)
    assert torch.equal(model[1].weight, saved["1.weight"])
    with pytest.raises(ds.UserError, match="the head differs .* replace_head = false"):
        transfer.load_pretrained(model, transfer.create(**{"from": str(file), "replace_head": False}))


def test_key_mapping_errors_name_every_tensor(pretrained, tmp_path):
    with pytest.raises(ds.UserError, match=r"shape mismatch: 1\.weight \(model \(32, 4\), file \(16, 4\)\)"):
        experiment.build(recipe({"hidden": [32, 16]}, **{"from": str(pretrained)}))
    with pytest.raises(ds.UserError, match=r"missing from the file: .*9\.weight"):
        experiment.build(recipe({"batch_norm": False, "hidden": [16, 16, 16]}, **{"from": str(pretrained)}))
    prefixed = tmp_path / "prefixed.safetensors"
    save_file({f"encoder.{k}": v for k, v in weights(pretrained).items()}, prefixed)
    with pytest.raises(ds.UserError, match="in the file but not in the model: .*encoder.1.weight"):
        experiment.build(recipe(**{"from": str(prefixed)}))
    built = experiment.build(recipe(**{"from": str(prefixed), "prefix": "encoder."}))   # the prefix maps the keys
    assert torch.equal(built.trainer.model[1].weight, weights(pretrained)["1.weight"])
    for bad, words in [({"mode": "fine_tune"}, "'from' is required"), ({"from": "x", "mode": "linear_probe"},
                       "option 'mode' must be one of"), ({"from": str(tmp_path / "none")}, "no pretrained weights")]:
        with pytest.raises(ds.UserError, match=words):
            experiment.build(recipe(**bad))


def test_feature_extraction_computes_the_backbone_once(pretrained):
    cached = experiment.build(recipe(**{"from": str(pretrained), "mode": "feature_extraction"}))
    calls = []
    cached.trainer.model[1].register_forward_hook(lambda *a: calls.append(1))
    assert cached.data.train.x.shape[1:] == (16,)             # the backbone's features, computed at build
    result = cached.fit()
    assert calls == []                                        # and never again while training
    direct = experiment.build(recipe(**{"from": str(pretrained), "mode": "feature_extraction",
                                        "cache_features": False}))
    direct.fit()
    for name, value in direct.trainer.model.state_dict().items():   # the same head, whichever way
        torch.testing.assert_close(cached.trainer.model.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    for name, value in weights(pretrained).items():
        if not name.startswith("9."):
            assert torch.equal(direct.trainer.model.state_dict()[name], value), name   # the backbone did not move
    raw = ds.data.load("iris", seed=0)
    logits = cached.trainer.predict(raw.test.x)                # raw inputs go through the backbone
    assert result.final["val_accuracy"] == pytest.approx(cached.trainer.evaluate(raw.val)["accuracy"])
    assert logits.shape == (len(raw.test), 3)


@pytest.mark.parametrize("train_batch_norm", [False, True])
def test_frozen_batch_norm_statistics_do_not_drift(pretrained, train_batch_norm):
    built = experiment.build(recipe(**{"from": str(pretrained), "mode": "feature_extraction",
                                       "cache_features": False, "train_batch_norm": train_batch_norm}))
    built.fit()
    state, before = built.trainer.model.state_dict(), weights(pretrained)
    drifted = not torch.equal(state["2.running_mean"], before["2.running_mean"])
    assert drifted == train_batch_norm
    assert torch.equal(state["1.weight"], before["1.weight"])
    assert torch.equal(state["2.weight"], before["2.weight"]) != train_batch_norm   # fastai: BN affine trains


def test_gradual_unfreezing_from_the_top(pretrained):
    built = experiment.build(recipe(**{"from": str(pretrained), "mode": "gradual", "unfreeze_every": 1}))
    model = built.trainer.model
    seen = []

    class Watch(ds.callbacks.Callback):
        def on_batch_end(self, trainer):
            if trainer.batch_index == 1:
                seen.append([model[i].weight.grad is not None for i in (1, 5, 9)])

    built.fit([Watch()])
    assert seen == [[False, False, True], [False, True, True], [True, True, True]]


def test_layer_groups_and_a_wider_head():
    model = ds.models.build("mlp", (4,), 3, hidden=[16, 16], batch_norm=True, dropout=0.1)
    groups = transfer.layer_groups(model)
    assert [[type(m).__name__ for m in g] for g in groups] == [
        ["Flatten", "Linear", "BatchNorm1d", "ReLU", "Dropout"], ["Linear", "BatchNorm1d", "ReLU", "Dropout"],
        ["Linear"]]
    wide = transfer.layer_groups(model, head_groups=2)
    assert len(wide) == 2 and wide[1] == [*groups[1], *groups[2]]
    with pytest.raises(ds.UserError, match="3 layer group\\(s\\) and head_groups = 3"):
        transfer.layer_groups(model, head_groups=3)
