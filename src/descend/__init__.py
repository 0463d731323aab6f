"""descend: train deep neural networks with every classic technique built in, verified and fast.

The parts are imported when first used (PEP 562), so ``descend --help`` and ``import descend.errors`` do not
pay for importing torch. Loading this package imports only :mod:`descend.errors` and :mod:`descend.notebook`.

Layers, each importing only those below it: the foundations (:mod:`.errors`, :mod:`.atomic`, :mod:`.memory`,
:mod:`.options`, :mod:`.usercode`, :mod:`.monitor`); the parts (:mod:`.data`, :mod:`.models`, :mod:`.optim`,
:mod:`.schedules`, :mod:`.regularization`, :mod:`.averaging`, :mod:`.transfer`, :mod:`.ensemble`) and the training
loop (:mod:`.train`, :mod:`.distributed`); the recipe (:mod:`.config`); a recipe's run (:mod:`.runs`, with its
reports in :mod:`.report` and tracking in :mod:`.tracking`); what is built on runs (:mod:`.tune`, :mod:`.lab`,
:mod:`.doctor`, :mod:`.export`, :mod:`.sklearn`); and the command line (:mod:`.cli`).
"""

import importlib

from . import notebook as _notebook
from .errors import DivergenceError, UserError

__version__ = "0.1.0"

_FUNCTIONS = {"Trainer": ".train", "run": ".runs.workflow", "LoadedRun": ".runs.loaded", "load_run": ".runs.loaded"}
_LAZY = {"averaging", "callbacks", "data", "models", "optim", "regularization", "schedules", "tune"}

__all__ = ["Trainer", "UserError", "DivergenceError", "LoadedRun", "load_run", "run", "averaging", "callbacks", "data",
           "models", "optim", "regularization", "schedules", "tune", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name in _FUNCTIONS:  # descend.run: a function (ds.run(recipe, out=..., model=..., data=...)), and the like
        return getattr(importlib.import_module(_FUNCTIONS[name], __name__), name)
    raise AttributeError(f"module 'descend' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_notebook.install()  # inside IPython (Jupyter): a UserError in a cell shows as one line (descend.notebook)
