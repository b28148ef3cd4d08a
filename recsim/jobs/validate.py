"""Are the offline estimates right? Each seed builds a fresh world, runs an offline A/B of two
policies on its log, and serves both policies to the world's user model for the true lift.
Over N seeds: per estimator, the bias of the estimated lift and the coverage of its interval.

    python -m recsim.jobs.validate --seeds 20                 # about 5 s per seed on 2 cores
    python -m recsim.jobs.validate --seeds 5 --metric dwell --out validation.json

No embeddings or ranker here, so a seed takes seconds: both policies score the logged
candidates from the world's own features.

    control    "popular and fresh": log author popularity + freshness (no personalisation)
    treatment  "noisy oracle": the user model's relevance logit + Gaussian noise
    both       Plackett-Luce over the scores (temperature `--temperature`), stochastic so that
               the logging policy's exploration overlaps them

Per seed, step by step:
    1. world (its requests split in time: the first half fits the reward model, the second half
       is evaluated);
    2. each policy's probability of every candidate at every slot (slot 1 exact; deeper slots
       by Rao-Blackwellised Monte Carlo), and of each logged post given the logged slots above;
    3. the reward model for DM / DR / SNDR: a logistic (or linear) regression of the reward on
       the logging score and the position, fitted on the first half;
    4. offline lifts: top-slot estimators on slot 1, slate estimators (iips, rips, pbm) on all
       slots;
    5. the true lift: each policy's marginals times the user model's expected reward.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import polars as pl

from recsim.ope import ab, slate_offline, slate_pbm
from recsim.world import rewards, slates
from recsim.ope.estimators import Bootstrap, SLATE_ESTIMATORS
from recsim.world.timeline import hours_since_start
from recsim.world.world import World, WorldConfig, build_world, logging_policy

log = logging.getLogger("recsim.jobs.validate")

TOP_SLOT_ESTIMATORS = ("replay", "ips", "clipped_ips", "snips", "dm", "dr", "sndr")
VALIDATION_WORLD = dict(n_members=2000, n_authors=300, n_impressions=60_000, slate_size=10,
                        n_candidates=40, max_posts_per_source=2000)


@dataclasses.dataclass
class SeedArrays:
    """One world's requests as arrays. R requests, C candidates, S slots."""

    request_id: np.ndarray  # [R]
    member: np.ndarray  # [R] member row in the truth arrays
    hours: np.ndarray  # [R] request time
    cand: np.ndarray  # [R, C] post rows in the truth arrays
    logging_score: np.ndarray  # [R, C]
    shown: np.ndarray  # [R, S] candidate column of the logged post per slot


def seed_arrays(world: World) -> SeedArrays:
    cfg, truth = world.config, world.truth
    cands = world.candidates.sort("request_id", maintain_order=True)
    imps = world.impressions.sort("request_id", "position")
    n_req = imps["request_id"].n_unique()
    cand_post = cands["post_id"].to_numpy().reshape(n_req, cfg.n_candidates)
    shown_post = imps["post_id"].to_numpy().reshape(n_req, cfg.slate_size)
    shown = np.argmax(shown_post[:, :, None] == cand_post[:, None, :], axis=2)
    first = imps.filter(pl.col("position") == 1)
    return SeedArrays(
        request_id=first["request_id"].to_numpy(),
        member=truth.member_index(first["member_id"].to_numpy()),
        hours=first.select(hours_since_start(pl.col("timestamp"))).to_series().to_numpy(),
        cand=truth.post_index(cand_post.ravel()).reshape(cand_post.shape),
        logging_score=cands["logging_score"].to_numpy().reshape(cand_post.shape),
        shown=shown,
    )


def policy_scores(world: World, a: SeedArrays, rng: np.random.Generator,
                  noise: float) -> dict[str, np.ndarray]:
    """[R, C] scores of the two validation policies."""
    truth, cfg = world.truth, world.config
    popularity = world.authors["popularity"].to_numpy()[truth.post_author[a.cand]]
    age = np.maximum(a.hours[:, None] - truth.post_created[a.cand], 0.0)
    fresh = 0.5 ** (age / cfg.freshness_halflife_hours)
    relevance = truth.relevance_logit(a.member[:, None], a.cand, a.hours[:, None])
    return {"control": np.log(popularity) + fresh,
            "treatment": relevance + noise * rng.standard_normal(relevance.shape)}


