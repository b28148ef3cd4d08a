"""Retrieval at scale: 1M post vectors, top-2000 per query, each index setting vs exact search.

The post vectors are real corpus posts through all-MiniLM-L6-v2 (bf16 where the CPU has it),
plus synthetic vectors around them to reach --n: each is a random mix of a corpus post and one
of its 10 nearest corpus neighbours, plus Gaussian noise, normalised (clustered like topics).
Queries are member-like: the normalised mean of three fresh vectors drawn the same way around
neighbouring posts (not in the index). Every vector is truncated to --dim coordinates
(Matryoshka) and renormalised.

For each setting: build seconds, index bytes (faiss.serialize_index), recall@K against exact
search run in the same process (the share of the exact top-K the index returns), single-query
p50/p99 latency, and batched queries per second; then the frontier (settings no other beats on
both recall and batch time) and whether an operating point reaches the target: recall@K >= 0.95
at <= 1/5 of exact search's batch time.

    .venv/bin/python benchmarks/bench_retrieval.py                 # 1M vectors, about 10 min
    .venv/bin/python benchmarks/bench_retrieval.py --n 200000      # a quicker run
"""

from __future__ import annotations

import argparse
import logging
import time

import faiss
import numpy as np

from _common import report, timed
from ranker.retrieval.index import PostIndex, RetrievalConfig
from ranker.retrieval.recall import overlap_at_k

# (name, RetrievalConfig fields at build, search-time settings to sweep)
SETTINGS = [
    ("IVFFlat", dict(index="IVFFlat"), [("nprobe", v) for v in (16, 32, 64, 128, 256)]),
    ("IVFPQ", dict(index="IVFPQ", pq_bits=8), [("nprobe", v) for v in (64, 256)]),
    ("HNSW", dict(index="HNSW", hnsw_m=16, ef_construction=40), [("ef_search", v) for v in (2000, 4000)]),
]


