"""FAISS index: recall against exact search, upsert/remove/persist round trips, filters, errors."""

import datetime as dt

import numpy as np
import polars as pl
import pytest

from ranker.retrieval.index import INDEX_TYPES, PostIndex, RetrievalConfig
from ranker.retrieval.recall import exact_search, overlap_at_k, recall_at_k

N, D = 3000, 32


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """OpenMP threads spin-wait when the cores are shared; one thread keeps these tests fast."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """Clustered unit vectors (like topics), ids that are not row numbers, creation hours."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((30, D))
    x = _unit(centres[rng.integers(0, 30, N)] + 0.6 * rng.standard_normal((N, D)))
    ids = rng.permutation(np.arange(10_000, 10_000 + 5 * N, 5))[:N].astype(np.int64)
    created = rng.uniform(0, 24 * 30, N)
    queries = _unit(centres[rng.integers(0, 30, 50)] + 0.6 * rng.standard_normal((50, D)))
    return ids, x, created, queries


def _cfg(kind, **kw):
    return RetrievalConfig(index=kind, nlist=32, nprobe=8, pq_m=16, pq_bits=6, ef_search=64, **kw)


def _ids(frame: pl.DataFrame, k: int) -> np.ndarray:
    return frame.sort(["member_id", "rank"])["post_id"].to_numpy().reshape(-1, k)


def _search(index, queries, k=10, **kw):
    return index.search(np.arange(len(queries)), queries, k, **kw)


@pytest.mark.parametrize("kind,min_recall", [("Flat", 1.0), ("HNSW", 0.95), ("IVFFlat", 0.9),
                                             ("IVFPQ", 0.6)])
def test_index_recall_against_exact_search(data, kind, min_recall):
    ids, x, _, queries = data
    _, exact_rows = exact_search(x, queries, 10)
    got = _ids(_search(PostIndex(ids, x, _cfg(kind)), queries), 10)
    assert overlap_at_k(got, ids[exact_rows]) >= min_recall


def test_flat_scores_are_cosines_in_rank_order(data):
    ids, x, _, queries = data
    frame = _search(PostIndex(ids, 3.0 * x, _cfg("Flat")), queries)  # unnormalised input
    exact_scores, exact_rows = exact_search(x, queries, 10)
    assert np.array_equal(_ids(frame, 10), ids[exact_rows])
    scores = frame.sort(["member_id", "rank"])["score"].to_numpy().reshape(-1, 10)
    assert np.allclose(scores, exact_scores, atol=1e-5)
    assert frame.columns == ["member_id", "post_id", "score", "rank"]


def test_matryoshka_dim_searches_the_leading_coordinates(data):
    ids, x, _, queries = data
    frame = _search(PostIndex(ids, x, _cfg("Flat", dim=16)), queries)
    _, rows = exact_search(_unit(x[:, :16]), _unit(queries[:, :16]), 10)
    assert np.array_equal(_ids(frame, 10), ids[rows])


@pytest.mark.parametrize("kind", ["Flat", "IVFFlat", "IVFPQ"])
def test_upsert_and_remove_equal_a_fresh_build(data, kind):
    """Flat and IVF delete at once: remove + re-add gives the fresh index's results."""
    ids, x, _, queries = data
    full = PostIndex(ids, x, _cfg(kind))
    expected = _search(full, queries)
    # Replace 200 vectors with noise, then upsert the originals back.
    rng = np.random.default_rng(1)
    some = rng.choice(N, 200, replace=False)
    full.upsert(ids[some], _unit(rng.standard_normal((200, D))))
    assert full.ntotal == N
    assert not _search(full, queries).equals(expected)
    full.upsert(ids[some], x[some])
    assert _search(full, queries).drop("score").equals(expected.drop("score"))
    # Remove 500 posts: the result equals exact search over the rest (Flat), and never
    # returns a removed post (every kind).
    gone = rng.choice(N, 500, replace=False)
    full.remove(ids[gone])
    assert full.ntotal == N - 500
    got = _search(full, queries)
    assert not got["post_id"].is_in(ids[gone].tolist()).any()
    if kind == "Flat":
        keep = np.setdiff1d(np.arange(N), gone)
        _, rows = exact_search(x[keep], queries, 10)
        assert np.array_equal(_ids(got, 10), ids[keep][rows])


def test_hnsw_removes_with_tombstones_and_compacts(data):
    ids, x, _, queries = data
    index = PostIndex(ids, x, _cfg("HNSW", compact_fraction=0.2))
    top = _search(index, queries, 5)["post_id"].unique().to_numpy()[:100]
    index.remove(top)
    assert index.n_tombstones == 100 and index.ntotal == N - 100
    got = _search(index, queries)
    assert not got["post_id"].is_in(top.tolist()).any() and got.height == 500
    index.upsert(top[:10], x[np.isin(ids, top[:10])])  # back again, under new labels
    assert got.height == 500 and index.ntotal == N - 90
    assert _search(index, queries)["post_id"].is_in(top[:10].tolist()).any()
    more = np.setdiff1d(ids, top)[:600]  # past 20% tombstones: the graph is rebuilt
    index.remove(more)
    assert index.n_tombstones == 0 and index.index.ntotal == index.ntotal == N - 690
    keep = ~np.isin(ids, np.concatenate([top[10:], more]))
    _, rows = exact_search(x[keep], queries, 10)
    assert overlap_at_k(_ids(_search(index, queries), 10), ids[keep][rows]) >= 0.95


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_save_and_load_give_identical_results(data, kind, tmp_path):
    ids, x, created, queries = data
    index = PostIndex(ids, x, _cfg(kind), created=created)
    index.remove(ids[:50])  # tombstones (HNSW) and removals must survive the round trip
    before = _search(index, queries, 20, max_age_days=10, now=24 * 25)
    loaded = PostIndex.load(index.save(tmp_path / "idx"))
    assert loaded.ntotal == index.ntotal == N - 50
    assert _search(loaded, queries, 20, max_age_days=10, now=24 * 25).equals(before)
    loaded.upsert(ids[:50], x[:50], created=created[:50])  # the loaded index stays mutable
    assert loaded.ntotal == N


