"""Every console script of pyproject.toml answers --help naming its command, and each Hydra job's
help lists its own config groups and none of the other family's (the main job's funnel groups
vs the fine-tuning jobs' text-encoder groups).

The scripts run as their console-script wrappers do (`sys.argv[0]` = the command, then `main()`),
in a subprocess from an empty directory, importing this checkout's code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
FUNNEL = {"ablation", "embeddings", "experiment", "ranker", "report", "retrieval", "sim", "world"}
FINETUNE = {"evaluation", "model", "tasks", "training"}
# command -> (the groups its help must list, the groups it must not list)
HYDRA_GROUPS = {
    "recsim-run": (FUNNEL, FINETUNE),
    "recsim-validity": (FUNNEL, FINETUNE),  # it composes the main job's config per seed
    "recsim-nearline": ({"world", "embeddings"}, FINETUNE),
    "recsim-retrieval-sweep": ({"world", "embeddings", "retrieval"}, FINETUNE),
    "recsim-finetune": (FINETUNE, FUNNEL),
    "recsim-multilingual": ({"training", "evaluation"}, FUNNEL),
}
ARGPARSE = {"recsim-ablation", "recsim-obd", "recsim-seeds", "recsim-validate"}
# Until the fine-tuning roots and groups move out of conf/ (issue 20: `git mv conf/finetune.yaml
# conf/multilingual.yaml conf/model conf/tasks conf/training conf/evaluation conf_finetune/`),
# every Hydra job's search path holds both families.
SPLIT = (ROOT / "conf_finetune").is_dir()


def help_text(command: str, cwd: Path) -> str:
    module, func = SCRIPTS[command].split(":")
    code = (f"import sys; sys.argv[0] = {command!r}; from {module} import {func}; "
            f"sys.exit({func}())")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "1000", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", code, "--help"], check=False, capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def listed_groups(text: str) -> set[str]:
    """The groups of Hydra's '== Configuration groups ==' section ('group: option, ...' lines)."""
    section = text.split("== Configuration groups ==")[1].split("== Config ==")[0]
    return {m.group(1) for m in re.finditer(r"^([\w/]+): ", section, re.MULTILINE)}


def test_every_job_is_a_console_script():
    assert set(SCRIPTS) == set(HYDRA_GROUPS) | ARGPARSE


def test_listed_groups_parses_hydra_help():
    text = "x\n== Configuration groups ==\nCompose (group=option)\n\nsim: default\nworld: a, b\n\n" \
           "== Config ==\nseed: 0\n"
    assert listed_groups(text) == {"sim", "world"}


@pytest.mark.parametrize("command", sorted(ARGPARSE))
def test_argparse_job_help_names_its_command(command, tmp_path):
    text = help_text(command, tmp_path)
    module = __import__(SCRIPTS[command].split(":")[0], fromlist=["__doc__"])
    assert text.startswith(f"usage: {command} ")
    assert module.__doc__.splitlines()[0] in text


@pytest.mark.parametrize("command", sorted(HYDRA_GROUPS))
def test_hydra_job_help_names_its_command(command, tmp_path):
    text = help_text(command, tmp_path)
    assert text.startswith(f"{command}: "), text[:200]
    assert "is powered by Hydra" not in text
    own, other = HYDRA_GROUPS[command]
    listed = listed_groups(text)
    assert own <= listed, own - listed
    assert list(tmp_path.iterdir()) == []  # --help writes nothing
    if not SPLIT:
        pytest.xfail(f"lists the other family's groups {sorted(listed & other)} until the "
                     "fine-tuning configs move to conf_finetune/")
    assert not listed & other, listed & other
