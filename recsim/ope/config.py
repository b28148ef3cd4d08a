"""The offline A/B's configuration (conf/sim/): metric, estimators, interval, the two policies.

It checks its values (and its two policies') when built and raises ValueError naming the key as
the user writes it (`sim.alpha: must be in (0, 1), got 1.5`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ranker.retrieval.config import DualEncoderConfig
from ranker.retrieval.prompts import PromptConfig
from recsim.ope.estimators import ESTIMATORS, SLATE_ESTIMATORS
from recsim.ope.policies import PolicyConfig
from recsim.world import checks
from recsim.world.rewards import ACTIONS, METRICS

# The A/B evaluates the feed's top slot: the per-decision estimators, not the slate ones.
TOP_SLOT_ESTIMATORS = tuple(e for e in ESTIMATORS if e not in SLATE_ESTIMATORS)
ROLES = ("control", "treatment")
INTERVALS = ("percentile", "studentized", "bca")
# Who predicts clicks for DM / DR / SNDR: "fitted" (recsim/ope/reward_model.py, fitted for the
# purpose, neither ranker); a role's own ranker is still accepted, with the report's warning
# (reward_model.reward_model_status): it judges the treatment by the model it maximises.
REWARD_MODELS = ("fitted",) + ROLES


@dataclass
class SimConfig:
    metric: str = "click"  # recsim/world/rewards.py: click, like, ..., engagement, weighted, dwell
    reward_weights: dict[str, float] | None = None  # for metric=weighted
    estimators: list[str] = field(default_factory=lambda: ["ips", "snips"])
    reward_model: str = "fitted"  # DM / DR / SNDR's click model: fitted | control | treatment
    segment_estimator: str = "snips"  # per-segment lifts use this estimator
    ray_shards: int = 0  # > 0: sum the log's rows in that many Ray tasks (same numbers)
    n_bootstrap: int = 500
    alpha: float = 0.05
    policy_temperature: float = 0.0
    max_eval_requests: int | None = None
    slate_size: int = 10  # the feed's slots (conf/sim: ${world.slate_size})
    slate_estimators: list[str] = field(default_factory=lambda: ["iips"])  # whole-slate, offline
    slate_samples: int = 64  # Monte Carlo prefixes per request for stochastic slates' marginals
    # Guard rails (recsim/ope/verdict.py): below this effective sample size an estimate's status
    # is not ok; the verdict comes from the first estimator of `recommended` whose status is ok.
    min_effective_sample_size: float = 100.0
    # Intervals (recsim/ope/intervals.py): the reported one, and others computed beside it for
    # the validity runs (recsim/jobs/validity.py), which choose between them.
    reward_model_refits: int = 20  # member-bootstrap refits of the fitted reward model (its error)
    interval: str = "percentile"  # percentile | studentized | bca
    extra_intervals: list[str] = field(default_factory=lambda: ["studentized", "bca"])
    recommended: list[str] = field(default_factory=lambda: ["dr", "sndr", "snips", "iips"])
    # The text dual encoder of policies with member_vectors=dual_encoder (trained in the run).
    dual_encoder: DualEncoderConfig = field(default_factory=lambda: DualEncoderConfig(
        key="sim.dual_encoder", prompt=PromptConfig(key="sim.dual_encoder.prompt")))
    control: PolicyConfig = field(default_factory=lambda: PolicyConfig(name="control"))
    treatment: PolicyConfig = field(default_factory=lambda: PolicyConfig(name="treatment"))

    def __post_init__(self):
        checks.one_of("sim.metric", self.metric, METRICS)
        if self.reward_weights is not None:
            if not isinstance(self.reward_weights, dict):
                raise ValueError(f"sim.reward_weights: must be a mapping action: weight, e.g. "
                                 f"{{click: 1, like: 2}}, got {self.reward_weights!r}")
            checks.all_known("sim.reward_weights", list(self.reward_weights), ACTIONS, nonempty=False)
            for action, weight in self.reward_weights.items():
                checks.number(f"sim.reward_weights.{action}", weight)
        checks.all_known("sim.estimators", self.estimators, TOP_SLOT_ESTIMATORS)
        checks.one_of("sim.segment_estimator", self.segment_estimator, TOP_SLOT_ESTIMATORS)
        for key, names in (("sim.estimators", self.estimators),
                           ("sim.segment_estimator", [self.segment_estimator])):
            model_based = [e for e in names if "reward_hat" in ESTIMATORS[e].needs]
            if model_based and self.metric != "click":
                raise ValueError(f"{key}: {model_based} need a reward model; the rankers predict "
                                 f"clicks, so they need sim.metric=click (got {self.metric})")
        checks.one_of("sim.reward_model", self.reward_model, REWARD_MODELS)
        checks.at_least("sim.ray_shards", self.ray_shards, 0)
        checks.at_least("sim.n_bootstrap", self.n_bootstrap, 1)
        checks.between("sim.alpha", self.alpha, 0, 1, open_low=True, open_high=True)
        checks.at_least("sim.policy_temperature", self.policy_temperature, 0)
        checks.at_least("sim.max_eval_requests", self.max_eval_requests, 1, optional=True)
        checks.at_least("sim.slate_size", self.slate_size, 1)
        checks.all_known("sim.slate_estimators", self.slate_estimators, SLATE_ESTIMATORS,
                         nonempty=False)
        checks.at_least("sim.slate_samples", self.slate_samples, 1)
        checks.at_least("sim.min_effective_sample_size", self.min_effective_sample_size, 0)
        checks.all_known("sim.recommended", self.recommended, ESTIMATORS)
        checks.one_of("sim.interval", self.interval, INTERVALS)
        checks.at_least("sim.reward_model_refits", self.reward_model_refits, 0)
        checks.all_known("sim.extra_intervals", self.extra_intervals, INTERVALS, nonempty=False)
        for role in ROLES:
            policy = getattr(self, role)
            policy.check(f"sim.{role}")
            if policy.source == "retrieval" and policy.top_k < self.slate_size:
                raise ValueError(f"sim.{role}.top_k: {policy.top_k} candidates cannot fill a "
                                 f"slate of {self.slate_size} (world.slate_size); raise top_k")
        if self.reward_model in ROLES and getattr(self, self.reward_model).scores is not None:
            raise ValueError(f"sim.reward_model: the {self.reward_model}'s policy is a score file, "
                             "which holds no click probabilities; use fitted")
        if self.control.name == self.treatment.name:
            raise ValueError(f"sim.treatment.name: {self.treatment.name!r} is also the control's "
                             "name; the report tells the policies apart by name")
