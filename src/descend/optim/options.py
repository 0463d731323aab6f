"""The options each named optimizer accepts: type, default, allowed range, and where the default comes from.

This table is the single source of truth: :func:`descend.optim.create` validates against it, the config
schema is written from it, and :func:`describe` prints it.
"""

from __future__ import annotations

from typing import Any

from descend.errors import UserError
from descend.options import Boolean, OneOf, Option, Optional, Patterns, integer, number
from descend.options import describe as describe_table
from descend.options import validate as validate_table

DEFAULT_EXCLUDE = ("bias", "*.bias", "<normalization>")


def _lr(default: float, origin: str) -> Option:
    return Option("lr", number(0), default, doc=f"learning rate η ({origin})")


def _rate(name: str, default: float, doc: str) -> Option:
    return Option(name, number(0, 1, closed="left"), default, doc=doc)


def _eps(default: float, origin: str) -> Option:
    return Option("eps", number(0), default, doc=f"ε in the denominator ({origin})")


def _decay(default: float = 0.0, mode: str = "l2") -> list[Option]:
    return [
        Option("weight_decay", number(0), default, doc="λ: L2 coefficient or decoupled decay rate"),
        Option("weight_decay_mode", OneOf("l2", "decoupled"), mode,
               doc="l2: g += λw before the optimizer; decoupled: w -= ηλw outside it"),
        Option("exclude_from_decay", Patterns(), list(DEFAULT_EXCLUDE),
               doc="parameters never decayed: biases and normalisation layers by default"),
    ]


IMPLEMENTATION = Option("implementation", OneOf("auto", "torch", "composed"), "auto",
                        doc="auto: torch's kernels when exactly a torch algorithm, else composed")
_FORM = Option("momentum_form", OneOf("heavy_ball", "velocity", "ema"), "heavy_ball",
               doc="v=ρv+g, w-=ηv | v=ρv-ηg, w+=v | v=βv+(1-β)g, w-=ηv")
_PLACEMENT_OUT = Option("eps_placement", OneOf("outside", "inside"), "outside",
                        doc="outside: u/(√v+ε) (Kingma & Ba 2015, torch); inside: u/√(v+ε)")
_ADAM = [
    _rate("beta1", 0.9, "first-moment decay β1 (Kingma & Ba 2015: 0.9)"),
    _rate("beta2", 0.999, "second-moment decay β2 (Kingma & Ba 2015: 0.999)"),
    _eps(1e-8, "Kingma & Ba 2015: 1e-8"),
    Option("bias_correction", Boolean(), True, doc="false leaves the moments biased towards 0 ('Adam, almost')"),
    _PLACEMENT_OUT,
]

OPTIONS: dict[str, list[Option]] = {
    "gd": [_lr(0.01, "descend default")] + _decay(),
    "momentum": [_lr(0.01, "descend default"),
                 _rate("momentum", 0.9, "ρ, friction (0.9 or 0.99 are usual)"),
                 _FORM, Option("nesterov", Boolean(), False, doc="look-ahead variant")] + _decay(),
    "nesterov": [_lr(0.01, "descend default"), _rate("momentum", 0.9, "ρ, friction (0.9 or 0.99 are usual)"),
                 _FORM] + _decay(),
    "adagrad": [_lr(0.01, "torch default"), _eps(1e-10, "torch default; 1e-7 is also common"),
                _PLACEMENT_OUT] + _decay(),
    "rmsprop": [_lr(0.01, "torch default"), _rate("rho", 0.99, "decay_rate of the squared-gradient EMA"),
                _eps(1e-8, "torch default; 1e-7 is also common"), _PLACEMENT_OUT,
                _rate("momentum", 0.0, "heavy-ball momentum on the preconditioned gradient (torch)")]
    + _decay(),
    "adadelta": [_lr(1.0, "Zeiler 2012 / torch: 1.0"), _rate("rho", 0.9, "decay of both running averages"),
                 _eps(1e-6, "Zeiler 2012 / torch: 1e-6, inside the square roots")] + _decay(),
    "adam": [_lr(1e-3, "Kingma & Ba 2015: 0.001")] + _ADAM
    + [Option("nesterov", Boolean(), False, doc="look-ahead first moment (NAdam without momentum schedule)")]
    + _decay(),
    "adamw": [_lr(1e-3, "Loshchilov & Hutter 2019: 0.001")] + _ADAM + _decay(0.01, "decoupled"),
    "nadam": [_lr(2e-3, "Dozat 2016 / torch: 0.002")] + _ADAM
    + [Option("momentum_decay", number(0), 0.004, doc="ψ of the schedule μ_t = β1(1 − ½·0.96^(tψ))")]
    + _decay(),
    "newton": [_lr(1.0, "α = 1 is the full Newton step"),
               Option("damping", number(0, closed="right"), 1e-4,
                      doc="smallest curvature trusted: eigenvalues λ of ∇²f are used as max(|λ|, damping)"),
               Option("max_params", integer(1), 5000, doc="refuse models larger than this (n×n Hessian)")]
    + _decay(),
}
for _name in OPTIONS:
    if _name != "newton":
        OPTIONS[_name].append(IMPLEMENTATION)


