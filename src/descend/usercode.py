"""The user's own code, named in a recipe: ``package.module:name`` or ``path/to/file.py:name``.

A recipe the user runs may name their own model factory or data loader, and descend imports it, as
``python train.py`` would import the user's modules. A run directory is different: it may come from someone else
(an archive, a shared disk), so loading a run that names code imports nothing unless the caller consents
(``allow_code=True`` from Python, ``--allow-code`` on the command line) or passes the object itself; the refusal
says which module or file would be imported. This is the consent Keras asks for with ``safe_mode``.

A reference is checked before anything is imported (:func:`parse`); importing it (:func:`load`) turns every
failure — a missing file, a module that does not import, a name that is not there, an object that cannot be
called — into one :class:`~descend.errors.UserError` that names the reference and the fix. :func:`call_kwargs`
checks the keyword arguments a recipe gives a factory against the factory's signature before anything is written.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError, short

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_REFERENCE = re.compile(rf"^(?P<where>.+):(?P<name>{_NAME}(\.{_NAME})*)$")
_MODULE = re.compile(rf"^{_NAME}(\.{_NAME})*$")
MAX_REFERENCE = 1000  # characters: a reference is a module path and a name


@dataclass(frozen=True)
class CodeRef:
    """Where the user's object lives: a dotted ``module`` or a ``.py`` ``file``, and the ``name`` in it."""

    module: str | None
    file: Path | None
    name: str
    text: str  # as the recipe wrote it

    def describe(self) -> str:
        """What importing this reference would run, for messages: ``module 'pkg.mod'`` or ``file '/a/b.py'``."""
        return f"module {self.module!r}" if self.module else f"file '{self.file}'"


def is_reference(text: Any) -> bool:
    """Whether ``text`` has the form of a code reference (``where:name``), as opposed to a built-in name or a
    data file path. Nothing is imported or read."""
    return isinstance(text, str) and len(text) <= MAX_REFERENCE and _REFERENCE.match(text.strip()) is not None


def parse(text: str, *, base: Path | None = None, what: str = "object") -> CodeRef:
    """The reference ``text`` checked for form; a file path is made absolute against ``base`` (the recipe's
    folder) and must exist. Nothing is imported."""
    if not is_reference(text):
        raise UserError(
            f"{what} {short(text)} is not a code reference: write 'package.module:name' or 'path/to/file.py:name'"
        )
    match = _REFERENCE.match(text.strip())
    where, name = match["where"], match["name"]
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        path = path.resolve()
        if not path.is_file():
            raise UserError(
                f"{what} {text!r}: there is no file '{path}' (a relative path is read from the recipe's folder)"
            )
        return CodeRef(module=None, file=path, name=name, text=text)
    if not _MODULE.match(where):
        raise UserError(f"{what} {short(text)}: {where!r} is neither a dotted module name nor a .py file")
    return CodeRef(module=where, file=None, name=name, text=text)


@contextlib.contextmanager
def _on_path(folders: list[Path]) -> Iterator[None]:
    """``folders`` first on ``sys.path`` while the user's module imports (its own sibling imports find them, as
    under ``python file.py``), and the path as it was afterwards."""
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)


def where_it_failed(error: BaseException) -> str:
    """The innermost line of the user's own code in ``error``'s traceback, as `` at file:line``, or ''."""
    frames = traceback.extract_tb(error.__traceback__)
    ours = Path(__file__).resolve().parent
    for frame in reversed(frames):
        path = Path(frame.filename)
        if ours not in path.resolve().parents and "importlib" not in frame.filename:
            return f" at {path.name}:{frame.lineno}"
    return ""


def _import_file(ref: CodeRef):
    # one module per file and content: the same file imported twice is one module (classes compare equal), an
    # edited file a new one, and a copy elsewhere its own (its functions name their own file)
    digest = hashlib.sha256(str(ref.file).encode() + b"\0" + ref.file.read_bytes()).hexdigest()[:12]
    key = f"descend_user.{re.sub(r'[^A-Za-z0-9_]', '_', ref.file.stem)}_{digest}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, ref.file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        with _on_path([ref.file.parent]):
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module


