"""``examine``: run the flowchart's checks within a time budget and hand back one ranked :class:`Diagnosis`.

Order: the data and the speed settings (before any training), the loss at init, overfitting a tiny batch, the LR
range test, a short run of the recipe (curves, gradients, units, clipping), the zeroed-input baseline, and for a
regression the mean predictor and a least-squares linear model (:mod:`.regression`). Each
check gets a share of the budget (what a fast check leaves goes to the later ones) and is marked ``cut_short`` when
the time ran out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import config as cfg
from ..errors import UserError
from ..runs import experiment, workflow
from . import curve_checks, data_checks, fit_checks, lr_range, regression, speed_checks
from . import subject as subjects
from .findings import Budget, Check, Diagnosis, Finding, rank
from .report import write

DEFAULT_BUDGET = 120.0
WEIGHTS = {"data": 0.03, "initial_loss": 0.02, "small_subset": 0.12, "lr_range": 0.3, "short_run": 0.38,
           "zeroed_inputs": 0.15}
BLOCKING = ("data_nan", "label_out_of_range")  # data the trainer refuses: the training checks cannot run
# findings that stop a model from learning anything: the zeroed-input comparison is then meaningless
NOT_LEARNING = ("lr_too_high", "lr_too_low", "vanishing_gradients", "exploding_gradients", "dead_units",
                "cannot_overfit_small_subset")


def examine(target, budget: float = DEFAULT_BUDGET, out: str | Path | None = None, **options) -> Diagnosis:
    """Examine a recipe and return the ranked findings.

    ``target``: a recipe path, a :class:`descend.config.Config`, a built :class:`descend.runs.experiment.Experiment`,
    or a ``torch.nn.Module`` with ``data=`` (a DataBundle or (train, val)) and optionally ``loss``, ``optimizer``
    (a :func:`descend.optim.create` spec), ``epochs``, ``batch_size``, ``clip_grad_norm``, ``name``.
    ``budget`` is in seconds of wall time; ``out`` (a folder) receives ``doctor.json`` and ``doctor.html``.
    For a recipe (a path, dict or Config), ``model=`` (a factory) and ``data=`` replace its sections
    (:func:`descend.runs.workflow.recipe`).
    """
    if not budget > 0:
        raise UserError(f"budget must be a positive number of seconds, got {budget!r}")
    started = time.perf_counter()
    subject, early = _subject(target, options)
    _warm_up()
    clock = Budget(budget - (time.perf_counter() - started), WEIGHTS)
    name = subject.name if subject is not None else _name(target)
    doctor = _Run(clock)
    if subject is None:
        doctor.record("data", "finding", 0.0, early)
    else:
        doctor.findings.extend(early)  # what the data file showed before loading: cells descend imputes
        doctor.examine(subject)
    diagnosis = Diagnosis(rank(_merge(doctor.findings)), doctor.checks, time.perf_counter() - started, budget,
                          name, doctor.evidence, doctor.plots)
    if out is not None:
        write(diagnosis, Path(out))
    return diagnosis


def _subject(target, options: dict):
    """A Subject, or (None, findings) for a recipe whose data cannot even be loaded but can be diagnosed."""
    if isinstance(target, subjects.Subject):
        return target, []
    if isinstance(target, (str, Path, dict, cfg.Config)) and options.keys() & {"model", "data"}:
        target = workflow.recipe(target, model=options.pop("model", None), data=options.pop("data", None))
    if isinstance(target, torch.nn.Module):
        if "data" not in options:
            raise UserError("examine(model, data=...) needs the data: a DataBundle or (train, val)")
        return subjects.from_model(target, options.pop("data"), **options), []
    if options:
        raise UserError(f"options {sorted(options)} apply to examine(model, data=...) only")
    if isinstance(target, experiment.Experiment):
        return subjects.from_experiment_parts(target.config, target.data), []
    config = cfg.load(target) if isinstance(target, (str, Path)) else target
    if not isinstance(config, cfg.Config):
        raise UserError(f"examine takes a recipe path, Config, Experiment or model, got {type(target).__name__}")
    csv = str(config.data.name).lower().endswith(".csv")
    try:
        subject = subjects.from_config(config)
    except UserError:
        finding = data_checks.scan_csv(config.data.name, config.data.options.get("delimiter", ",")) if csv else None
        if finding is None:
            raise
        return None, [finding]
    finding = data_checks.scan_csv(config.data.name, config.data.options.get("delimiter", ",")) if csv else None
    return subject, [data_checks.imputed(finding)] if finding is not None else []


def _warm_up() -> None:
    """Pay torch's one-off cost of a first optimizer (it imports torch._dynamo: seconds) before the checks'
    shares are handed out, so it does not eat the first check's share."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def _name(target) -> str:
    return Path(target).stem if isinstance(target, (str, Path)) else getattr(target, "name", None) or "recipe"


def _merge(findings: list[Finding]) -> list[Finding]:
    """One finding per id: the first (most specific) keeps its message, the others add their evidence."""
    kept: dict[str, Finding] = {}
    for f in findings:
        if f.id not in kept:
            kept[f.id] = f
            continue
        first = kept[f.id]
        if f.severity == "error" and first.severity != "error":
            first.severity = "error"
        first.evidence = {**first.evidence, **{f"also_{k}": v for k, v in f.evidence.items()
                                               if k not in first.evidence}}
    return list(kept.values())


