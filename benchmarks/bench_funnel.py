"""Funnel serving: requests/s and latency of the whole funnel, batched across requests (the
production path) against the same stages run one request at a time, in the same process.

The funnel per request: retrieval (the member's point-in-time vector, FAISS top-K over the posts
live at the request's time, K=2000 by default) -> features of every candidate -> scoring by a
TorchRec multi-task ranker (all feature groups, like the treatment policy) -> top-10 slate.

    batched      the production path, B requests at a time:
                 ranker.retrieval.candidates.RetrievalSource.candidates (time-bucketed searches),
                 recsim.ope.funnel.score_rows (ranker.train.score_candidates: build_batch +
                 forward in 8,192-row batches across requests) and recsim.ope.funnel.top_slates.
                 Per-request latency = batch time / requests in the batch (a request's real wait
                 is the whole batch: `batch p50 ms`).
    one at a time  the baseline, a lean single-request server doing the same work: member_queries
                 for one request, one FAISS search of K (plus the seen posts when excluding them)
                 over the same live window, its K rows, one build_batch + one forward, the top
                 10 by numpy sort (score descending, ties to the lower post_id, as top_slates).

Both paths must produce identical top-10 slates for the same requests (asserted and printed), so
the speedup is not from doing different work. The table also gives each path's time shares:
retrieval / features (FeatureSpace.build_batch, timed by wrapping it) / scoring (the model's
forward and score_rows' join) / slate; features + scoring is the ranker stage. The ratio is
batched requests/s over one-at-a-time requests/s (target: >= 10x). The paths run in interleaved
rounds (--rounds), so a change in the shared machine's load hits them alike.

Inputs: a synthetic world (conf/world/debug.yaml's members, authors and impressions; 1,500 posts
per corpus source, about 3,000 live at any time, so K=2000 is reachable); post vectors are random
unit vectors [P, 384] (the benchmark measures serving, not the transformer embedding); the ranker
is untrained (it scores at the same cost as a trained one). Requests are members drawn at random,
arriving within --span-hours (default 1: one retrieval time bucket, as concurrent requests are).

What bounds the ratio: batching across requests saves only the per-request fixed cost (one
FAISS call, one frame, one KeyedJaggedTensor, Python), about 2 ms here; with K=2000 most of a
request's time is per-candidate work (build_batch's features, the forward), the same in both
paths. `--k 20` shows the fixed-cost regime, where the ratio is several times higher.

    .venv/bin/python benchmarks/bench_funnel.py      # about 1.5 minutes
    .venv/bin/python benchmarks/bench_funnel.py --requests 100 --batched-requests 1024 \
        --batch-sizes 16 64 256 --k 2000 --threads 1  # the defaults, spelled out
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time

import faiss
import numpy as np
import polars as pl
import torch

from _common import report
from ranker.config import RankerConfig
from ranker.features import FeatureSpace
from ranker.model import MultiTaskRanker
from ranker.retrieval.candidates import HistoryQueries, RetrievalSource
from ranker.retrieval.history import MemberHistory
from ranker.retrieval.index import RetrievalConfig
from ranker.train import score_candidates
from recsim.ope.funnel import score_rows, top_slates
from recsim.world.corpus import load_corpus
from recsim.world.timeline import hours_since_start, to_timestamps
from recsim.world.world import WorldConfig, build_world

GROUPS = ["ids", "history", "post_embedding", "member_embedding", "cosine", "counts", "context"]
STAGES = ("retrieval", "features", "scoring", "slate")  # features + scoring: the ranker stage


class TimedCalls:
    """Wraps a function, adding the seconds of every call to `seconds` (to split build_batch
    from the model inside ranker.train.score_candidates without changing the path)."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return out