def expected_rewards(world: World, a: SeedArrays, metric: str, n_slots: int) -> np.ndarray:
    """[R, S, C] the user model's expected reward of each candidate at each slot."""
    shape = (len(a.member), n_slots, a.cand.shape[1])
    m = np.broadcast_to(a.member[:, None, None], shape)
    p = np.broadcast_to(a.cand[:, None, :], shape)
    t = np.broadcast_to(a.hours[:, None, None], shape)
    pos = np.broadcast_to(np.arange(1, n_slots + 1)[None, :, None], shape)
    probs = world.truth.outcome_probabilities(m, p, t, pos)
    frame = pl.DataFrame({f"p_{k}": probs[k].ravel() for k in rewards.ACTIONS}).with_columns(
        e_dwell_seconds=probs["dwell_seconds"].ravel())
    return frame.select(rewards.expected(metric)).to_series().to_numpy().reshape(shape)


def fit_reward_model(world: World, a: SeedArrays, train: np.ndarray, metric: str):
    """q(score, position): logistic regression for 0/1 metrics, linear otherwise."""
    from sklearn.linear_model import LinearRegression, LogisticRegression

    s = a.shown.shape[1]
    rows = world.impressions.sort("request_id", "position")
    reward = rows.select(rewards.observed(metric)).to_series().to_numpy().reshape(-1, s)
    score = np.take_along_axis(a.logging_score, a.shown, axis=1)

    def features(scores: np.ndarray, slot: int) -> np.ndarray:
        onehot = np.zeros((scores.size, s))
        onehot[:, slot] = 1.0
        return np.column_stack([scores.ravel(), onehot])

    x = np.vstack([features(score[train, k], k) for k in range(s)])
    y = np.concatenate([reward[train, k] for k in range(s)])
    binary = set(np.unique(y)) <= {0.0, 1.0}
    model = LogisticRegression(max_iter=500) if binary else LinearRegression()
    model.fit(x, y)
    predict = (lambda z: model.predict_proba(z)[:, 1]) if binary else model.predict
    return lambda scores, slot: predict(features(scores, slot)).reshape(scores.shape), reward


def run_seed(seed: int, corpus: pl.DataFrame, metric: str = "click", n_boot: int = 200,
             temperature: float = 1.0, noise: float = 1.0, n_samples: int = 64,
             world_overrides: dict | None = None) -> dict:
    """One world, one offline A/B, its truth. Returns a JSON-able record."""
    rng = np.random.default_rng(seed + 10_000)
    cfg = WorldConfig(seed=seed, **{**VALIDATION_WORLD, **(world_overrides or {})})
    # 1. World; requests split in time (request ids follow time).
    world = build_world(cfg, corpus)
    a = seed_arrays(world)
    n_req = a.shown.shape[0]
    train = np.arange(n_req) < n_req // 2
    ev = ~train
    e = _requests(a, ev)  # the evaluated half

    # 2. Each policy's conditionals of the logged slates and its marginals per slot.
    behaviour = logging_policy(cfg)  # the world's logging policy
    target_policy = slates.plackett_luce(temperature)
    scores = {role: s[ev] for role, s in policy_scores(world, a, rng, noise).items()}
    logging_marginal, marginals, targets = _marginals(behaviour, target_policy, e, scores,
                                                      n_samples, rng)

    # 3. Reward model on the first half.
    q, observed = fit_reward_model(world, a, train, metric)

    # 4. Offline lifts.
    members = world.truth.member_ids[e.member]
    logged = _logged_slates(behaviour, e, members, logging_marginal, observed[ev])
    q_top = q(e.logging_score, 0)  # [R_ev, C] at slot 1
    top_logging = behaviour(e.logging_score)(np.ones(e.logging_score.shape, bool))
    frames = {role: _policy_frames(logged, targets[role], e, q_top, top_logging)
              for role in scores}
    frames = _with_pbm(frames, behaviour, e, n_samples, rng)
    lifts = _offline_lifts(frames, Bootstrap(n_boot, seed))

    # 5. Truth: marginals times the user model's expected reward (top slot, and the whole slate).
    truth = _true_values(world, e, marginals, metric)
    true_lift = {k: truth["treatment"][k] / truth["control"][k] - 1 for k in ("top", "slate")}
    return {"seed": seed, "n_requests": int(ev.sum()), "n_members": int(np.unique(members).size),
            "true_lift": true_lift, "truth": truth,
            "estimates": _estimate_records(lifts, truth, true_lift)}


