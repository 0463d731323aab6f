"""The README's marked snippets run as shown: each block after a `<!-- readme-test -->` line, in order, in one
folder (python blocks share one namespace; a toml block is written to the file its first comment names; `descend`
lines run through the command line, training with fewer epochs to stay fast)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from descend.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- readme-test -->\n```(\w+)\n(.*?)```", re.S)


def test_the_marked_readme_snippets_run(tmp_path, monkeypatch, capsys):
    blocks = BLOCK.findall(README.read_text())
    assert [kind for kind, _ in blocks].count("python") >= 4 and any(kind == "sh" for kind, _ in blocks)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for kind, code in blocks:
        if kind == "python":
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
