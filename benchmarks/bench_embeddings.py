"""Embedding throughput: the Ray actor pool (bf16 where the CPU has it, length-bucketed batches)
against `SentenceTransformer.encode` (fp32, default settings) on the same posts, same process.

    .venv/bin/python benchmarks/bench_embeddings.py [--posts 2000]
Target (issue 5): ratio >= 4 with cosine >= 0.999 to the fp32 vectors.
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np

from _common import report, timed
from embeddings.actors import ActorPoolConfig, embed_texts, ensure_ray
from embeddings.encoder import EncoderConfig, default_model_dir, resolve_device_and_dtype
from recsim.corpus import load_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=256, help="the same for both sides")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    texts = load_corpus(max_per_source=args.posts // 6 + 1, seed=0)["text"].to_list()[: args.posts]
    st = SentenceTransformer(default_model_dir(), device="cpu")
    st.max_seq_length = args.max_length
    baseline, t_base = timed(st.encode, texts)

    cfg = ActorPoolConfig(encoder=EncoderConfig(max_length=args.max_length))
    ensure_ray(num_cpus=cfg.num_actors * cfg.threads_per_actor)  # cluster start-up not timed
    vectors, t_pool = timed(embed_texts, texts, cfg)
    cosine = (vectors * baseline).sum(axis=1)
    device, dtype = resolve_device_and_dtype(cfg.encoder)

    rows = [
        {"path": "SentenceTransformer.encode (fp32, default)", "posts": len(texts),
         "seconds": t_base, "posts_per_s": len(texts) / t_base},
        {"path": f"Ray actor pool ({dtype} on {device}, bucketed)", "posts": len(texts),
         "seconds": t_pool, "posts_per_s": len(texts) / t_pool},
    ]
    ratio = t_base / t_pool
    report("embeddings", rows, {"speedup": ratio, "target_speedup": 4,
                                "min_cosine_to_fp32": float(cosine.min()),
                                "mean_cosine_to_fp32": float(cosine.mean()),
                                "max_length": args.max_length})
    print(f"actor pool {ratio:.2f}x SentenceTransformer.encode (target >= 4); "
          f"cosine to fp32: min {cosine.min():.5f}, mean {cosine.mean():.5f} (target >= 0.999)")


if __name__ == "__main__":
    main()
