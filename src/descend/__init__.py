"""descend: train deep neural networks with every classic technique built in, verified and fast.

The parts are imported when first used (PEP 562), so ``descend --help`` and ``import descend.errors`` do not
pay for importing torch.
"""

import importlib

from . import notebook as _notebook
from .errors import DivergenceError, UserError

__version__ = "0.1.0"

_LAZY = {"averaging", "callbacks", "data", "models", "optim", "regularization", "schedules", "tune"}

__all__ = ["Trainer", "UserError", "DivergenceError", "LoadedRun", "load_run", "run", "averaging", "callbacks", "data",
           "models", "optim", "regularization", "schedules", "tune", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name == "Trainer":
        from .train import Trainer

        return Trainer
    if name == "run":  # a function: descend.workflow.run (ds.run(recipe, out=..., model=..., data=...))
        from .workflow import run

        return run
    if name in ("LoadedRun", "load_run"):
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'descend' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_notebook.install()  # inside IPython (Jupyter): a UserError in a cell shows as one line (descend.notebook)
