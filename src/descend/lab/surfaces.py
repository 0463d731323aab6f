"""Lab ``optimizer-paths``: every optimizer on 2-D loss surfaces, with contour plots and steps to tolerance.

The surfaces are the classic hard cases for gradient descent: an ill-conditioned ravine, a saddle point, the
Rosenbrock (1960) valley and a tilted double well with a local minimum. Each optimizer runs at every learning
rate of a grid at once (one parameter group per surface and rate, so one ``torch.optim`` object per optimizer),
and the table reports its best rate. On a constant slope the step lengths show AdaGrad's 1/√t decay.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from descend import optim
from descend.lab.base import LabResult
from descend.report import html

OPTIMIZERS = ("gd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "nadam", "newton")
QUICK = ("gd", "momentum", "adagrad", "adam")
LIMIT = 1e6  # a coordinate beyond this counts as diverged; the group is frozen at its start point


@dataclass(frozen=True)
class Surface:
    name: str
    formula: str
    start: tuple[float, float]
    minimum: float        # the value the tolerance is measured from (the global minimum)
    tolerance: float
    box: tuple[float, float, float, float]  # x0, x1, y0, y1 for the contour plot

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        x, y = w[..., 0], w[..., 1]
        if self.name == "ravine":
            return 0.5 * (x ** 2 + 100 * y ** 2)
        if self.name == "saddle":
            return x ** 2 - y ** 2 + y ** 4 / 4
        if self.name == "rosenbrock":
            return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2
        return (x ** 2 - 1) ** 2 + 0.3 * x + 0.5 * y ** 2          # double well


SURFACES = (
    Surface("ravine", "½(x² + 100y²)  (condition number 100)", (-4.0, 0.6), 0.0, 1e-6, (-5, 5, -1, 1)),
    Surface("saddle", "x² − y² + y⁴/4  (saddle at 0, minima at y = ±√2)", (1.0, 1e-3), -1.0, 1e-4, (-1.5, 1.5, -2, 2)),
    Surface("rosenbrock", "(1 − x)² + 100(y − x²)²", (-1.2, 1.0), 0.0, 1e-4, (-1.6, 1.4, -0.6, 1.6)),
    Surface("local-minimum", "(x² − 1)² + 0.3x + ½y²  (local minimum near x = 0.96)", (1.6, 1.0),
            -0.3054284837439, 1e-4, (-1.8, 1.9, -1.3, 1.3)),
)


def descend_paths(name: str, surfaces, rates, steps: int) -> np.ndarray:
    """Run optimizer ``name`` from each surface's start at each rate; returns positions ``(steps + 1, S, L, 2)``.

    One parameter of shape ``(S, 2)`` per rate (one param group each, so the rate is the group's ``lr``); the
    objective sums the surfaces, so each point moves as if optimized alone."""
    starts = torch.tensor([s.start for s in surfaces], dtype=torch.float64)
    points = [torch.nn.Parameter(starts.clone()) for _ in rates]
    opt = optim.create(name, [{"params": [p], "lr": float(lr)} for p, lr in zip(points, rates)],
                       lr=float(rates[0]))
    alive = torch.ones(len(rates), len(surfaces), dtype=torch.float64)

    def objective():
        w = torch.stack(points)                                   # (L, S, 2)
        values = torch.stack([s(w[:, i]) for i, s in enumerate(surfaces)], dim=1)
        return (alive * values).sum()

    path = [torch.stack([p.detach().clone() for p in points])]
    for _ in range(steps):
        if getattr(opt, "needs_closure", False):
            opt.step(objective)
        else:
            opt.zero_grad(set_to_none=True)
            objective().backward()
            opt.step()
        with torch.no_grad():
            now = torch.stack([p.detach() for p in points])
            dead = ~torch.isfinite(now).all(dim=-1) | (now.abs() > LIMIT).any(dim=-1)   # (L, S)
            if bool(dead.any()):
                alive[dead] = 0.0
                for j, p in enumerate(points):   # frozen at the start: zero weight in the sum, no gradient
                    p.copy_(torch.where(dead[j, :, None], starts, p))
                now = torch.where(dead[..., None], torch.full_like(now, math.nan), now)
            now = torch.where((alive == 0)[..., None], torch.full_like(now, math.nan), now)
        path.append(now.clone())
    return torch.stack(path).transpose(1, 2).numpy()


def steps_to_tolerance(surface: Surface, path: np.ndarray) -> int | None:
    """First step at which f − f* < tolerance (None: never within the run)."""
    gap = surface(torch.from_numpy(path)).numpy() - surface.minimum
    hit = np.nonzero(np.nan_to_num(gap, nan=np.inf) < surface.tolerance)[0]
    return int(hit[0]) if hit.size else None


def step_lengths(name: str, steps: int, lr: float = 0.1) -> np.ndarray:
    """‖w_{t+1} − w_t‖ on the constant slope f = x + 2y, where the gradient never changes."""
    w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = optim.create(name, [w], lr=lr)
    out = []
    for _ in range(steps):
        before = w.detach().clone()
        opt.zero_grad(set_to_none=True)
        (w[0] + 2 * w[1]).backward()
        opt.step()
        out.append(float((w.detach() - before).norm()))
    return np.array(out)


def run(quick: bool = False) -> LabResult:
    steps = 1000 if quick else 2000
    rates = np.logspace(-3, 0, 7 if quick else 10)
    names = QUICK if quick else OPTIMIZERS
    table_rows, best_paths, measured = [], {}, {"steps": {}, "best_lr": {}, "max_steps": steps}
    for name in names:
        paths = descend_paths(name, SURFACES, rates, steps)
        row = [name]
        for s_index, surface in enumerate(SURFACES):
            hits = [steps_to_tolerance(surface, paths[:, s_index, j]) for j in range(len(rates))]
            finals = [surface(torch.from_numpy(np.nan_to_num(paths[-1, s_index, j], nan=1e3))).item()
                      for j in range(len(rates))]
            best = min(range(len(rates)), key=lambda j: (hits[j] is None, hits[j] or 0, finals[j]))
            measured["steps"].setdefault(surface.name, {})[name] = hits[best]
            measured["best_lr"].setdefault(surface.name, {})[name] = float(rates[best])
            best_paths[(surface.name, name)] = paths[:, s_index, best]
            row.append(f"{hits[best]} (lr {rates[best]:.3g})" if hits[best] is not None else f"> {steps}")
        table_rows.append(row)
    lengths = {name: step_lengths(name, 100) for name in ("gd", "adagrad", "rmsprop", "adam")}
    measured["adagrad_step_ratio_100_to_1"] = float(lengths["adagrad"][99] / lengths["adagrad"][0])
    measured["rmsprop_step_ratio_100_to_1"] = float(lengths["rmsprop"][99] / lengths["rmsprop"][0])
    ravine = measured["steps"]["ravine"]
    findings = [
        f"In the ravine (condition number 100), gradient descent needs {ravine['gd']} steps at its best learning "
        f"rate and heavy-ball momentum (ρ = 0.9) {ravine['momentum']}; Adam {ravine['adam']}, "
        f"AdaGrad {ravine['adagrad']} (None: not within {steps} steps).",
        "Started in the basin of the local minimum, these reach the global one at some learning rate: "
        + (", ".join(n for n, v in measured["steps"]["local-minimum"].items() if v is not None) or "none") + ".",
        f"On a constant slope AdaGrad's step after 100 steps is {measured['adagrad_step_ratio_100_to_1']:.3f} of "
        f"its first (theory 1/√100 = 0.1); RMSProp's is {measured['rmsprop_step_ratio_100_to_1']:.3f}.",
    ]
    figures = [(f"{s.name}: f = {s.formula}; each optimizer at its best learning rate", _contour(s, best_paths))
               for s in SURFACES]
    figures.append(("Step length on the constant slope f = x + 2y (lr 0.1)", _lengths_figure(lengths)))
    return LabResult(
        "optimizer-paths", "optimizers on 2-D surfaces",
        "Plain gradient descent crawls along an ill-conditioned ravine and stalls near saddle points; momentum "
        "(Polyak 1964, heavy ball; Nesterov 1983) builds up speed along the valley floor, adaptive methods "
        "(AdaGrad: Duchi et al. 2011; RMSProp: Tieleman & Hinton 2012; Adam: Kingma & Ba 2015) rescale each "
        "coordinate, and AdaGrad's accumulated squared gradients make its steps shrink like 1/√t even where the "
        "slope never changes.",
        measured, figures,
        [("Steps until f − f* < tolerance, at each optimizer's best learning rate",
          ["optimizer", *(s.name for s in SURFACES)], table_rows)],
        findings)


def _contour(surface: Surface, paths: dict) -> object:
    fig, ax = html.figure(6.4, 4.2)
    x0, x1, y0, y1 = surface.box
    gx, gy = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
    values = surface(torch.from_numpy(np.stack([gx, gy], axis=-1))).numpy()
    levels = np.quantile(values, np.linspace(0, 1, 25) ** 2)
    ax.contour(gx, gy, values, levels=np.unique(levels), cmap="Greys", linewidths=0.6)
    for i, name in enumerate(OPTIMIZERS):
        if (surface.name, name) not in paths:
            continue
        p = paths[(surface.name, name)]
        ax.plot(p[:, 0], p[:, 1], ".-", ms=1.5, lw=0.8, color=f"C{i}", label=name)
    ax.plot(*surface.start, "k*", ms=10)
    ax.set(xlim=(x0, x1), ylim=(y0, y1), xlabel="x", ylabel="y", title=surface.name)
    ax.legend(fontsize=6, ncol=3, loc="lower right")
    return fig


def _lengths_figure(lengths: dict) -> object:
    fig, ax = html.figure(5.5, 3.5)
    for name, values in lengths.items():   # the same colour per optimizer as in the contour plots
        ax.loglog(np.arange(1, len(values) + 1), values, label=name, color=f"C{OPTIMIZERS.index(name)}")
    ax.set(xlabel="step t", ylabel="‖Δw‖")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig
