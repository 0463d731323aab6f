"""load_weights: a checkpoint's or a safetensors file's weights into a model, reported by name; strict mode
lists every problem and loads nothing."""


from __future__ import annotations

import pytest
import safetensors.torch
import torch
from torch import nn

from descend.train.checkpoint import CheckpointError, WeightsReport, load_weights, save, save_weights

pytestmark = pytest.mark.usefixtures("no_unpickling")  # loading must never unpickle (conftest.py)


# ------------------------------------------------------------------------------------------ load_weights


class Net(nn.Module):
    def __init__(self, hidden=4, out=2):
        super().__init__()
        self.body = nn.Linear(3, hidden)
        self.head = nn.Linear(hidden, out)


def test_load_weights_reports_by_name_and_loads_what_matches(tmp_path):
    source = Net()
    sd = dict(source.state_dict())
    sd["head.weight"] = torch.zeros(5, 4)  # shape mismatch
    sd["head.bias"] = sd["head.bias"].double()  # dtype mismatch
    sd["extra.weight"] = torch.ones(1)
    del sd["body.bias"]
    save_weights(sd, tmp_path / "w.safetensors")
    target = Net()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = load_weights(target, tmp_path / "w.safetensors")
    assert report == WeightsReport(
        missing=["body.bias"], unexpected=["extra.weight"], mismatched=[("head.weight", (2, 4), (5, 4))],
        dtype_mismatched=[("head.bias", "float32", "float64")], loaded=["body.weight"],
    )  # fmt: skip
    assert torch.equal(target.body.weight, source.body.weight)
    for name in ("body.bias", "head.weight", "head.bias"):
        assert torch.equal(target.state_dict()[name], before[name])
    text = str(report)
    assert "loaded 1 of 4" in text and "body.bias" in text and "extra.weight" in text
    assert (
        "head.weight (model (2, 4), file (5, 4))" in text
        and "head.bias (model float32, file float64)" in text
    )


def test_load_weights_strict_lists_every_problem_and_loads_nothing(tmp_path):
    save_weights(Net(hidden=5), tmp_path / "w.safetensors")
    target = Net()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match="w.safetensors") as info:
        load_weights(target, tmp_path / "w.safetensors", strict=True)
    for name in ("body.weight", "body.bias", "head.weight"):
        assert name in str(info.value)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_load_weights_from_a_checkpoint_and_with_a_prefix(tmp_path):
    source = Net()
    save(tmp_path / "ck.safetensors", {"model": source.state_dict(), "step": 1})
    target = Net()
    assert load_weights(target, tmp_path / "ck.safetensors", strict=True).ok
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), source.parameters(), strict=True))
    body = nn.Linear(3, 4)
    report = load_weights(body, tmp_path / "ck.safetensors", prefix="body.", strict=True)
    assert report.loaded == ["weight", "bias"] and torch.equal(body.weight, source.body.weight)
    save(tmp_path / "nomodel.safetensors", {"step": 1})
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        load_weights(target, tmp_path / "nomodel.safetensors")


def test_load_weights_reads_files_written_by_safetensors(tmp_path):
    source = Net()
    safetensors.torch.save_file(source.state_dict(), tmp_path / "model.safetensors")
    target = Net()
    assert load_weights(target, tmp_path / "model.safetensors", strict=True).ok
    assert torch.equal(target.head.weight, source.head.weight)
