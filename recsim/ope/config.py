"""The offline A/B's configuration (conf/sim/): metric, estimators, interval, the two policies."""

from __future__ import annotations

from dataclasses import dataclass, field

from recsim.ope.policies import PolicyConfig


@dataclass
class SimConfig:
    metric: str = "click"  # recsim/world/rewards.py: click, like, ..., engagement, weighted, dwell
    reward_weights: dict[str, float] | None = None  # for metric=weighted
    estimators: list[str] = field(default_factory=lambda: ["ips", "snips"])
    reward_model: str = "treatment"  # whose ranker predicts clicks for DM / DR / SNDR
    segment_estimator: str = "snips"  # per-segment lifts use this estimator
    ray_shards: int = 0  # > 0: sum the log's rows in that many Ray tasks (same numbers)
    n_bootstrap: int = 500
    alpha: float = 0.05
    policy_temperature: float = 0.0
    max_eval_requests: int | None = None
    control: PolicyConfig = field(default_factory=PolicyConfig)
    treatment: PolicyConfig = field(default_factory=PolicyConfig)
