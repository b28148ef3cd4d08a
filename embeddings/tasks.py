"""Semantic labelling tasks from the real corpora, for multi-task contrastive fine-tuning (LiPost).

A task is one labelled text source: texts with a label each, a fixed train/validation/test split
(the corpus's own, derived from the post id) and a short natural-language description per label.
Training turns it into contrastive pairs: text <-> its label's description, and text <-> another
text with the same label (`Task.sample_pairs`).

Tasks (name: corpus source, label column, number of labels):

    newsgroup_topic      newsgroups       label            20
    reuters_topic        reuters          label             8
    clothing_department  clothing         label_department  6
    clothing_class       clothing         label_class      ~20
    review_rating        clothing         label_rating      5
    news_outlet          news             label             9
    health_outlet        health_tweets    label            16
    tweet_author         election_tweets  label             2

Multilingual tasks (embeddings/multilingual.py builds their corpus; one task per language where
the labels are language-specific):

    parl_party_{de,en,es,nl}  parlspeech          label (party)        5-7 per language
    parl_agenda_{en,es}       parlspeech          label_agenda          4 / 9 (debates with
                                                                        >= 8 speeches)
    slo_topic                 slo_comments        label (category)      4
    language_id               parlspeech, slo_comments, election_tweets  lang   5 (de en es nl sl)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

_NEWSGROUPS = {
    "alt.atheism": "atheism", "comp.graphics": "computer graphics",
    "comp.os.ms-windows.misc": "microsoft windows", "comp.sys.ibm.pc.hardware": "ibm pc hardware",
    "comp.sys.mac.hardware": "apple mac hardware", "comp.windows.x": "x window system",
    "misc.forsale": "items for sale", "rec.autos": "cars", "rec.motorcycles": "motorcycles",
    "rec.sport.baseball": "baseball", "rec.sport.hockey": "ice hockey", "sci.crypt": "cryptography",
    "sci.electronics": "electronics", "sci.med": "medicine", "sci.space": "outer space",
    "soc.religion.christian": "christianity", "talk.politics.guns": "gun control politics",
    "talk.politics.mideast": "middle east politics", "talk.politics.misc": "us politics",
    "talk.religion.misc": "religion",
}
_REUTERS = {
    "earn": "company earnings", "acq": "mergers and acquisitions", "crude": "crude oil",
    "trade": "international trade", "money-fx": "currency exchange markets",
    "interest": "interest rates", "ship": "shipping", "grain": "grain and agriculture",
}
_RATINGS = {"1": "terrible, one star", "2": "poor, two stars", "3": "average, three stars",
            "4": "good, four stars", "5": "excellent, five stars"}
_OUTLETS = {
    "aljazeera.com": "Al Jazeera", "tass.com": "TASS Russian news agency",
    "abcnews.go.com": "ABC News", "rte.ie": "RTE Irish news", "huffingtonpost.com": "HuffPost",
    "dw.com": "Deutsche Welle", "europe.chinadaily.com.cn": "China Daily", "bbc.co.uk": "BBC",
    "cnn.com": "CNN",
}
_AUTHORS = {"HillaryClinton": "Hillary Clinton", "realDonaldTrump": "Donald Trump"}
_PARTIES = {  # ParlSpeech party codes -> names
    "CDU/CSU": "the Christian Democrats (CDU/CSU)", "SPD": "the Social Democrats (SPD)",
    "FDP": "the Free Democrats (FDP)", "GRUENE": "the Greens (Die Grünen)",
    "PDS/LINKE": "the Left (PDS / Die Linke)",
    "Con": "the Conservative Party", "Lab": "the Labour Party", "LibDem": "the Liberal Democrats",
    "SNP": "the Scottish National Party",
    "GPP": "the People's Party (Grupo Popular)", "GPSOE": "the Socialist Party (PSOE)",
    "GMX": "the Mixed Group (Grupo Mixto)", "GC-CiU": "the Catalan group (CiU)",
    "GV EAJ-PNV": "the Basque Nationalist Party (PNV)", "GIU": "the United Left (IU)",
    "PvdA": "the Labour Party (PvdA)", "VVD": "the liberal VVD", "CDA": "the Christian Democrats (CDA)",
    "SP": "the Socialist Party (SP)", "D66": "the social-liberal D66", "GL": "GreenLeft (GroenLinks)",
    "PVV": "the Party for Freedom (PVV)", "CU": "the Christian Union", "other": "a smaller party",
}
_SLO_CATEGORIES = {"Šport": "sport", "Gospodarstvo": "the economy", "Politika": "politics",
                   "Drugo": "other news"}
_LANGUAGES = {"de": "German", "en": "English", "es": "Spanish", "nl": "Dutch", "sl": "Slovenian"}


@dataclass(frozen=True)
class TaskSpec:
    source: str | tuple[str, ...]
    label_column: str
    descriptions: dict[str, str] | None = None  # label -> description; None: the label itself
    prefix: str = ""  # prepended to every description ("a review rated ...")
    lang: str | None = None  # keep only texts in this language
    labels: tuple[str, ...] | None = None  # keep only these labels (None: all)


TASK_SPECS: dict[str, TaskSpec] = {
    "newsgroup_topic": TaskSpec("newsgroups", "label", _NEWSGROUPS, "a discussion about "),
    "reuters_topic": TaskSpec("reuters", "label", _REUTERS, "financial news about "),
    "clothing_department": TaskSpec("clothing", "label_department", None, "clothing department: "),
    "clothing_class": TaskSpec("clothing", "label_class", None, "clothing item: "),
    "review_rating": TaskSpec("clothing", "label_rating", _RATINGS, "a product review rated "),
    "news_outlet": TaskSpec("news", "label", _OUTLETS, "an article published by "),
    "health_outlet": TaskSpec("health_tweets", "label", None, "a health tweet from "),
    "tweet_author": TaskSpec("election_tweets", "label", _AUTHORS, "a tweet by "),
    **{f"parl_party_{lang}": TaskSpec("parlspeech", "label", _PARTIES,
                                      "a parliamentary speech by a member of ", lang)
       for lang in ("de", "en", "es", "nl")},
    **{f"parl_agenda_{lang}": TaskSpec("parlspeech", "label_agenda", None,
                                       "a parliamentary debate on ", lang) for lang in ("en", "es")},
    "slo_topic": TaskSpec("slo_comments", "label", _SLO_CATEGORIES, "a reader comment about ", "sl"),
    "language_id": TaskSpec(("parlspeech", "slo_comments", "election_tweets"), "lang", _LANGUAGES,
                            "a text written in ", labels=tuple(_LANGUAGES)),
}
MULTILINGUAL_TASKS = ("parl_party_de", "parl_party_en", "parl_party_es", "parl_party_nl",
                      "parl_agenda_en", "parl_agenda_es", "slo_topic", "language_id")


@dataclass
class Task:
    name: str
    labels: list[str]  # label ids, sorted
    descriptions: list[str]  # one per label, same order
    splits: dict[str, pl.DataFrame]  # split -> (text, label_index)
    _neighbours: dict = field(default_factory=dict, repr=False, compare=False)

    def sample_pairs(self, rng: np.random.Generator, batch_size: int, kind: str,
                     split: str = "train") -> tuple[list[str], list[str], np.ndarray]:
        """One task-homogeneous batch of (anchors, positives, anchor label indices).

        kind "label": positive = the anchor label's description;
        kind "text":  positive = another text of the same split with the same label.
        """
        part, idx = self._draw(rng, batch_size, split)
        anchors = part["text"].gather(idx).to_list()
        labels = part["label_index"].to_numpy()[idx]
        if kind == "label":
            return anchors, [self.descriptions[i] for i in labels], labels
        if kind != "text":
            raise ValueError(f"pair kind must be 'label' or 'text', got {kind!r}")
        return anchors, part["text"].gather(self._partners(rng, idx, labels, split)).to_list(), labels

    def sample_triplets(self, rng: np.random.Generator, batch_size: int, pool: int,
                        split: str = "train") -> tuple[list[str], list[str], np.ndarray, list[str], np.ndarray]:
        """A text-pair batch with one hard negative per anchor: (anchors, positives, anchor
        labels, negatives, negative labels). Each negative is a text of the same split with
        another label, drawn from the anchor's `pool` most similar ones (embeddings/negatives.py)."""
        from embeddings.negatives import draw_negatives

        part, idx = self._draw(rng, batch_size, split)
        labels = part["label_index"].to_numpy()
        positives = self._partners(rng, idx, labels[idx], split)
        negatives = draw_negatives(rng, self.other_label_neighbours(split, pool), idx)
        text = part["text"]
        return (text.gather(idx).to_list(), text.gather(positives).to_list(), labels[idx],
                text.gather(negatives).to_list(), labels[negatives])

    def other_label_neighbours(self, split: str, pool: int) -> np.ndarray:
        """[rows of `split`, pool]: each row's most similar other-label rows (computed once)."""
        from embeddings.negatives import other_label_neighbours

        key = (split, pool)
        if key not in self._neighbours:
            part = self.splits[split]
            self._neighbours[key] = other_label_neighbours(part["text"].to_list(),
                                                           part["label_index"].to_numpy(), pool)
        return self._neighbours[key]

    def _draw(self, rng: np.random.Generator, batch_size: int, split: str) -> tuple[pl.DataFrame, np.ndarray]:
        part = self.splits[split]
        if part.height == 0:
            raise ValueError(f"task {self.name}: no {split} texts to sample pairs from")
        return part, rng.integers(0, part.height, batch_size)

    def _partners(self, rng: np.random.Generator, idx: np.ndarray, labels: np.ndarray,
                  split: str) -> list[int]:
        """For each anchor row, a random row of the split with the same label."""
        rows_by_label = self.rows_by_label[split]
        return [int(rows[rng.integers(0, len(rows))]) if len(rows) else int(i)
                for i, rows in zip(idx, (rows_by_label[j] for j in labels))]

    @cached_property
    def rows_by_label(self) -> dict[str, list[np.ndarray]]:
        """split -> for each label index, the rows of that split carrying it."""
        out = {}
        for split, part in self.splits.items():
            lab = part["label_index"].to_numpy()
            out[split] = [np.flatnonzero(lab == i) for i in range(len(self.labels))]
        return out


