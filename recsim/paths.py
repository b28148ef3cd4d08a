"""Where the project's files are: the one home of the project root, conf/ and .cache/.

Absolute paths, so the console scripts, `python -m` and tests find the same conf/ and cache
(the package is installed in editable mode).
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = str(PROJECT_ROOT / "conf")
CACHE_DIR = PROJECT_ROOT / ".cache"


def project_path(path: str | Path) -> Path:
    """`path` as an absolute path; a relative one is taken from the project root."""
    path = Path(path)
    return path if path.is_absolute() else PROJECT_ROOT / path
