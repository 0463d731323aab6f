"""The modules descend imports where they are used rather than at the top of a module, in one place.

Everything else is imported at the top of the module that needs it, and the package's modules import each other
in one direction (``tests/test_layers.py`` checks both). Three kinds of module are imported where used:

- :data:`OPTIONAL`: not installed with descend; an extra installs them (``pip install 'descend[export]'``), and
  :func:`require` turns their absence into one message that names it;
- :data:`DEFERRED`: installed with descend but slow to import (matplotlib, scikit-learn, TensorBoard's writer:
  together seconds), and needed only by the commands that draw, fetch a data set or log to TensorBoard;
- :data:`PLATFORM`: in the standard library of POSIX systems only (terminals in raw mode for the babysitting keys).

The command line (:mod:`descend.cli`) also imports each command's modules when that command runs, and the package
itself loads its public parts on first use (PEP 562), so ``descend --help`` starts without torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UserError

OPTIONAL = {  # module: the extra that installs it (None: the module alone)
    "onnx": "export",
    "onnxruntime": "export",
    "onnxscript": "export",
    "mlflow": "mlflow",
    "pandas": None,
}
DEFERRED = ("matplotlib", "sklearn", "scipy", "mnist1d", "torch.utils.tensorboard")
PLATFORM = ("termios", "tty", "fcntl")


def require(module: str, purpose: str) -> ModuleType:
    """Import the optional ``module``, or raise a :class:`UserError` that says what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.partition(".")[0]
        extra = OPTIONAL.get(top)
        how = f"pip install 'descend[{extra}]'" if extra else f"pip install {top}"
        raise UserError(f"{purpose} needs {top}, which is not installed: {how}") from None


def listed(module: str) -> bool:
    """Whether ``module`` (a dotted name) is one descend may import where it is used."""
    return any(module == name or module.startswith(name + ".") for name in (*OPTIONAL, *DEFERRED, *PLATFORM))
