"""The main job on a team's own files (`recsim-run data=logs`, conf/data/logs.yaml).

    1. data        the files read lazily and checked (recsim/world/logs.py): any bad value
                   stops the run here, naming the file and the column, before anything is written
    2-4.           embeddings, retrieval, rankers: skipped; the policies are the team's own
                   model scores, nothing is trained here
    5. policies    each score file ranks the request's logged candidates into a slate (the
                   same funnel as a trained ranker's scores: recsim.ope.offline.serve_policies)
    6. estimates   the top-slot family without a reward model (DM / DR / SNDR skipped), the
                   whole-slate estimators when the logging policy's form is declared
    7. truth       skipped: a log has no user model; the report says "estimates only"
    8. report      the same writer as the world's
"""

from __future__ import annotations

import dataclasses
import logging

import polars as pl
from omegaconf import DictConfig, OmegaConf

from recsim.jobs.run import ROLES, _score_file_scorers, _score_files, _step
from recsim.ope import ab, policies
from recsim.ope.config import SimConfig
from recsim.ope.reward_model import MODEL_BASED
from recsim.world import rewards
from recsim.world.logs import Logs, LogsConfig, read_logs
from recsim.world.slates import plackett_luce

log = logging.getLogger("recsim.jobs.run")
SEGMENT_COLUMNS = ("tenure_days", "activity_level")  # ab.member_segments reads them


def run_logs(cfg: DictConfig, sim: SimConfig, data: LogsConfig, output_dir: str) -> dict:
    """A team's log and its policies' score files -> the offline A/B report (estimates only)."""
    from recsim.ope.offline import estimate_offline, serve_policies
    from recsim.report.assemble import RunResults, build_report
    from recsim.report.writer import write_report

    _check_policies(sim)
    roles = {role: getattr(sim, role) for role in ROLES}
    timings, seed = {}, int(cfg.seed)
    # 1. Data: the team's files and the policies' score files, read lazily and checked.
    with _step(timings, "1_data"):
        logs = read_logs(data)
        _check_metric(sim, logs)
        scores = _score_files(roles, _known_ids(logs), data.columns, logs.request_keys)
        candidates = logs.candidates
        if candidates is None:
            candidates = policies.candidates_from_scores(
                scores, {r: p.scores for r, p in roles.items()}, logs.impressions)
        logging_policy = _logging_policy(data, logs)

    # 2-4. Embeddings, retrieval, rankers: nothing to train (lines in the report).
    sim, skipped = _usable(sim, logs, data)
    _check_objective(cfg, sim)

    # 5. Policies: each score file ranks the logged candidates into a slate.
    with _step(timings, "5_policies"):
        served = serve_policies(logs.impressions, candidates, _score_file_scorers(roles, scores),
                                dict.fromkeys(ROLES), sim, sim.slate_size, seed)

    # 6. Offline estimates from the log: top-slot (and slate) estimators, support, lifts.
    with _step(timings, "6_offline_estimates"):
        offline = estimate_offline(served, sim, logs.impressions, candidates, logging_policy,
                                   _segments(logs), sim.slate_size, seed)

    # 7. Ground truth: none in a log. 8. Report.
    event = rewards.engagement_event(sim.metric)
    engaged = logs.impressions.filter(pl.col(event) if event in logs.outcomes else pl.lit(False))
    report = build_report(RunResults(cfg, sim, None, None, None, None, logs, None, None, {},
                                     served, offline, None, timings, engaged, skipped=skipped,
                                     seed=seed))
    log.info("report: %s", write_report(report, output_dir)["html"])
    return report


def _check_policies(sim: SimConfig) -> None:
    for role in ROLES:
        if getattr(sim, role).scores is None:
            raise ValueError(f"sim.{role}.scores: data=logs evaluates the team's own model scores;"
                             f" set sim.{role}.scores to a file of (request_id, post_id, score)")


def _check_metric(sim: SimConfig, logs: Logs) -> None:
    """The metric's outcome columns are in the impressions file."""
    try:
        logs.impressions.head(0).select(rewards.observed(sim.metric, sim.reward_weights))
    except pl.exceptions.ColumnNotFoundError as err:
        raise ValueError(f"sim.metric={sim.metric}: {logs.files['impressions']} lacks its outcome "
                         f"column ({err}); it has {logs.outcomes}") from None


def _usable(sim: SimConfig, logs: Logs, data: LogsConfig) -> tuple[SimConfig, list[str]]:
    """sim without the estimators the files cannot feed, and the report's skipped-step lines."""
    skipped = [("embeddings, retrieval, ranker: both policies are score files; nothing is "
               "trained here")]
    model_based = [e for e in sim.estimators if e in MODEL_BASED]
    estimators = [e for e in sim.estimators if e not in MODEL_BASED]
    if model_based:
        skipped.append(f"estimators {model_based}: need a reward model, which needs the post "
                       "topics and member features of the synthetic world")
    if not estimators:
        raise ValueError(f"sim.estimators: {sim.estimators} all need a reward model, which "
                         "data=logs does not fit; add ips or snips")
    segment = sim.segment_estimator
    if segment in MODEL_BASED:
        segment = "snips"
        skipped.append(f"segment estimator {sim.segment_estimator}: needs a reward model; "
                       "snips instead")
    slate = list(sim.slate_estimators)
    if slate and (data.logging_temperature is None or logs.candidates is None):
        slate = []
        skipped.append(f"slate estimators {list(sim.slate_estimators)}: need data.candidates "
                       "with logging scores and the logging policy's form "
                       "(data.logging_temperature)")
    if _segments(logs) is None:
        skipped.append(f"segments: need a members file with {list(SEGMENT_COLUMNS)}")
    skipped.append("ground truth: a log has no user model; the figures are estimates only")
    return dataclasses.replace(sim, estimators=estimators, segment_estimator=segment,
                               slate_estimators=slate), skipped


def _check_objective(cfg: DictConfig, sim: SimConfig) -> None:
    """report.objective must be a figure a log gives: the verdict's or a computed estimator's."""
    objective = OmegaConf.select(cfg, "report.objective", default="verdict")
    usable = ["verdict", *sim.estimators, *sim.slate_estimators]
    if objective not in usable:
        raise ValueError(f"report.objective: {objective!r} is not computed with data=logs (no "
                         f"truth, no reward model); choose from {usable}")


def _known_ids(logs: Logs) -> dict[str, pl.Series]:
    """The ids a score file may name, as the files write them."""
    requests = (logs.request_keys["request_key"] if logs.request_keys is not None
                else logs.impressions["request_id"].unique())
    return {"request_id": requests.alias("request_id"), "post_id": logs.posts["post_id"]}


def _logging_policy(data: LogsConfig, logs: Logs):
    """The declared logging policy, checked against the logged top slots; None undeclared."""
    if data.logging_temperature is None or logs.candidates is None:
        return None
    policies.check_logging_form(logs.impressions, logs.candidates, data.logging_temperature,
                                data.logging_epsilon)
    return plackett_luce(data.logging_temperature, data.logging_epsilon)


def _segments(logs: Logs) -> pl.DataFrame | None:
    if logs.members is None or not all(c in logs.members.columns for c in SEGMENT_COLUMNS):
        return None
    return ab.member_segments(logs.members)
