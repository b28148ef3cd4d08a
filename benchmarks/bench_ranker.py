"""Ranker throughput: the TorchRec multi-task DLRM against a plain-PyTorch model of the same
architecture (nn.EmbeddingBag tables + the same MLPs and pairwise-dot interaction, with the
TorchRec model's weights copied in, so both compute the same logits), in the same process.

Measures training examples/s (forward, backward, Adam step on 512-row batches), scoring
candidates/s (inference on 8,192-row batches) and the latency to score one request's 2,000
candidates (p50 / p99, model only, and with building the features from the logs).
Inputs are real feature batches (ranker/features.py) from a synthetic world; post vectors are
random unit vectors (the encoder is not what is measured here).

    .venv/bin/python benchmarks/bench_ranker.py [--threads 1 --steps 150]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import polars as pl
import torch
from torch import nn

from _common import report
from ranker.features import FeatureSpace
from ranker.retrieval.history import MemberHistory
from ranker.model import MultiTaskRanker, RankerConfig
from recsim.world.corpus import load_corpus
from recsim.world.timeline import time_split
from recsim.world.world import WorldConfig, build_world

GROUPS = ["ids", "history", "post_embedding", "member_embedding", "cosine", "counts", "context"]


def _mlp(sizes: list[int], last_activation: bool) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class PlainDLRM(nn.Module):
    """DLRM in plain PyTorch: one nn.EmbeddingBag (mean) per table, features looked up by key."""

    def __init__(self, tables: dict[str, tuple[int, list[str]]], dense_dim: int, cfg: RankerConfig):
        super().__init__()
        d = cfg.embedding_dim
        self.bags = nn.ModuleDict({t: nn.EmbeddingBag(n, d, mode="mean") for t, (n, _) in tables.items()})
        self.features = [(t, f) for t, (_, fs) in tables.items() for f in fs]
        n_f = len(self.features)
        self.dense = _mlp([dense_dim, *cfg.dense_arch, d], last_activation=True)
        self.over = _mlp([d + n_f * (n_f + 1) // 2, *cfg.over_arch, len(cfg.heads)],
                         last_activation=False)
        self.register_buffer("triu", torch.triu_indices(n_f + 1, n_f + 1, offset=1), persistent=False)

    def forward(self, sparse: dict[str, tuple[torch.Tensor, torch.Tensor]], dense: torch.Tensor):
        x = self.dense(dense)
        pooled = [self.bags[t](*sparse[f]) for t, f in self.features]
        combined = torch.stack([x, *pooled], dim=1)
        inter = torch.bmm(combined, combined.transpose(1, 2))[:, self.triu[0], self.triu[1]]
        return self.over(torch.cat([x, inter], dim=1))


def plain_inputs(kjt) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per key (values, offsets) for nn.EmbeddingBag, from the same KeyedJaggedTensor."""
    return {k: (jt.values(), jt.offsets()[:-1].contiguous()) for k, jt in kjt.to_dict().items()}


def copy_weights(src: MultiTaskRanker, dst: PlainDLRM) -> None:
    ebc = src.net.sparse_arch.embedding_bag_collection
    with torch.no_grad():
        for t, bag in dst.bags.items():
            bag.weight.copy_(ebc.embedding_bags[f"t_{t}"].weight)
        mlp_src = [p for name, p in src.net.named_parameters() if "sparse_arch" not in name]
        mlp_dst = [p for name, p in dst.named_parameters() if not name.startswith("bags")]
        assert [p.shape for p in mlp_src] == [p.shape for p in mlp_dst]
        for a, b in zip(mlp_src, mlp_dst):
            b.copy_(a)


def _train_rate(model, batches, labels, steps: int, call) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for i in range(5):  # warm-up
        loss = nn.functional.binary_cross_entropy_with_logits(call(model, batches[i]), labels[i])
        opt.zero_grad(), loss.backward(), opt.step()
    start = time.perf_counter()
    for i in range(steps):
        b = i % len(batches)
        loss = nn.functional.binary_cross_entropy_with_logits(call(model, batches[b]), labels[b])
        opt.zero_grad(), loss.backward(), opt.step()
    return steps * len(labels[0]) / (time.perf_counter() - start)