def build_task(name: str, corpus: pl.DataFrame, min_label_count: int = 20,
               max_per_split: dict[str, int] | None = None, seed: int = 0) -> Task:
    """The task `name` from a corpus frame (recsim.world.corpus.load_corpus).

    Labels with fewer than `min_label_count` training texts are dropped. `max_per_split`
    caps the rows per split (a seeded sample; e.g. {"test": 300}).
    """
    if name not in TASK_SPECS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASK_SPECS)}")
    spec = TASK_SPECS[name]
    sources = (spec.source,) if isinstance(spec.source, str) else spec.source
    rows = pl.col("source").is_in(sources)
    if spec.lang:
        rows = rows & (pl.col("lang") == spec.lang)
    if spec.labels:
        rows = rows & pl.col(spec.label_column).cast(pl.String).is_in(spec.labels)
    if spec.label_column not in corpus.columns:
        raise ValueError(f"task {name}: the corpus has no column {spec.label_column!r}"
                         + (" (build it with embeddings.multilingual.load_multilingual_corpus)"
                            if spec.label_column == "label_agenda" else ""))
    frame = corpus.filter(rows).select(
        "text", "split", label=pl.col(spec.label_column).cast(pl.String)).drop_nulls("label")
    if frame.height == 0:
        raise ValueError(f"task {name}: no texts from source {spec.source!r}"
                         f"{f' in {spec.lang!r}' if spec.lang else ''} in the corpus")
    counts = frame.filter(pl.col("split") == "train")["label"].value_counts()
    labels = sorted(counts.filter(pl.col("count") >= min_label_count)["label"].to_list())
    if len(labels) < 2:
        raise ValueError(f"task {name}: fewer than 2 labels with >= {min_label_count} training texts")
    index = {label: i for i, label in enumerate(labels)}
    frame = frame.filter(pl.col("label").is_in(labels)).with_columns(
        label_index=pl.col("label").replace_strict(index, return_dtype=pl.Int64))
    splits = {}
    for split in ("train", "validation", "test"):
        part = frame.filter(pl.col("split") == split).select("text", "label_index")
        cap = (max_per_split or {}).get(split)
        if cap and part.height > cap:
            part = part.sample(cap, seed=seed)
        splits[split] = part
    descriptions = [spec.prefix + (spec.descriptions or {}).get(label, label) for label in labels]
    return Task(name, labels, descriptions, splits)
