"""The GPU check's parts that run without a GPU: the scripts parse, their dry runs name every step, the step runner
records exits and time limits, and the requirements check says which version descend needs."""

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from benchmarks import requirements

ROOT = Path(__file__).resolve().parents[1]
CHECK, WHEELS = ROOT / "benchmarks" / "gpu_check.sh", ROOT / "benchmarks" / "gpu_wheels.sh"


def bash(*args, env=None, **kwargs):
    return subprocess.run(
        ["bash", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


@pytest.mark.parametrize("script", [CHECK, WHEELS])
def test_the_scripts_parse(script):
    done = bash("-n", str(script))
    assert done.returncode == 0, done.stderr


def test_gpu_check_dry_run_lists_every_step_and_writes_its_summary(tmp_path):
    done = bash(str(CHECK), "--dry-run", env={"OUT": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    steps = ["environment", "install", "cuda_tests", "overhead", "fashion_mnist"]
    assert [line.split()[1] for line in done.stdout.splitlines() if line.startswith("[dry-run]")] == steps
    assert "benchmarks.overhead --device cuda" in done.stdout and "--set train.device=cuda" in done.stdout
    limits = [int(line.split("limit ")[1].split("s)")[0]) for line in done.stdout.splitlines() if "limit" in line]
    assert sum(limits) <= 8 * 60  # the whole check ends within 8 minutes
    summary = (tmp_path / "summary.md").read_text()
    assert all(f"| {name} |" in summary for name in steps) and "failed steps: 0" in summary


def test_gpu_check_steps_record_exit_codes_and_time_limits(tmp_path):
    """The script's own step runner, on harmless commands: a function, a failure, a command past its limit."""
    runner = CHECK.read_text().split("\nstep() {", 1)[1].split("\n}\n", 1)[0]
    script = f"""
        RESULTS={tmp_path}; SUMMARY={tmp_path}/summary.md; DRY=0; failed=0
        step() {{{runner}
        }}
        greet() {{ echo "hello $WHO"; }}
        WHO=there; export WHO; export -f greet
        step greeting 10 greet
        step failing 10 false
        step sleeping 1 sleep 20
        echo "failed=$failed"
    """
    done = bash("-c", script)
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "summary.md").read_text().splitlines()
    assert [row.split(" | ")[0].lstrip("| ") for row in rows] == ["greeting", "failing", "sleeping"]
    assert [row.split(" | ")[3] for row in rows] == ["0", "1", "124 (time limit)"]
    assert (tmp_path / "greeting.log").read_text() == "hello there\n"
    assert done.stdout.strip().endswith("failed=2")


def test_gpu_wheels_dry_run_pins_this_environments_versions():
    done = bash(str(WHEELS), "--dry-run", env={"PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr
    download = next(line for line in done.stdout.splitlines() if "pip download" in line)
    assert "--only-binary=:all: --python-version 3.12" in download and "-d .gpu/wheels" in download
    for name in ("pydantic", "pydantic-core", "optuna", "sqlalchemy", "mnist1d", "tomli-w"):
        assert f" {name}=={metadata.version(name)}" in download
    assert "fashion-mnist/train-images-idx3-ubyte.gz" in done.stdout


def test_requirements_check_names_what_is_missing_or_too_old(tmp_path, capsys):
    project = tmp_path / "pyproject.toml"
    project.write_text(
        '[project]\nname = "x"\ndependencies = ["torch>=2.4", "torch>=99", "no-such-package-xyz>=1", '
        '"pytest; python_version < \'3\'"]\n[project.optional-dependencies]\ndev = ["pytest>=8"]\n'
    )
    rows = requirements.check(requirements.requirements(project))
    assert [(r["name"], r["met"]) for r in rows] == [("torch", True), ("torch", False), ("no-such-package-xyz", False)]
    assert requirements.main(["--pyproject", str(project)]) == 1
    printed = capsys.readouterr().out
    assert "descend needs torch >=99: " in printed and "is installed" in printed
    assert "descend needs no-such-package-xyz >=1: it is not installed" in printed
    assert [r["name"] for r in requirements.check(requirements.requirements(project, ["dev"]))][-1] == "pytest"


def test_this_environment_meets_descends_requirements():
    assert all(row["met"] for row in requirements.check(requirements.requirements())), "make install"


def test_every_requirement_is_carried_or_in_the_gpu_image():
    text = WHEELS.read_text()
    carried, in_image = (
        set(text.split(f"\n{name}=(", 1)[1].split(")", 1)[0].split()) for name in ("PACKAGES", "IN_IMAGE")
    )
    needed = {r.name.lower() for r in requirements.requirements()}
    assert needed <= carried | in_image, needed - carried - in_image
    assert not carried & in_image