class OneAtATime:
    """The baseline: the funnel for one request, no frame-wide joins, one search, one forward."""

    def __init__(self, source: RetrievalSource, model: MultiTaskRanker, space: FeatureSpace,
                 k: int, slate_size: int, exclude_seen: bool):
        self.source, self.model, self.space = source, model, space
        self.k, self.slate_size = k, slate_size
        self.seen = None
        extra = 0
        if exclude_seen:  # per member: (post ids, times) shown, for "shown before the request"
            seen = source.seen.sort("member_id", "t_hours")
            per_member = seen.group_by("member_id").agg(pl.col("post_id").n_unique())
            extra = int(per_member["post_id"].max() or 0)
            self.seen = {m: (g["post_id"].to_numpy(), g["t_hours"].to_numpy())
                         for (m,), g in seen.group_by("member_id")}
        # the same fetch size as retrieve_candidates: K plus the most posts any member excludes
        self.fetch = max(1, min(k + extra, source.index.ntotal))

    def serve(self, request_id: int, member_id: int, timestamp: dt.datetime, t_hours: float,
              split: dict[str, float]) -> np.ndarray:
        """[slate_size] post ids of one request's slate; adds each stage's seconds to `split`."""
        start = time.perf_counter()
        src = self.source
        query = src.queries(np.array([member_id]), np.array([t_hours]))
        b = np.floor(t_hours / src.bucket_hours)
        lo, hi = (b + 1) * src.bucket_hours - src.window_days * 24, b * src.bucket_hours
        _, ids = src.index.search_labels(query, self.fetch, created_range=(lo, hi))
        ids = ids[0][ids[0] >= 0]
        if self.seen is not None and member_id in self.seen:
            posts, times = self.seen[member_id]
            ids = ids[~np.isin(ids, posts[times < t_hours])]
        ids = ids[: self.k]
        t1 = time.perf_counter()
        n = len(ids)
        rows = pl.DataFrame({
            "request_id": np.full(n, request_id), "member_id": np.full(n, member_id),
            "post_id": ids, "position": pl.Series(np.ones(n, dtype=np.int32)),
            "timestamp": pl.Series([timestamp], dtype=pl.Datetime("us")).extend_constant(
                timestamp, n - 1)})
        with torch.inference_mode():
            features = self.space.build_batch(rows)
            t_feat = time.perf_counter()
            logits = self.model(*features)
            score = self.model.ranking_score(logits).clamp_min(1e-12).log().numpy()
        t2 = time.perf_counter()
        top = np.lexsort((ids, -score))[: self.slate_size]  # score desc, ties to lower post_id
        slate = ids[top]
        t3 = time.perf_counter()
        split["retrieval"] += t1 - start
        split["features"] += t_feat - t1
        split["scoring"] += t2 - t_feat
        split["slate"] += t3 - t2
        return slate


def run_batched(source: RetrievalSource, scorer, features: TimedCalls, requests: pl.DataFrame,
                batch: int, k: int, slate_size: int, exclude_seen: bool
                ) -> tuple[np.ndarray, dict, pl.DataFrame]:
    """The production path over `requests` in batches of `batch`: ([n_batches] seconds, stage
    seconds, slates); `features` is the space's timed build_batch."""
    times, split, slates = [], dict.fromkeys(STAGES, 0.0), []
    for s in range(0, requests.height, batch):
        part = requests.slice(s, batch)
        t0 = time.perf_counter()
        found, _ = source.candidates(part, k, exclude_seen)
        t1 = time.perf_counter()
        f0 = features.seconds
        scored, _ = score_rows(found, part, scorer)
        t2 = time.perf_counter()
        slates.append(top_slates(scored, slate_size))
        t3 = time.perf_counter()
        times.append(t3 - t0)
        split["retrieval"] += t1 - t0
        split["features"] += features.seconds - f0
        split["scoring"] += t2 - t1 - (features.seconds - f0)
        split["slate"] += t3 - t2
    return np.array(times), split, pl.concat(slates)


def slate_lists(slates: pl.DataFrame) -> dict[int, list[int]]:
    ordered = slates.sort("request_id", "position").group_by("request_id", maintain_order=True)
    return {rid: g["post_id"].to_list() for (rid,), g in ordered}


