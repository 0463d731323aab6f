"""Lion's sign update as a composable part (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

Lion ("EvoLved Sign Momentum") was found by program search. Per step, with gradient g and one buffer m:

    c ← β1·m + (1 − β1)·g          (the direction: an interpolation of momentum and gradient)
    w ← w − η·sign(c)               (every coordinate moves by exactly ±η, or 0)
    m ← β2·m + (1 − β2)·g          (the momentum is tracked with a *different*, slower decay β2)

and decoupled weight decay w ← (1 − ηλ)w. The paper's defaults are β1 = 0.9, β2 = 0.99; because the update has
unit size per coordinate, its η is typically 3-10x smaller than AdamW's and its λ 3-10x larger. One buffer per
parameter (Adam keeps two). ``descend.optim.create("lion")`` is ``chain(sign_momentum(), scale_by_lr(),
decoupled_decay())`` (:func:`descend.optim.named.lion`), equal to the authors' reference (Lucidrains'
``lion-pytorch``, tested).
"""

from __future__ import annotations

import torch

from descend.optim.parts import Context, Part, Update


class SignMomentum(Part):
    """Lion's step direction sign(β1·m + (1 − β1)·g), then the momentum update m ← β2·m + (1 − β2)·g.

    It tracks the gradient's first moment (buffer ``m``), with β1 and β2 read from the group at every step.
    """

    name = "sign_momentum"
    buffers = ("m",)
    hypers = ("beta1", "beta2")
    first_moment = True

    def update(self, u: Update, ctx: Context) -> Update:
        g, m = u.raw(), ctx.buffers["m"]
        beta1, beta2 = ctx.group["beta1"], ctx.group["beta2"]
        direction = torch._foreach_mul(m, beta1)
        torch._foreach_add_(direction, g, alpha=1.0 - beta1)
        torch._foreach_sign_(direction)
        torch._foreach_mul_(m, beta2)
        torch._foreach_add_(m, g, alpha=1.0 - beta2)
        return Update(direction, owned=True)

    def __repr__(self) -> str:
        return "sign_momentum()"


def sign_momentum() -> Part:
    return SignMomentum()


sign_momentum.__doc__ = SignMomentum.__doc__
