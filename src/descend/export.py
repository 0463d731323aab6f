"""Export a trained run for serving: ONNX, TorchScript or a ``torch.export`` program, checked before it is kept.

``descend export RUN --format onnx`` (or ``descend.load_run(RUN).export("model.onnx")``) writes one model that takes
the *raw* inputs a user has, float32 rows of shape ``(N, *input_shape)`` (8-bit images as floats in [0, 1], as
descend's loaders give them): the feature scaling fitted on the training split is folded in as the model's first
operation, ``(x - shift) / scale``. A classifier returns two outputs, ``logits`` and ``probabilities`` (columns in
the order of the class labels); a regressor returns ``values``. The class labels, feature columns, input shape and
outputs travel with the model: in the ONNX file's ``metadata_props`` (key ``descend``, a JSON text), and for the torch
formats in a JSON side file (``<file>.json``).

Export checks itself: the written model runs (onnxruntime for ONNX, torch for the others) on held-out rows of the
run's data (its test split, else its validation split) and on batches of 1 and 37 rows, and its outputs are compared
with the PyTorch model's. The largest difference is reported; beyond the tolerance nothing is kept (the check fails
with a :class:`~descend.errors.UserError`). The default tolerance, ``1e-4`` times ``max(1, |largest output|)``: the
exported graph computes the same float32 operations, and only the order of summation differs between kernels
(onnxruntime's, torch's, oneDNN's); a float32 dot product of ``n`` terms is off by at most ``n·u·Σ|terms|`` with
``u = 6e-8`` (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 3), typically ``√n·u``: 1e-6 for the
layer widths of such networks, a hundred times below the tolerance, while a real mistake (scaling applied twice or
not at all, dropout left on, batch statistics in training mode) moves outputs by 1e-2 and more.

Models are exported in eval mode: dropout off, batch norm with its running statistics. Averaged weights (EMA, SWA)
are exported as the run's final weights hold them. An ensemble of members, snapshots or folds becomes one graph
(each member's scaling, the mean of the members' probabilities); an MC-dropout ensemble is refused, since its answer
is an average over random dropout masks that an eval-mode graph cannot reproduce.

What loading each format runs: an ONNX file is a protobuf (no code, no pickle). A ``.pt2`` file (``torch.export``)
holds a JSON graph and raw tensor bytes; ``torch.export.load`` unpickles entries marked as pickled (tensor subclasses,
sample inputs), so descend writes none and checks the archive before loading it back. A TorchScript file is a zip
archive of TorchScript code and pickled constants, read by TorchScript's own unpickler and run as a program: descend
checks the traced module in-process before saving and never loads the file; load TorchScript files only from people
you trust.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import atomic, ensemble
from .data.scaling import Scaler
from .errors import UserError
from .optional import require

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "exported": "model.pt2"}
#: The largest difference allowed, relative to max(1, |largest PyTorch output|): see the module's docstring.
TOLERANCE = 1e-4
BATCH_SIZES = (1, 37)
#: At most this many of the run's held-out rows are checked (the first ones): a test split of 10,000 images is
#: checked in seconds, not minutes.
HELD_OUT_ROWS = 1024


@dataclass
class Exported:
    """What :func:`export` wrote: the model file, its metadata, and how far its outputs were from PyTorch's."""

    path: Path
    format: str
    metadata: dict
    max_difference: float
    tolerance: float
    rows: int

    def __str__(self) -> str:
        return (
            f"{self.format} model -> {self.path}: largest difference from PyTorch {self.max_difference:.3g} "
            f"on {self.rows} held-out rows and batches of {' and '.join(map(str, BATCH_SIZES))} "
            f"(allowed {self.tolerance:.3g})"
        )


class Servable(nn.Module):
    """The run's network with its feature scaling in front and its read-outs behind: raw rows in; ``(logits,
    probabilities)`` out for a classifier, ``values`` for a regressor."""

    def __init__(self, network: nn.Module, scaler: Scaler | None, task: str, probabilities: bool = True,
                 target_scaler: Scaler | None = None):
        super().__init__()
        self.network, self.task, self.with_probabilities = network, task, probabilities
        self.scaled = scaler is not None
        self.register_buffer("shift", scaler.shift.clone() if scaler is not None else torch.zeros(1))
        self.register_buffer("scale", scaler.scale.clone() if scaler is not None else torch.ones(1))
        self.unscaled = target_scaler is not None  # standardised regression targets: values back in their units
        self.register_buffer("target_shift", target_scaler.shift.clone() if self.unscaled else torch.zeros(1))
        self.register_buffer("target_scale", target_scaler.scale.clone() if self.unscaled else torch.ones(1))

    def forward(self, x: torch.Tensor):
        if self.scaled:
            x = (x - self.shift) / self.scale
        out = self.network(x)
        if self.task != "classification":
            out = out.float()
            return out * self.target_scale + self.target_shift if self.unscaled else out
        if not self.with_probabilities:  # an ensemble graph gives its mean probabilities itself
            return out
        out = out.float()
        return out, ensemble.probabilities(out)


class EnsembleGraph(nn.Module):
    """An ensemble of members (seeds, snapshots or folds) as one graph: each member's own scaling, then the mean of
    the members' probabilities (classification; logits are log p̄, or logit(p̄₁) with one output, as
    :class:`descend.ensemble.Combined` gives them) or of their outputs (regression)."""

    def __init__(self, combined: ensemble.Combined):
        super().__init__()
        ens = combined.ensemble
        self.members = nn.ModuleList(ens.models)
        self.task, self.binary = ens.task, combined.binary
        self.scaled = [s is not None for s in ens.scalers]
        for i, s in enumerate(ens.scalers):
            if s is not None:
                self.register_buffer(f"shift{i}", s.shift.clone())
                self.register_buffer(f"scale{i}", s.scale.clone())

    def forward(self, x: torch.Tensor):
        outs = []
        for i, member in enumerate(self.members):
            xm = (x - getattr(self, f"shift{i}")) / getattr(self, f"scale{i}") if self.scaled[i] else x
            out = member(xm).float()
            outs.append(ensemble.probabilities(out) if self.task == "classification" else out)
        mean = torch.stack(outs).mean(0)
        if self.task != "classification":
            return mean
        logits = torch.logit(mean[:, 1:], eps=1e-7) if self.binary else mean.clamp_min(1e-12).log()
        return logits, mean


def servable(run) -> Servable:
    """The exportable module of a loaded run (:class:`descend.runs.loaded.LoadedRun`), on the CPU, in eval mode."""
    model = run.model
    if isinstance(model, ensemble.Combined):
        if model.ensemble.kind == "mc_dropout":
            raise UserError(
                f"{run.path} is an MC-dropout ensemble: its answer averages random dropout passes, which "
                "an exported (eval-mode) graph cannot reproduce; export the network it was trained "
                "from instead, or train an ensemble of members (descend ensemble --members K)"
            )
        network, with_probabilities = EnsembleGraph(model), False
    else:
        network, with_probabilities = model, True
    module = Servable(copy.deepcopy(network).cpu(), run.scaler, run.task, with_probabilities,
                      getattr(run, "target_scaler", None))
    return module.eval()


def metadata(run, fmt: str) -> dict:
    """What travels with an exported model: task, inputs, outputs, class labels, feature columns, source."""
    record = run.record
    outputs = ["logits", "probabilities"] if run.task == "classification" else ["values"]
    return {
        "format": "descend-export",
        "version": 1,
        "model_format": fmt,
        "task": run.task,
        "input_shape": record["input_shape"],
        "input": "raw float32 rows, feature scaling folded in",
        "outputs": outputs,
        "classes": run.classes,
        "feature_names": record["feature_names"],
        "scaling": run.scaler.kind if run.scaler is not None else None,
        "source_run": str(run.path),
        "weights": run.which,
    }


def export(
    run,
    path: str | Path | None = None,
    format: str = "onnx",
    *,
    tolerance: float = TOLERANCE,
    rows: torch.Tensor | None = None,
) -> Exported:
    """Write ``run`` (a :class:`~descend.runs.loaded.LoadedRun`) as ``format`` ("onnx", "torchscript" or "exported")
    to ``path`` (default: the run directory's ``model.onnx``, ``model.torchscript.pt`` or ``model.pt2``), after
    checking that it gives the PyTorch model's outputs on ``rows`` (default: the first 1024 of the run's held-out
    rows) and on batches of 1 and 37, within ``tolerance`` × max(1, |largest output|). Nothing is left behind when a
    check fails."""
    if format not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if not (isinstance(tolerance, (int, float)) and tolerance > 0):
        raise UserError(f"tolerance must be a number > 0, got {tolerance!r}")
    path = Path(path) if path is not None else run.path / FORMATS[format]
    if path.is_dir():
        raise UserError(f"{path} is a directory: give the file to write, e.g. {path / FORMATS[format]}")
    module = servable(run)
    checked = rows if rows is not None else run.held_out_inputs()[:HELD_OUT_ROWS]
    batches = [checked] + [_rows(checked, n) for n in BATCH_SIZES]
    expected = [_reference(run, x) for x in batches]
    info = metadata(run, format)
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]  # removed again if export fails
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    temp, kept = Path(temp), False
    try:
        runner = _write(format, module, batches[0], temp, info)
        worst = max(_difference(runner(x), want) for x, want in zip(batches, expected))
        scale = max(1.0, max(float(t.abs().max()) for want in expected for t in want))
        info.update(max_difference=worst, tolerance=tolerance * scale)
        if not worst <= tolerance * scale:  # NaN fails too
            raise UserError(
                f"the {format} model differs from the PyTorch model by {worst:.3g} (allowed "
                f"{tolerance * scale:.3g}); nothing was written"
            )
        if format != "onnx":
            atomic.write_json(Path(f"{path}.json"), info, what="export metadata")
        os.replace(temp, path)
        kept = True
    finally:
        temp.unlink(missing_ok=True)
        for folder in made if not kept else ():
            folder.rmdir()
    return Exported(path, format, info, worst, tolerance * scale, len(checked))


