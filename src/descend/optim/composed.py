"""A chain of parts wrapped as a ``torch.optim.Optimizer``.

>>> from descend.optim import ComposedOptimizer, parts as P
>>> opt = ComposedOptimizer(model.parameters(), P.chain(P.scale_by_adam(), P.scale_by_lr()),
...                         lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)        # this is Adam

Everything torch expects works: ``param_groups`` (hyper-parameters per group, read at every step),
``state_dict``/``load_state_dict`` (tensors and plain numbers only, no pickled objects), closures, and torch's
LR schedulers. A step runs each part once per group on lists of tensors (``torch._foreach_*``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from descend.errors import UserError
from descend.optim.parts import Context, Part, Update


def _check_chain(chain: Sequence[Part], defaults: dict[str, Any]) -> None:
    if not chain or not all(isinstance(p, Part) for p in chain):
        raise UserError("a composed optimizer needs a non-empty list of descend.optim.parts")
    if sum(p.applies_lr for p in chain) != 1:
        raise UserError("the chain must apply the learning rate exactly once "
                        "(scale_by_lr(), or first_moment('velocity') which puts η in the velocity)")
    names = [b for p in chain for b in p.buffers]
    if len(names) != len(set(names)):
        raise UserError(f"two parts of the chain keep the same state buffer: {sorted(names)}")
    missing = sorted({h for p in chain for h in p.hypers} - set(defaults))
    if missing:
        raise UserError(f"the chain reads hyper-parameters {missing}; pass them as keyword arguments")


class ComposedOptimizer(torch.optim.Optimizer):
    """``torch.optim.Optimizer`` running ``chain`` (a list of :mod:`descend.optim.parts`) at every step.

    Per parameter the state holds ``step`` (an int, t in the update formulas) and each part's buffers.
    Parameters of one group whose step counts differ (one had no gradient for a while) are stepped in
    separate batches, so every formula sees its own t.
    """

    def __init__(self, params: Iterable[Any], chain: Sequence[Part], **defaults: Any):
        _check_chain(chain, defaults)
        self.chain = list(chain)
        self._buffer_names = tuple(b for p in self.chain for b in p.buffers)
        super().__init__(params, defaults)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(map(repr, self.chain))})"

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, states = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise UserError("descend optimizers do not take sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    for name in self._buffer_names:
                        state[name] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                states.append(state)
            if not params:
                continue
            first = states[0]["step"]
            if all(s["step"] == first for s in states):
                self._run(group, first, params, grads, states)
            else:  # rare: parameters that skipped steps carry their own t
                for t in sorted({s["step"] for s in states}):
                    idx = [i for i, s in enumerate(states) if s["step"] == t]
                    self._run(group, t, [params[i] for i in idx], [grads[i] for i in idx],
                              [states[i] for i in idx])
        return loss

    def _run(self, group: dict[str, Any], t: int, params: list, grads: list, states: list) -> None:
        buffers = {name: [s[name] for s in states] for name in self._buffer_names}
        ctx = Context(params, group, t, buffers, states)
        u = Update(grads)
        for part in self.chain:
            u = part.update(u, ctx)
        if u.den is not None:
            torch._foreach_addcdiv_(params, u.num, u.den, value=u.scale)
        else:
            torch._foreach_add_(params, u.num, alpha=u.scale)
