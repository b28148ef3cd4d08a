"""A text dual encoder for members: member prompts and posts through one shared backbone.

As in the LLaMA-3 dual-encoder retrieval paper, a member is embedded from a text prompt
(ranker/prompts.py: profile, numbers raw or quantized, recent engaged posts) with the same
encoder that embeds posts, and the encoder is trained contrastively so that a member's prompt
lands near the posts they engage with:

    loss = cross-entropy over  s * prompt_i . [positives ; hard negatives]
           target: column i (the post member i clicked)

In-batch negatives are the other rows' clicked posts (columns of the same member or the same
post are masked: they are not negatives); hard negatives are posts shown to the member in the
same request and not clicked. Every training prompt is rendered at its click's own time, from
engagements strictly before it (no label leak).

The backbone is any Hugging Face directory: an encoder (mean / CLS pooling) or a causal LM
(last-token pooling; right padding). Shape legend: B batch, H hard negatives per row, D dim.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from embeddings.encoder import POOLINGS, default_model_dir, pool
from embeddings.train import load_trainable
from ranker.retrieval.prompts import PromptConfig, recent_posts_before, render_prompts
from recsim.world.world import hours_since_start

log = logging.getLogger(__name__)


@dataclass
class DualEncoderConfig:
    model_dir: str | None = None  # any HF encoder or causal LM dir; None: the MiniLM package
    pooling: str = "mean"  # mean | cls | last (causal LMs)
    num_layers: int | None = None  # keep only the first N layers (fast tests)
    prompt_max_length: int = 128
    post_max_length: int = 64
    steps: int = 100
    batch_size: int = 32
    hard_negatives: int = 1  # per row: shown-but-not-clicked posts of the same request
    learning_rate: float = 5e-5
    warmup_steps: int = 10
    scale: float = 20.0  # inverse temperature of the logits
    freeze_embeddings: bool = True
    precision: str = "auto"  # auto | bf16 | fp32 (autocast on CPU)
    engagement: str = "click"
    seed: int = 0
    prompt: PromptConfig = field(default_factory=PromptConfig)

    def __post_init__(self):
        from embeddings.config import PRECISIONS, check_model_dir
        from recsim.world import checks
        from recsim.world.rewards import ACTIONS

        key = "retrieval_sweep.dual_encoder"
        if self.model_dir is not None:
            check_model_dir(self.model_dir, f"{key}.model_dir")
        checks.one_of(f"{key}.pooling", self.pooling, POOLINGS)
        checks.at_least(f"{key}.num_layers", self.num_layers, 1, optional=True)
        checks.at_least(f"{key}.prompt_max_length", self.prompt_max_length, 1)
        checks.at_least(f"{key}.post_max_length", self.post_max_length, 1)
        checks.at_least(f"{key}.steps", self.steps, 1)
        checks.at_least(f"{key}.batch_size", self.batch_size, 2)  # in-batch negatives
        checks.at_least(f"{key}.hard_negatives", self.hard_negatives, 0)
        checks.positive(f"{key}.learning_rate", self.learning_rate)
        checks.at_least(f"{key}.warmup_steps", self.warmup_steps, 0)
        checks.positive(f"{key}.scale", self.scale)
        checks.one_of(f"{key}.precision", self.precision, PRECISIONS)
        checks.one_of(f"{key}.engagement", self.engagement, ACTIONS)


class DualEncoder:
    """Tokenizer + backbone + pooling shared by the member and post towers."""

    def __init__(self, cfg: DualEncoderConfig):
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"dual_encoder.pooling: must be one of {POOLINGS}, got {cfg.pooling!r}")
        model_dir = cfg.model_dir or default_model_dir()
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"dual_encoder.model_dir: {model_dir} is not a directory")
        self.model, self.tokenizer, self.autocast = load_trainable(
            model_dir, cfg.num_layers, cfg.freeze_embeddings, cfg.precision)
        if self.tokenizer.pad_token is None:  # causal LMs often have none
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"  # pool(..., "last") expects right padding
        self.cfg = cfg

    def encode(self, texts: list[str], max_length: int) -> torch.Tensor:
        """[B] texts -> [B, D] pooled states (not normalised; gradients flow)."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                max_length=max_length, return_tensors="pt")
        with self.autocast:
            hidden = self.model(**tokens).last_hidden_state
        return pool(hidden.float(), tokens["attention_mask"], self.cfg.pooling)

    def embed(self, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
        """Texts -> [N, D] float32 unit vectors, in input order (batched by length)."""
        was_training = self.model.training
        self.model.eval()
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = None
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                rows = order[i: i + batch_size]
                v = F.normalize(self.encode([texts[j] for j in rows], max_length), dim=-1).numpy()
                if out is None:
                    out = np.empty((len(texts), v.shape[1]), dtype=np.float32)
                out[rows] = v
        self.model.train(was_training)
        return out

    def embed_posts(self, posts: pl.DataFrame) -> np.ndarray:
        return self.embed(posts["text"].to_list(), self.cfg.post_max_length)

    def embed_members(self, prompts: list[str]) -> np.ndarray:
        return self.embed(prompts, self.cfg.prompt_max_length)


def contrastive_loss(members: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                     member_ids: torch.Tensor, post_ids: torch.Tensor, neg_ids: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """InfoNCE of member prompts [B, D] against [B] positives and [B*H] hard negatives.

    In-batch column j != i is masked when it is the same member's post or the same post as
    row i's positive (it would be a false negative); a hard negative equal to row i's positive
    is masked too.
    """
    m = F.normalize(members, dim=-1)
    candidates = F.normalize(torch.cat([positives, negatives]), dim=-1)
    logits = scale * m @ candidates.T  # [B, B + B*H]
    same = (member_ids[:, None] == member_ids[None, :]) | (post_ids[:, None] == post_ids[None, :])
    same.fill_diagonal_(False)
    false_neg = torch.cat([same, post_ids[:, None] == neg_ids[None, :]], dim=1)
    logits = logits.masked_fill(false_neg, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(m)))


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
    params = [p for p in encoder.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1))
        * max(0.0, 1.0 - s / max(cfg.steps, 1)))
    encoder.model.train()
    losses = []
    for step in range(cfg.steps):
        batch = rng.choice(n, size=min(cfg.batch_size, n), replace=False)
        pos = examples.post_rows[batch]
        neg = np.array([rng.choice(examples.negative_rows[i]) if len(examples.negative_rows[i])
                        else rng.integers(len(texts))
                        for i in batch for _ in range(cfg.hard_negatives)], dtype=np.int64)
        loss = contrastive_loss(
            encoder.encode([examples.prompts[i] for i in batch], cfg.prompt_max_length),
            encoder.encode([texts[r] for r in pos], cfg.post_max_length),
            encoder.encode([texts[r] for r in neg], cfg.post_max_length)
            if len(neg) else torch.empty(0, encoder.model.config.hidden_size),
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
    encoder.model.eval()
    return losses