def _write(format: str, module: Servable, example: torch.Tensor, temp: Path, info: dict):
    """Write the model with the format's exporter; returns a function that runs the written model. A model the
    exporter cannot trace (a custom layer it does not know) is one UserError naming the exporter's reason."""
    try:
        return _WRITERS[format](module, example, temp, info)
    except UserError:
        raise
    except Exception as e:  # the exporters raise many kinds (torch._dynamo, onnxscript, TorchScript): one message
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        others = ", ".join(f for f in FORMATS if f != format)
        raise UserError(f"the model cannot be exported as {format}: {reason}; try --format {others}") from None


def _rows(x: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` rows of ``x`` (repeated when it has fewer)."""
    return x[torch.arange(n) % len(x)]


def _reference(run, x: torch.Tensor) -> list[torch.Tensor]:
    """The PyTorch model's outputs for raw rows ``x``, through the run's own prediction path."""
    if run.task != "classification":  # values in the targets' own units (standardised targets scaled back)
        return [torch.as_tensor(run.predict(x)).float().reshape(len(x), -1)]
    return [run.outputs(x), torch.as_tensor(run.predict_proba(x))]


def _difference(got: list, want: list[torch.Tensor]) -> float:
    return max(float((torch.as_tensor(g).float() - w).abs().max()) for g, w in zip(got, want))


def _as_list(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _onnx(module: Servable, example: torch.Tensor, temp: Path, info: dict):
    onnx = require("onnx", "ONNX export")
    onnxruntime = require("onnxruntime", "ONNX export")
    require("onnxscript", "ONNX export")  # torch.onnx's exporter
    names = info["outputs"]
    with _quiet():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["x"],
            output_names=names,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            verbose=False,
        )
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {"descend": json.dumps(info)})
    onnx.save(proto, temp)
    session = onnxruntime.InferenceSession(str(temp), providers=["CPUExecutionProvider"])
    return lambda x: session.run(names, {"x": x.numpy()})


def _torchscript(module: Servable, example: torch.Tensor, temp: Path, info: dict):
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(str(temp), _extra_files={"descend.json": json.dumps(info)})
    # checked in-process: loading the file would run TorchScript's unpickler and program (see the module docstring)
    return lambda x: _as_list(_run(traced, x))


def _exported(module: Servable, example: torch.Tensor, temp: Path, info: dict):
    with _quiet():
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.example_inputs = None  # saved inputs are pickled; without them the archive holds JSON and raw bytes
    with _quiet():
        torch.export.save(program, temp, extra_files={"descend.json": json.dumps(info)})
    check_no_pickle(temp)
    with _quiet():
        loaded = torch.export.load(temp).module()
    return lambda x: _as_list(_run(loaded, x))


def check_no_pickle(path: str | Path) -> None:
    """Refuse a ``torch.export`` archive that ``torch.export.load`` would unpickle anything from: a pickled weight
    or constant (``use_pickle``), a TorchBind object, or saved sample inputs."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith(("_weights_config.json", "_constants_config.json")):
                entries = json.loads(archive.read(name)).get("config", {})
                if any(e.get("use_pickle") or "torchbind" in json.dumps(e).lower() for e in entries.values()):
                    raise UserError(f"{path}: {name} holds pickled entries; descend does not load it")
            elif "/sample_inputs/" in name and archive.getinfo(name).file_size:
                raise UserError(f"{path}: {name} holds pickled sample inputs; descend does not load it")


def _run(model, x: torch.Tensor):
    with torch.no_grad():
        return model(x)


@contextlib.contextmanager
def _quiet():
    """The exporters' progress messages and deprecation warnings stay out of descend's output."""
    torch_log = logging.getLogger("torch")
    level = torch_log.level
    with warnings.catch_warnings(), open(os.devnull, "w") as null:
        warnings.simplefilter("ignore")
        torch_log.setLevel(logging.ERROR)
        try:
            with contextlib.redirect_stdout(null):
                yield
        finally:
            torch_log.setLevel(level)


_WRITERS = {"onnx": _onnx, "torchscript": _torchscript, "exported": _exported}
