"""The main job on the Open Bandit Dataset (`recsim-run data=obd`, conf/data/obd.yaml).

A single-policy value check, not a paired lift: the click rate of one of ZOZOTOWN's policies
(uniform random, Bernoulli Thompson sampling), estimated off-policy from the other policy's log,
beside the click rate its own log shows (the truth, with its own interval). sim.control and
sim.treatment are not used.

    1. data        both logs of the campaign, read and checked (recsim/ope/adapters/obd.py)
    2-4.           embeddings, retrieval, rankers: skipped; items have ids, no text, and the
                   policies are ZOZOTOWN's own, nothing is trained here
    5. policies    the evaluated policy's action distribution: uniform, or BTS by obp's
                   protocol (production prior, RandomState(12345), data.n_sim simulations)
    6. estimates   each estimator's click rate with its member bootstrap interval and status
    7. truth       the evaluated policy's own log: its click rate with its interval
                   (6 and 7 in one call: recsim/ope/adapters/obd_eval.py evaluate_obd)
    8. report      the same writer as the other sources' (recsim/report/obd.py: its sections)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from recsim.ope.adapters import obd, obd_eval
from recsim.world import checks

log = logging.getLogger("recsim.jobs.run")


@dataclass
class ObdDataConfig:
    """`data=obd` (conf/data/obd.yaml): which campaign, which direction, which estimators."""

    campaign: str = "all"  # all (80 items) | men (34) | women (46)
    direction: str = "random_to_bts"  # behaviour log -> evaluated policy (obd_eval.DIRECTIONS)
    estimators: list[str] = field(default_factory=lambda: list(obd_eval.DEFAULT_ESTIMATORS))
    n_sim: int = obd.OBP_N_SIM  # simulations of the BTS action distribution (obp's 1e6)
    data_dir: str | None = None  # the full-size dataset's root; None: the obp wheel's sample

    def __post_init__(self):
        checks.one_of("data.campaign", self.campaign, obd.CAMPAIGNS)
        checks.one_of("data.direction", self.direction, tuple(obd_eval.DIRECTIONS))
        checks.all_known("data.estimators", self.estimators, obd_eval.DEFAULT_ESTIMATORS)
        checks.at_least("data.n_sim", self.n_sim, 1)
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise ValueError(f"data.data_dir: {self.data_dir} is not a directory")


def run_obd(cfg: DictConfig, sim, data: ObdDataConfig, output_dir: str) -> dict:
    """The evaluated policy's click rate from the other policy's log, against its own log."""
    from recsim.jobs.run import _step
    from recsim.report.assemble import ObdResults, build_obd_report
    from recsim.report.writer import write_report

    _check(cfg, sim, data)
    policies = dict(zip(("behavior", "evaluation"), obd_eval.DIRECTIONS[data.direction]))
    timings, seed = {}, int(cfg.seed)
    # 1. Data: the behaviour log and the evaluated policy's own log, checked.
    with _step(timings, "1_data"):
        logs = {role: obd.load_log(p, data.campaign, data.data_dir) for role, p in policies.items()}
        files = {role: str(obd.log_path(p, data.campaign, data.data_dir))
                 for role, p in policies.items()}

    # 2-4. Embeddings, retrieval, rankers: no post text, nothing to train (lines in the report).
    # 5. Policies: the evaluated policy's action distribution (cached per process for step 6).
    with _step(timings, "5_policies"):
        n_items = obd.action_dist(policies["evaluation"], data.campaign, data.n_sim,
                                  data.data_dir).shape[0]

    # 6-7. Estimates from the behaviour log, and the truth from the evaluated policy's own log.
    with _step(timings, "6_estimates_and_truth"):
        rows = obd_eval.evaluate_obd(data.campaign, data.direction, data.estimators,
                                     sim.n_bootstrap, seed, sim.min_effective_sample_size,
                                     data.n_sim, data.data_dir, alpha=sim.alpha)

    # 8. Report.
    report = build_obd_report(ObdResults(cfg, sim, data, rows, logs, files, n_items, timings,
                                         _skipped(sim, policies), seed))
    log.info("report: %s", write_report(report, output_dir)["html"])
    log.info("verdict: %s", report["verdict"]["text"])
    return report


def _skipped(sim, policies: dict[str, str]) -> list[str]:
    """The report's lines for the steps and settings this source cannot feed."""
    lines = [("embeddings, retrieval, ranker: the Open Bandit Dataset has item ids, no post "
              "text, and both policies are ZOZOTOWN's own; nothing is trained here"),
             (f"lift, online A/B and segments: a single-policy value check (the "
              f"{policies['evaluation']} policy from the {policies['behavior']} log against its "
              f"own log), not a paired lift; sim.control ({sim.control.name}) and sim.treatment "
              f"({sim.treatment.name}) are not used; the sample has no user ids for segments")]
    if sim.slate_estimators:
        lines.append(f"slate estimators {list(sim.slate_estimators)}: each row of the logs is "
                     "one (impression, position) with no impression id to gather a slate's rows; "
                     "the top-slot family reads each row as one decision")
    if sim.interval != "percentile":
        lines.append(f"sim.interval={sim.interval}: the OBD evaluation draws percentile intervals")
    return lines


def _check(cfg: DictConfig, sim, data: ObdDataConfig) -> None:
    """The metric is the click (the only outcome OBD logs); report.objective is a figure this
    source gives: the verdict's or an estimator's click rate (no lift, no simulated test)."""
    if sim.metric != "click":
        raise ValueError(f"sim.metric: {sim.metric!r}; the Open Bandit Dataset logs clicks only "
                         "(sim.metric=click)")
    objective = OmegaConf.select(cfg, "report.objective", default="verdict")
    usable = ["verdict", *data.estimators]
    if objective not in usable:
        raise ValueError(f"report.objective: {objective!r} is not computed with data=obd (a "
                         f"single policy's click rate, no lift); choose from {usable}")
