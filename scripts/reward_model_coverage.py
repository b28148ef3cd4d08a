"""DM / DR / SNDR coverage of the true top-slot lift: the treatment's own model as the reward
model (sim.reward_model=treatment) against one fitted for the purpose (recsim/ope/reward_model.py).

    PYTHONPATH=. python scripts/reward_model_coverage.py --seeds 5     # about 15 s a seed

Per seed, step by step:
    1. the tests' small world (tests/conftest.py: 400 members, 20,000 impressions, 5 slots, 20
       candidates) with world seed = the seed; its log split in time at the half;
    2. two noisy-oracle policies over the logged candidates (no TorchRec ranker, so a seed takes
       seconds), deterministic top-1 (temperature 0, the run's default):
           control    log author popularity + freshness; with --control-noise s, a second
                      noisy oracle: the relevance logit + its own N(0, s^2) (a close A/B)
           treatment  the user model's relevance logit + N(0, noise^2)
    3. the reward models:
           treatment     the treatment's own click model, examination(1) * sigmoid(its noisy
                         logit): the model the treatment maximises
           fitted        fit_reward_model on the training period, with `--refits` refits
           fitted_fixed  the same model, its error left out of the interval
    4. model_based_lifts with each, against the true top-slot lift (recsim.ope.ab.true_value).
Logged: per reward model and estimator, the coverage of the true lift, the mean bias of the
lift, the mean interval width, how often the interval excludes 0 with the wrong sign.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace

import numpy as np
import polars as pl

from recsim.ope import ab, policies
from recsim.ope.estimators import Bootstrap
from recsim.ope.reward_model import RewardModelConfig, fit_reward_model, model_based_lifts
from recsim.world import rewards
from recsim.world.timeline import hours_since_start, time_split
from recsim.world.world import WorldConfig, build_world

log = logging.getLogger("reward_model_coverage")
SMALL_WORLD = dict(n_members=400, n_authors=80, n_impressions=20_000, slate_size=5,
                   n_candidates=20)


class OwnModel:
    """The treatment's own click model: examination(position) * sigmoid(noisy logit)."""

    name = "treatment"

    def __init__(self, world, logits: pl.DataFrame):
        self.world, self.logits = world, logits  # (request_id, post_id, logit)

    def predict(self, rows: pl.DataFrame) -> np.ndarray:
        logit = rows.join(self.logits, on=["request_id", "post_id"], how="left",
                          maintain_order="left")["logit"].to_numpy()
        exam = self.world.truth.examination(rows["position"].to_numpy())
        return exam / (1 + np.exp(-logit))


def oracle_policies(world, decisions: pl.DataFrame, noise: float, seed: int,
                    control_noise: float | None = None):
    """Step 2: each policy's top-slot probabilities and the treatment's noisy logits."""
    truth = world.truth
    cands = world.candidates.join(decisions.select("request_id", "member_id", "timestamp"),
                                  on="request_id")
    m = truth.member_index(cands["member_id"].to_numpy())
    p = truth.post_index(cands["post_id"].to_numpy())
    t = cands.select(hours_since_start(pl.col("timestamp"))).to_series().to_numpy()
    popularity = world.authors["popularity"].to_numpy()[truth.post_author[p]]
    age = np.maximum(t - truth.post_created[p], 0)
    rng, relevance = np.random.default_rng(seed), truth.relevance_logit(m, p, t)
    noisy = relevance + noise * rng.standard_normal(len(t))
    scores = {"control": np.log(popularity) + 0.5 ** (age / world.config.freshness_halflife_hours)
              if control_noise is None else relevance + control_noise * rng.standard_normal(len(t)),
              "treatment": noisy}
    probs = {role: policies.top_slot_probabilities(
        cands.select("request_id", "post_id", score=s), temperature=0.0)
        for role, s in scores.items()}
    return probs, cands.select("request_id", "post_id", logit=pl.Series(noisy))


def run_seed(seed: int, corpus, noise: float, n_refits: int, n_boot: int,
             control_noise: float | None = None) -> list[dict]:
    world = build_world(WorldConfig(seed=seed, **SMALL_WORLD), corpus=corpus)
    split = time_split(world.impressions, 0.5)
    decisions = policies.logged_top_slot(split.test, rewards.observed("click"))
    probs, logits = oracle_policies(world, decisions, noise, seed, control_noise)
    requests = decisions.select("request_id", "member_id", "timestamp")
    true = {role: ab.true_value(world.truth, probs[role], requests) for role in probs}
    true_lift = true["treatment"] / true["control"] - 1
    fitted = fit_reward_model(split.train, world.posts, world.members, "click", seed,
                              RewardModelConfig(n_refits=n_refits))
    models = {"treatment": OwnModel(world, logits), "fitted": fitted,
              "fitted_fixed": replace(fitted, refits=())}
    frames = {role: policies.with_target(decisions, probs[role]) for role in probs}
    records = []
    for label, model in models.items():
        lifts = model_based_lifts(frames["control"], frames["treatment"], probs["control"],
                                  probs["treatment"], model, Bootstrap(n_boot, seed))
        for name, lift in lifts.items():
            records.append({"seed": seed, "reward_model": label, "estimator": name,
                            "true_lift": true_lift, "lift": lift.lift, "ci_low": lift.ci_low,
                            "ci_high": lift.ci_high,
                            "error": lift.control.diagnostics["reward_model_error"]})
    log.info("seed %d: true top-slot lift %+.3f; DM %s", seed, true_lift, ", ".join(
        f"{r['reward_model']} {r['lift']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        for r in records if r["estimator"] == "dm"))
    return records


def summarize(records: list[dict]) -> pl.DataFrame:
    rows = pl.DataFrame(records)
    wrong_sign = (((pl.col("ci_low") > 0) & (pl.col("true_lift") < 0))
                  | ((pl.col("ci_high") < 0) & (pl.col("true_lift") > 0)))
    return rows.group_by("reward_model", "estimator", maintain_order=True).agg(
        n_seeds=pl.len(),
        coverage=((pl.col("ci_low") <= pl.col("true_lift"))
                  & (pl.col("true_lift") <= pl.col("ci_high"))).mean(),
        mean_bias=(pl.col("lift") - pl.col("true_lift")).mean(),
        mean_width=(pl.col("ci_high") - pl.col("ci_low")).mean(),
        excludes_0=((pl.col("ci_low") > 0) | (pl.col("ci_high") < 0)).sum(),
        wrong_sign=wrong_sign.sum(), error=pl.col("error").first())


def main(argv: list[str] | None = None) -> pl.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--control-noise", type=float, default=None,
                        help="control = relevance + N(0, s^2) instead of popularity + freshness")
    parser.add_argument("--refits", type=int, default=20)
    parser.add_argument("--n-boot", type=int, default=500)
    parser.add_argument("--out", default=None, help="write the per-seed records as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("recsim.world.world").setLevel(logging.WARNING)
    from recsim.world.corpus import load_corpus

    corpus = load_corpus(max_per_source=400, seed=0)
    records = [r for seed in range(args.seeds)
               for r in run_seed(seed, corpus, args.noise, args.refits, args.n_boot,
                                 args.control_noise)]
    table = summarize(records)
    with pl.Config(tbl_rows=20, tbl_cols=20, float_precision=3, tbl_width_chars=200):
        log.info("over %d seeds (noise %.2f, control noise %s, 95%% intervals):\n%s", args.seeds,
                 args.noise, args.control_noise, table)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1)
    return table


if __name__ == "__main__":
    main()