def corpus_vectors(n_posts: int, seed: int) -> np.ndarray:
    from embeddings.encoder import EncoderConfig, embed_batch, load_encoder
    from recsim.world.corpus import load_corpus

    corpus = load_corpus(max_per_source=max(n_posts // 6, 1), seed=seed).head(n_posts)
    encoder = load_encoder(EncoderConfig(max_length=64))
    texts = corpus["text"].to_list()
    order = np.argsort([-len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), encoder.model.config.hidden_size), dtype=np.float32)
    for i in range(0, len(texts), 64):
        rows = order[i: i + 64]
        out[rows] = embed_batch(encoder, [texts[j] for j in rows])
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_around(base: np.ndarray, neighbours: np.ndarray, n: int, noise: float,
                     rng: np.random.Generator) -> np.ndarray:
    """n unit vectors: w * post + (1 - w) * neighbouring post + noise (in chunks)."""
    out = np.empty((n, base.shape[1]), dtype=np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        a = rng.integers(0, len(base), m)
        b = neighbours[a, rng.integers(0, neighbours.shape[1], m)]
        w = rng.random((m, 1), dtype=np.float32)
        x = w * base[a] + (1 - w) * base[b]
        x += rng.standard_normal(x.shape, dtype=np.float32) * noise
        out[start: start + m] = _unit(x)
    return out


def latencies(search_one, queries: np.ndarray) -> tuple[float, float]:
    times = []
    for q in queries:
        start = time.perf_counter()
        search_one(q[None])
        times.append(time.perf_counter() - start)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="post vectors in the index")
    parser.add_argument("--dim", type=int, default=128, help="Matryoshka dim (MiniLM has 384)")
    parser.add_argument("--k", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=200, help="batched queries")
    parser.add_argument("--single", type=int, default=50, help="queries timed one at a time")
    parser.add_argument("--corpus-posts", type=int, default=4000)
    parser.add_argument("--nlist", type=int, default=None,
                        help="IVF lists; default 2*sqrt(n) (k-means on a 100k sample)")
    parser.add_argument("--threads", type=int, default=1,
                        help="FAISS OpenMP threads (1: the cores here are shared; spin-waiting "
                             "OpenMP threads slow everything down under contention)")
    parser.add_argument("--skip", nargs="*", default=[], help="settings to skip, e.g. HNSW")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)

    # 1. Vectors: real posts, synthetic neighbours, member-like queries.
    base, t_embed = timed(corpus_vectors, args.corpus_posts, args.seed)
    base = _unit(base[:, : args.dim])
    _, neighbours = faiss.knn(base, base, 11, metric=faiss.METRIC_INNER_PRODUCT)
    neighbours = neighbours[:, 1:]
    noise = 0.6 / np.sqrt(args.dim)  # cosine to the mixed point about 0.85
    n_syn = max(args.n - len(base), 0)
    vectors = np.vstack([base, synthetic_around(base, neighbours, n_syn, noise, rng)])[: args.n]
    post_ids = rng.permutation(args.n).astype(np.int64) + 1_000_000
    n_q = args.queries
    three = synthetic_around(base, neighbours, 3 * n_q, noise, rng).reshape(n_q, 3, -1)
    queries = _unit(three.mean(axis=1))
    single = queries[: args.single]

    # 2. Exact search: the reference and the time to beat.
    rows = []
    exact = PostIndex(post_ids, vectors, RetrievalConfig(index="Flat"))
    (_, exact_ids), t_exact = timed(exact.search_labels, queries, args.k)
    p50, p99 = latencies(lambda q: exact.search_labels(q, args.k), single)
    rows.append({"setting": "Flat (exact)", "build_s": 0.0,
                 "index_MB": faiss.serialize_index(exact.index).nbytes / 2**20,
                 f"recall@{args.k}": 1.0, "batch_s": t_exact, "qps": n_q / t_exact,
                 "p50_ms": p50, "p99_ms": p99, "speedup": 1.0})
    print(f"exact: {t_exact:.2f} s for {n_q} queries", flush=True)
    del exact

    # 3. Each approximate setting: build once, sweep its search-time parameter.
    for name, build, sweep in SETTINGS:
        if name in args.skip:
            continue
        nlist = args.nlist or int(2 * np.sqrt(args.n))
        cfg = RetrievalConfig(nlist=nlist, seed=args.seed, max_train_points=100_000, **build)
        if name == "IVFPQ":
            cfg.pq_m = args.dim // 4  # 4 coordinates per 8-bit code: dim / 4 bytes a vector
        index, t_build = timed(PostIndex, post_ids, vectors, cfg)
        size = faiss.serialize_index(index.index).nbytes / 2**20
        for field, value in sweep:
            setattr(index.cfg, field, value)
            (_, ids), t_batch = timed(index.search_labels, queries, args.k)
            p50, p99 = latencies(lambda q: index.search_labels(q, args.k), single)
            rows.append({"setting": f"{index.factory} {field}={value}", "build_s": t_build,
                         "index_MB": size, f"recall@{args.k}": overlap_at_k(ids, exact_ids),
                         "batch_s": t_batch, "qps": n_q / t_batch, "p50_ms": p50, "p99_ms": p99,
                         "speedup": t_exact / t_batch})
            print(f"{rows[-1]['setting']}: recall {rows[-1][f'recall@{args.k}']:.3f}, "
                  f"{t_batch:.2f} s", flush=True)
        del index

    # 4. The frontier and the target.
    key = f"recall@{args.k}"
    frontier = [r["setting"] for r in rows
                if not any(o[key] >= r[key] and o["batch_s"] < r["batch_s"] for o in rows if o is not r)]
    hits = [r for r in rows if r[key] >= 0.95 and r["batch_s"] <= t_exact / 5]
    best = max(hits, key=lambda r: r["speedup"]) if hits else None
    extra = {"n": args.n, "dim": args.dim, "k": args.k, "queries": n_q, "single_queries": args.single,
             "corpus_posts": len(base), "threads": args.threads, "embed_corpus_s": t_embed,
             "frontier": frontier, "target": "recall@K >= 0.95 at <= 1/5 of exact batch time",
             "target_met": best is not None, "best_operating_point": best}
    print()
    report("retrieval", rows, extra)
    print(f"\n{args.n:,} vectors at dim {args.dim}, top-{args.k}, {n_q} batched queries, "
          f"{args.threads} FAISS thread(s)")
    print("frontier (recall vs batch time):", ", ".join(frontier))
    if best:
        print(f"target met: {best['setting']} recall@{args.k} {best[key]:.3f} at "
              f"{best['speedup']:.1f}x exact search's speed")
    else:
        print("target NOT met: no setting reaches recall >= 0.95 at <= 1/5 of exact time")


if __name__ == "__main__":
    main()
