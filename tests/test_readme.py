"""The README runs as shown. Its marked snippets (each block after a `<!-- readme-test -->` line) run in order in one
folder (python blocks share one namespace, but one whose first line is `# name.py` is written to that module file;
a toml block is written to the file its first comment names; `descend`
lines run through the command line, training with fewer epochs to stay fast); every other command it shows runs
too (the long ones with -m slow), with fewer epochs, trials and seeds, or is listed in SKIPPED with the reason; and
no command lets a warning through that is not descend's own."""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import pytest

from descend.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- readme-test -->\n```(\w+)\n(.*?)```", re.S)


def test_the_marked_readme_snippets_run(tmp_path, monkeypatch, capsys):
    blocks = BLOCK.findall(README.read_text())
    assert [kind for kind, _ in blocks].count("python") >= 4 and any(kind == "sh" for kind, _ in blocks)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # a module the README writes imports as from a script beside it
    namespace: dict = {}
    for kind, code in blocks:
        if kind == "python" and re.match(r"# \w+\.py\n", code):
            Path(code.split()[1]).write_text(code)
        elif kind == "python":
            exec(compile(code, str(README), "exec"), namespace)
        elif kind == "toml":
            name = re.match(r"# (\S+\.toml)", code).group(1)
            Path(name).write_text(code)
        else:
            for line in code.splitlines():
                argv = shlex.split(line.split("#")[0])[1:]
                if argv[0] == "run":
                    argv += ["--set", "train.epochs=3", "--quiet"]
                assert main(argv) == 0, (line, capsys.readouterr().err)
    header = Path("predictions.csv").read_text().splitlines()[0]
    assert header == "prediction,p_barbera,p_barolo,p_grignolino"
    assert set(namespace["run"].predict("new_wines.csv")) <= {"barolo", "grignolino", "barbera"}
    assert namespace["history"]["epoch"] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("needle", ["StepLR", "load_run", "label_smoothing", "x_key", "DataLoader"])
def test_the_readme_documents(needle):
    assert needle in README.read_text()


# ------------------------------------------------------------------------------------------- every command

DOCTOR_DOC = README.parent / "docs" / "doctor.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
COMMAND = re.compile(r"(descend|python|make|tensorboard)\s")   # "descend: error: ..." is output, not a command
#: README commands no test can run here, and why
SKIPPED = {
    "make run": "sets up the environment these tests run in (creates .venv, installs torch): minutes, and a network",
    "make test": "runs this test suite",
    "descend doctor RECIPE.toml [--budget SECONDS] [--fix] [--out DIR]": "a usage synopsis, not a command",
    "descend run cfg.toml --nproc 4 --nnodes 2 --rdzv-endpoint host:29400": "needs two machines and a rendezvous "
                                                                             "host (one-machine DDP runs below)",
}
#: commands that must fail, with their exit code (the README shows their message)
FAILING = {"descend run quickstart.toml --set train.epoch=3": 2}
#: commands run only with -m slow (each trains many models or runs for tens of seconds)
SLOW_VERBS = ("doctor", "tune", "cv", "compare", "ensemble", "lab bias-variance", "lab optimizers")


def code_lines(text: str) -> list[str]:
    """The lines of the README's shell code: fenced blocks without a language or marked sh, and indented blocks."""
    lines, fence, indented, blank = [], None, False, True
    for line in text.splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence is not None:
            if fence in ("", "sh", "bash", "console"):
                lines.append(line)
            continue
        indented = line.startswith("    ") and (indented or blank)
        if indented:
            lines.append(line)
        blank = not line.strip()
    return lines


def readme_commands() -> list[str]:
    """Every command the README shows (a leading ``$ `` and a trailing comment removed), in order, once each."""
    found = []
    for line in code_lines(README.read_text()):
        command = re.sub(r"\s+#.*$", "", line.strip().removeprefix("$ "))
        if COMMAND.match(command) and command not in found:
            found.append(command)
    return found


def marked_commands() -> set[str]:
    """The commands of the marked snippets, which :func:`test_the_marked_readme_snippets_run` runs."""
    return {re.sub(r"\s+#.*$", "", line.strip()) for kind, code in BLOCK.findall(README.read_text()) if kind == "sh"
            for line in code.splitlines() if line.strip()}


