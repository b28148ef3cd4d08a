"""The main job: one Hydra run from data to offline A/B report.

    recsim-run                                   # the default experiment (the synthetic world)
    recsim-run experiment=debug                  # a tiny run (under a minute)
    recsim-run -m seed=0,1,2                     # a multirun sweep
    recsim-run --cfg job                         # print the composed config
    recsim-run data=logs data.posts=... data.impressions=... \\
        sim.control.scores=... sim.treatment.scores=...   # a team's own log and model scores
    recsim-run data=obd data.campaign=men              # the Open Bandit Dataset sample

`run(cfg, output_dir)` reads top to bottom as the funnel, by data source (conf/data/):
    world  world -> embeddings -> retrieval -> ranker -> policies -> offline estimates ->
           ground truth -> report
    logs   the team's files -> policies from their score files -> offline estimates -> report;
           the steps that need what the files lack (post embeddings, retrieval and rankers
           trained here, a reward model, the truth) are skipped, each with a line in the report
    obd    the Open Bandit Dataset: one policy's click rate from the other's log, against its
           own log (recsim/jobs/run_obd.py); a value check, not a paired lift
Any error stops the run before the report is written: nothing half-written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import hydra
import polars as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recsim.jobs.run_obd import ObdDataConfig, run_obd
from recsim.ope import ab
from recsim.ope.config import SimConfig
from recsim.paths import CONF_DIR
from recsim.world import rewards
from recsim.world.logs import LogsConfig
from recsim.world.timeline import time_split
from recsim.world.world import build_world, logging_policy

log = logging.getLogger("recsim.jobs.run")
ROLES = ("control", "treatment")


@contextlib.contextmanager
def _step(timings: dict, name: str):
    log.info("step %s ...", name)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    log.info("step %s done in %.1f s", name, timings[name])


def run(cfg: DictConfig, output_dir: str) -> dict:
    """Run the funnel for `cfg` on its data source; write the report into `output_dir`."""
    sim: SimConfig = instantiate(cfg.sim)  # checks its values and its policies', before any work
    data = instantiate(cfg.data)
    address = OmegaConf.select(cfg, "ray.address", default=None)
    if sim.ray_shards and address:  # the estimators' Ray tasks on that cluster, whatever the data
        from embeddings.actors import ensure_ray

        ensure_ray(address)
    if isinstance(data, LogsConfig):
        from recsim.jobs.run_logs import run_logs

        report = run_logs(cfg, sim, data, output_dir)
    elif isinstance(data, ObdDataConfig):
        report = run_obd(cfg, sim, data, output_dir)
    else:
        report = run_world(cfg, sim, output_dir)
    _log_summary(report)
    return report


def run_world(cfg: DictConfig, sim: SimConfig, output_dir: str) -> dict:
    """The synthetic world (data=world): every step, and the truth to judge the estimates by."""
    # Imported here so `recsim-run --help` and config errors answer fast.
    from embeddings.post_vectors import embed_posts
    from ranker.retrieval.recall import evaluate_retrieval
    from recsim.ope.funnel import retrieval_sources
    from recsim.ope.offline import estimate_offline, ground_truth, serve_policies
    from recsim.ope.reward_model import RewardModelConfig, fit_reward_model
    from recsim.report.assemble import RunResults, build_report
    from recsim.report.writer import write_report

    world_cfg, embed_cfg = instantiate(cfg.world), instantiate(cfg.embeddings)
    retrieval_cfg, ranker_cfg = instantiate(cfg.retrieval), instantiate(cfg.ranker)
    roles = {"control": sim.control, "treatment": sim.treatment}
    seed, timings = world_cfg.seed, {}

    # 1. World: posts, members, logged impressions; the log split in time.
    with _step(timings, "1_world"):
        world = build_world(world_cfg)
        split = time_split(world.impressions, ranker_cfg.train_fraction)

    # 2. Embeddings: every post through the run's encoder and each policy's own, on Ray actors.
    with _step(timings, "2_embeddings"):
        post_vectors = embed_posts(world.posts["text"].to_list(), embed_cfg,
                                   {role: (p.encoder_dir, p.text_prefix) for role, p in roles.items()})

    # 3. Retrieval: member vectors from engagements before the split, recall@K of later ones;
    #    each retrieval policy's FAISS index over the posts, searched at each request's time.
    with _step(timings, "3_retrieval"):
        event = rewards.engagement_event(sim.metric)
        engaged = split.test.filter(pl.col(event))
        retrieval = evaluate_retrieval(
            world.impressions, engaged.select("member_id", "post_id"), split.split_hours,
            world.posts["post_id"].to_numpy(), post_vectors.vectors, retrieval_cfg, event)
        sources = retrieval_sources(roles, world.posts, world.members, world.impressions,
                                    split.train, post_vectors, retrieval.histories, retrieval_cfg,
                                    sim.dual_encoder, world_cfg.post_window_days)

    # 4. Ranker: one multi-task TorchRec model per policy's features, trained on the training
    #    period, early-stopped on its last part, checkpointed beside the report; a policy with
    #    a score file ranks by its own scores instead.
    with _step(timings, "4_ranker"):
        rankers = _fit_rankers(roles, world, post_vectors, retrieval, split, ranker_cfg, seed,
                               output_dir)
        scorers = {role: r.score for role, r in rankers.items()}
        scorers |= _score_file_scorers(roles, _score_files(
            roles, {"request_id": world.impressions["request_id"], "post_id": world.posts["post_id"]}))

    # 5. Policies: each funnel (candidates -> ranker -> slate) serves the evaluation requests;
    #    DM / DR / SNDR's reward model is fitted for the purpose on the training period
    #    (sim.reward_model: fitted; recsim/ope/reward_model.py), or a role's own ranker.
    with _step(timings, "5_policies"):
        reward_model = None
        if sim.reward_model == "fitted":
            reward_model = fit_reward_model(split.train, world.posts, world.members, sim.metric,
                                            seed, RewardModelConfig(sim.reward_model_refits))
            scorers["fitted"] = reward_model.score
        served = serve_policies(split.test, world.candidates, scorers, sources, sim,
                                world_cfg.slate_size, seed, reward_model)

    # 6. Offline estimates from the log: top-slot and slate estimators, support, paired lifts.
    with _step(timings, "6_offline_estimates"):
        segments = ab.member_segments(world.members, languages=world_cfg.language_weight > 0)
        offline = estimate_offline(served, sim, split.test, world.candidates,
                                   logging_policy(world_cfg), segments, world_cfg.slate_size, seed)

    # 7. Ground truth: the simulated online A/B (expected slate engagement, a sampled test).
    with _step(timings, "7_ground_truth"):
        truth = ground_truth(world.truth, served, sim, seed, segments)

    # 8. Report: HTML, Markdown and JSON beside the checkpoints.
    skipped = [f"ranker: {p.name} ranks by its score file {p.scores}, no ranker trained for it"
               for p in roles.values() if p.scores is not None]
    report = build_report(RunResults(cfg, sim, world_cfg, embed_cfg, retrieval_cfg, ranker_cfg,
                                     world, post_vectors, retrieval, rankers, served, offline,
                                     truth, timings, engaged, skipped=skipped))
    log.info("report: %s", write_report(report, output_dir)["html"])
    return report


def _fit_rankers(roles: dict, world, post_vectors, retrieval, split, ranker_cfg, seed: int,
                 output_dir: str) -> dict:
    """role -> its TrainedRanker, for the roles without a score file."""
    from ranker.train import fit_ranker

    return {role: fit_ranker(
        p.features, world.posts, post_vectors.of(role), world.members,
        retrieval.histories[post_vectors.key_of[role]], world.impressions, split.train,
        split.test, ranker_cfg, seed + p.ranker_seed_offset, p.name,
        Path(output_dir) / "rankers" / f"{role}.pt")
        for role, p in roles.items() if p.scores is None}


def _score_files(roles: dict, known: dict, columns: dict | None = None,
                 request_keys: pl.DataFrame | None = None) -> dict[str, pl.DataFrame]:
    """role -> its score file (request_id, post_id, score), read and checked (recsim.world.logs
    .read_scores: known ids, the log's request keys), for the roles with one."""
    from recsim.world.logs import read_scores

    return {role: read_scores(p.scores, known, columns, request_keys)
            for role, p in roles.items() if p.scores is not None}


def _score_file_scorers(roles: dict, frames: dict[str, pl.DataFrame]) -> dict:
    """role -> a scorer over its score file (recsim.ope.policies.score_file_scorer)."""
    from recsim.ope.policies import score_file_scorer

    return {role: score_file_scorer(frame, roles[role].scores) for role, frame in frames.items()}


def _log_summary(report: dict) -> None:
    truth = report.get("truth")
    if truth:
        online = truth["online_ab"]
        log.info("true slate lift %+.2f%%; online test %+.2f%% [%+.2f%%, %+.2f%%]",
                 100 * truth["lift"], 100 * online["lift"], 100 * online["ci_low"],
                 100 * online["ci_high"])
    for lift in report["lifts"]:
        true = "" if lift["true_lift"] is None else f"; true {100 * lift['true_lift']:+.2f}%"
        log.info("%s (%s) lift %+.2f%% [%+.2f%%, %+.2f%%]%s; %s", lift["estimator"],
                 lift["scope"], 100 * lift["lift"], 100 * lift["ci_low"], 100 * lift["ci_high"],
                 true, lift["status"])


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Run, log the run to MLflow (the `tracking:` block; recsim/jobs/tracking.py) and return
    the objective a sweeper optimizes (report.objective; recsim/report/contract.py)."""
    from recsim.jobs.tracking import TrackingConfig, log_run
    from recsim.report.contract import check_objective

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    TrackingConfig.of(cfg)  # both refused before any work
    check_objective(cfg.report.objective, [*cfg.sim.estimators, *cfg.sim.slate_estimators])
    output_dir = cfg.report.output_dir or HydraConfig.get().runtime.output_dir
    report = run(cfg, output_dir)
    log_run(cfg, report, output_dir)
    return report["objective"]["value"]


if __name__ == "__main__":
    main()