def _requests(a: SeedArrays, rows: np.ndarray) -> SeedArrays:
    """The requests selected by the boolean mask `rows`."""
    return dataclasses.replace(
        a, request_id=a.request_id[rows], member=a.member[rows], hours=a.hours[rows],
        cand=a.cand[rows], logging_score=a.logging_score[rows], shown=a.shown[rows])


def _marginals(behaviour: slates.SlatePolicy, target_policy: slates.SlatePolicy, e: SeedArrays,
               scores: dict[str, np.ndarray], n_samples: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """The logging policy's marginal of each logged post [R, S], each target policy's marginal
    of every candidate at every slot [R, S, C], and its slate_offline.TargetSlate (the
    marginal and the conditional of each logged post)."""
    logging_marginal = slate_offline.logging_marginals(behaviour, e.logging_score, e.shown,
                                                      n_samples // 4, rng)
    targets = {role: slate_offline.target_slate(target_policy, s, e.shown, n_samples, rng)
               for role, s in scores.items()}
    return logging_marginal, {role: t.marginals for role, t in targets.items()}, targets


def _logged_slates(behaviour: slates.SlatePolicy, e: SeedArrays, members: np.ndarray,
                   logging_marginal: np.ndarray, reward: np.ndarray) -> pl.DataFrame:
    """One row per logged impression: its request, member, slot, propensities and reward."""
    n_slots = e.shown.shape[1]
    return pl.DataFrame({
        "request_id": np.repeat(e.request_id, n_slots),
        "member_id": np.repeat(members, n_slots),
        "position": np.tile(np.arange(1, n_slots + 1, dtype=np.int32), len(e.request_id)),
        "propensity": slates.logged_conditionals(behaviour, e.logging_score, e.shown).ravel(),
        "logging_marginal": logging_marginal.ravel(),
        "reward": reward.ravel(),
    })


def _policy_frames(logged: pl.DataFrame, target, e: SeedArrays, q_top: np.ndarray,
                   top_logging: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(every slot, top slot only) of the log with one target policy's probabilities
    (`target`: slate_offline.TargetSlate); the top-slot frame also carries the reward model's
    predictions and the unsupported mass."""
    slate = logged.with_columns(target_prob=target.target_prob.ravel(),
                                target_marginal=target.target_marginal.ravel(),
                                target_marginal_by_slot=slate_offline.at_logged(
                                    target.marginals, e.shown).reshape(len(logged), -1))
    top1 = target.marginals[:, 0]  # [R_ev, C] exact
    return slate, slate.filter(pl.col("position") == 1).with_columns(
        reward_hat=np.take_along_axis(q_top, e.shown[:, :1], axis=1)[:, 0],
        target_reward_hat=(top1 * q_top).sum(axis=1),
        unsupported_mass=(top1 * (top_logging == 0)).sum(axis=1))


def _with_pbm(frames: dict, behaviour: slates.SlatePolicy, e: SeedArrays, n_samples: int,
              rng: np.random.Generator) -> dict:
    """The slate frames with pbm's exposures (recsim/ope/slate_pbm.py): the examination weights
    from the log, the logging policy's marginal of each logged post at every slot."""
    by_slot, _ = slate_offline.policy_marginals(behaviour, e.logging_score, e.shown.shape[1],
                                                n_samples // 4, rng)
    logging_by_slot = slate_offline.at_logged(by_slot, e.shown)
    beta = slate_pbm.examination_weights(frames["control"][0]).beta
    return {role: (slate_pbm.with_exposures(slate, logging_by_slot, beta), top)
            for role, (slate, top) in frames.items()}


def _offline_lifts(frames: dict[str, tuple[pl.DataFrame, pl.DataFrame]], boot: Bootstrap) -> dict:
    """Treatment over control: top-slot estimators on slot 1, slate estimators on all slots."""
    lifts = ab.offline_lifts(list(TOP_SLOT_ESTIMATORS), frames["control"][1],
                             frames["treatment"][1], boot)
    lifts |= ab.offline_lifts(list(SLATE_ESTIMATORS), frames["control"][0],
                              frames["treatment"][0], boot)
    return lifts


def _true_values(world: World, e: SeedArrays, marginals: dict[str, np.ndarray],
                 metric: str) -> dict[str, dict[str, float]]:
    """Each policy's true value from the user model: on the top slot and over the slate."""
    expected = expected_rewards(world, e, metric, e.shown.shape[1])
    return {role: {"top": float((marg[:, 0] * expected[:, 0]).sum(axis=1).mean()),
                   "slate": float((marg * expected).sum(axis=(1, 2)).mean())}
            for role, marg in marginals.items()}


def _estimate_records(lifts: dict, truth: dict, true_lift: dict) -> list[dict]:
    """One JSON-able record per estimator: its lift and interval beside the true lift."""
    records = []
    for name, lift in lifts.items():
        level = "slate" if name in SLATE_ESTIMATORS else "top"
        records.append({
            "estimator": name, "level": level, "lift": lift.lift, "ci_low": lift.ci_low,
            "ci_high": lift.ci_high, "p_value": lift.p_value, "mde": lift.mde,
            "true_lift": true_lift[level],
            "covered": bool(lift.ci_low <= true_lift[level] <= lift.ci_high),
            "control": lift.control.value, "treatment": lift.treatment.value,
            "true_control": truth["control"][level], "true_treatment": truth["treatment"][level],
            "ess_treatment": lift.treatment.diagnostics["effective_sample_size"],
            "max_weight_treatment": lift.treatment.diagnostics["max_weight"],
        })
    return records


def summarize(seeds: list[dict]) -> pl.DataFrame:
    """Per estimator over seeds: bias (mean estimate - truth) and RMSE of the lift, the
    coverage of its interval, its mean width; the same bias for the treatment's value."""
    rows = pl.DataFrame([r | {"seed": s["seed"]} for s in seeds for r in s["estimates"]])
    order = {n: i for i, n in enumerate(TOP_SLOT_ESTIMATORS + SLATE_ESTIMATORS)}
    return rows.group_by("estimator", "level").agg(
        n_seeds=pl.len(),
        true_lift=pl.col("true_lift").mean(),
        mean_lift=pl.col("lift").mean(),
        bias=(pl.col("lift") - pl.col("true_lift")).mean(),
        rmse=((pl.col("lift") - pl.col("true_lift")) ** 2).mean().sqrt(),
        coverage=pl.col("covered").mean(),
        mean_width=(pl.col("ci_high") - pl.col("ci_low")).mean(),
        value_bias=(pl.col("treatment") / pl.col("true_treatment") - 1).mean(),
        mean_ess=pl.col("ess_treatment").mean(),
    ).sort(pl.col("estimator").replace_strict(order, default=99))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds (0 .. N-1)")
    parser.add_argument("--metric", default="click", choices=rewards.METRICS)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--out", default="validation.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("recsim.world.world").setLevel(logging.WARNING)
    from recsim.world.corpus import load_corpus

    corpus = load_corpus(max_per_source=VALIDATION_WORLD["max_posts_per_source"], seed=0)
    seeds = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        seeds.append(run_seed(seed, corpus, args.metric, args.n_boot, args.temperature))
        log.info("seed %d: true lift top %+.3f slate %+.3f (%.1f s)", seed,
                 seeds[-1]["true_lift"]["top"], seeds[-1]["true_lift"]["slate"],
                 time.perf_counter() - start)
    table = summarize(seeds)
    with pl.Config(tbl_rows=20, tbl_cols=20, float_precision=4, tbl_width_chars=200):
        log.info("over %d seeds (metric %s, 95%% intervals):\n%s", args.seeds, args.metric, table)
    result = {"metric": args.metric, "n_seeds": args.seeds, "n_boot": args.n_boot,
              "temperature": args.temperature, "world": VALIDATION_WORLD,
              "summary": table.to_dicts(), "seeds": seeds}
    Path(args.out).write_text(json.dumps(result, indent=2))
    log.info("wrote %s", args.out)
    return result


if __name__ == "__main__":
    main()