class _Run:
    """The checks of one examination, in order, each under its share of the budget."""

    def __init__(self, clock: Budget) -> None:
        self.clock = clock
        self.findings: list[Finding] = []
        self.checks: list[Check] = []
        self.evidence: dict = {}
        self.plots: dict[str, dict] = {}
        self.short: subjects.Probe | None = None  # the short run, for the zeroed-input comparison

    def record(self, check: str, status: str, seconds: float, findings: list[Finding], note: str = "") -> None:
        self.findings += findings
        status = "finding" if findings and status == "ok" else status
        self.checks.append(Check(check, status, seconds, note))

    def run(self, check: str, body: Callable[[float], tuple[list[Finding], bool]], skip: str = "") -> None:
        """Run ``body(deadline) -> (findings, cut_short)`` as the check ``check``; a UserError marks it failed."""
        deadline = self.clock.share(check)
        if skip:
            self.record(check, "skipped", 0.0, [], skip)
            return
        started = time.perf_counter()
        try:
            found, cut = body(deadline)
        except UserError as e:
            self.record(check, "failed", time.perf_counter() - started, [], str(e))
            return
        note = "the budget ran out before the check finished; its verdict rests on fewer steps" if cut else ""
        self.record(check, "cut_short" if cut else "ok", time.perf_counter() - started, found, note)

    def examine(self, subject: subjects.Subject) -> None:
        s = subject
        self.run("data", lambda deadline: (data_checks.check_data(s.data, s.scale) + regression.target_scale(s.data),
                                           False))
        self.run("speed_settings", lambda deadline: (speed_checks.slow_settings(s.raw), False))
        refused = any(f.id in BLOCKING and f.severity == "error" for f in self.findings)  # imputed cells train
        blocked = "the data must be fixed first" if refused else ""
        self.run("initial_loss", lambda deadline: self._initial_loss(s), blocked)
        if any(f.evidence.get("head_mismatch") for f in self.findings):
            blocked = "the model's head must match the number of classes first"
        self.run("small_subset", lambda deadline: self._small_subset(s, deadline), blocked)
        self.run("lr_range", lambda deadline: self._lr_range(s, deadline), blocked)
        self.run("short_run", lambda deadline: self._short_run(s, deadline), blocked)
        broken = sorted({f.id for f in self.findings if f.id in NOT_LEARNING and f.severity == "error"})
        zero_skip = blocked or (f"{', '.join(broken)} must be fixed first: a run that cannot learn says nothing "
                                "about its inputs" if broken else "" if self.short else "the short run failed")
        self.run("zeroed_inputs", lambda deadline: self._zeroed(s, deadline), zero_skip)
        if s.data.train.task == "regression":  # the mean predictor, not the zeroed-input model, is its baseline
            self.run("references", lambda deadline: self._references(s), blocked or ("" if self.short else
                                                                                     "the short run failed"))

    def _initial_loss(self, s) -> tuple[list[Finding], bool]:
        found, evidence = fit_checks.initial_loss(s, any(f.id == "unscaled_inputs" for f in self.findings))
        self.evidence["initial_loss"] = evidence
        init_model = s.make(None).model
        units, unit_evidence = fit_checks.unit_findings(init_model, s.data.train.x[:512].to(
            next(init_model.parameters()).device), "at initialisation")
        self.evidence["units_at_init"] = unit_evidence
        return found + units, False

    def _small_subset(self, s, deadline) -> tuple[list[Finding], bool]:
        found, evidence, cut = fit_checks.overfit_subset(s, deadline)
        curve = evidence.pop("curve", None) or (found[0].plot if found else None)
        if curve:
            self.plots["small_subset"] = curve
        self.evidence["small_subset"] = evidence
        return found, cut

    def _lr_range(self, s, deadline) -> tuple[list[Finding], bool]:
        sweeps, cut = lr_range.range_test(s, deadline)
        if not sweeps:
            return [], True
        plot = lr_range.plot(sweeps, s.lr)
        self.plots["lr_range"] = plot
        responsive = [sweep for sweep in sweeps if sweep.responsive]
        if len(responsive) * 2 <= len(sweeps):
            self.evidence["lr_range"] = {"verdict": "the loss fell by less than 10% at every learning rate tried: "
                                         "no rate to suggest", "falls": [sweep.fall for sweep in sweeps]}
            return [], cut
        summary = lr_range.combine(responsive)
        self.evidence["lr_range"] = summary
        return lr_range.judge(s.lr, summary, plot), cut

    def _short_run(self, s, deadline) -> tuple[list[Finding], bool]:
        result, stats = curve_checks.short_run(s, deadline)
        self.short = result
        initial = self.evidence.get("initial_loss", {}).get("initial_loss")
        found = curve_checks.divergence(result, s.lr)
        curves, evidence = curve_checks.learning_curves(result, initial, s) if result.diverged_at is None else ([], {})
        grads, layers = fit_checks.gradient_findings(stats)
        x = s.data.train.x[:512].to(result.trainer.device)
        units, unit_evidence = fit_checks.unit_findings(result.trainer.model, x, "after the short run") \
            if result.diverged_at is None else ([], {})
        self.evidence.update(short_run=evidence, gradients=layers, units_after_run=unit_evidence)
        self.plots["learning_curves"] = curve_checks.curves(result)
        if "plot" in layers:
            self.plots["gradients"] = layers.pop("plot")
        return found + grads + units + curve_checks.clipping(stats, s.clip_grad_norm, s.lr) + curves, result.cut_short

    def _references(self, s) -> tuple[list[Finding], bool]:
        if self.short.diverged_at is not None:
            return [], False
        found, evidence = regression.references(self.short.trainer, s.data, s.lr, self.evidence.get("lr_range"))
        self.evidence["references"] = evidence
        return found, False

    def _zeroed(self, s, deadline) -> tuple[list[Finding], bool]:
        zero = curve_checks.zeroed_run(s, len(self.short.losses), deadline)
        found, evidence = curve_checks.input_independence(self.short, zero)
        self.evidence["zeroed_inputs"] = evidence
        return found, zero.cut_short
