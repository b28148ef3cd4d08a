"""A synthetic feed world over real posts: members, authors, a true user model, logged impressions.

The world is the ground truth every offline estimate is checked against. It holds

    posts        real corpus texts, each given an author and a creation time   (schema.POSTS)
    members      profile text and numeric features                              (schema.MEMBERS)
    authors      author_id, home topic, popularity
    candidates   per request, the posts the logging policy chose from           (schema.CANDIDATES)
    impressions  per request, the logged slate with exact propensities and the
                 sampled outcomes                                               (schema.IMPRESSIONS)
    truth        the hidden `UserModel` (recsim/world/user_model.py): interests, affinities,
                 quality; it gives the expected engagement of *any* slate for any member, so a
                 policy's true online value can be computed for any slate it produces.

How one request is simulated (`build_world`, all steps vectorised over requests):

    1. A member is drawn in proportion to their activity; the request gets a time.
    2. Candidates: C live posts (created within `post_window_days` before the request), half
       drawn from topics sampled from the member's interests, half uniformly; no duplicates.
    3. The logging policy (`logging_policy`, sampled by recsim.world.slates) fills S slots one
       at a time (Plackett-Luce without replacement): at each slot, (1 - eps) *
       softmax(score / temperature) + eps * uniform over the candidates still unshown. The
       probability of the chosen post at its slot, given the earlier slots, is the logged
       `propensity`; per request and slot they sum to 1.
    4. The member responds (see recsim/world/user_model.py): a position-based click model with
       examination probability position ** -position_decay, and a relevance from topic
       affinity (`affinity`: the label's interest, or fine topics read from the text), author
       affinity, freshness, post quality and (when `language_weight` > 0) language: a post in a language the member does not read costs `language_weight` on the
       logit, an English post half of it (a second language for most); likes, comments, shares
       and dwell follow a click.

Multilingual worlds (conf/world/multilingual.yaml): add the corpus sources `parlspeech` (de, en,
es, nl) and `slo_comments` (sl), give members those languages (`member_langs`), and set
`language_weight`; the A/B report then also shows lift per member language.

Shape legend: R requests, S slate size, C candidates per request, T topics, D latent dim.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recsim.world import topics
from recsim.world.corpus import SOURCES, TOPICS, load_corpus
from recsim.world.schema import CANDIDATES, IMPRESSIONS, MEMBERS, POSTS, validate
from recsim.world.slates import SlatePolicy, plackett_luce, sample_slates
from recsim.world.timeline import to_timestamps
from recsim.world.user_model import UserModel, sample_outcomes

log = logging.getLogger(__name__)

# Headline roles per topic, for profile texts.
_ROLES = {
    "technology": "Software engineer", "science": "Research scientist", "health": "Nurse practitioner",
    "autos": "Automotive technician", "sports": "Sports journalist", "politics": "Policy analyst",
    "religion": "Community chaplain", "shopping": "Retail buyer", "finance": "Investment analyst",
    "commodities": "Commodities trader", "fashion": "Fashion stylist", "world_news": "News editor",
}
_TOPIC_WORDS = {t: t.replace("_", " ") for t in TOPICS}


@dataclass
class WorldConfig:
    """Every knob of the world; Hydra fills it from conf/world/*.yaml."""

    seed: int = 0
    corpus_seed: int | None = None  # the posts' sample from the corpus; None: `seed` (validity
    #                                 runs fix it, so post vectors come from the cache)
    n_members: int = 10_000
    n_authors: int = 2_000
    n_impressions: int = 100_000
    slate_size: int = 10
    n_candidates: int = 40
    days: float = 14.0
    post_window_days: float = 7.0
    corpus_sources: tuple[str, ...] = SOURCES
    max_posts_per_source: int | None = 20_000
    member_langs: dict[str, float] = field(default_factory=lambda: {"en": 0.95, "es": 0.05})
    language_weight: float = 0.0  # logit cost of a post in a foreign language (English: half)
    # hidden member state
    interest_concentration: float = 0.3  # Dirichlet alpha over topics; small = focused members
    # what the topic affinity reads: "label" (the post's coarse topic) or "topics" (its text, as
    # a mixture over n_fine_topics of a TF-IDF + NMF topic model; recsim/world/topics.py)
    affinity: str = "label"
    n_fine_topics: int = 50
    fine_concentration: float = 0.3  # Dirichlet alpha per fine topic (affinity: topics)
    latent_dim: int = 8
    # true user model (logit of relevance, then position-based examination)
    base_logit: float = -3.0
    topic_weight: float = 5.0
    author_weight: float = 0.5
    freshness_weight: float = 1.0
    freshness_halflife_hours: float = 24.0
    quality_std: float = 0.5
    position_decay: float = 0.7
    # logging policy
    logging_temperature: float = 1.0
    logging_epsilon: float = 0.1
    logging_popularity_weight: float = 1.0
    logging_freshness_weight: float = 1.0
    logging_personalization: float = 2.0

    def __post_init__(self):
        """ValueError naming the key (`world.slate_size: ...`) for values the world cannot use."""
        from recsim.world import checks
        from recsim.world.corpus import MULTILINGUAL_SOURCES

        for name in ("n_members", "n_authors", "n_impressions", "slate_size", "n_candidates",
                     "latent_dim", "n_fine_topics"):
            checks.at_least(f"world.{name}", getattr(self, name), 1)
        if self.slate_size > self.n_candidates:
            raise ValueError(f"world.slate_size: {self.slate_size} is more than world.n_candidates "
                             f"({self.n_candidates}); a slate is drawn from the candidates")
        checks.one_of("world.affinity", self.affinity, ("label", "topics"))
        for name in ("days", "post_window_days", "interest_concentration", "fine_concentration",
                     "freshness_halflife_hours", "logging_temperature"):
            checks.positive(f"world.{name}", getattr(self, name))
        for name in ("language_weight", "quality_std", "position_decay"):
            checks.at_least(f"world.{name}", getattr(self, name), 0)
        checks.between("world.logging_epsilon", self.logging_epsilon, 0, 1)
        checks.all_known("world.corpus_sources", self.corpus_sources, SOURCES + MULTILINGUAL_SOURCES)
        checks.at_least("world.max_posts_per_source", self.max_posts_per_source, 1, optional=True)
        if not self.member_langs:
            raise ValueError("world.member_langs: must not be empty (language: share of members)")
        for lang, share in self.member_langs.items():
            checks.at_least(f"world.member_langs.{lang}", share, 0)
        if not sum(self.member_langs.values()) > 0:
            raise ValueError(f"world.member_langs: the shares must not all be 0, got {self.member_langs}")


def language_gaps(member_lang: pl.Series, post_lang: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """[N, L] gap of each member to each post language (0 own, 0.5 English, 1 other) and [P]
    post language indices into its columns."""
    langs = sorted(set(post_lang.to_list()))
    index = {lang: i for i, lang in enumerate(langs)}
    post_idx = np.array([index[x] for x in post_lang.to_list()], dtype=np.int64)
    cols = np.array(langs)
    own = member_lang.to_numpy()[:, None] == cols[None, :]
    gap = np.where(own, 0.0, np.where(cols[None, :] == "en", 0.5, 1.0))
    return gap, post_idx


@dataclass
class World:
    config: WorldConfig
    posts: pl.DataFrame
    members: pl.DataFrame
    authors: pl.DataFrame
    candidates: pl.DataFrame
    impressions: pl.DataFrame
    truth: UserModel


# --- building blocks ------------------------------------------------------------------------


def _make_members(cfg: WorldConfig, rng: np.random.Generator):
    n, n_topics = cfg.n_members, len(TOPICS)
    interests = rng.dirichlet(np.full(n_topics, cfg.interest_concentration), size=n)
    latent = rng.standard_normal((n, cfg.latent_dim))
    activity = rng.beta(2.0, 5.0, size=n)
    connections = np.floor(rng.lognormal(5.0, 1.2, size=n)).astype(np.int64)
    tenure = np.minimum(rng.exponential(700.0, size=n), 5000).astype(np.int64)
    posts_per_week = np.round(activity * rng.gamma(2.0, 2.0, size=n), 2)
    langs = list(cfg.member_langs)
    lang_p = np.array([cfg.member_langs[k] for k in langs], dtype=np.float64)
    lang = np.array(langs)[rng.choice(len(langs), size=n, p=lang_p / lang_p.sum())]
    # Profile interests: two distinct topics drawn from the member's mixture (Gumbel top-2),
    # so profiles hint at, but do not reveal, the hidden interests.
    gumbel = rng.gumbel(size=interests.shape)
    top2 = np.argsort(-(np.log(interests + 1e-12) + gumbel), axis=1)[:, :2]
    topics = np.array(TOPICS)
    members = pl.DataFrame({
        "member_id": np.arange(1, n + 1, dtype=np.int64),
        "t1": topics[top2[:, 0]], "t2": topics[top2[:, 1]],
        "lang": lang, "connections": connections, "activity_level": activity,
        "tenure_days": tenure, "posts_per_week": posts_per_week,
    }).with_columns(
        profile_text=pl.concat_str([
            pl.col("t1").replace_strict(_ROLES), pl.lit(". Interested in "),
            pl.col("t1").replace_strict(_TOPIC_WORDS), pl.lit(" and "),
            pl.col("t2").replace_strict(_TOPIC_WORDS), pl.lit("."),
        ])
    ).select(MEMBERS.names)
    return members, interests, latent


def _make_authors_and_posts(cfg: WorldConfig, corpus: pl.DataFrame, rng: np.random.Generator):
    topic_of = {t: i for i, t in enumerate(TOPICS)}
    post_topic = corpus["topic"].replace_strict(topic_of).to_numpy().astype(np.int64)
    n_topics = len(TOPICS)
    # Each topic gets at least one author; the rest in proportion to its number of posts.
    share = np.bincount(post_topic, minlength=n_topics) / len(post_topic)
    extra = rng.choice(n_topics, size=max(cfg.n_authors - n_topics, 0), p=share)
    author_topic = np.sort(np.concatenate([np.arange(n_topics), extra]))
    n_authors = len(author_topic)
    popularity = rng.lognormal(0.0, 1.0, size=n_authors)
    author_latent = rng.standard_normal((n_authors, cfg.latent_dim))
    first = np.searchsorted(author_topic, np.arange(n_topics))
    count = np.bincount(author_topic, minlength=n_topics)
    post_author = first[post_topic] + np.floor(rng.random(len(post_topic)) * count[post_topic]).astype(np.int64)
    span = (cfg.days + cfg.post_window_days) * 24
    created = rng.random(len(post_topic)) * span - cfg.post_window_days * 24
    quality = rng.normal(0.0, cfg.quality_std, size=len(post_topic))
    authors = pl.DataFrame({
        "author_id": np.arange(1, n_authors + 1, dtype=np.int64),
        "topic": np.array(TOPICS)[author_topic],
        "popularity": popularity,
    })
    posts = corpus.with_columns(
        author_id=pl.Series(post_author + 1, dtype=pl.Int64),
        created_at=to_timestamps(created),
    ).select(POSTS.names)
    return authors, posts, author_latent, post_topic, post_author, quality, created


def _live_draws(keys: np.ndarray, lo_key: np.ndarray, hi_key: np.ndarray, rng) -> np.ndarray:
    """For each query, a uniform index into sorted `keys` within [lo_key, hi_key]; -1 if none."""
    lo = np.searchsorted(keys, lo_key, side="left")
    hi = np.searchsorted(keys, hi_key, side="right")
    idx = lo + np.floor(rng.random(lo.shape) * (hi - lo)).astype(np.int64)
    return np.where(hi > lo, idx, -1)


def _draw_candidates(cfg, rng, truth: UserModel, req_member, req_time) -> np.ndarray:
    """[R, C] post indices: half from the member's topics, half uniform; live and distinct."""
    n_req, n_cand = len(req_member), cfg.n_candidates
    window = cfg.post_window_days * 24
    created = truth.post_created
    by_time = np.argsort(created, kind="stable")
    time_keys = created[by_time]
    # Topic draws: sort posts by (topic, created) and search within the topic's block.
    big = 1e7  # larger than any time span in hours
    topic_keys_raw = truth.post_topic * big + created
    by_topic = np.argsort(topic_keys_raw, kind="stable")
    topic_keys = topic_keys_raw[by_topic]

    def uniform_live(times, n_per_row):
        t = np.repeat(times[:, None], n_per_row, axis=1)
        pos = _live_draws(time_keys, t - window, t, rng)
        if (pos < 0).any():
            raise ValueError("world: no live posts for some requests; increase the corpus "
                             "size or post_window_days")
        return by_time[pos]

    n_topic = n_cand // 2
    cum = np.cumsum(truth.interests[req_member], axis=1)
    u = rng.random((n_req, n_topic)) * cum[:, -1:]
    topics = np.minimum((u[:, :, None] > cum[:, None, :]).sum(axis=2), cum.shape[1] - 1)
    t = req_time[:, None]
    pos = _live_draws(topic_keys, topics * big + t - window, topics * big + t, rng)
    from_topic = np.where(pos >= 0, by_topic[np.maximum(pos, 0)], uniform_live(req_time, n_topic))
    cand = np.concatenate([from_topic, uniform_live(req_time, n_cand - n_topic)], axis=1)
    for _ in range(50):  # replace duplicates within a request until none are left
        order = np.argsort(cand, axis=1)
        sorted_c = np.take_along_axis(cand, order, axis=1)
        dup_sorted = np.zeros_like(cand, dtype=bool)
        dup_sorted[:, 1:] = sorted_c[:, 1:] == sorted_c[:, :-1]
        dup = np.zeros_like(dup_sorted)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        if not dup.any():
            return cand
        rows = np.nonzero(dup)[0]
        cand[dup] = uniform_live(req_time[rows], 1)[:, 0]
    raise ValueError("world: could not draw distinct candidates; the live post pool is smaller "
                     f"than n_candidates={n_cand}")


def logging_scores(cfg: WorldConfig, truth: UserModel, popularity: np.ndarray,
                   member: np.ndarray, cand: np.ndarray, t_hours: np.ndarray) -> np.ndarray:
    """The logging policy's score of each candidate [R, C]: popularity, freshness, interest."""
    age = np.maximum(t_hours[:, None] - truth.post_created[cand], 0.0)
    return (cfg.logging_popularity_weight * np.log(popularity[truth.post_author[cand]])
            + cfg.logging_freshness_weight * 0.5 ** (age / cfg.freshness_halflife_hours)
            + cfg.logging_personalization * truth.topic_affinity(member[:, None], cand))


def logging_policy(cfg: WorldConfig) -> SlatePolicy:
    """The world's logging policy: Plackett-Luce over the logging scores with exploration."""
    return plackett_luce(cfg.logging_temperature, cfg.logging_epsilon)


def build_world(cfg: WorldConfig, corpus: pl.DataFrame | None = None) -> World:
    """Build the whole world from `cfg` (deterministic in cfg.seed).

    Args:
        cfg: the world's configuration.
        corpus: a frame following schema.CORPUS; loaded from the data packages when None.
    """
    if cfg.slate_size > cfg.n_candidates:
        raise ValueError(f"world: slate_size={cfg.slate_size} exceeds n_candidates={cfg.n_candidates}")
    rng = np.random.default_rng(cfg.seed)
    if corpus is None:
        corpus = load_corpus(cfg.corpus_sources, cfg.max_posts_per_source,
                             seed=cfg.seed if cfg.corpus_seed is None else cfg.corpus_seed)
    corpus = corpus.sort("post_id")  # row i of the truth arrays is the i-th smallest post_id

    # 1. Members and authors, posts with authors and creation times.
    members, authors, posts, truth = _make_population(cfg, corpus, rng)
    # 2. Requests: members in proportion to activity, times uniform over the window.
    req_member, req_time = _draw_requests(cfg, members, rng)
    # 3. Candidates and the logging policy's slates.
    cand = _draw_candidates(cfg, rng, truth, req_member, req_time)
    scores = logging_scores(cfg, truth, authors["popularity"].to_numpy(), req_member, cand, req_time)
    chosen, propensity = sample_slates(logging_policy(cfg), scores, cfg.slate_size, rng)
    shown = np.take_along_axis(cand, chosen, axis=1)  # [R, S] post indices
    # 4. Outcomes from the true user model.
    outcomes = _sample_outcomes(cfg, rng, truth, req_member, req_time, shown)

    impressions = _impressions_frame(truth, req_member, req_time, shown, propensity, outcomes)
    candidates = _candidates_frame(cfg, truth, cand, scores)
    world = World(cfg, posts, members, authors, candidates, impressions, truth)
    validate_world(world)
    log.info("world: %d posts, %d members, %d authors, %d requests, %d impressions, CTR %.3f",
             posts.height, members.height, authors.height, len(req_member), impressions.height,
             float(outcomes["click"].mean()))
    return world


def _make_population(cfg: WorldConfig, corpus: pl.DataFrame, rng: np.random.Generator):
    """Step 1: members, authors and posts, and the hidden user model over them."""
    members, interests, member_latent = _make_members(cfg, rng)
    authors, posts, author_latent, post_topic, post_author, quality, created = (
        _make_authors_and_posts(cfg, corpus, rng))
    language_gap, post_lang = (language_gaps(members["lang"], posts["lang"])
                               if cfg.language_weight else (None, None))
    fine = topics.fine_truth(cfg, posts, interests, post_topic) if cfg.affinity == "topics" else {}
    truth = UserModel(cfg, members["member_id"].to_numpy(), posts["post_id"].to_numpy(),
                      interests, member_latent, author_latent, post_topic, post_author,
                      quality, created, language_gap, post_lang, **fine)
    return members, authors, posts, truth


def _draw_requests(cfg: WorldConfig, members: pl.DataFrame,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Step 2: each request's member row [R] (drawn by activity) and time in hours [R] (sorted)."""
    n_req = max(cfg.n_impressions // cfg.slate_size, 1)
    weight = members["activity_level"].to_numpy() + 0.05
    req_member = rng.choice(cfg.n_members, size=n_req, p=weight / weight.sum())
    req_time = np.sort(rng.random(n_req) * cfg.days * 24)
    return req_member, req_time


def _sample_outcomes(cfg: WorldConfig, rng: np.random.Generator, truth: UserModel,
                     req_member: np.ndarray, req_time: np.ndarray,
                     shown: np.ndarray) -> dict[str, np.ndarray]:
    """Step 4: each shown post's [R, S] click, like, comment, share and dwell seconds."""
    m, t, position = _per_slot(req_member, req_time, shown)
    return sample_outcomes(truth.outcome_probabilities(m, shown, t, position), rng)


def _per_slot(req_member: np.ndarray, req_time: np.ndarray,
              shown: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Member row, time and position (1-based) of every shown post, each [R, S]."""
    n_slots = shown.shape[1]
    m = np.repeat(req_member[:, None], n_slots, axis=1)
    t = np.repeat(req_time[:, None], n_slots, axis=1)
    position = np.broadcast_to(np.arange(1, n_slots + 1), shown.shape)
    return m, t, position


def _impressions_frame(truth: UserModel, req_member: np.ndarray, req_time: np.ndarray,
                       shown: np.ndarray, propensity: np.ndarray,
                       outcomes: dict[str, np.ndarray]) -> pl.DataFrame:
    """The logged slates, one row per shown post (schema.IMPRESSIONS)."""
    n_req, n_slots = shown.shape
    m, t, position = _per_slot(req_member, req_time, shown)
    return pl.DataFrame({
        "request_id": np.repeat(np.arange(n_req, dtype=np.int64), n_slots),
        "member_id": truth.member_ids[m.ravel()],
        "post_id": truth.post_ids[shown.ravel()],
        "position": position.ravel().astype(np.int32),
        "timestamp": to_timestamps(t.ravel()),
        "propensity": propensity.ravel(),
        **{k: v.ravel() for k, v in outcomes.items()},
    })


def _candidates_frame(cfg: WorldConfig, truth: UserModel, cand: np.ndarray,
                      scores: np.ndarray) -> pl.DataFrame:
    """The logging policy's candidates per request, with their scores (schema.CANDIDATES)."""
    return pl.DataFrame({
        "request_id": np.repeat(np.arange(len(cand), dtype=np.int64), cfg.n_candidates),
        "post_id": truth.post_ids[cand.ravel()],
        "logging_score": scores.ravel(),
    })


def validate_world(world: World, source: str = "world") -> None:
    """Check every table of the world against its schema and the ids against each other."""
    validate(world.posts, POSTS, f"{source}/posts")
    validate(world.members, MEMBERS, f"{source}/members")
    ids = {"member_id": world.members["member_id"], "post_id": world.posts["post_id"]}
    validate(world.impressions, IMPRESSIONS, f"{source}/impressions", ids)
    validate(world.candidates, CANDIDATES, f"{source}/candidates", {"post_id": ids["post_id"]})
