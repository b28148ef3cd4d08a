"""Member prompts for the text dual encoder: profile, numbers (raw or quantized), recent posts.

The LLaMA-3 dual-encoder retrieval paper embeds a member from a text prompt with the same kind
of encoder as posts, and found that numeric features written as percentile buckets
("connections: top 10%") let the embedding carry the number, where raw digits ("connections:
523") mostly do not. A prompt here reads, e.g.::

    Member: Software engineer. Interested in technology and science.
    connections: top 10%; activity: top 50%; tenure: bottom 25%; posts per week: top 25%.
    Recently engaged with: Re: new graphics card drivers ... | NASA budget cut ...

Recent posts are taken strictly before the prompt's time (point in time, with the same
PointInTimeEvents search as history vectors and the ranker's features).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ranker.retrieval.history import PointInTimeEvents, last_k
from recsim.world import checks
from recsim.world.timeline import hours_since_start

# member column -> label in the prompt, and how a raw value is written
NUMERIC_FEATURES = {
    "connections": ("connections", "{:.0f}"),
    "activity_level": ("activity", "{:.2f}"),
    "tenure_days": ("tenure", "{:.0f} days"),
    "posts_per_week": ("posts per week", "{:.2f}"),
}
NUMBER_FORMATS = ("raw", "quantized", "none")
TOP_BUCKETS = (1, 5, 10, 25, 50)  # "top X%": the smallest X whose top share holds the value
BOTTOM_BUCKETS = (10, 25, 50)


@dataclass
class PromptConfig:
    numbers: str = "quantized"  # raw | quantized | none
    n_recent: int = 3  # recently engaged posts written into the prompt
    recent_chars: int = 80  # characters kept of each recent post
    key: str = "dual_encoder.prompt"  # where this config sits, for its error messages

    def __post_init__(self):
        key = self.key
        checks.one_of(f"{key}.numbers", self.numbers, NUMBER_FORMATS)
        checks.at_least(f"{key}.n_recent", self.n_recent, 0)
        checks.at_least(f"{key}.recent_chars", self.recent_chars, 1)


def percentile_bucket(values: np.ndarray, reference: np.ndarray) -> list[str]:
    """'top X%' / 'bottom X%' of each value among `reference` (all members).

    The top share of v is the fraction of the reference >= v; a value in the top half gets the
    smallest X in TOP_BUCKETS with top share <= X%, a value in the bottom half the smallest X in
    BOTTOM_BUCKETS with bottom share (fraction <= v) <= X%.
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    v = np.asarray(values, dtype=np.float64)
    n = len(ref)
    top = (n - np.searchsorted(ref, v, side="left")) / n
    bottom = np.searchsorted(ref, v, side="right") / n
    out = []
    for t, b in zip(top, bottom):
        if t <= 0.5:
            out.append(f"top {next(x for x in TOP_BUCKETS if t <= x / 100)}%")
        else:
            out.append(f"bottom {next((x for x in BOTTOM_BUCKETS if b <= x / 100), 50)}%")
    return out


def number_phrases(members: pl.DataFrame, numbers: str, reference: pl.DataFrame) -> list[str]:
    """One 'label: value; ...' phrase per member row, raw or quantized against `reference`."""
    if numbers not in NUMBER_FORMATS:
        raise ValueError(f"prompt.numbers: must be one of {NUMBER_FORMATS}, got {numbers!r}")
    if numbers == "none":
        return [""] * members.height
    parts = []
    for col, (label, fmt) in NUMERIC_FEATURES.items():
        if col not in members.columns:
            raise ValueError(f"members: missing numeric column '{col}' for the prompt")
        values = members[col].to_numpy()
        rendered = (percentile_bucket(values, reference[col].to_numpy()) if numbers == "quantized"
                    else [fmt.format(v) for v in values])
        parts.append([f"{label}: {r}" for r in rendered])
    return ["; ".join(row) + "." for row in zip(*parts)]


def recent_posts_before(impressions: pl.DataFrame, posts: pl.DataFrame, queries: pl.DataFrame,
                        engagement: str, n_recent: int, chars: int) -> list[list[str]]:
    """For each query row (member_id, t_hours), the texts of the member's last `n_recent`
    engaged posts strictly before t_hours (most recent first), each cut to `chars`.

    Returns [Q] lists of 0..n_recent strings, in the order of `queries`' rows.
    """
    engaged = (impressions.filter(pl.col(engagement))
               .select("member_id", "post_id", t=hours_since_start(pl.col("timestamp")))
               .join(posts.select("post_id", "text"), on="post_id")
               .sort(["member_id", "t"]))
    if n_recent <= 0 or engaged.height == 0:
        return [[] for _ in range(queries.height)]
    events = PointInTimeEvents(engaged["member_id"].to_numpy(), engaged["t"].to_numpy())
    start, end = events.before(queries["member_id"].to_numpy(),
                               queries["t_hours"].to_numpy().astype(np.float64))
    flat, lengths = last_k(start, end, n_recent)  # oldest first within each query
    texts = engaged["text"].to_list()
    rows = events.order[flat]
    out, offset = [], 0
    for n in lengths.tolist():
        out.append([" ".join(texts[r].split())[:chars] for r in rows[offset: offset + n][::-1]])
        offset += n
    return out


def render_prompts(members: pl.DataFrame, recent: list[list[str]], cfg: PromptConfig,
                   reference: pl.DataFrame) -> list[str]:
    """Prompt text per member row: profile, numbers per cfg.numbers, recent posts.

    Args:
        members: rows (member_id, profile_text, numeric features), one per prompt.
        recent: per row, recent engaged post texts (from `recent_posts_before`).
        reference: all members, for the percentile buckets.
    """
    if len(recent) != members.height:
        raise ValueError(f"recent: expected {members.height} lists (one per member row), got "
                         f"{len(recent)}")
    numbers = number_phrases(members, cfg.numbers, reference)
    prompts = []
    for profile, nums, posts in zip(members["profile_text"].to_list(), numbers, recent):
        text = f"Member: {profile}"
        if nums:
            text += f"\n{nums}"
        if posts:
            text += "\nRecently engaged with: " + " | ".join(posts)
        prompts.append(text)
    return prompts
