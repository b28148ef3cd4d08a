"""Write constraints.txt: the exact version of every package the project's declared requirements
pull in, read from the environment they are installed in (the .venv scripts/setup.sh builds).

    .venv/bin/python scripts/write_constraints.py          # after changing a version pin

The roots are pyproject.toml's dependencies and its openvino and dev extras, plus what set-up
installs outside them: torchrec (with --no-deps, its metadata names the CUDA fbgemm-gpu) and
setuptools (torch needs it at run time). The data extra's packages are pinned without their own
dependencies: they are installed with --no-deps. A package of the environment that no root
reaches (another project's, a tool's) is left out, so the file is the project's lock, not the
environment's. A root that is not installed is named in the file as unpinned (and logged).
"""

from __future__ import annotations

import argparse
import logging
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
EXTRA_ROOTS = ["torchrec", "setuptools"]
HEADER = """\
# The exact versions the project is tested with: pip install -c constraints.txt ...
# Written by scripts/write_constraints.py from the .venv scripts/setup.sh builds (the closure of
# pyproject.toml's dependencies, openvino and dev extras, torchrec and setuptools; the data extra's
# packages without their dependencies, which are not installed). Do not edit by hand.
# torch carries its local version (+cpu): pip refuses PyPI's CUDA build instead of pulling it.
"""


def _closure(roots: list[str], pins: dict[str, str]) -> list[str]:
    """Add each root and, recursively, its installed requirements (markers evaluated, no extras)
    to pins (canonical name -> 'Name==version'). A dependency that is not installed is skipped
    (torchrec's CUDA fbgemm-gpu); the roots that are not installed are returned."""
    missing = []
    todo = [(Requirement(r), True) for r in roots]
    while todo:
        req, is_root = todo.pop()
        key = canonicalize_name(req.name)
        if key in pins:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            if is_root:
                missing.append(req.name)
            continue
        pins[key] = f"{dist.metadata['Name']}=={dist.version}"
        for dep in map(Requirement, dist.requires or []):
            if dep.marker is None or dep.marker.evaluate({"extra": ""}):
                todo.append((dep, False))
    return missing


def constraints(pyproject: Path) -> str:
    project = tomllib.loads(pyproject.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    pins: dict[str, str] = {}
    missing = _closure(project["dependencies"] + extras.get("openvino", []) + extras.get("dev", [])
             + EXTRA_ROOTS, pins)
    for req in map(Requirement, extras.get("data", [])):
        pins.setdefault(canonicalize_name(req.name),
                        f"{metadata.distribution(req.name).metadata['Name']}=="
                        f"{metadata.version(req.name)}")
    if missing:
        log.warning("not installed, left unpinned: %s", ", ".join(missing))
    unpinned = f"# Not installed when written, so unpinned: {', '.join(missing)}\n" if missing else ""
    return HEADER + unpinned + "".join(f"{pins[k]}\n" for k in sorted(pins))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "constraints.txt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.write_text(constraints(ROOT / "pyproject.toml"))


if __name__ == "__main__":
    main()
