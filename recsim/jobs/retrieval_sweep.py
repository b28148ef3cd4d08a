"""Retrieval evaluation: recall@K of held-out engagements per member-vector method and segment.

    recsim-retrieval-sweep                           # the grid below, one table
    recsim-retrieval-sweep world=debug retrieval_sweep.dual_encoder.steps=20
    python -m recsim.jobs.retrieval_sweep --cfg job  # the composed config (conf/retrieval_sweep.yaml)

The log is split in time (the first `train_fraction` of impressions trains, the rest is held
out). Every member with a held-out engagement is a query; recall@K is the share of their
held-out engaged posts in their top K, averaged over members. The grid:

    history      recency-weighted mean of engaged post vectors before the split, on each index
                 type; members without history fall back to their profile text through the
                 post encoder ("profile") or to the mean engaged post ("prior")
    dual encoder member prompt (profile, numbers raw or quantized, recent posts) and posts
                 through one shared backbone, untrained and after contrastive training on the
                 training period (exact index)

Segments: all members, new members (tenure <= new_member_tenure_days or at most
new_member_max_history engagements before the split) and the rest. A second table probes how
well each member embedding carries the numeric features: the cross-validated R^2 of a ridge
regression from the vector to each feature's percentile rank.

Writes retrieval_sweep.md, retrieval_sweep.csv and retrieval_sweep.json to the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
import numpy as np
import polars as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from ranker.retrieval.dual_encoder import (DualEncoder, DualEncoderConfig, member_prompts_at,
                                 train_dual_encoder, training_examples)
from ranker.retrieval.history import MemberHistory
from ranker.retrieval.prompts import NUMERIC_FEATURES, PromptConfig
from ranker.retrieval.index import PostIndex, RetrievalConfig, index_type
from ranker.retrieval.recall import recall_per_member
from recsim.paths import CONF_DIR
from ranker.retrieval.prompts import NUMBER_FORMATS
from recsim.jobs.schemas import register
from recsim.report.tables import frame_table
from recsim.world import checks
from recsim.world.rewards import ACTIONS
from recsim.world.timeline import TimeSplit, time_split

if TYPE_CHECKING:
    from recsim.world.world import World

log = logging.getLogger(__name__)

SEGMENTS = ("all", "new", "established")
FALLBACKS = ("profile", "prior")  # members without history: profile text or the mean post


@dataclass
class SweepConfig:
    ks: list[int] = field(default_factory=lambda: [100, 500, 2000])
    train_fraction: float = 0.7
    engagement: str = "click"
    indexes: list[str] = field(default_factory=lambda: ["Flat", "HNSW", "IVFFlat", "IVFPQ"])
    history_fallbacks: list[str] = field(default_factory=lambda: ["profile", "prior"])
    dual_encoder_numbers: list[str] = field(default_factory=lambda: ["raw", "quantized"])
    train_dual_encoder: bool = True
    new_member_tenure_days: int = 90
    new_member_max_history: int = 2
    probe_folds: int = 5
    dual_encoder: DualEncoderConfig = field(default_factory=lambda: DualEncoderConfig(
        key="retrieval_sweep.dual_encoder",
        prompt=PromptConfig(key="retrieval_sweep.dual_encoder.prompt")))

    def __post_init__(self):
        checks.all_at_least("retrieval_sweep.ks", self.ks, 1)
        checks.between("retrieval_sweep.train_fraction", self.train_fraction, 0, 1,
                       open_low=True, open_high=True)
        checks.one_of("retrieval_sweep.engagement", self.engagement, ACTIONS)
        if not self.indexes:
            raise ValueError("retrieval_sweep.indexes: must not be empty")
        for kind in self.indexes:
            try:
                index_type(kind)
            except ValueError as err:
                raise ValueError(str(err).replace("retrieval.index", "retrieval_sweep.indexes", 1)) from None
        checks.all_known("retrieval_sweep.history_fallbacks", self.history_fallbacks, FALLBACKS)
        checks.all_known("retrieval_sweep.dual_encoder_numbers", self.dual_encoder_numbers,
                         NUMBER_FORMATS, nonempty=False)
        checks.at_least("retrieval_sweep.new_member_tenure_days", self.new_member_tenure_days, 0)
        checks.at_least("retrieval_sweep.new_member_max_history", self.new_member_max_history, 0)
        checks.at_least("retrieval_sweep.probe_folds", self.probe_folds, 2)


register("retrieval_sweep")  # conf/retrieval_sweep.yaml's schemas (SweepConfig's among them)


def segment_recall(per_member: pl.DataFrame, segment_of: pl.DataFrame,
                   ks: list[int]) -> list[dict]:
    """Mean recall@k per segment ('all' plus each value of segment_of's 'segment')."""
    joined = per_member.join(segment_of, on="member_id", how="left")
    rows = []
    for seg in SEGMENTS:
        part = joined if seg == "all" else joined.filter(pl.col("segment") == seg)
        rows.append({"segment": seg, "members": part.height,
                     **{f"recall@{k}": float(part[f"recall@{k}"].mean()) if part.height else None
                        for k in ks}})
    return rows


def number_probe(vectors: np.ndarray, members: pl.DataFrame, folds: int, seed: int,
                 ridge: float = 1.0) -> dict[str, float]:
    """Cross-validated R^2 of a ridge regression from member vectors to each numeric feature's
    percentile rank: how much of the number the embedding carries."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(vectors)) % folds
    x = np.hstack([vectors, np.ones((len(vectors), 1))])
    out = {}
    for col in NUMERIC_FEATURES:
        y = members[col].rank("average").to_numpy() / members.height
        pred = np.empty_like(y)
        for f in range(folds):
            tr, te = fold != f, fold == f
            w = np.linalg.solve(x[tr].T @ x[tr] + ridge * np.eye(x.shape[1]), x[tr].T @ y[tr])
            pred[te] = x[te] @ w
        out[col] = float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return out


def run_sweep(world_cfg, embed_cfg, retrieval_cfg: RetrievalConfig, sweep: SweepConfig,
              output_dir: str | Path, corpus: pl.DataFrame | None = None) -> dict:
    """Build the world, evaluate every method of the grid, write the tables; return them."""
    from recsim.world.world import build_world

    _check_grid(sweep)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    # 1. World, split in time; queries are the members with held-out engagements.
    world = build_world(world_cfg, corpus)
    split = time_split(world.impressions, sweep.train_fraction)
    held_out = (split.test.filter(pl.col(sweep.engagement))
                .select("member_id", "post_id").unique())
    query_members = held_out["member_id"].unique().sort().to_numpy()
    post_ids = world.posts["post_id"].to_numpy()
    timings["world"] = time.perf_counter() - t0
    log.info("sweep: %d posts, %d query members, %d held-out engagements", len(post_ids),
             len(query_members), held_out.height)

    # 2. Post vectors (the run's post encoder) and history vectors at the split.
    t = time.perf_counter()
    post_vectors, history, profile_vectors = _embed(world, split, query_members, embed_cfg,
                                                    retrieval_cfg, sweep)
    segment_of = _segments(history, world.members, query_members, split.split_hours, sweep)
    timings["post_embeddings"] = time.perf_counter() - t
    grid = _Grid(retrieval_cfg, post_ids, query_members, held_out, segment_of, sorted(sweep.ks))

    # 3. History vectors on every index type (and the other fallbacks on the exact index).
    _history_methods(grid, history, post_vectors, profile_vectors, split.split_hours, sweep)
    # 4. Dual encoder: raw vs quantized numbers, untrained vs trained (exact index).
    probe_rows = [row for numbers in sweep.dual_encoder_numbers
                  for row in _dual_encoder_method(grid, world, split, sweep, numbers, world_cfg.seed)]
    timings["total"] = time.perf_counter() - t0

    result = {"table": pl.DataFrame(grid.rows),
              "number_probe": pl.DataFrame(probe_rows) if probe_rows else pl.DataFrame(),
              "timings": timings,
              "world": {"posts": len(post_ids), "members": world.members.height,
                        "impressions": world.impressions.height,
                        "query_members": len(query_members), "held_out": held_out.height,
                        "split": str(split.split_time)}}
    write_tables(result, output_dir)
    return result


def _check_grid(sweep: SweepConfig) -> None:
    """Fail on an unknown index type or history fallback before any work."""
    for kind in sweep.indexes:
        index_type(kind)
    for fb in sweep.history_fallbacks:
        if fb not in ("profile", "prior"):
            raise ValueError(f"retrieval_sweep.history_fallbacks: unknown {fb!r}; choose from "
                             "['profile', 'prior']")


def _embed(world: World, split: TimeSplit, query_members: np.ndarray, embed_cfg, retrieval_cfg: RetrievalConfig,
           sweep: SweepConfig) -> tuple[np.ndarray, MemberHistory, np.ndarray]:
    """Step 2: post vectors, members' engagement histories before the split over them, and the
    query members' profile vectors (in member_id order), all from the run's post encoder."""
    from embeddings.actors import embed_texts

    posts, members = world.posts, world.members
    post_vectors = embed_texts(posts["text"].to_list(), embed_cfg, desc="embedding posts")
    history = MemberHistory(split.train, posts["post_id"].to_numpy(), post_vectors,
                            retrieval_cfg.history_halflife_days, sweep.engagement)
    query_rows = members.filter(pl.col("member_id").is_in(query_members.tolist())).sort("member_id")
    profile_vectors = embed_texts(query_rows["profile_text"].to_list(), embed_cfg,
                                  desc="embedding profiles")
    return post_vectors, history, profile_vectors


def _segments(history: MemberHistory, members: pl.DataFrame, query_members: np.ndarray,
              split_h: float, sweep: SweepConfig) -> pl.DataFrame:
    """Each query member's segment: new (short tenure or little history) or established."""
    _, counts = history.vectors_at(query_members, np.full(len(query_members), split_h))
    return pl.DataFrame({"member_id": query_members, "n_history": counts}).join(
        members.select("member_id", "tenure_days"), on="member_id").with_columns(
        segment=pl.when((pl.col("tenure_days") <= sweep.new_member_tenure_days)
                        | (pl.col("n_history") <= sweep.new_member_max_history))
        .then(pl.lit("new")).otherwise(pl.lit("established")))


@dataclass
class _Grid:
    """The sweep's queries and its table: `evaluate` adds one method's rows, one per segment."""

    retrieval_cfg: RetrievalConfig
    post_ids: np.ndarray
    query_members: np.ndarray
    held_out: pl.DataFrame  # member_id, post_id of every held-out engagement
    segment_of: pl.DataFrame  # member_id, n_history, tenure_days, segment
    ks: list[int]  # sorted
    rows: list[dict] = field(default_factory=list)

    def evaluate(self, method: str, numbers: str, trained: str, kind: str,
                 post_vectors: np.ndarray, queries: np.ndarray, seconds: float | None = None):
        """Index the post vectors in a `kind` index, search it with the query members' vectors,
        and add recall@K per segment with the build, search and training times."""
        ks = self.ks
        k_max = min(max(ks), len(self.post_ids))
        cfg = dataclasses.replace(self.retrieval_cfg, index=kind, top_k=k_max)
        t_build = time.perf_counter()
        index = PostIndex(self.post_ids, post_vectors, cfg)
        t_search = time.perf_counter()
        retrieved = index.search(self.query_members, queries, k_max)
        t_end = time.perf_counter()
        per_member = recall_per_member(retrieved, self.held_out, tuple(ks))
        for r in segment_recall(per_member, self.segment_of.select("member_id", "segment"), ks):
            self.rows.append({"member_vectors": method, "numbers": numbers, "trained": trained,
                              "index": kind, **r, "build_s": t_search - t_build,
                              "search_s": t_end - t_search, "train_s": seconds})
        log.info("%s %s %s %s: recall@%d %.3f", method, numbers, trained, kind, ks[-1],
                 self.rows[-3][f"recall@{ks[-1]}"])


def _history_methods(grid: _Grid, history: MemberHistory, post_vectors: np.ndarray,
                     profile_vectors: np.ndarray, split_h: float, sweep: SweepConfig) -> None:
    """Step 3: history vectors with each fallback; the first on every index type, the others
    on the exact index only."""
    query_members = grid.query_members
    for i, fb in enumerate(sweep.history_fallbacks):
        queries, _ = history.vectors_at(query_members, np.full(len(query_members), split_h),
                                        fallback=profile_vectors if fb == "profile" else None)
        for kind in (sweep.indexes if i == 0 else sweep.indexes[:1]):
            grid.evaluate(f"history ({fb} fallback)", "-", "-", index_type(kind), post_vectors,
                          queries)


def _dual_encoder_method(grid: _Grid, world: World, split: TimeSplit, sweep: SweepConfig, numbers: str,
                         seed: int) -> list[dict]:
    """Step 4 for one way of writing numbers: the dual encoder untrained and (when
    sweep.train_dual_encoder) trained, on the exact index; returns their number-probe rows."""
    posts, members = world.posts, world.members
    all_members = members.sort("member_id")
    de_cfg = dataclasses.replace(sweep.dual_encoder, engagement=sweep.engagement,
                                 prompt=dataclasses.replace(sweep.dual_encoder.prompt,
                                                            numbers=numbers))
    encoder = DualEncoder(de_cfg)
    prompts = member_prompts_at(split.train, posts, members, all_members["member_id"].to_numpy(),
                                split.split_hours, de_cfg)
    is_query = np.isin(all_members["member_id"].to_numpy(), grid.query_members)
    stages = [("untrained", None)] + ([("trained", de_cfg)] if sweep.train_dual_encoder else [])
    probe_rows = []
    for stage, train_cfg in stages:
        seconds = None
        if train_cfg is not None:
            t = time.perf_counter()
            examples = training_examples(split.train, posts, members, train_cfg)
            train_dual_encoder(encoder, examples, posts, train_cfg)
            seconds = time.perf_counter() - t
        member_vectors = encoder.embed_members(prompts)
        grid.evaluate("dual encoder", numbers, stage, "Flat", encoder.embed_posts(posts),
                      member_vectors[is_query], seconds)
        probe_rows.append({"member_vectors": "dual encoder", "numbers": numbers, "trained": stage,
                           **number_probe(member_vectors, all_members, sweep.probe_folds, seed)})
    return probe_rows


def write_tables(result: dict, output_dir: str | Path) -> None:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    table, probe = result["table"], result["number_probe"]
    table.write_csv(out / "retrieval_sweep.csv")
    (out / "retrieval_sweep.json").write_text(json.dumps(
        {"recall": table.to_dicts(), "number_probe": probe.to_dicts(),
         "timings": result["timings"], "world": result["world"]}, indent=2, default=str))
    lines = ["# Retrieval sweep", "",
             "recall@K of each query member's held-out engagements (mean over members); "
             f"world: {result['world']}", "", frame_table(table)]
    if probe.height:
        lines += ["", "## Numbers carried by the member embedding",
                  "", "cross-validated R^2 of a ridge probe from the member vector to each "
                  "feature's percentile rank", "", frame_table(probe)]
    (out / "retrieval_sweep.md").write_text("\n".join(lines) + "\n")
    log.info("retrieval sweep tables in %s", out)


def sweep_from_config(cfg, output_dir: str | Path) -> float:
    """Build the stage configs from the composed config, run the sweep, log the table; return
    history recall@max(K) (all members)."""
    sweep: SweepConfig = instantiate(cfg.retrieval_sweep)
    result = run_sweep(instantiate(cfg.world), instantiate(cfg.embeddings),
                       instantiate(cfg.retrieval), sweep, output_dir)
    table = result["table"]
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, float_precision=4):
        log.info("retrieval sweep:\n%s", table.drop("build_s", "search_s", "train_s"))
        if result["number_probe"].height:
            log.info("numbers carried by the member embedding (R^2):\n%s", result["number_probe"])
    return float(table[f"recall@{max(sweep.ks)}"][0])


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="retrieval_sweep")
def main(cfg: DictConfig) -> float:
    return sweep_from_config(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
