"""Exporting a run for serving: the exported model takes raw rows (scaling folded in), matches the PyTorch model on
held-out rows and batches of 1 and 37, carries its labels, loads without unpickling, and is refused (nothing left
behind) when it does not match."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import descend as ds
from descend import config, tune
from descend import export as export_
from descend.cli import main
from descend.errors import UserError
from descend.runs import execute

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

WINE = (
    'seed = 0\n[data]\nname = "wine"\ntest_fraction = 0.2\n[model]\nname = "mlp"\nhidden = [16]\n'
    'batch_norm = true\ndropout = 0.3\n[train]\nepochs = 2\nbatch_size = 16\ndevice = "cpu"\n'
)


def _train(folder, recipe: str, name: str = "run"):
    (folder / f"{name}.toml").write_text(recipe)
    execute.run(config.load(folder / f"{name}.toml"), folder / name, quiet=True)
    return ds.load_run(folder / name)


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """A classifier with batch norm and dropout (exported in eval mode), its inputs standardized."""
    return _train(tmp_path_factory.mktemp("wine"), WINE)


def _raw_rows(run, n=None):
    rows = run.held_out_inputs()
    return rows if n is None else rows[torch.arange(n) % len(rows)]


def test_onnx_takes_raw_rows_and_carries_labels_and_columns(wine):
    done = wine.export(format="onnx")
    assert done.path == wine.path / "model.onnx" and 0 <= done.max_difference <= done.tolerance
    model = onnx.load(done.path)
    meta = json.loads({p.key: p.value for p in model.metadata_props}["descend"])
    assert meta["classes"] == wine.classes == [0, 1, 2] and meta["outputs"] == ["logits", "probabilities"]
    assert meta["input_shape"] == [13] and meta["scaling"] == "standardize" and meta["task"] == "classification"
    session = onnxruntime.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    for n in (1, 37, 5):  # any batch size: the batch dimension is dynamic
        raw = _raw_rows(wine, n)
        logits, proba = session.run(None, {"x": raw.numpy()})
        np.testing.assert_allclose(proba, wine.predict_proba(raw), rtol=0, atol=1e-5)
        np.testing.assert_allclose(logits, wine.outputs(raw).numpy(), rtol=0, atol=1e-4)
        assert [wine.classes[i] for i in proba.argmax(1)] == wine.predict(raw).tolist()


def test_torch_export_program_is_written_and_loaded_back_without_unpickling(wine, tmp_path, no_unpickling):
    done = export_.export(wine, tmp_path / "wine.pt2", "exported")
    meta = json.loads((tmp_path / "wine.pt2.json").read_text())
    assert meta["model_format"] == "exported" and meta["max_difference"] == done.max_difference == 0.0
    export_.check_no_pickle(done.path)  # no pickled weight, constant or sample input
    program = torch.export.load(done.path).module()  # reads JSON and raw tensor bytes only (pickle is forbidden)
    raw = _raw_rows(wine, 37)
    logits, proba = program(raw)
    torch.testing.assert_close(proba, torch.as_tensor(wine.predict_proba(raw)), rtol=0, atol=1e-6)


def test_an_archive_with_pickled_sample_inputs_is_not_loaded(tmp_path):
    program = torch.export.export(torch.nn.Linear(3, 2), (torch.randn(2, 3),))
    torch.export.save(program, tmp_path / "m.pt2")  # torch's default: the sample inputs, pickled
    with pytest.raises(UserError, match="pickled sample inputs"):
        export_.check_no_pickle(tmp_path / "m.pt2")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_is_checked_in_process_and_matches_pytorch(wine, tmp_path):
    done = wine.export(tmp_path / "wine.pt", "torchscript")
    assert json.loads((tmp_path / "wine.pt.json").read_text())["classes"] == [0, 1, 2]
    assert done.max_difference == 0.0
    loaded = torch.jit.load(str(done.path))  # the test trusts its own file; descend itself never loads one
    raw = _raw_rows(wine, 1)
    torch.testing.assert_close(loaded(raw)[0], wine.outputs(raw), rtol=0, atol=1e-6)


def test_a_model_that_does_not_match_is_refused_and_nothing_is_left(wine, tmp_path, monkeypatch, capsys):
    """The check catches real mistakes: the scaling left out of the graph, a model exported in training mode."""
    forgetful = export_.servable

    def without_scaling(run):
        module = forgetful(run)
        module.scaled = False
        return module

    monkeypatch.setattr(export_, "servable", without_scaling)
    with pytest.raises(UserError, match="differs from the PyTorch model"):
        wine.export(tmp_path / "new" / "deeper" / "m.pt", "torchscript")
    assert list(tmp_path.iterdir()) == []  # the folders made for it are gone too
    monkeypatch.undo()

    def in_training_mode(run):  # dropout on, batch statistics instead of the running ones
        return forgetful(run).train()

    monkeypatch.setattr(export_, "servable", in_training_mode)
    with pytest.raises(UserError, match="differs from the PyTorch model"):
        wine.export(tmp_path / "m.pt2", "exported")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    before = sorted(p.name for p in wine.path.iterdir())  # ONNX differs by ~1e-7: a tolerance of 1e-12 refuses it
    assert main(["export", str(wine.path), "--tolerance", "1e-12", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("descend: error: the onnx model differs") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [] and sorted(p.name for p in wine.path.iterdir()) == before


def test_a_model_the_exporter_cannot_trace_is_one_line(wine, tmp_path, monkeypatch, capsys):
    def untraceable(*args):
        raise RuntimeError("Could not guard on data-dependent expression Eq(u0, 1)\n(a long explanation)")

    monkeypatch.setitem(export_._WRITERS, "exported", untraceable)
    assert main(["export", str(wine.path), "--format", "exported", "--out", str(tmp_path / "m.pt2")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "descend: error: the model cannot be exported as exported: Could not guard on data-dependent "
        "expression Eq(u0, 1); try --format onnx, torchscript\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_export_mistakes_are_one_line(wine, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert main(["export", str(wine.path), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    with pytest.raises(UserError, match="format must be one of"):
        wine.export(format="tflite")


def test_the_command_line_prints_the_largest_difference(wine, tmp_path, capsys):
    assert main(["export", str(wine.path), "--format", "exported", "--out", str(tmp_path / "w.pt2")]) == 0
    out = capsys.readouterr().out
    assert "largest difference from PyTorch 0 on 36 held-out rows and batches of 1 and 37" in out


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, recipe, extra",
    [
        (
            "regression",
            'seed = 0\n[data]\nname = "diabetes"\n[model]\nname = "mlp"\nhidden = [32]\n'
            '[train]\nepochs = 3\nbatch_size = 32\ndevice = "cpu"\n',
            "",
        ),
        (
            "binary",
            'seed = 0\n[data]\nname = "breast_cancer"\nscale = "minmax"\n[model]\nname = "mlp"\n'
            'hidden = [16]\n[train]\nepochs = 3\nbatch_size = 32\nloss = "binary_cross_entropy"\n'
            'device = "cpu"\n',
            "",
        ),
        ("ema", WINE, '[averaging]\nname = "ema"\ndecay = 0.9\n'),
        ("swa", WINE.replace("epochs = 2", "epochs = 4"), '[averaging]\nname = "swa"\nfirst_epoch = 3\n'),
        ("members", WINE, "[ensemble]\nmembers = 2\n"),
        (
            "cnn",
            'seed = 0\n[data]\nname = "mnist1d"\nnum_samples = 200\n[model]\nname = "cnn1d"\nchannels = [4, 4]\n'
            'batch_norm = true\n[train]\nepochs = 1\nbatch_size = 32\ndevice = "cpu"\n',
            "",
        ),
    ],
)
def test_every_kind_of_run_exports_to_onnx_and_matches(tmp_path, kind, recipe, extra):
    run = _train(tmp_path, recipe + extra)
    done = run.export(format="onnx")
    session = onnxruntime.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    raw = _raw_rows(run)
    outputs = session.run(None, {"x": raw.numpy()})
    if run.task == "classification":
        np.testing.assert_allclose(outputs[1], run.predict_proba(raw), rtol=0, atol=1e-5)
    else:
        np.testing.assert_allclose(outputs[0][:, 0], run.predict(raw), rtol=1e-4, atol=1e-4)
    assert done.max_difference <= done.tolerance


@pytest.mark.slow
def test_the_fold_models_of_a_cross_validation_export_as_one_graph(tmp_path):
    """Each fold's model has its own scaling (fitted on its fold): the graph scales the raw rows per member."""
    (tmp_path / "wine.toml").write_text(WINE)
    tune.cross_validate(config.load(tmp_path / "wine.toml"), 3, tmp_path / "cv", ensemble=True)
    run = ds.load_run(tmp_path / "cv" / "ensemble")
    done = run.export(tmp_path / "folds.onnx")
    session = onnxruntime.InferenceSession(str(done.path), providers=["CPUExecutionProvider"])
    raw = _raw_rows(run, 37)
    np.testing.assert_allclose(session.run(None, {"x": raw.numpy()})[1], run.predict_proba(raw), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_an_mc_dropout_ensemble_is_refused(tmp_path, capsys):
    run = _train(tmp_path, WINE + "[ensemble]\nmc_dropout = 3\n")
    assert main(["export", str(run.path)]) == 2
    assert "MC-dropout ensemble" in capsys.readouterr().err
    assert not (run.path / "model.onnx").exists()