def _fixed_decay(mode: str, default: float = 0.0) -> list[Option]:
    """Weight decay of an optimizer that has one form of it (``mode``, the authors')."""
    return [Option("weight_decay", number(0), default, doc=f"λ ({mode} weight decay, as the authors')"),
            Option("weight_decay_mode", OneOf(mode), mode, doc=f"{mode} only (the authors' form)"),
            Option("exclude_from_decay", Patterns(), list(DEFAULT_EXCLUDE),
                   doc="parameters never decayed: biases and normalisation layers by default")]


_NO_LIMIT = Optional(number(1, closed="both"), none="no limit")
_WARMUP = Option("warmup_steps", integer(0), 0, doc="linear warm-up of η over this many steps (0: none)")
_SF = [_WARMUP, Option("r", number(0), 0.0, doc="polynomial weighting (k+1)^r of the average"),
       Option("weight_lr_power", number(0), 2.0, doc="average weights ∝ η_max^power (warm-up steps count less)")]
OPTIONS.update({
    "lion": [_lr(1e-4, "Chen et al. 2023 / lion-pytorch: 1e-4"),
             _rate("beta1", 0.9, "interpolation of momentum and gradient in the sign (Chen et al. 2023: 0.9)"),
             _rate("beta2", 0.99, "decay of the tracked momentum (Chen et al. 2023: 0.99)")]
    + _decay(0.0, "decoupled") + [IMPLEMENTATION],
    "muon": [_lr(1e-3, "torch.optim.Muon: 1e-3"),
             _rate("momentum", 0.95, "μ of the momentum buffer (Jordan et al. 2024: 0.95)"),
             Option("nesterov", Boolean(), True, doc="look-ahead: orthogonalise g + μ(B − g), not B"),
             Option("ns_steps", integer(1, 99), 5, doc="Newton–Schulz iterations (Jordan et al. 2024: 5)"),
             Option("ns_eps", number(0, closed="neither"), 1e-7, doc="ε of the Newton–Schulz normalisation"),
             Option("adjust_lr", OneOf("original", "match_rms_adamw"), "original",
                    doc="original: η·√max(1, rows/cols) (Jordan); match_rms_adamw: 0.2·η·√max(rows, cols) (Liu)"),
             Option("adamw_lr", Optional(number(0), none="lr"), None, doc="η of AdamW for the other parameters"),
             _rate("beta1", 0.9, "AdamW's β1 for the other parameters"),
             _rate("beta2", 0.999, "AdamW's β2 for the other parameters"),
             _eps(1e-8, "AdamW's, for the other parameters")]
    + _fixed_decay("decoupled", 0.1),
    "adafactor": [_lr(1e-2, "torch.optim.Adafactor: 0.01"),
                  Option("beta2_decay", number(None, 0), -0.8, doc="β2_t = 1 − t^decay (Shazeer & Stern 2018: -0.8)"),
                  Option("eps1", Optional(number(0), none="the dtype's machine epsilon"), None,
                         doc="ε1 added to the squared gradient's factors"),
                  Option("eps2", number(0), 1e-3, doc="ε2: the smallest relative step (Shazeer & Stern 2018: 1e-3)"),
                  Option("clip_threshold", number(0, closed="neither"), 1.0,
                         doc="d: the update's RMS is clipped to d (Shazeer & Stern 2018: 1)")]
    + _fixed_decay("decoupled"),
    "schedule_free_sgd": [_lr(1.0, "schedulefree.SGDScheduleFree: 1.0"),
                          _rate("momentum", 0.9, "β: interpolation between the average x and z")] + _SF
    + _fixed_decay("l2"),
    "schedule_free_adamw": [_lr(0.0025, "schedulefree.AdamWScheduleFree: 0.0025"),
                            _rate("beta1", 0.9, "β1: interpolation between the average x and z"),
                            _rate("beta2", 0.999, "second-moment decay β2"), _eps(1e-8, "Defazio et al. 2024")]
    + _SF + _fixed_decay("decoupled"),
    "prodigy": [_lr(1.0, "Mishchenko & Defazio 2024: 1.0, a multiplier of the estimated step size d"),
                _rate("beta1", 0.9, "first-moment decay β1"), _rate("beta2", 0.999, "second-moment decay β2"),
                Option("beta3", Optional(_rate("beta3", 0.0, "").constraint, none="√β2"), None,
                       doc="decay of the step-size estimate's sums"),
                _eps(1e-8, "Mishchenko & Defazio 2024"),
                Option("bias_correction", Boolean(), False, doc="Adam's bias correction folded into d·η"),
                Option("safeguard_warmup", Boolean(), False, doc="leave η out of the denominator sum (for warm-up)"),
                Option("d0", number(0, closed="neither"), 1e-6, doc="initial step-size estimate d₀"),
                Option("d_coef", number(0, closed="neither"), 1.0, doc="multiplier of the estimate d̂"),
                Option("growth_rate", _NO_LIMIT, None, doc="largest factor d may grow by per step")]
    + _decay(0.0, "decoupled"),
    "dadapt_sgd": [_lr(1.0, "Defazio & Mishchenko 2023: 1.0, a multiplier of the estimated step size d"),
                   _rate("momentum", 0.0, "momentum of the primal average (dadaptation: 0; 0.9 is usual)"),
                   Option("d0", number(0, closed="neither"), 1e-6, doc="initial distance estimate d₀"),
                   Option("growth_rate", _NO_LIMIT, None, doc="largest factor d may grow by per step")]
    + _fixed_decay("l2"),
})
SCHEDULE_FREE = ("schedule_free_sgd", "schedule_free_adamw")
_SAM_RHO = Option("sam_rho", number(0), 0.0, doc="SAM's neighbourhood radius ρ (Foret et al. 2021; 0: off)")
_LOOKAHEAD = [Option("lookahead_k", integer(0), 0, doc="Lookahead: sync the slow weights every k steps (0: off)"),
              Option("lookahead_alpha", number(0, 1, closed="right"), 0.5, doc="Lookahead's slow step α")]
