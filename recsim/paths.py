"""Where the project's files are: the one home of conf/, the cache directory and the project root.

conf/  the Hydra configs, package data: the wheel carries them as recsim/conf, and in a checkout
       recsim/conf is a symlink to the repository's conf/, so `importlib.resources` finds them the
       same way in a checkout, an editable install and an installed wheel. The fine-tuning jobs'
       roots and groups may live apart, in conf_finetune/ (recsim/conf_finetune), so that each
       job's search path, and its --help, holds only its own groups: `conf_dir(root)` finds the
       directory of a root config.
cache  model directories (models/) and post vectors (embeddings/): $RECSIM_CACHE_DIR if set, else
       the checkout's .cache/ when running from a checkout, else ~/.cache/recsim. A config's
       relative path under `.cache/` (e.g. `.cache/models/multitask`) is taken from it.
root   the checkout (the directory holding pyproject.toml and conf/); None in an installed wheel,
       where a config's other relative paths are taken from the working directory.

Absolute paths, so the console scripts, `python -m` and tests find the same conf/ and cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

CACHE_ENV = "RECSIM_CACHE_DIR"


def checkout_root(package_dir: Path) -> Path | None:
    """The repository `package_dir` was imported from, or None for an installed wheel (whose
    parent, site-packages, holds neither pyproject.toml nor conf/)."""
    root = package_dir.parent
    return root if (root / "pyproject.toml").is_file() and (root / "conf").is_dir() else None


def cache_dir(env: Mapping[str, str], root: Path | None) -> Path:
    """$RECSIM_CACHE_DIR (made absolute), else `root`/.cache, else ~/.cache/recsim."""
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser().resolve()
    return root / ".cache" if root is not None else Path.home() / ".cache" / "recsim"


def _package_data(name: str) -> Path:
    return Path(str(resources.files("recsim") / name)).resolve()


PROJECT_ROOT = checkout_root(Path(__file__).resolve().parent)
CONF_DIRS = ("conf", "conf_finetune")  # package data directories of Hydra configs, in this order
CONF_DIR = str(_package_data("conf"))  # the main job's (recsim/jobs/run.py) and most others'
CACHE_DIR = cache_dir(os.environ, PROJECT_ROOT)


def conf_dir(root: str) -> str:
    """The config directory holding root config `<root>.yaml`: the job's Hydra config_path."""
    for name in CONF_DIRS:
        if (_package_data(name) / f"{root}.yaml").is_file():
            return str(_package_data(name))
    raise ValueError(f"root config {root}.yaml: in none of {[str(_package_data(n)) for n in CONF_DIRS]}")


def project_path(path: str | Path) -> Path:
    """`path` as an absolute path. A relative one under `.cache/` is taken from CACHE_DIR, any
    other from the project root (in a checkout) or the working directory (installed)."""
    path = Path(path)
    if path.is_absolute():
        return path
    if path.parts and path.parts[0] == ".cache":
        return CACHE_DIR.joinpath(*path.parts[1:])
    return (PROJECT_ROOT or Path.cwd()) / path
