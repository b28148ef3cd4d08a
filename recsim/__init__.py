"""recsim: offline A/B tests of a feed recommender on a simulated world.

The entry points a notebook needs (recsim/jobs/api.py; imported on first use, so `import recsim`
stays fast and loads neither polars nor torch):

    recsim.build_world(recsim.WorldConfig(...))   posts, members, logged impressions, user model
    recsim.evaluate(log, ["ips", "snips"])        estimator name -> Estimate(value, ci_low, ...)
    recsim.compose_config(["experiment=debug"])   the main job's Hydra config
    recsim.run_experiment(overrides, output_dir)  the pipeline, as `recsim-run`; returns the report
    recsim.load_report(path)                      a report.json, checked against its schema

The command line is `recsim-run` (recsim/jobs/run.py); report.json's fields are documented in
recsim/report/report.schema.json.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from recsim.jobs.api import (
        Estimate,
        World,
        WorldConfig,
        build_world,
        compose_config,
        evaluate,
        load_report,
        run_experiment,
    )


def __getattr__(name: str):
    """recsim.<entry point>: imported from recsim/jobs/api.py the first time it is used."""
    if name in __all__:
        from recsim.jobs import api

        return getattr(api, name)
    raise AttributeError(f"module 'recsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
