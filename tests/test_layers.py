"""The packages follow the data flow: a module imports only from its own layer or those below.

    0 foundation  recsim.paths, recsim.world      schema, corpus, world + user model, rewards
    1 embeddings  embeddings                      encoder, actors, tasks, losses, tower, train
    2 retrieval   ranker.retrieval                FAISS index, history, prompts, dual encoder
    3 ranker      ranker                          features, TorchRec model, train
    4 evaluation  recsim.ope                      policies, estimators, bootstrap, ab, adapters
    5 report      recsim.report                   the only place that writes reports
    6 jobs        recsim.jobs                     every entry point (Hydra / argparse main)

Imports are read with `ast` (function-level imports included), so a lazy import against the
order fails too. The top-level recsim/__init__.py is the notebook API's facade: it re-exports
recsim/jobs/api.py on first use (a function-level import), so it counts as a jobs module; no
module of a lower layer may use it (test_no_lower_layer_uses_the_facade).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [  # (module prefix, layer); the longest matching prefix wins
    ("recsim.paths", 0), ("recsim.world", 0), ("embeddings", 1), ("ranker.retrieval", 2),
    ("ranker", 3), ("recsim.ope", 4), ("recsim.report", 5), ("recsim.jobs", 6),
]
PACKAGES = ("recsim", "embeddings", "ranker")
FACADES = {"recsim": 6}  # recsim/__init__.py: lazy re-exports of recsim.jobs.api


def layer_of(module: str) -> int | None:
    matches = [(len(prefix), layer) for prefix, layer in LAYERS
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1] if matches else None


def project_modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module) of every project import in the file, relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: -node.level] if path.name != "__init__.py" else \
                    module.split(".")[: len(module.split(".")) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def violations() -> list[str]:
    bad = []
    for module, path in sorted(project_modules().items()):
        own = layer_of(module)
        if own is None and module in PACKAGES:  # a top-level __init__.py
            own = FACADES.get(module, 0)
        elif own is None:
            bad.append(f"{module}: in no layer (add it to LAYERS)")
            continue
        for line, name in imported_modules(path, module):
            target = layer_of(name)
            if target is not None and target > own:
                bad.append(f"{module}:{line} imports {name} (layer {target}) from layer {own}")
    return bad


def test_every_module_imports_only_from_its_layer_or_below():
    assert violations() == []


def test_no_lower_layer_uses_the_facade():
    """`from recsim import build_world` in a lower layer would reach the jobs layer through the
    facade's lazy re-export, which the import check above cannot see."""
    facade_names = {f"recsim.{name}" for name in __import__("recsim").__all__}
    bad = [f"{module}:{line} imports {name}" for module, path in project_modules().items()
           if (layer_of(module) or 0) < FACADES["recsim"]
           for line, name in imported_modules(path, module) if name in facade_names]
    assert bad == []


def test_every_module_belongs_to_a_layer():
    assert all(layer_of(m) is not None for m in project_modules() if m not in PACKAGES)


@pytest.mark.parametrize("source, module, expected", [
    ("from recsim.jobs.run import CONF_DIR\n", "ranker.retrieval.nearline", "layer 6"),
    ("def f():\n    from recsim.ope import ab\n", "ranker.features", "layer 4"),
    ("import ranker.model\n", "embeddings.train", "layer 3"),
])
def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch, source, module, expected):
    """The checker itself can fail: an upward import (also inside a function) is reported."""
    path = tmp_path / "m.py"
    path.write_text(source)
    monkeypatch.setattr(__import__(__name__), "project_modules", lambda: {module: path})
    (message,) = violations()
    assert expected in message and message.startswith(module)