def load(ref: CodeRef | str, *, base: Path | None = None, what: str = "object") -> Any:
    """Import the user's object ``ref`` names (a module from ``sys.path``, the recipe's folder ``base`` and the
    current folder; or a file). Every failure is one :class:`UserError` naming the reference."""
    if isinstance(ref, str) and ref.strip() in _GIVEN:  # an object passed from Python in this process
        return _GIVEN[ref.strip()]
    if isinstance(ref, str):
        ref = parse(ref, base=base, what=what)
    if ref.text.strip() in _GIVEN:
        return _GIVEN[ref.text.strip()]
    if ref.module == "__main__":
        raise UserError(f"{what} {ref.text!r} was passed from Python in another process (a notebook's or a script's "
                        "own function, or data given as arrays): nothing can import it; pass the object again "
                        "(load_run(path, model=factory); ds.run(recipe, model=..., data=...))")
    try:
        if ref.file is not None:
            module = _import_file(ref)
        else:
            with _on_path([p for p in (base, Path.cwd()) if p is not None]):
                module = importlib.import_module(ref.module)
    except ModuleNotFoundError as e:
        if ref.module and e.name and ref.module.startswith(e.name):
            raise UserError(
                f"{what} {ref.text!r}: no module named {e.name!r} (install it, put its folder on "
                f"PYTHONPATH or beside the recipe, or name a file: 'path/to/file.py:{ref.name}')"
            ) from None
        raise UserError(
            f"{what} {ref.text!r}: importing {ref.describe()} failed{where_it_failed(e)}: {type(e).__name__}: {e}"
        ) from e
    except Exception as e:
        raise UserError(
            f"{what} {ref.text!r}: importing {ref.describe()} failed{where_it_failed(e)}: {type(e).__name__}: {e}"
        ) from e
    obj = module
    for part in ref.name.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise UserError(
                f"{what} {ref.text!r}: {ref.describe()} has no {ref.name!r}; it defines "
                f"{', '.join(public[:20]) or 'nothing callable'}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"{what} {ref.text!r} is a {type(obj).__name__}, not a function or class to call")
    return obj


#: Objects passed from Python (``model=``, ``data=``) by the reference a recipe records for them, in this process.
_GIVEN: dict[str, Any] = {}


def name_of(obj: Callable) -> str:
    """The reference a recipe records for ``obj``, a function or class passed from Python, and :func:`load` gives
    ``obj`` back for it in this process. A function of an importable module is ``module:qualname`` and a function
    of a file imported by reference ``/path/file.py:qualname``: both load again in another process. Anything else
    (a function of ``__main__`` or a notebook, a lambda, a ``functools.partial``) is ``__main__:name``, which only
    this process can load: a run directory trained with it is loaded by passing the object again."""
    if not callable(obj):
        raise UserError(f"expected a function or class, got a {type(obj).__name__}")
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    text = None
    if isinstance(module, str) and isinstance(qualname, str) and re.fullmatch(rf"{_NAME}(\.{_NAME})*", qualname):
        if module.startswith("descend_user."):  # a file imported by reference: name the file again
            with contextlib.suppress(TypeError, OSError):
                text = f"{Path(inspect.getfile(obj)).resolve()}:{qualname}"
        elif module != "__main__" and _MODULE.match(module) and not _defined_in_main(module):
            text = f"{module}:{qualname}"
    if text is None:
        name = re.sub(r"[^A-Za-z0-9_]", "_", str(qualname or getattr(obj, "__name__", "") or type(obj).__name__))
        return given(obj, name if re.fullmatch(_NAME, name) else "given")
    _GIVEN[text] = obj
    return text


def given(obj: Callable, name: str) -> str:
    """Register ``obj`` as ``__main__:name`` for :func:`load` in this process only (see :func:`name_of`). A name
    another object holds gets a number (``data_2``, ``data_3``, …): each recipe keeps the object it was made with,
    also when a later recipe is given other data or a redefined function of the same name."""
    text, number = f"__main__:{name}", 1
    while text in _GIVEN and not _same(_GIVEN[text], obj):
        number += 1
        text = f"__main__:{name}_{number}"
    _GIVEN[text] = obj
    return text


def _same(held: Any, obj: Any) -> bool:
    """The same object, or a ``functools.partial`` of the very same function and arguments (what ``data=`` makes of
    arrays each time they are given)."""
    if held is obj:
        return True
    if not (isinstance(held, functools.partial) and isinstance(obj, functools.partial)) or held.func is not obj.func:
        return False
    pairs = [*zip(held.args, obj.args), *((held.keywords[k], obj.keywords.get(k)) for k in held.keywords)]
    return (len(held.args), held.keywords.keys()) == (len(obj.args), obj.keywords.keys()) and all(
        a is b for a, b in pairs)


def _defined_in_main(module: str) -> bool:
    return sys.modules.get(module) is sys.modules.get("__main__")


def call_kwargs(fn: Callable, options: Mapping[str, Any], provided: Mapping[str, Any], *, what: str) -> dict:
    """The keyword arguments to call ``fn`` with: the recipe's ``options`` (each must be a parameter of ``fn``),
    and of the values descend ``provided`` (input shape, output count) those ``fn`` accepts. A missing required
    argument or an unknown one is one :class:`UserError` naming it and ``fn``'s parameters."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: pass what the recipe gives
        return dict(options)
    params = signature.parameters
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    accepted = ", ".join(named) or "no keyword arguments"
    unknown = [k for k in options if k not in named and not var_kw]
    if unknown:
        raise UserError(f"{what} takes no argument {unknown[0]!r} (it takes {accepted})")
    kwargs = {k: v for k, v in provided.items() if k in named or var_kw}
    kwargs.update(options)
    missing = [n for n, p in named.items() if p.default is p.empty and n not in kwargs]
    missing += [n for n, p in params.items() if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]
    if missing:
        given = ", ".join(provided) or "nothing"
        raise UserError(
            f"{what} needs argument {missing[0]!r}: set it in the recipe's section (descend provides {given})"
        )
    return kwargs


def consent(text: str, *, allow: bool, what: str, where: str) -> None:
    """Refuse to import the reference ``text`` for ``where`` (a run directory) unless ``allow``: loading a run must
    not run the code it names silently. Nothing is read or imported either way; an object this process passed
    from Python under that reference (:func:`name_of`) needs no consent, as nothing would be imported."""
    if allow or text.strip() in _GIVEN or text.strip().startswith("__main__:"):
        return  # nothing to import: given here, or given elsewhere and refused by load with how to pass it again
    module = text.rsplit(":", 1)[0]
    source = f"file {module!r}" if module.endswith(".py") else f"module {module!r}"
    raise UserError(
        f"{where} names code: its {what} is {text!r}, and loading it would import and run {source}. "
        f"If you trust it, pass --allow-code (allow_code=True from Python); or pass the {what} yourself"
    )
