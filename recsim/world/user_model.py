"""The hidden user model of the world: who likes what, and the expected engagement of any slate.

`build_world` (recsim/world/world.py) draws its arrays and samples the logged outcomes from
`UserModel.outcome_probabilities`; `UserModel.expected_outcomes` gives the ground truth of any
slate, so a policy's true online value can be computed for whatever it would show.

    1. relevance_logit        topic affinity (the member's interest in the post's label; with
                              world.affinity=topics their preference . the post's fine topic
                              mixture, recsim/world/topics.py), author affinity, freshness, post
                              quality and (when `language_weight` > 0) the member's gap to the
                              post's language
    2. examination            position ** -position_decay (a position-based click model)
    3. outcome_probabilities  click = examination * sigmoid(relevance); like, comment, share
                              and log-normal dwell follow a click
    4. expected_outcomes      the same for a frame of (member_id, post_id, position, timestamp)
    5. sample_outcomes        one draw of the member's response from those probabilities (the
                              logged outcomes of build_world, and the arms of an online A/B)

Shape legend: N members, P posts, A authors, T topics, D latent dim, L post languages,
K fine topics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsim.world.schema import lookup_sorted
from recsim.world.timeline import hours_since_start
from recsim.world.topics import pair_dot

if TYPE_CHECKING:
    from recsim.world.world import WorldConfig


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class UserModel:
    """The hidden truth: who likes what. Arrays are indexed by row position, not by id.

    interests:      [N, T] member topic mixture (rows sum to 1)
    member_latent:  [N, D] member taste vector (author affinity = member_latent . author_latent)
    author_latent:  [A, D]
    post_topic:     [P] topic index; post_author: [P] author index
    post_quality:   [P] additive logit term
    post_created:   [P] hours since WORLD_START
    language_gap:   [N, L] 0 (member's language), 0.5 (English, not the member's) or 1, per
                    post language; post_lang: [P] index into its columns (None: no languages)
    fine_pref:      [N, K] member preference over fine topics, post_fine: [P, K] post mixture
                    over them, fine_affine: (shift, scale); when set (world.affinity=topics) the
                    topic affinity is shift + scale * fine_pref[m] . post_fine[p], else
                    interests[m, post_topic[p]]
    member_ids / post_ids: sorted ids; row i of the arrays belongs to member_ids[i] / post_ids[i]
    """

    config: WorldConfig
    member_ids: np.ndarray
    post_ids: np.ndarray
    interests: np.ndarray
    member_latent: np.ndarray
    author_latent: np.ndarray
    post_topic: np.ndarray
    post_author: np.ndarray
    post_quality: np.ndarray
    post_created: np.ndarray
    language_gap: np.ndarray | None = None
    post_lang: np.ndarray | None = None
    fine_pref: np.ndarray | None = None
    post_fine: np.ndarray | None = None
    fine_affine: tuple[float, float] = (0.0, 1.0)

    def member_index(self, member_ids: np.ndarray) -> np.ndarray:
        return lookup_sorted(self.member_ids, member_ids, "member_id")

    def post_index(self, post_ids: np.ndarray) -> np.ndarray:
        return lookup_sorted(self.post_ids, post_ids, "post_id")

    def topic_affinity(self, m: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Member rows m and post rows p (broadcastable) -> the content term of relevance."""
        if self.post_fine is None:
            return self.interests[m, self.post_topic[p]]
        shift, scale = self.fine_affine
        return shift + scale * pair_dot(self.fine_pref, self.post_fine, m, p)

    def relevance_logit(self, m: np.ndarray, p: np.ndarray, t_hours: np.ndarray) -> np.ndarray:
        """Logit of engaging with post p if examined, for member m at time t (any equal shapes)."""
        c = self.config
        author_aff = np.einsum(
            "...d,...d->...", self.member_latent[m], self.author_latent[self.post_author[p]]
        ) / np.sqrt(c.latent_dim)
        age = np.maximum(t_hours - self.post_created[p], 0.0)
        fresh = 0.5 ** (age / c.freshness_halflife_hours)
        logit = (c.base_logit + c.topic_weight * self.topic_affinity(m, p)
                 + c.author_weight * author_aff + c.freshness_weight * fresh + self.post_quality[p])
        if c.language_weight and self.language_gap is not None:
            logit = logit - c.language_weight * self.language_gap[m, self.post_lang[p]]
        return logit

    def examination(self, position: np.ndarray) -> np.ndarray:
        return np.asarray(position, dtype=np.float64) ** -self.config.position_decay

    def outcome_probabilities(self, m, p, t_hours, position) -> dict[str, np.ndarray]:
        """Probabilities of each outcome, and expected dwell seconds, for shown posts."""
        affinity = self.topic_affinity(m, p)
        examine = self.examination(position)
        p_click = examine * _sigmoid(self.relevance_logit(m, p, t_hours))
        quality = self.post_quality[p]
        p_like = p_click * _sigmoid(-1.0 + 2.0 * affinity + quality)
        p_comment = p_click * _sigmoid(-3.0 + 2.0 * affinity + quality)
        p_share = p_click * _sigmoid(-3.5 + 2.0 * affinity + quality)
        mu, sigma = np.log(15.0) + affinity, 0.5  # log-normal dwell after a click
        e_dwell = p_click * np.exp(mu + sigma**2 / 2) + (1 - p_click) * 2.0 * examine
        return {"click": p_click, "like": p_like, "comment": p_comment, "share": p_share,
                "dwell_seconds": e_dwell, "_mu": mu, "_sigma": np.full_like(mu, sigma),
                "_examine": examine}

    def expected_outcomes(self, slates: pl.DataFrame) -> pl.DataFrame:
        """Ground-truth expected engagement of any slates.

        Args:
            slates: rows (member_id, post_id, position, timestamp), any number per request.
        Returns:
            `slates` with columns p_click, p_like, p_comment, p_share, e_dwell_seconds added.
            Summing p_click over a request's rows gives its expected clicks.
        """
        for col in ("member_id", "post_id", "position", "timestamp"):
            if col not in slates.columns:
                raise ValueError(f"slates: missing column '{col}'")
        m = self.member_index(slates["member_id"].to_numpy())
        p = self.post_index(slates["post_id"].to_numpy())
        t = slates.select(hours_since_start(pl.col("timestamp"))).to_series().to_numpy()
        probs = self.outcome_probabilities(m, p, t, slates["position"].to_numpy())
        return slates.with_columns(
            p_click=probs["click"], p_like=probs["like"], p_comment=probs["comment"],
            p_share=probs["share"], e_dwell_seconds=probs["dwell_seconds"],
        )


