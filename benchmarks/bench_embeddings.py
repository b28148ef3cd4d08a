"""Embedding throughput: the Ray actor pool (bf16 where the CPU has it, length-bucketed batches)
against `SentenceTransformer.encode` (fp32, default settings) on the same posts, same process.

    .venv/bin/python benchmarks/bench_embeddings.py [--posts 2000]

Both sides truncate at the model's default 256 tokens, so their vectors are comparable. Rows:
the plain `embed_batch` in this process (torch and OpenVINO backends), then actor pools. Pools
are timed warm: actors are started and have loaded the encoder before the clock starts (their
start-up is reported on its own), as a long-lived backfill or near-line pool runs. On a machine
with CUDA the GPU rows are added beside the CPU ones.
Target (issue 5): ratio >= 4 with cosine >= 0.999 to the fp32 vectors.
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np
import torch

from _common import report, timed
from embeddings.actors import ActorPoolConfig, EmbeddingPool, embed_texts
from embeddings.encoder import (EncoderConfig, default_model_dir, embed_batch, load_encoder,
                                resolve_device_and_dtype)
from recsim.world.corpus import load_corpus


def pool_row(texts, warm_texts, baseline, t_base, label, **pool_kwargs) -> dict:
    cfg = ActorPoolConfig(**pool_kwargs)
    pool, t_start = timed(EmbeddingPool, cfg)
    _, t_ready = timed(pool.wait_ready)  # actors load the encoder asynchronously
    # A long-lived pool has seen every batch shape: warm it on other posts (OpenVINO compiles
    # kernels per shape on first use), then time the benchmark posts.
    embed_texts(warm_texts, cfg, pool=pool)
    vectors, seconds = timed(embed_texts, texts, cfg, pool=pool)
    pool.close()
    device, dtype = resolve_device_and_dtype(cfg.encoder)
    cosine = (vectors * baseline).sum(axis=1)
    return {"path": f"{label}, {cfg.encoder.backend}",
            "device": f"{str(dtype).removeprefix('torch.')} {device}",
            "actors_x_threads": f"{cfg.num_actors}x{cfg.threads_per_actor}",
            "batch": cfg.encoder.batch_size, "start_s": t_start + t_ready, "seconds": seconds,
            "posts_per_s": len(texts) / seconds, "ratio_vs_st": t_base / seconds,
            "min_cosine": float(cosine.min())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=500, help="other posts that warm each pool")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    corpus = load_corpus(max_per_source=(args.posts + args.warm) // 6 + 1, seed=0)["text"].to_list()
    texts, warm_texts = corpus[: args.posts], corpus[args.posts: args.posts + args.warm]
    st = SentenceTransformer(default_model_dir(), device="cpu")
    max_length = st.max_seq_length  # 256 for all-MiniLM-L6-v2
    st.encode(texts[:32])
    baseline, t_base = timed(st.encode, texts)
    rows = [{"path": "SentenceTransformer.encode (default)", "device": "float32 cpu",
             "actors_x_threads": "-", "batch": 32, "start_s": 0.0, "seconds": t_base,
             "posts_per_s": len(texts) / t_base, "ratio_vs_st": 1.0, "min_cosine": 1.0}]

    # The plain function without Ray, same batching: isolates the cost of the actors.
    for backend in ("torch", "openvino"):
        encoder = load_encoder(EncoderConfig(max_length=max_length, backend=backend, device="cpu"))
        bs = encoder.config.batch_size

        def direct(batch_texts):
            order = np.argsort([-len(t) for t in batch_texts], kind="stable")
            out = np.empty((len(batch_texts), baseline.shape[1]), dtype=np.float32)
            for i in range(0, len(batch_texts), bs):
                out[order[i: i + bs]] = embed_batch(encoder, [batch_texts[j] for j in order[i: i + bs]])
            return out
        direct(warm_texts)
        vectors, seconds = timed(direct, texts)
        rows.append({"path": f"embed_batch in process (no Ray), {backend}",
                     "device": f"{str(encoder.dtype).removeprefix('torch.')} {encoder.device}",
                     "actors_x_threads": "-", "batch": bs, "start_s": 0.0, "seconds": seconds,
                     "posts_per_s": len(texts) / seconds, "ratio_vs_st": t_base / seconds,
                     "min_cosine": float((vectors * baseline).sum(axis=1).min())})
        del encoder

    for backend, actors, threads in (("torch", 1, 2), ("openvino", 1, 2), ("openvino", 2, 1)):
        encoder_cfg = EncoderConfig(max_length=max_length, device="cpu", backend=backend)
        rows.append(pool_row(texts, warm_texts, baseline, t_base, "Ray actor pool (bucketed)",
                             num_actors=actors, threads_per_actor=threads, encoder=encoder_cfg))
    if torch.cuda.is_available():
        st_gpu = SentenceTransformer(default_model_dir(), device="cuda")
        st_gpu.encode(texts[:32])
        _, t_st_gpu = timed(st_gpu.encode, texts)
        rows.append({"path": "SentenceTransformer.encode (default)", "device": "float32 cuda",
                     "actors_x_threads": "-", "batch": 32, "start_s": 0.0, "seconds": t_st_gpu,
                     "posts_per_s": len(texts) / t_st_gpu, "ratio_vs_st": t_base / t_st_gpu,
                     "min_cosine": 1.0})
        for batch in (64, 256):
            rows.append(pool_row(texts, warm_texts, baseline, t_base, "Ray actor pool (bucketed)",
                                 num_actors=1, threads_per_actor=2,
                                 encoder=EncoderConfig(max_length=max_length, batch_size=batch)))

    best = max((r for r in rows if r["path"].startswith("Ray") and "cpu" in r["device"]),
               key=lambda r: r["ratio_vs_st"])
    report("embeddings", rows, {"posts": len(texts), "max_length": max_length,
                                "best_cpu_pool_ratio": best["ratio_vs_st"], "target_ratio": 4,
                                "best_cpu_pool_min_cosine": best["min_cosine"],
                                "cuda": torch.cuda.is_available()})
    print(f"best CPU actor pool: {best['ratio_vs_st']:.2f}x SentenceTransformer.encode "
          f"(target >= 4), min cosine to fp32 {best['min_cosine']:.5f} (target >= 0.999)")


if __name__ == "__main__":
    main()