def _latencies(fn, repeats: int) -> np.ndarray:
    for _ in range(5):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        out[i] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--members", type=int, default=5000)
    parser.add_argument("--impressions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = RankerConfig()
    world = build_world(WorldConfig(n_members=args.members, n_impressions=args.impressions,
                                    n_authors=1000, max_posts_per_source=1500),
                        load_corpus(max_per_source=1500))
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((world.posts.height, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    history = MemberHistory(world.impressions, world.posts["post_id"].to_numpy(), vectors, 3.0)
    space = FeatureSpace.build(GROUPS, world.posts, vectors, world.members, history,
                               world.impressions, cfg.recent_k, cfg.embedding_dims,
                               cfg.embedding_projection)
    train_rows, test_rows, _ = time_split(world.impressions, 0.7)

    trec = MultiTaskRanker(space, cfg)
    plain = PlainDLRM(space.tables(), space.dense_dim, cfg)
    copy_weights(trec, plain)

    batch_rows = [train_rows.slice(i * 512, 512) for i in range(20)]
    built = [space.build_batch(b) for b in batch_rows]
    labels = [torch.from_numpy(b.select(cfg.heads).to_numpy().astype(np.float32)) for b in batch_rows]
    plain_built = [(plain_inputs(s), d) for s, d in built]
    with torch.inference_mode():
        same = torch.allclose(trec(*built[0]), plain(*plain_built[0]), atol=1e-5)
    call = lambda m, b: m(*b)  # noqa: E731

    # One request: 2,000 candidates for one member at one time.
    request = test_rows.head(1)
    candidates = pl.DataFrame({
        "member_id": np.repeat(request["member_id"].to_numpy(), 2000),
        "post_id": rng.choice(world.posts["post_id"].to_numpy(), 2000, replace=False),
        "position": pl.Series(np.ones(2000, dtype=np.int32)),
        "timestamp": pl.Series([request["timestamp"][0]] * 2000),
    })
    req_sparse, req_dense = space.build_batch(candidates)
    req_plain = plain_inputs(req_sparse)
    score_rows = test_rows.slice(0, 8192)
    sc_sparse, sc_dense = space.build_batch(score_rows)
    sc_plain = plain_inputs(sc_sparse)

    rows = []
    for name, model, b_train, score_in, req_in in (
            ("torchrec DLRM (EmbeddingBagCollection)", trec, built, (sc_sparse, sc_dense),
             (req_sparse, req_dense)),
            ("plain PyTorch (nn.EmbeddingBag + MLP)", plain, plain_built, (sc_plain, sc_dense),
             (req_plain, req_dense))):
        train_eps = _train_rate(model, b_train, labels, args.steps, call)
        model.eval()
        with torch.inference_mode():
            score_t = _latencies(lambda: model(*score_in), 20)
            lat = _latencies(lambda: model(*req_in), args.repeats)
        rows.append({"model": name, "train examples/s": float(train_eps),
                     "score candidates/s": float(8192 / np.median(score_t)),
                     "p50 ms (2,000 cands)": float(1e3 * np.percentile(lat, 50)),
                     "p99 ms (2,000 cands)": float(1e3 * np.percentile(lat, 99))})
    trec.eval()
    with torch.inference_mode():
        end_to_end = _latencies(lambda: trec(*space.build_batch(candidates)), args.repeats)
    feats = _latencies(lambda: space.build_batch(candidates), args.repeats)
    rows.append({"model": "features (build_batch) + torchrec DLRM", "train examples/s": "n/a",
                 "score candidates/s": float(2000 / np.median(end_to_end)),
                 "p50 ms (2,000 cands)": float(1e3 * np.percentile(end_to_end, 50)),
                 "p99 ms (2,000 cands)": float(1e3 * np.percentile(end_to_end, 99))})
    extra = {"threads": args.threads, "batch_size": 512, "score_batch": 8192,
             "dense_dim": space.dense_dim, "sparse_features": space.sparse_keys,
             "tables": {t: n for t, (n, _) in space.tables().items()},
             "same_logits_as_plain": bool(same),
             "features_p50_ms_2000": float(1e3 * np.percentile(feats, 50)),
             "torch": torch.__version__}
    report("ranker", rows, extra)
    print(f"same logits as the plain model (copied weights): {same}; "
          f"building features for 2,000 candidates: p50 {extra['features_p50_ms_2000']:.1f} ms")


if __name__ == "__main__":
    main()
