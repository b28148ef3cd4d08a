"""A text dual encoder for members: member prompts and posts through one shared backbone.

As in the LLaMA-3 dual-encoder retrieval paper, a member is embedded from a text prompt
(ranker/retrieval/prompts.py: profile, numbers raw or quantized, recent engaged posts) with
the same encoder that embeds posts, and the encoder is trained contrastively so that a
member's prompt lands near the posts they engage with:

    loss = cross-entropy over  s * prompt_i . [positives ; hard negatives]
           target: column i (the post member i clicked)

In-batch negatives are the other rows' clicked posts (columns of the same member or the same
post are masked: they are not negatives); hard negatives are posts shown to the member in the
same request and not clicked. Every training prompt is rendered at its click's own time, from
engagements strictly before it (no label leak).

The shared backbone is a `TextTower` (embeddings/tower.py: any Hugging Face encoder or causal
LM) and the loss is `info_nce` (embeddings/losses.py) with the hard negatives as extra columns;
this module adds what is specific to members: prompts, training examples and the false-negative
mask. Shape legend: B batch, H hard negatives per row, D dim.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from embeddings.losses import info_nce, same_key
from embeddings.tower import TextTower
from ranker.retrieval.config import DualEncoderConfig
from ranker.retrieval.prompts import recent_posts_before, render_prompts
from recsim.world.timeline import hours_since_start

log = logging.getLogger(__name__)


class DualEncoder:
    """The member and post towers: one `TextTower` (embeddings/tower.py) shared by both."""

    def __init__(self, cfg: DualEncoderConfig):
        self.tower = TextTower.load(cfg.model_dir, cfg.pooling, cfg.num_layers,
                                    cfg.freeze_embeddings, cfg.precision, field="dual_encoder")
        self.cfg = cfg

    def embed_posts(self, posts: pl.DataFrame) -> np.ndarray:
        """[N] posts (their `text`) -> [N, D] unit vectors."""
        return self.tower.embed(posts["text"].to_list(), self.cfg.post_max_length)

    def embed_members(self, prompts: list[str]) -> np.ndarray:
        """[M] member prompts -> [M, D] unit vectors."""
        return self.tower.embed(prompts, self.cfg.prompt_max_length)


def contrastive_loss(members: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                     member_ids: torch.Tensor, post_ids: torch.Tensor, neg_ids: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """InfoNCE (embeddings/losses.py) of member prompts [B, D] against their [B] positives and
    [B*H] hard negatives [B*H, D], with this task's false negatives masked.

    In-batch column j != i is masked when it is the same member's post or the same post as
    row i's positive; a hard negative equal to row i's positive is masked too.
    """
    in_batch = same_key(member_ids, member_ids) | same_key(post_ids, post_ids)  # [B, B]
    exclude = torch.cat([in_batch, same_key(post_ids, neg_ids)], dim=1)  # [B, B + B*H]
    return info_nce(members, positives, scale=scale, negatives=negatives, exclude=exclude)


@dataclass
class TrainingExamples:
    """One row per engagement in the training log: prompt, clicked post, hard negatives."""

    member_ids: np.ndarray  # [N]
    prompts: list[str]  # [N]
    post_rows: np.ndarray  # [N] row of the clicked post in `posts`
    negative_rows: list[np.ndarray]  # [N] rows of shown-not-clicked posts of the same request


def training_examples(impressions: pl.DataFrame, posts: pl.DataFrame, members: pl.DataFrame,
                      cfg: DualEncoderConfig) -> TrainingExamples:
    """Engagements of `impressions` with point-in-time prompts and same-request negatives."""
    e = cfg.engagement
    if e not in impressions.columns:
        raise ValueError(f"dual_encoder.engagement: no column {e!r} in the impressions")
    row_of = posts.select("post_id").with_row_index("row")
    shown = impressions.join(row_of, on="post_id")
    negatives = (shown.filter(~pl.col(e)).group_by("request_id").agg(neg=pl.col("row")))
    clicks = (shown.filter(pl.col(e))
              .with_columns(t_hours=hours_since_start(pl.col("timestamp")))
              .join(negatives, on="request_id", how="left")
              .join(members, on="member_id")
              .sort(["member_id", "t_hours", "row"]))
    recent = recent_posts_before(impressions, posts, clicks, e, cfg.prompt.n_recent,
                                 cfg.prompt.recent_chars)
    prompts = render_prompts(clicks, recent, cfg.prompt, members)
    neg = [np.asarray(n if n is not None else [], dtype=np.int64) for n in clicks["neg"].to_list()]
    return TrainingExamples(clicks["member_id"].to_numpy(), prompts,
                            clicks["row"].to_numpy().astype(np.int64), neg)


def member_prompts_at(impressions: pl.DataFrame, posts: pl.DataFrame, members: pl.DataFrame,
                      member_ids: np.ndarray, t_hours: float, cfg: DualEncoderConfig) -> list[str]:
    """Prompts of `member_ids` at time t_hours (engagements strictly before it)."""
    rows = (pl.DataFrame({"member_id": np.asarray(member_ids, dtype=np.int64)})
            .with_columns(t_hours=pl.lit(float(t_hours))).join(members, on="member_id", how="left"))
    if rows["profile_text"].null_count():
        missing = rows.filter(pl.col("profile_text").is_null())["member_id"].head(5).to_list()
        raise KeyError(f"member_id: {missing} not in the members table")
    recent = recent_posts_before(impressions, posts, rows, cfg.engagement, cfg.prompt.n_recent,
                                 cfg.prompt.recent_chars)
    return render_prompts(rows, recent, cfg.prompt, members)


def train_dual_encoder(encoder: DualEncoder, examples: TrainingExamples, posts: pl.DataFrame,
                       cfg: DualEncoderConfig) -> list[float]:
    """Fine-tune `encoder` in place on `examples`; returns the loss of each step."""
    n = len(examples.prompts)
    if n < 2:
        raise ValueError(f"dual encoder: {n} training engagements; need at least 2")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    texts = posts["text"].to_list()
    post_ids = posts["post_id"].to_numpy()
    tower = encoder.tower
    params = tower.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1))
        * max(0.0, 1.0 - s / max(cfg.steps, 1)))
    tower.model.train()
    losses = []
    for step in range(cfg.steps):
        batch = rng.choice(n, size=min(cfg.batch_size, n), replace=False)
        pos = examples.post_rows[batch]
        neg = np.array([rng.choice(examples.negative_rows[i]) if len(examples.negative_rows[i])
                        else rng.integers(len(texts))
                        for i in batch for _ in range(cfg.hard_negatives)], dtype=np.int64)
        loss = contrastive_loss(
            tower.encode([examples.prompts[i] for i in batch], cfg.prompt_max_length),
            tower.encode([texts[r] for r in pos], cfg.post_max_length),
            tower.encode([texts[r] for r in neg], cfg.post_max_length)
            if len(neg) else torch.empty(0, tower.dim),
            torch.as_tensor(examples.member_ids[batch]), torch.as_tensor(post_ids[pos]),
            torch.as_tensor(post_ids[neg]), cfg.scale)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % max(cfg.steps // 5, 1) == 0:
            log.info("dual encoder step %d/%d: loss %.3f", step + 1, cfg.steps,
                     float(np.mean(losses[-max(cfg.steps // 5, 1):])))
    tower.model.eval()
    return losses
