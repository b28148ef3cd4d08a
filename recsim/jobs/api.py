"""The Python API behind `import recsim`: the few calls a notebook needs (recsim/__init__.py
re-exports them lazily, so `import recsim` loads none of this until one is used).

    build_world(config)                  the synthetic world: posts, members, logged impressions
    evaluate(log, estimators)            off-policy estimates of a policy's value from a log
    compose_config(overrides)            the main job's config, composed by Hydra from conf/
    run_experiment(overrides, out)       the whole pipeline (recsim-run), report written to `out`
    load_report(path)                    a report.json, checked against its schema

The README's example, verbatim (tests/test_api.py runs the README's block and checks that it
is this one):

<!-- api-example -->
```python
import polars as pl
import recsim

# A small synthetic world: posts, members, and logged impressions with their propensities.
world = recsim.build_world(recsim.WorldConfig(n_members=300, n_authors=100, n_impressions=6000,
                                              max_posts_per_source=300))

# What would a uniformly random first slot have got? Off-policy estimates from the log.
log = world.impressions.filter(pl.col("position") == 1).with_columns(
    target_prob=1 / world.config.n_candidates, reward=pl.col("click").cast(pl.Float64))
estimates = recsim.evaluate(log, ["ips", "snips"], n_boot=200)
print({name: round(e.value, 4) for name, e in estimates.items()})

# The whole pipeline from a config, as `recsim-run experiment=debug`; then its report.json back.
report = recsim.run_experiment(["experiment=debug"], output_dir="runs/debug")
print(recsim.load_report("runs/debug")["verdict"]["text"])
```
<!-- /api-example -->
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import polars as pl
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from recsim.ope.estimators import ESTIMATORS, Bootstrap, Estimate
from recsim.ope.estimators import evaluate as _evaluate
from recsim.paths import CONF_DIR
from recsim.report.contract import check_objective, load_report
from recsim.world.world import World, WorldConfig, build_world

__all__ = [
    "Estimate",
    "World",
    "WorldConfig",
    "build_world",
    "compose_config",
    "evaluate",
    "load_report",
    "run_experiment",
]


def evaluate(log: pl.DataFrame, estimators: Sequence[str] = ("ips", "snips"), *,
             n_boot: int = 500, alpha: float = 0.05, seed: int = 0,
             interval: str = "percentile") -> dict[str, Estimate]:
    """Each estimator's value of the policy that `log`'s target_prob describes, with its
    1 - alpha interval from a member-clustered bootstrap (one draw shared by all estimators).

    `log`: one row per logged decision with member_id, propensity (the logging policy's
    probability of the logged action), target_prob (the evaluated policy's) and reward; DM / DR
    / SNDR also reward_hat and target_reward_hat (recsim/ope/estimators.py lists them). Names:
    """
    out = _evaluate(list(estimators), log, Bootstrap(n_boot, seed, alpha, interval))
    return {name: est for name, (est, _replicates) in out.items()}


evaluate.__doc__ += " " + ", ".join(ESTIMATORS) + "."


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The main job's config (conf/config.yaml) with command-line style `overrides`, as
    `recsim-run` composes it; type errors are refused here, naming their key."""
    import recsim.jobs  # noqa: F401  (registers the config schemas)

    if GlobalHydra.instance().is_initialized():  # inside a Hydra app or an unclosed compose
        return compose("config", overrides=list(overrides))
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose("config", overrides=list(overrides))


def run_experiment(overrides: Sequence[str] = (), output_dir: str | Path = "recsim_run") -> dict:
    """Run the whole pipeline as `recsim-run` does (config from `overrides`, the report written
    into `output_dir`, the run logged to MLflow as the config's `tracking:` says); returns the
    report (NaN where report.json has null)."""
    from recsim.jobs.run import run
    from recsim.jobs.tracking import TrackingConfig, log_run

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = compose_config(overrides)
    TrackingConfig.of(cfg)  # both refused before any work
    check_objective(cfg.report.objective, [*cfg.sim.estimators, *cfg.sim.slate_estimators])
    report = run(cfg, str(output_dir))
    log_run(cfg, report, output_dir)
    return report
