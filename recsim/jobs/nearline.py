"""The near-line job: replay a world's posts as a stream through the actors into FAISS.

    recsim-nearline                                      # replay the debug world's posts
    recsim-nearline nearline.rate=50 nearline.limit=2000
    recsim-nearline ray.address=auto                     # on a running Ray cluster

The stream itself (micro-batches, backpressure, idempotent store): ranker/retrieval/nearline.py.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from embeddings.actors import model_version
from ranker.retrieval.nearline import NearlineConfig, stream_posts
from recsim.jobs.schemas import register
from recsim.paths import CONF_DIR
from recsim.world.world import build_world

log = logging.getLogger(__name__)
register("nearline")  # conf/nearline.yaml's schemas, before Hydra composes it


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="nearline")
def main(cfg: DictConfig) -> None:
    """Replay the world's posts through the near-line path; write the store and a summary."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    nearline_cfg: NearlineConfig = instantiate(cfg.nearline)
    out = Path(cfg.output_dir or HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    posts = build_world(instantiate(cfg.world)).posts
    result, store, _ = stream_posts(posts, nearline_cfg)
    summary = {**result.summary(), "model_version": model_version(nearline_cfg.pool.encoder),
               "config": OmegaConf.to_container(cfg, resolve=True)}
    store.write_parquet(out / "embeddings.parquet")
    (out / "nearline.json").write_text(json.dumps(summary, indent=2))
    log.info("near-line: %d posts at %.1f posts/s; creation -> searchable p50 %.2f s, p99 %.2f s, "
             "max %.2f s; %d actor restarts; wrote %s", summary["posts"], summary["posts_per_s"],
             summary["freshness_p50_s"], summary["freshness_p99_s"], summary["freshness_max_s"],
             summary["restarts"], out / "embeddings.parquet")


if __name__ == "__main__":
    main()
