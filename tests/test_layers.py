"""The package's layers: imports point one way, sit at the top of their module, and every module loads alone.

The import graph is read from the source with ``ast`` (every ``import`` between descend's modules, wherever it is
written, except those under ``if TYPE_CHECKING:``, which never run), so a cycle held apart by an import inside a
function is found as well as one that fails at import time.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import descend
from descend import optional

SRC = Path(descend.__file__).parent
ROOT = SRC.parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _type_checking(tree: ast.Module) -> set[ast.AST]:
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(n for child in node.body for n in ast.walk(child))
    return hidden


def _imports(name: str, path: Path):
    """(node, whether at module level, absolute module names it imports) for every import in the module."""
    tree = ast.parse(path.read_text())
    hidden = _type_checking(tree)
    top = {n for stmt in tree.body for n in ast.walk(stmt) if not isinstance(stmt, (ast.FunctionDef, ast.ClassDef,
                                                                                      ast.AsyncFunctionDef))}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if node in hidden or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        yield node, node in top, targets


def _graph() -> dict[str, set[str]]:
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for _, _, targets in _imports(name, path):
            graph[name].update(t for t in targets if t in MODULES and t != name)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_imports_inside_functions_are_lazy_loading_only():
    """Only the command line imports its commands' modules when they run; elsewhere an import inside a function
    is of a module :mod:`descend.optional` lists (optional, slow to import, or POSIX-only)."""
    misplaced = []
    for name, path in MODULES.items():
        if name == "descend.cli" or name.startswith("descend.cli."):
            continue
        for node, at_top, targets in _imports(name, path):
            if not at_top and not all(optional.listed(t) for t in targets):
                misplaced.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert not misplaced, "imports inside functions:\n" + "\n".join(misplaced)


def test_optional_and_slow_modules_are_not_imported_at_the_top():
    """Except by the integration named after them (:mod:`descend.sklearn` is built on scikit-learn)."""
    at_top = []
    for name, path in MODULES.items():
        integration = name.rpartition(".")[2]
        for node, top, targets in _imports(name, path):
            if top and any(optional.listed(t) and not t.startswith((*optional.PLATFORM, integration)) for t in targets):
                at_top.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert not at_top, "optional or slow modules imported when descend loads:\n" + "\n".join(at_top)


def test_every_module_imports_alone():
    """Each module imported first, into a process where no other descend module is loaded yet (a cycle that
    only works in one import order fails here)."""
    names = sorted(n for n in MODULES if not n.endswith("__main__"))
    code = (
        "import importlib, sys, traceback\n"
        "failed = []\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'descend' or m.startswith('descend.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=-3))\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr


def test_require_names_the_extra_to_install():
    with pytest.raises(descend.UserError, match=r"ONNX export needs no_such_module_x, .*pip install no_such_module_x"):
        optional.require("no_such_module_x", "ONNX export")
    optional.OPTIONAL["no_such_module_y"] = "export"
    try:
        with pytest.raises(descend.UserError, match=r"pip install 'descend\[export\]'"):
            optional.require("no_such_module_y.sub", "a test")
    finally:
        del optional.OPTIONAL["no_such_module_y"]
    assert optional.require("json", "reading").dumps([]) == "[]"


def test_no_module_is_hidden_from_git():
    """A module that .gitignore matches works here and is missing from every clone (``runs/`` once hid
    ``src/descend/runs/``)."""
    if not (ROOT.parent / ".git").exists():
        pytest.skip("not a git checkout")
    paths = [str(path.relative_to(ROOT.parent)) for path in MODULES.values()]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT.parent, capture_output=True,
                             text=True).stdout.split()
    assert not ignored, f"ignored by .gitignore: {ignored}"