def is_slow(command: str) -> bool:
    return any(command.startswith(f"descend {verb}") for verb in SLOW_VERBS) or "--nproc" in command


def shrunk(command: str) -> list[str]:
    """The command's arguments, with fewer epochs, trials, seeds and members, so that it runs in seconds."""
    argv = shlex.split(command.replace("[--quick]", "--quick"))[1:]
    verb = argv[0] if argv else ""
    if verb == "resume":                     # 2 epochs trained (below): the resumed run continues to 3
        return [re.sub(r"^train\.epochs=\d+$", "train.epochs=3", a) for a in argv]
    argv = [re.sub(r"^train\.epochs=\d+$", "train.epochs=2", a) for a in argv]   # the quickstart warms up 1.6
    for flag, small in (("--trials", "2"), ("--seeds", "2"), ("--members", "2"), ("--folds", "3"), ("--cv", "3"),
                        ("--budget", "20")):
        if flag in argv:
            argv[argv.index(flag) + 1] = small
    if verb in ("run", "ensemble", "compare", "cv", "tune") and not any(a.startswith("train.epochs=") for a in argv):
        argv += ["--set", "train.epochs=2"]
    if verb == "tune" and "--trials" not in argv:
        argv += ["--trials", "2"]
    if verb == "tune" and "--out" not in argv:     # each example its own study: the same recipe's default study
        argv += ["--out", f"runs/tune-{zlib.crc32(command.encode())}"]   # is continued, and refused if it differs
    if verb == "doctor" and "--budget" not in argv:
        argv += ["--budget", "20"]
    if argv[:2] == ["lab", "bias-variance"] and "--quick" not in argv:
        argv.append("--quick")
    if verb == "run":
        argv.append("--quiet")
    return argv


def test_every_readme_command_is_run_or_skipped_with_a_reason():
    commands = readme_commands()
    assert len(commands) > 25 and "descend --version" in commands
    unknown = [c for c in commands if c not in SKIPPED and c not in FAILING and shlex.split(c)[0] != "descend"]
    assert not unknown, f"README commands this test does not know how to run: {unknown}"
    stale = [c for c in (*SKIPPED, *FAILING) if c not in commands]
    assert not stale, f"listed here but no longer in the README: {stale}"


def _prepare(folder: Path) -> None:
    """What the README's commands assume exists: the examples, a recipe named in prose, a space, new rows."""
    import descend as ds

    shutil.copytree(README.parent / "examples", folder / "examples")
    for name in ("quickstart.toml", "cfg.toml"):                     # the recipe the prose calls cfg.toml
        shutil.copy(folder / "examples" / "quickstart.toml", folder / name)
    spaces = [code for kind, code in FENCE.findall(README.read_text()) if kind == "toml"
              and code.startswith("# space.toml")]
    (folder / "space.toml").write_text(spaces[0])
    recipe = next(code for kind, code in FENCE.findall(DOCTOR_DOC.read_text()) if kind == "toml")
    (folder / "deep_sigmoid.toml").write_text(recipe)
    rows = ds.data.load("mnist1d", scale="none").test.x[:5].numpy()
    (folder / "new.csv").write_text("\n".join(",".join(f"{v:.6g}" for v in row) for row in rows) + "\n")


