"""Near-line freshness: posts streamed at half the pool's measured capacity, creation -> searchable.

    .venv/bin/python benchmarks/bench_nearline.py [--duration 600] [--load 0.5]

1. Capacity: the warm pool embeds posts in creation order, in micro-batches of the stream's
   `max_batch` (what the near-line path sees: small, unsorted batches), as fast as it can.
2. Stream: the same pool takes a steady stream at `load` x capacity for `duration` seconds;
   every post is upserted into the store and a FAISS index. Freshness (creation -> searchable)
   p50 / p99 / max, and resident memory of the driver and the actors sampled over the stream.
Targets (issue 5): p99 <= 2 s at 50% load; memory flat over a 10-minute stream (growth no more
than what the stored vectors and index take).
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np

from _common import report, timed
from embeddings.actors import ActorPoolConfig, EmbeddingPool
from embeddings.encoder import EncoderConfig
from ranker.retrieval.nearline import NearlineConfig, stream_posts
from recsim.world.world import WorldConfig, build_world


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of stream")
    parser.add_argument("--load", type=float, default=0.5, help="stream rate / capacity")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait", type=float, default=0.2)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="torch", help="torch | openvino | auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    posts = build_world(WorldConfig(n_members=500, n_impressions=5000,
                                    max_posts_per_source=None)).posts.sort("created_at", "post_id")
    pool_cfg = ActorPoolConfig(num_actors=args.actors, threads_per_actor=args.threads,
                               encoder=EncoderConfig(backend=args.backend))
    pool = EmbeddingPool(pool_cfg)
    pool.wait_ready()

    texts = posts["text"].to_list()
    probe = texts[: 40 * args.max_batch]
    batches = [(i, probe[i: i + args.max_batch]) for i in range(0, len(probe), args.max_batch)]
    list(pool.map(batches[:2]))  # warm the kernels
    _, seconds = timed(lambda: list(pool.map(batches)))
    capacity = len(probe) / seconds
    rate = args.load * capacity
    n_posts = int(rate * args.duration)
    if n_posts > posts.height:
        raise SystemExit(f"the corpus has {posts.height} posts; {n_posts} are needed for "
                         f"{args.duration:.0f} s at {rate:.1f} posts/s: shorten --duration")
    cfg = NearlineConfig(rate=rate, arrivals="uniform", limit=n_posts, max_batch=args.max_batch,
                         max_wait_s=args.max_wait, report_every_s=min(30.0, args.duration / 10),
                         pool=pool_cfg)
    print(f"capacity {capacity:.1f} posts/s in micro-batches of {args.max_batch}; streaming "
          f"{n_posts} posts at {rate:.1f} posts/s for {args.duration:.0f} s")
    result, store, index = stream_posts(posts, cfg, pool=pool)
    pool.close()

    summary = result.summary()
    memory = summary.pop("memory")
    first, last = memory[0], memory[-1]
    total = lambda m: m["driver_mb"] + m["actors_mb"]  # noqa: E731
    index_mb = index.ntotal * index.dim * 4 / 2**20
    rows = [{"t_s": m["t_s"], "driver_mb": m["driver_mb"], "actors_mb": m["actors_mb"],
             "store_mb": m["store_mb"]} for m in memory]
    fresh = result.freshness_s
    report("nearline", rows, {
        **summary, "capacity_posts_per_s": capacity, "stream_rate": rate, "load": args.load,
        "freshness_p90_s": float(np.percentile(fresh, 90)), "target_p99_s": 2.0,
        "rss_growth_mb": total(last) - total(first),
        "data_growth_mb": last["store_mb"] - first["store_mb"] + index_mb,
        "max_batch": args.max_batch, "max_wait_s": args.max_wait,
        "actors_x_threads": f"{args.actors}x{args.threads}", "backend": args.backend})
    print(f"freshness p50 {summary['freshness_p50_s']:.3f} s, p99 {summary['freshness_p99_s']:.3f} s "
          f"(target <= 2), max {summary['freshness_max_s']:.3f} s over {summary['posts']} posts; "
          f"RSS {total(first):.0f} -> {total(last):.0f} MiB while the store and index grew by "
          f"{last['store_mb'] - first['store_mb'] + index_mb:.0f} MiB")


if __name__ == "__main__":
    main()