for _name, _opts in OPTIONS.items():  # the wrappers go around every first-order optimizer
    if _name != "newton":
        _opts.append(_SAM_RHO)
        if _name not in SCHEDULE_FREE:  # schedule-free keeps its own average of the iterates
            _opts.extend(_LOOKAHEAD)
# SAM and Lookahead by name: as in their papers, around SGD with momentum and around Adam
OPTIONS["sam"] = [o if o.name != "sam_rho" else
                  Option("sam_rho", number(0, closed="neither"), 0.05, doc="ρ (Foret et al. 2021: 0.05)")
                  for o in OPTIONS["momentum"]]
OPTIONS["lookahead"] = [o if o.name != "lookahead_k" else
                        Option("lookahead_k", integer(1), 5, doc="k (Zhang et al. 2019: 5)")
                        for o in OPTIONS["adam"]]
WRAPPED = {"sam": "momentum", "lookahead": "adam"}

ALIASES = {"sgd": "gd"}


def canonical_name(name: Any) -> str:
    key = ALIASES.get(name, name) if isinstance(name, str) else name
    if key not in OPTIONS:
        valid = sorted(OPTIONS) + sorted(ALIASES)
        raise UserError(f"unknown optimizer {name!r}; valid names: {valid}")
    return key


def validate(name: str, hyper: dict[str, Any]) -> dict[str, Any]:
    """Return the full option dict for ``name`` (defaults filled in), or raise UserError on any bad entry."""
    return validate_table(f"optimizer {name!r}", OPTIONS[name], hyper)