def sample_outcomes(probs: dict[str, np.ndarray],
                    rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The member responds: one draw of every outcome from `UserModel.outcome_probabilities`.

    Draw order (fixed: a world's log is a function of its seed): a uniform per shown post for
    the click (u < p_click); then, in turn for like, comment and share, a uniform per post
    against P(action | click) (an action needs the click); then the dwell: log-normal
    (_mu, _sigma) after a click, else exponential(2 s) * examination.

    Args:
        probs: outcome_probabilities' dict, every array of one shape [*] (e.g. [R, S] or [N]).
        rng: the generator to draw from; it advances by six draws per post (both dwell draws
             are made for every post, whichever is used).
    Returns:
        click, like, comment, share: bool [*]; dwell_seconds: float64 [*].
    """
    shape = np.shape(probs["click"])
    click = rng.random(shape) < probs["click"]
    p_click = np.maximum(probs["click"], 1e-12)
    like, comment, share = (click & (rng.random(shape) < probs[key] / p_click)
                            for key in ("like", "comment", "share"))
    dwell = np.where(
        click,
        rng.lognormal(probs["_mu"], probs["_sigma"]),
        rng.exponential(2.0, size=shape) * probs["_examine"],
    )
    return {"click": click, "like": like, "comment": comment, "share": share,
            "dwell_seconds": dwell}
