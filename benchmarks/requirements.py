"""Whether this Python has what descend needs: each requirement in pyproject.toml against the installed version.

    python -m benchmarks.requirements [--extra dev] [--pyproject pyproject.toml]

``pip install --no-deps`` (how ``benchmarks/gpu_check.sh`` installs descend on a machine without network, beside
the Python and the CUDA build of torch that machine already has) checks nothing, so this does: one line per
requirement with the version found, and, for each one that is missing or outside its range, which version descend
needs. It exits with 1 when any is, 0 when all are met. Environment markers (``; python_version < "3.11"``) are
evaluated for this Python; an ``extra`` group (``--extra dev``) is checked only when named.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def requirements(pyproject: Path = ROOT / "pyproject.toml", extras: list[str] = ()) -> list[Requirement]:
    """The project's dependencies, and those of the named optional groups, whose markers hold here."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = list(project.get("dependencies", []))
    for extra in extras:
        lines += project.get("optional-dependencies", {}).get(extra, [])
    found = [Requirement(line) for line in lines]
    return [r for r in found if r.marker is None or r.marker.evaluate({"extra": ""})]


def check(required: list[Requirement]) -> list[dict]:
    """One row per requirement: its name, the range asked for, the version installed (None when absent), met."""
    rows = []
    for r in required:
        try:
            version = metadata.version(r.name)
        except metadata.PackageNotFoundError:
            version = None
        met = version is not None and r.specifier.contains(version, prereleases=True)
        rows.append({"name": r.name, "wanted": str(r.specifier) or "any", "installed": version, "met": met})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", action="append", default=[], help="also check this optional group (repeatable)")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    args = parser.parse_args(argv)
    rows = check(requirements(args.pyproject, args.extra))
    print(f"Python {sys.version.split()[0]} at {sys.executable}")
    for row in rows:
        state = "ok" if row["met"] else ("MISSING" if row["installed"] is None else "WRONG VERSION")
        print(f"{row['name']:<20} wanted {row['wanted']:<12} installed {row['installed'] or '-':<16} {state}")
    unmet = [row for row in rows if not row["met"]]
    for row in unmet:
        have = f"{row['installed']} is installed" if row["installed"] else "it is not installed"
        print(f"descend needs {row['name']} {row['wanted']}: {have}")
    return 1 if unmet else 0


if __name__ == "__main__":
    sys.exit(main())