ABOUT = {  # each optimizer's update and its original source, for describe()
    "gd": "w ← w − ηg (Cauchy 1847; stochastic: Robbins & Monro 1951)",
    "momentum": "v ← ρv + g, w ← w − ηv (Polyak 1964)",
    "nesterov": "v ← ρv + g, w ← w − η(g + ρv) (Nesterov 1983; Sutskever et al. 2013)",
    "adagrad": "v ← v + g², w ← w − ηg/(√v + ε) (Duchi, Hazan & Singer 2011)",
    "rmsprop": "v ← ρv + (1−ρ)g², w ← w − ηg/(√v + ε) (Tieleman & Hinton 2012)",
    "adadelta": "Δ = √(u+ε)/√(v+ε)·g, u ← ρu + (1−ρ)Δ², w ← w − ηΔ (Zeiler 2012)",
    "adam": "m ← β1m + (1−β1)g, v ← β2v + (1−β2)g², w ← w − ηm̂/(√v̂ + ε) (Kingma & Ba 2015)",
    "adamw": "Adam with decoupled decay w ← w − ηλw (Loshchilov & Hutter 2019)",
    "nadam": "Adam with Nesterov's look-ahead first moment (Dozat 2016)",
    "newton": "w ← w − α(∇²f)⁻¹∇f, damped (saddle-free damping: Dauphin et al. 2014)",
    "lion": "w ← w − η·sign(β1m + (1−β1)g), m ← β2m + (1−β2)g (Chen et al. 2023; = lion-pytorch)",
    "muon": "W ← W − η'·NS₅(momentum) on hidden matrices, AdamW on the rest (Jordan et al. 2024; Liu et al. 2025; "
            "= torch.optim.Muon)",
    "adafactor": "factored second moments, relative step, update clipping (Shazeer & Stern 2018; "
                 "= torch.optim.Adafactor)",
    "schedule_free_sgd": "z ← z − ηg(y), x ← (1−c)x + cz, y = (1−β)z + βx (Defazio et al. 2024; = schedulefree)",
    "schedule_free_adamw": "Schedule-Free with Adam's normalised gradient (Defazio et al. 2024; = schedulefree)",
    "prodigy": "Adam with step size d·η, d estimated from ⟨g, w₀ − w⟩ (Mishchenko & Defazio 2024; = prodigyopt)",
    "dadapt_sgd": "dual averaging with step d·η/‖g₀‖, d a lower bound on ‖w₀ − w*‖ (Defazio & Mishchenko 2023; "
                  "= dadaptation)",
    "sam": "SGD+momentum stepped with ∇L(w + ρg/‖g‖) (Foret et al. 2021)",
    "lookahead": "Adam's fast weights θ; every k steps φ ← φ + α(θ − φ), θ ← φ (Zhang et al. 2019)",
}


def describe() -> str:
    """Every optimizer's update and source, then its options: default, allowed values, meaning."""
    return "\n".join(f"{name}: {ABOUT[name]}\n" + describe_table(opts, f"optimizer {name!r}")
                     for name, opts in OPTIONS.items())