def _run_commands(commands: list[str], folder: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(folder)
    for command in commands:
        argv = shrunk(command)
        if "--nproc" in argv:       # torchrun's workers: a real process, whose stderr is what a user sees
            done = subprocess.run([sys.executable, "-m", "descend.cli", *argv], capture_output=True, text=True,
                                  timeout=600)
            code, err, caught = done.returncode, done.stderr, []
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                code = main(argv) if argv != ["--version"] else _version()
            err = capsys.readouterr().err
        assert code == FAILING.get(command, 0), (command, argv, err[-3000:])
        foreign = [f"{w.filename}: {w.message}" for w in caught
                   if not Path(w.filename).resolve().is_relative_to(SOURCE)]
        assert not foreign, (command, foreign)       # every warning is descend's own `descend: warning:` line
        assert all(line.startswith("descend: ") for line in err.splitlines() if line.strip()), (command, err)


def _version() -> int:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    return int(done.value.code)


SOURCE = Path(__import__("descend").__file__).resolve().parent


def test_the_readme_commands_run(tmp_path, monkeypatch, capsys):
    """Every command of the README but the skipped, the marked (run above) and the slow ones, in README order in
    one folder, with fewer epochs; the error example exits 2 with the message the README shows."""
    _prepare(tmp_path)
    commands = [c for c in readme_commands() if c not in SKIPPED and c not in marked_commands() and not is_slow(c)]
    assert "descend resume runs/try --set train.epochs=10" in commands
    _run_commands(commands, tmp_path, monkeypatch, capsys)
    assert len(list((tmp_path / "runs").glob("quickstart-*"))) == 1 and (tmp_path / "preds.csv").is_file()
    shown = next(line for line in code_lines(README.read_text()) if "descend: error:" in line).strip()
    assert main(shrunk("descend run quickstart.toml --set train.epoch=3")) == 2
    assert capsys.readouterr().err.startswith(shown.removesuffix("..."))


@pytest.mark.slow
def test_the_slow_readme_commands_run(tmp_path, monkeypatch, capsys):
    """The searches, cross-validation, comparisons, the lab, ensembles, the doctor and data-parallel runs."""
    _prepare(tmp_path)
    commands = [c for c in readme_commands() if c not in SKIPPED and c not in marked_commands() and is_slow(c)]
    assert len(commands) >= 12
    _run_commands(commands, tmp_path, monkeypatch, capsys)
    assert (tmp_path / "doctor" / "deep_sigmoid.fixed.toml").is_file()


def test_the_unmarked_python_blocks_run(tmp_path, monkeypatch):
    """Python blocks outside the marked sequence run on their own, with at most 3 epochs."""
    monkeypatch.chdir(tmp_path)
    marked = {code for kind, code in BLOCK.findall(README.read_text()) if kind == "python"}
    blocks = [code for kind, code in FENCE.findall(README.read_text()) if kind == "python" and code not in marked]
    assert blocks
    for code in blocks:
        code = re.sub(r"\bepochs=(\d+)", lambda m: f"epochs={min(int(m.group(1)), 3)}", code)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(code, str(README), "exec"), {})
        foreign = [f"{w.filename}: {w.message}" for w in caught
                   if not Path(w.filename).resolve().is_relative_to(SOURCE) and w.filename != str(README)]
        assert not foreign, foreign


# ------------------------------------------------------------------------------------------- names it gives

DOCS = [README, *sorted((README.parent / "docs").glob("*.md"))]


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            if not hasattr(found, part):
                return False
            found = getattr(found, part)
        return True
    return False


def test_every_descend_name_and_path_in_the_docs_exists():
    """A module moved or renamed leaves no name behind in README.md or docs/*.md: each ``descend.x.y`` is a module
    or attribute, and each module path (``src/descend/x/`` or, package-relative, ``train/x.py``) a file."""
    src = README.parent / "src" / "descend"
    missing = []
    for doc in DOCS:
        text = doc.read_text()
        for dotted in sorted(set(re.findall(r"`(descend(?:\.[A-Za-z_]\w*)+)", text))):
            if not _resolves(dotted):
                missing.append(f"{doc.name}: {dotted}")
        for path in sorted(set(re.findall(r"`(src/descend/[\w/.]*|[a-z_]+/[\w/]*\.py)`", text))):
            relative = path.removeprefix("src/descend/")
            if not (src / relative).exists() and not (README.parent / path).exists():
                missing.append(f"{doc.name}: {path}")
    assert not missing, "names the docs give that do not exist:\n" + "\n".join(missing)


def test_every_cross_reference_in_a_docstring_exists():
    """``:mod:`descend.x```, ``:func:`.y``` and the like in the package's docstrings name what is there."""
    src = README.parent / "src"
    missing, seen = [], 0
    for path in sorted((src / "descend").rglob("*.py")):
        module = ".".join(path.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for role in re.finditer(r":(?:mod|func|class|meth|attr|data|exc):`~?([.\w]+)`", path.read_text()):
            name = role.group(1)
            if name.startswith("."):
                up = len(name) - len(name.lstrip("."))
                name = ".".join(package.split(".")[: len(package.split(".")) - up + 1] + [name.lstrip(".")])
            if name.startswith("descend."):
                seen += 1
                if not _resolves(name):
                    missing.append(f"{path.relative_to(src)}: {role.group(0)}")
    assert seen > 100 and not missing, "cross-references to nothing:\n" + "\n".join(missing)