def make_requests(world, n: int, start_hours: float, span_hours: float, seed: int) -> pl.DataFrame:
    """n requests (request_id, member_id, timestamp): random members at random times within
    [start_hours, start_hours + span_hours), in time order."""
    rng = np.random.default_rng(seed)
    members = rng.choice(world.members["member_id"].to_numpy(), n)
    return pl.DataFrame({
        "request_id": np.arange(n, dtype=np.int64), "member_id": members,
        "timestamp": to_timestamps(np.sort(start_hours + rng.random(n) * span_hours)),
    })


def shares(split: dict[str, float]) -> dict[str, float]:
    total = sum(split.values()) or 1.0
    return {f"{s} %": 100 * split[s] / total for s in STAGES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="requests served one at a time")
    parser.add_argument("--batched-requests", type=int, default=1024,
                        help="requests served by each batch size (the first --requests are the "
                             "baseline's, for the slate check)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--k", type=int, default=2000, help="retrieved candidates per request")
    parser.add_argument("--exclude-seen", action="store_true",
                        help="drop posts the member was shown before the request")
    parser.add_argument("--index", default="Flat",
                        help="FAISS index: Flat | HNSW | IVFFlat | IVFPQ")
    parser.add_argument("--members", type=int, default=300)
    parser.add_argument("--authors", type=int, default=100)
    parser.add_argument("--impressions", type=int, default=6000)
    parser.add_argument("--posts-per-source", type=int, default=1500)
    parser.add_argument("--span-hours", type=float, default=1.0,
                        help="requests arrive within this many hours (1: one retrieval bucket)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="interleaved rounds of every path (load drift hits all alike)")
    parser.add_argument("--threads", type=int, default=1, help="torch and FAISS threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    n_batched = max(args.batched_requests, args.requests)

    # 1. World, vectors, retrieval source, untrained ranker.
    wcfg = WorldConfig(seed=args.seed, n_members=args.members, n_authors=args.authors,
                       n_impressions=args.impressions, max_posts_per_source=args.posts_per_source)
    world = build_world(wcfg, load_corpus(max_per_source=args.posts_per_source, seed=args.seed))
    rng = np.random.default_rng(args.seed)
    vectors = rng.standard_normal((world.posts.height, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    rcfg = RetrievalConfig(index=args.index)
    history = MemberHistory(world.impressions, world.posts["post_id"].to_numpy(), vectors,
                            rcfg.history_halflife_days)
    source = RetrievalSource.build(world.posts, vectors, HistoryQueries(history), rcfg,
                                   world.impressions, wcfg.post_window_days)
    cfg = RankerConfig()
    space = FeatureSpace.build(GROUPS, world.posts, vectors, world.members, history,
                               world.impressions, cfg.recent_k, cfg.embedding_dims,
                               cfg.embedding_projection)
    model = MultiTaskRanker(space, cfg)
    model.eval()
    features = space.build_batch = TimedCalls(space.build_batch)  # same calls, timed
    scorer = lambda rows: score_candidates(model, space, rows)  # noqa: E731

    # Requests late in the log (members have histories), within one span.
    start_h = wcfg.days * 24 * 0.85
    requests = make_requests(world, n_batched, start_h, args.span_hours, args.seed)
    created = world.posts.select(hours_since_start(pl.col("created_at"))).to_series().to_numpy()
    live = int(((created <= start_h) & (created >= start_h - wcfg.post_window_days * 24)).sum())
    print(f"{world.posts.height} posts ({live} live at the first request), "
          f"{world.members.height} members, {world.impressions.height} impressions; k={args.k}, "
          f"{args.threads} thread(s)", flush=True)

    # 2. Interleaved rounds (the machine's load drifts): in each round the baseline serves
    # its share of its requests one at a time, then each batch size its share of all requests.
    single = OneAtATime(source, model, space, args.k, wcfg.slate_size, args.exclude_seen)
    base = list(requests.head(args.requests).with_columns(
        t_hours=hours_since_start(pl.col("timestamp"))).iter_rows())
    for r in base[:5]:  # warm-up
        single.serve(*r, dict.fromkeys(STAGES, 0.0))
    run_batched(source, scorer, features, requests.head(min(64, n_batched)), 64, args.k,
                wcfg.slate_size, args.exclude_seen)
    base_split, lat, base_slates = dict.fromkeys(STAGES, 0.0), [], {}
    runs = {b: {"times": [], "sizes": [], "split": dict.fromkeys(STAGES, 0.0), "slates": []}
            for b in args.batch_sizes}
    for rnd in range(args.rounds):
        for r in base[rnd * len(base) // args.rounds: (rnd + 1) * len(base) // args.rounds]:
            t0 = time.perf_counter()
            base_slates[r[0]] = single.serve(*r, base_split).tolist()
            lat.append(time.perf_counter() - t0)
        lo, hi = rnd * n_batched // args.rounds, (rnd + 1) * n_batched // args.rounds
        for batch, run in runs.items():
            times, split, slates = run_batched(source, scorer, features,
                                               requests.slice(lo, hi - lo), batch, args.k,
                                               wcfg.slate_size, args.exclude_seen)
            run["times"] += list(times)
            run["sizes"] += [min(batch, hi - lo - s) for s in range(0, hi - lo, batch)]
            run["slates"].append(slates)
            for stage in STAGES:
                run["split"][stage] += split[stage]
        print(f"round {rnd + 1}/{args.rounds} done", flush=True)

    lat = np.array(lat)
    base_rps = len(lat) / lat.sum()
    rows = [{"path": "one at a time", "batch": 1, "requests": len(lat), "req/s": float(base_rps),
             "p50 ms/req": float(1e3 * np.percentile(lat, 50)),
             "p99 ms/req": float(1e3 * np.percentile(lat, 99)),
             "batch p50 ms": float(1e3 * np.percentile(lat, 50)), "speedup": 1.0,
             **shares(base_split), "same slates": "-"}]
    checks = {}
    for batch, run in runs.items():
        times, sizes = np.array(run["times"]), np.array(run["sizes"])
        got = slate_lists(pl.concat(run["slates"]))
        n_same = sum(got.get(rid) == s for rid, s in base_slates.items())
        checks[batch] = n_same == len(base_slates)
        per_req = times / sizes
        rps = sizes.sum() / times.sum()
        rows.append({"path": "batched", "batch": batch, "requests": int(sizes.sum()),
                     "req/s": float(rps), "p50 ms/req": float(1e3 * np.percentile(per_req, 50)),
                     "p99 ms/req": float(1e3 * np.percentile(per_req, 99)),
                     "batch p50 ms": float(1e3 * np.percentile(times, 50)),
                     "speedup": float(rps / base_rps), **shares(run["split"]),
                     "same slates": f"{n_same}/{len(base_slates)}"})

    best = max(rows[1:], key=lambda r: r["speedup"])
    extra = {"k": args.k, "exclude_seen": args.exclude_seen, "index": args.index,
             "threads": args.threads, "posts": world.posts.height, "live_posts": live,
             "members": world.members.height, "impressions": world.impressions.height,
             "span_hours": args.span_hours, "rounds": args.rounds, "feature_groups": GROUPS,
             "per_request_latency_batched": "batch time / requests in the batch",
             "slates_identical": checks, "best_speedup": best["speedup"],
             "best_batch": best["batch"], "target": ">= 10x requests/s over one at a time",
             "target_met": best["speedup"] >= 10, "torch": torch.__version__}
    print()
    report("funnel", rows, extra)
    print(f"\nbest: batch {best['batch']} at {best['speedup']:.1f}x the one-at-a-time requests/s "
          f"(target >= 10x: {'met' if best['speedup'] >= 10 else 'NOT met'}); "
          f"top-{wcfg.slate_size} slates identical on the {len(base_slates)} baseline requests: "
          + ", ".join(f"batch {b}: {v}" for b, v in checks.items()))
    assert all(checks.values()), f"batched slates differ from the one-at-a-time slates: {checks}"


if __name__ == "__main__":
    main()
