"""How much of what the world's truth reads each post encoder's vectors carry (issue 19, item 3).

The funnel A/B (`experiment=embeddings_ab`, `embeddings_ab_topics`) asks whether the LiPost
fine-tune lifts engagement. Its answer is bounded by what the world's user model reads from a
post: the label world reads the post's coarse topic, the text world (`world=topics`) a mixture
over 50 TF-IDF + NMF topics. This measures, on one world's posts and per encoder (the run's
MiniLM and the policy's `encoder_dir`, through the embedding cache):
- coarse topic: leave-one-out kNN accuracy (k = 10, cosine, similarity-weighted vote; what the
  label world reads),
- source label (newsgroup, outlet, department ...): leave-one-out kNN accuracy,
- fine topics: held-out R^2 of a ridge map from the vector to the post's topic mixture
  (5-fold; what the text world reads),
with paired bootstrap intervals over posts for the kNN differences.

    .venv/bin/python scripts/encoder_world_fit.py --seeds 0 1 2 [--out encoder_world_fit.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np

log = logging.getLogger("encoder_world_fit")
K = 10


def knn_correct(vectors: np.ndarray, labels: np.ndarray, k: int = K) -> np.ndarray:
    """Per post: does the similarity-weighted vote of its k nearest other posts (cosine,
    embeddings.evaluate.knn_predict) give its own label?"""
    from embeddings.evaluate import knn_predict, truncate

    codes, inverse = np.unique(labels, return_inverse=True)
    unit = truncate(np.asarray(vectors, dtype=np.float32), vectors.shape[1])  # renormalised
    return knn_predict(unit, unit, inverse, len(codes), k, leave_one_out=True) == inverse


def mixture_r2(vectors: np.ndarray, mixture: np.ndarray, seed: int) -> float:
    """Held-out R^2 (5 folds, pooled over the topic columns) of ridge from vectors to mixtures."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import KFold, cross_val_predict

    predicted = cross_val_predict(RidgeCV(alphas=np.logspace(-2, 3, 6)), vectors, mixture,
                                  cv=KFold(5, shuffle=True, random_state=seed))
    return float(1 - ((mixture - predicted) ** 2).sum() / ((mixture - mixture.mean(0)) ** 2).sum())


def one_seed(seed: int, n_boot: int) -> dict:
    from hydra.utils import instantiate

    from embeddings.crossval import paired_bootstrap
    from embeddings.post_vectors import embed_posts
    from recsim.jobs.api import compose_config
    from recsim.paths import CACHE_DIR
    from recsim.world.topics import FIT_SEED, post_topic_mixtures
    from recsim.world.world import build_world

    cfg = compose_config(["experiment=embeddings_ab", f"seed={seed}"])
    world_cfg, embed_cfg = instantiate(cfg.world), instantiate(cfg.embeddings)
    posts = build_world(world_cfg).posts
    roles = {role: (cfg.sim[role].encoder_dir, cfg.sim[role].get("text_prefix"))
             for role in ("control", "treatment")}
    vectors = embed_posts(posts["text"].to_list(), embed_cfg, roles)
    mixture = post_topic_mixtures(posts["post_id"].to_numpy(), posts["text"].to_list(),
                                  world_cfg.n_fine_topics, FIT_SEED, CACHE_DIR / "world_topics")
    out = {"seed": seed, "n_posts": posts.height, "encoders": {}, "differences": {}}
    correct = {}
    sources = posts["source"].to_numpy()
    by_source = {str(src): np.flatnonzero(sources == src) for src in np.unique(sources)}
    for role in roles:
        v = vectors.of(role)
        correct[role] = {col: knn_correct(v, posts[col].to_numpy()) for col in ("topic", "label")}
        out["encoders"][role] = {
            "encoder_dir": roles[role][0] or "default (all-MiniLM-L6-v2)",
            "topic_knn": float(correct[role]["topic"].mean()),
            "label_knn": float(correct[role]["label"].mean()),
            "fine_topic_r2": mixture_r2(v, mixture, seed),
            # per source: the fine-tune trained on the training tasks' texts, which the world's
            # posts of those sources share; Reuters and the election tweets it never saw
            "label_knn_by_source": {src: float(correct[role]["label"][idx].mean())
                                    for src, idx in by_source.items()}}
    for col in ("topic", "label"):
        diff, lo, hi = paired_bootstrap(correct["treatment"][col], correct["control"][col], n_boot, seed)
        out["differences"][f"{col}_knn"] = {"diff": diff, "ci_low": lo, "ci_high": hi}
    out["differences"]["fine_topic_r2"] = {
        "diff": out["encoders"]["treatment"]["fine_topic_r2"] - out["encoders"]["control"]["fine_topic_r2"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", default="encoder_world_fit.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = [one_seed(s, args.bootstrap) for s in args.seeds]
    print("| seed | topic kNN base -> fine-tuned | diff [95%] | label kNN base -> fine-tuned | "
          "diff [95%] | fine-topic R^2 base -> fine-tuned |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        c, t, d = r["encoders"]["control"], r["encoders"]["treatment"], r["differences"]
        cells = [str(r["seed"])]
        for key in ("topic_knn", "label_knn"):
            cells += [f"{c[key]:.3f} -> {t[key]:.3f}",
                      f"{d[key]['diff']:+.3f} [{d[key]['ci_low']:+.3f}, {d[key]['ci_high']:+.3f}]"]
        cells.append(f"{c['fine_topic_r2']:.3f} -> {t['fine_topic_r2']:.3f}")
        print("| " + " | ".join(cells) + " |")
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=2)
    print("\nsource label kNN per source, base -> fine-tuned (mean over seeds):")
    for src in rows[0]["encoders"]["control"]["label_knn_by_source"]:
        c = np.mean([r["encoders"]["control"]["label_knn_by_source"][src] for r in rows])
        t = np.mean([r["encoders"]["treatment"]["label_knn_by_source"][src] for r in rows])
        print(f"  {src}: {c:.3f} -> {t:.3f}")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