def test_build_is_reproducible(data):
    ids, x, _, queries = data
    a = _search(PostIndex(ids, x, _cfg("IVFPQ")), queries)
    b = _search(PostIndex(ids, x, _cfg("IVFPQ")), queries)
    assert a.equals(b)


@pytest.mark.parametrize("kind", INDEX_TYPES)
def test_filters_exclude_old_and_seen_posts(data, kind):
    ids, x, created, queries = data
    index = PostIndex(ids, x, _cfg(kind), created=created)
    now, days = 24 * 20.0, 7
    rng = np.random.default_rng(2)
    first = _search(index, queries, 30)
    seen = first.filter(pl.col("rank") <= 10).sample(fraction=0.5, seed=3).select("member_id", "post_id")
    got = _search(index, queries, 30, exclude=seen, max_age_days=days, now=now)
    created_of = dict(zip(ids.tolist(), created.tolist()))
    ages = (now - got["post_id"].replace_strict(created_of, return_dtype=pl.Float64)) / 24
    assert (ages <= days).all()
    assert got.join(seen, on=["member_id", "post_id"]).height == 0
    assert got.group_by("member_id").agg(pl.col("rank").sort())["rank"].to_list() == \
        [list(range(1, 31))] * len(queries)
    if kind == "Flat":  # equal to a per-member exact search over what each member may see
        allowed = (created >= now - days * 24)
        for m in rng.choice(len(queries), 5, replace=False):
            mine = seen.filter(pl.col("member_id") == m)["post_id"].to_numpy()
            ok = allowed & ~np.isin(ids, mine)
            _, rows = exact_search(x[ok], queries[m:m + 1], 30)
            assert got.filter(pl.col("member_id") == m).sort("rank")["post_id"].to_list() == \
                ids[ok][rows[0]].tolist()
    assert rng is not None


def test_age_filter_takes_datetimes(data):
    ids, x, created, queries = data
    start = dt.datetime(2026, 1, 1)
    stamps = pl.Series([start + dt.timedelta(hours=h) for h in created]).cast(pl.Datetime("us"))
    index = PostIndex(ids, x, _cfg("Flat"), created=stamps)
    now = start + dt.timedelta(days=20)
    by_datetime = _search(index, queries, max_age_days=3, now=now)
    by_hours = _search(PostIndex(ids, x, _cfg("Flat"), created=created), queries, max_age_days=3,
                       now=24 * 20.0)
    assert by_datetime.equals(by_hours)


def test_bad_input_names_the_field(data):
    ids, x, _, queries = data
    with pytest.raises(ValueError, match="retrieval.index: unknown index type 'Annoy'"):
        PostIndex(ids, x, RetrievalConfig(index="Annoy"))
    index = PostIndex(ids, x, _cfg("Flat"))
    with pytest.raises(KeyError, match=r"post_id: \[7\] not in the index"):
        index.remove(np.array([ids[0], 7]))
    assert index.ntotal == N  # nothing removed when any id is unknown
    with pytest.raises(ValueError, match=r"queries: expected shape \[N, 32\]"):
        _search(index, queries[:, :16])
    with pytest.raises(ValueError, match=r"vectors: expected shape \[N, 32\]"):
        index.upsert(ids[:2], x[:2, :8])
    with pytest.raises(ValueError, match="post_ids: duplicate ids"):
        PostIndex(np.array([1, 1]), x[:2], _cfg("Flat"))
    with pytest.raises(ValueError, match="retrieval.dim: 64 is not in 1..32"):
        PostIndex(ids, x, _cfg("Flat", dim=64))
    with pytest.raises(ValueError, match="retrieval.pq_m: 5 does not divide"):
        PostIndex(ids, x, RetrievalConfig(index="IVFPQ", pq_m=5))
    with pytest.raises(ValueError, match="max_age_days: the index was built without `created`"):
        _search(index, queries, max_age_days=1, now=0.0)


def test_recall_at_k_known_answer():
    retrieved = pl.DataFrame({"member_id": [1, 1, 1, 2, 2], "post_id": [10, 11, 12, 20, 21],
                              "score": [0.9, 0.8, 0.7, 0.9, 0.8], "rank": [1, 2, 3, 1, 2]})
    held_out = pl.DataFrame({"member_id": [1, 1, 2, 2], "post_id": [11, 13, 22, 22]})
    # member 1: {11, 13}, hit 11 at rank 2; member 2: {22}, never retrieved.
    assert recall_at_k(retrieved, held_out, (1, 2, 3)) == {1: 0.0, 2: 0.25, 3: 0.25}
