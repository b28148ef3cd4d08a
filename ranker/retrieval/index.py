"""FAISS candidate retrieval: an inner-product index over unit post vectors keyed by post_id.

`PostIndex` builds one of four index types from config (exact Flat, HNSW, IVF-Flat, IVF-PQ) over
the first `dim` coordinates of the post vectors (Matryoshka), renormalised, so inner product is
cosine. Posts can be upserted and removed by post_id; the index saves to and loads from a
directory; a search can exclude posts older than N days (one FAISS id selector for the whole
batch) and each member's already-seen posts. Results are a polars frame
(member_id, post_id, score, rank), rank from 1.

How ids work. FAISS holds the vectors under *labels*, int64 numbers this class hands out in
order (IVF lists store them; an `IndexIDMap2` maps them to Flat and HNSW positions); `post_of_label[label]` gives
the post_id, -1 once the post is removed or replaced. Labels never repeat, so an upsert is
"retire the old label, add a new one", the same for every index type. Flat and IVF indexes
drop retired vectors at once (`remove_ids`); HNSW graphs cannot delete, so retired labels stay
in the graph as tombstones that every search excludes through an id selector, and the graph is
rebuilt from the live vectors once tombstones pass `compact_fraction` of it.

Per-member exclusions (already-seen posts) differ per query while a FAISS search takes one
selector per batch; the batch is searched for k + (the most posts any member excludes) with the
shared selector, then each member's excluded posts are dropped and the rest cut to k. For exact
search this equals a per-member selector (tested).

Shape legend: P posts, M members (queries), D input vector dim, d index dim (<= D), K top-k.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict
from pathlib import Path

import faiss
import numpy as np
import polars as pl

from ranker.retrieval.config import INDEX_TYPES, RetrievalConfig, factory_string, index_type  # noqa: F401
from recsim.world.timeline import US_PER_HOUR

log = logging.getLogger(__name__)

def _hours(created) -> np.ndarray | None:
    """Times as float hours: datetimes since 1970, numbers as they are (any one clock)."""
    if created is None:
        return None
    if isinstance(created, pl.Series) and created.dtype.is_temporal():
        return (created.cast(pl.Datetime("us")).dt.epoch("us").to_numpy() / US_PER_HOUR)
    if isinstance(created, (dt.datetime, dt.date)):
        created = np.datetime64(created, "us")
    arr = np.asarray(created)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[us]").astype(np.int64) / US_PER_HOUR
    return arr.astype(np.float64)


class PostIndex:
    """An index over post vectors keyed by post_id (inner product on unit vectors = cosine).

    Args:
        post_ids: [P] unique int64 ids.
        vectors: [P, D] float vectors (normalised here, after Matryoshka truncation to cfg.dim).
        cfg: index type and parameters.
        created: optional [P] creation times (datetimes, or hours on any fixed clock) for the
            age filter of `search`.

    Example::

        index = PostIndex(post_ids, vectors, RetrievalConfig(index="HNSW", dim=128))
        index.search(member_ids, queries, k=100, max_age_days=7, now=split_time,
                     exclude=seen)  # -> (member_id, post_id, score, rank)
    """

    def __init__(self, post_ids: np.ndarray, vectors: np.ndarray, cfg: RetrievalConfig,
                 created=None):
        self.cfg = cfg
        self.kind = index_type(cfg.index)
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"vectors: expected a non-empty [P, D] array, got shape {vectors.shape}")
        self.input_dim = vectors.shape[1]
        if cfg.dim is not None and not 0 < cfg.dim <= self.input_dim:
            raise ValueError(f"retrieval.dim: {cfg.dim} is not in 1..{self.input_dim} "
                             "(the post vectors' dim)")
        self.dim = cfg.dim or self.input_dim
        x = self._prepare(vectors, "vectors")
        self.factory = factory_string(cfg, self.dim, len(x))
        inner = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        if self.kind == "HNSW":
            inner.hnsw.efConstruction = cfg.ef_construction
        if not inner.is_trained:
            _train(inner, x, cfg.seed, cfg.max_train_points)
        # IVF indexes store ids themselves; an IndexIDMap over one breaks after a removal
        # (IVF keeps its stored ids where the map expects them renumbered).
        self.index = inner if self.kind in ("IVFFlat", "IVFPQ") else faiss.IndexIDMap2(inner)
        self.post_of_label = np.empty(0, dtype=np.int64)
        self.created_of_label = np.empty(0, dtype=np.float64)
        self.n_tombstones = 0
        self._label_lookup: tuple[np.ndarray, np.ndarray] | None = None
        self._add(self._check_ids(post_ids, len(x)), x, _hours(created))
        log.info("index %s (%s) over %d posts at dim %d", self.kind, self.factory, self.ntotal, self.dim)

    # -- inputs -----------------------------------------------------------------------------

    def _prepare(self, vectors: np.ndarray, name: str) -> np.ndarray:
        """[N, D] -> [N, d] contiguous float32, truncated to the index dim and normalised."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.input_dim:
            raise ValueError(f"{name}: expected shape [N, {self.input_dim}] (the index's input "
                             f"dim), got {vectors.shape}")
        x = np.ascontiguousarray(vectors[:, : self.dim], dtype=np.float32).copy()
        if not np.isfinite(x).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        faiss.normalize_L2(x)
        return x

    @staticmethod
    def _check_ids(post_ids, n: int) -> np.ndarray:
        ids = np.asarray(post_ids)
        if ids.shape != (n,):
            raise ValueError(f"post_ids: expected {n} ids (one per vector), got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"post_ids: expected integers, got dtype {ids.dtype}")
        ids = ids.astype(np.int64)
        if (ids < 0).any():
            raise ValueError(f"post_ids: negative ids {ids[ids < 0][:5].tolist()}")
        if len(np.unique(ids)) != n:
            uniq, counts = np.unique(ids, return_counts=True)
            raise ValueError(f"post_ids: duplicate ids {uniq[counts > 1][:5].tolist()}")
        return ids

    # -- ids --------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Number of live posts."""
        return int((self.post_of_label >= 0).sum())

    @property
    def post_ids(self) -> np.ndarray:
        """Sorted ids of the live posts."""
        return self._lookup()[0]

    def _lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted live post_ids, their labels), rebuilt lazily after a change."""
        if self._label_lookup is None:
            live = np.nonzero(self.post_of_label >= 0)[0]
            order = np.argsort(self.post_of_label[live], kind="stable")
            self._label_lookup = (self.post_of_label[live][order], live[order].astype(np.int64))
        return self._label_lookup

    def labels_of(self, post_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels, found mask) of `post_ids`; label -1 where the post is not in the index."""
        ids, labels = self._lookup()
        post_ids = np.asarray(post_ids, dtype=np.int64)
        if len(ids) == 0:
            return np.full(post_ids.shape, -1, np.int64), np.zeros(post_ids.shape, bool)
        pos = np.searchsorted(ids, post_ids).clip(0, len(ids) - 1)
        found = ids[pos] == post_ids
        return np.where(found, labels[pos], -1), found

    # -- mutation ---------------------------------------------------------------------------

    def _add(self, ids: np.ndarray, x: np.ndarray, created: np.ndarray | None) -> None:
        start = len(self.post_of_label)
        labels = np.arange(start, start + len(ids), dtype=np.int64)
        if created is None:
            created = np.full(len(ids), np.nan)
        elif created.shape != (len(ids),):
            raise ValueError(f"created: expected {len(ids)} times (one per post), got shape "
                             f"{created.shape}")
        self.index.add_with_ids(x, labels)
        self.post_of_label = np.concatenate([self.post_of_label, ids])
        self.created_of_label = np.concatenate([self.created_of_label, created])
        self._label_lookup = None

    def _retire(self, labels: np.ndarray) -> None:
        if len(labels) == 0:
            return
        self.post_of_label[labels] = -1
        self._label_lookup = None
        if self.kind == "HNSW":  # graphs cannot delete: tombstones, excluded at search time
            self.n_tombstones += len(labels)
            if self.n_tombstones > self.cfg.compact_fraction * self.index.ntotal:
                self.compact()
        else:
            removed = self.index.remove_ids(np.ascontiguousarray(labels, dtype=np.int64))
            assert removed == len(labels), (removed, len(labels))

    def upsert(self, post_ids: np.ndarray, vectors: np.ndarray, created=None) -> None:
        """Insert posts, replacing the vectors (and creation times) of ids already present."""
        x = self._prepare(vectors, "vectors")
        ids = self._check_ids(post_ids, len(x))
        labels, found = self.labels_of(ids)
        self._retire(labels[found])
        self._add(ids, x, _hours(created))

    def remove(self, post_ids: np.ndarray) -> None:
        """Remove posts by id; KeyError naming the ids not in the index."""
        ids = np.atleast_1d(np.asarray(post_ids, dtype=np.int64))
        labels, found = self.labels_of(ids)
        if not found.all():
            raise KeyError(f"post_id: {ids[~found][:5].tolist()} not in the index "
                           f"({int((~found).sum())} of {len(ids)})")
        self._retire(np.unique(labels))

    def compact(self) -> None:
        """Rebuild an HNSW graph from its live vectors, dropping tombstones (labels kept)."""
        if self.kind != "HNSW" or self.n_tombstones == 0:
            return
        live = np.nonzero(self.post_of_label >= 0)[0].astype(np.int64)
        x = np.vstack([self.index.reconstruct(int(label)) for label in live]) if len(live) else \
            np.empty((0, self.dim), np.float32)
        inner = faiss.index_factory(self.dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = self.cfg.ef_construction
        self.index = faiss.IndexIDMap2(inner)
        if len(live):
            self.index.add_with_ids(np.ascontiguousarray(x, dtype=np.float32), live)
        log.info("HNSW compacted: %d tombstones dropped, %d posts kept", self.n_tombstones, len(live))
        self.n_tombstones = 0

    # -- search -----------------------------------------------------------------------------

    def _selector(self, max_age_days: float | None, now,
                  created_range: tuple[float, float] | None = None) -> tuple[object | None, list]:
        """One FAISS selector over labels for the whole batch: live, young enough, and created
        within `created_range` (hours, both ends included) when given."""
        allowed = None
        if self.n_tombstones:
            allowed = self.post_of_label >= 0
        if created_range is not None:
            if np.isnan(self.created_of_label[self.post_of_label >= 0]).any():
                raise ValueError("created_range: the index was built without `created` times")
            lo, hi = created_range
            inside = (self.created_of_label >= lo) & (self.created_of_label <= hi)
            allowed = inside if allowed is None else allowed & inside
        if max_age_days is not None:
            if now is None:
                raise ValueError("now: required with max_age_days (the time ages are measured at)")
            if np.isnan(self.created_of_label[self.post_of_label >= 0]).any():
                raise ValueError("max_age_days: the index was built without `created` times")
            now_h = float(np.asarray(_hours(now)).ravel()[0])
            young = self.created_of_label >= now_h - max_age_days * 24
            allowed = young if allowed is None else allowed & young
        if allowed is None:
            return None, []
        bitmap = np.packbits(allowed, bitorder="little")
        return faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap)), [bitmap]

    def _params(self, sel):
        if self.kind == "HNSW":
            return faiss.SearchParametersHNSW(sel=sel, efSearch=self.cfg.ef_search)
        if self.kind in ("IVFFlat", "IVFPQ"):
            return faiss.SearchParametersIVF(sel=sel, nprobe=self.cfg.nprobe)
        return faiss.SearchParameters(sel=sel) if sel is not None else None

    def search_labels(self, queries: np.ndarray, k: int, max_age_days: float | None = None,
                      now=None, created_range: tuple[float, float] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Raw FAISS search: ([M, k] scores, [M, k] post_ids, -1 where fewer than k match).
        `created_range` (lo, hi): only posts created within it (hours on the `created` clock)."""
        x = self._prepare(queries, "queries")
        sel, keep_alive = self._selector(max_age_days, now, created_range)
        params = self._params(sel)
        if self.kind == "HNSW" and self.cfg.ef_search < k:
            params.efSearch = k  # HNSW returns at most efSearch results
        if self.kind in ("IVFFlat", "IVFPQ"):
            scanned = self.index.ntotal * min(self.cfg.nprobe, self.index.nlist) / self.index.nlist
            if scanned < k:
                log.warning("IVF search scans about %d posts (nprobe=%d of %d lists) for k=%d: "
                            "most results will be missing; raise retrieval.nprobe", scanned,
                            self.cfg.nprobe, self.index.nlist, k)
        scores, labels = self.index.search(x, k, params=params)
        del keep_alive
        post_ids = np.where(labels >= 0, self.post_of_label[labels.clip(0)], -1)
        return scores, post_ids

    def search(self, member_ids: np.ndarray, queries: np.ndarray, k: int, *,
               exclude: pl.DataFrame | None = None, max_age_days: float | None = None,
               now=None) -> pl.DataFrame:
        """Top-k posts per query -> frame (member_id, post_id, score, rank), rank from 1.

        Args:
            member_ids: [M] the member of each query row.
            queries: [M, D] query vectors (same input dim as the post vectors).
            k: candidates per member.
            exclude: (member_id, post_id) pairs never to return, e.g. posts already seen.
            max_age_days, now: return only posts created within max_age_days before `now`.
        """
        member_ids = np.asarray(member_ids, dtype=np.int64)
        if member_ids.shape != (len(queries),):
            raise ValueError(f"member_ids: expected {len(queries)} ids (one per query), got "
                             f"shape {member_ids.shape}")
        if k < 1:
            raise ValueError(f"k: must be >= 1, got {k}")
        extra = 0
        if exclude is not None:
            exclude = exclude.select(pl.col("member_id").cast(pl.Int64),
                                     pl.col("post_id").cast(pl.Int64)).unique()
            per_member = exclude.filter(pl.col("member_id").is_in(pl.Series(member_ids).implode()))
            extra = int(per_member.group_by("member_id").len()["len"].max() or 0)
        fetch = min(k + extra, self.ntotal) if self.ntotal else k
        scores, ids = self.search_labels(queries, max(fetch, 1), max_age_days, now)
        n, kk = ids.shape
        frame = pl.DataFrame({
            "member_id": np.repeat(member_ids, kk),
            "post_id": ids.ravel(),
            "score": scores.ravel().astype(np.float64),
            "rank": np.tile(np.arange(1, kk + 1, dtype=np.int32), n),
        }).filter(pl.col("post_id") >= 0)  # -1 pads when fewer than k posts match
        if exclude is not None and extra:
            frame = (frame.join(exclude, on=["member_id", "post_id"], how="anti")
                     .sort(["member_id", "rank"])  # queries of one member may repeat: keep rows
                     .with_columns(rank=pl.col("rank").rank("ordinal").over("member_id").cast(pl.Int32))
                     .filter(pl.col("rank") <= k))
        return frame

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the index to directory `path` (index.faiss, labels.npz, config.json)."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(out / "index.faiss"))
        np.savez(out / "labels.npz", post_of_label=self.post_of_label,
                 created_of_label=self.created_of_label, n_tombstones=self.n_tombstones)
        (out / "config.json").write_text(json.dumps(
            {"config": asdict(self.cfg), "input_dim": self.input_dim, "dim": self.dim,
             "factory": self.factory}, indent=2))
        return out

    @classmethod
    def load(cls, path: str | Path) -> "PostIndex":
        """Read an index written by `save`."""
        src = Path(path)
        for name in ("index.faiss", "labels.npz", "config.json"):
            if not (src / name).exists():
                raise FileNotFoundError(f"{src}: no {name}; not a saved PostIndex directory")
        meta = json.loads((src / "config.json").read_text())
        cfg = meta["config"]
        cfg["recall_at"] = tuple(cfg["recall_at"])
        self = cls.__new__(cls)
        self.cfg = RetrievalConfig(**cfg)
        self.kind = index_type(self.cfg.index)
        self.input_dim, self.dim, self.factory = meta["input_dim"], meta["dim"], meta["factory"]
        self.index = faiss.read_index(str(src / "index.faiss"))
        labels = np.load(src / "labels.npz")
        self.post_of_label = labels["post_of_label"]
        self.created_of_label = labels["created_of_label"]
        self.n_tombstones = int(labels["n_tombstones"])
        self._label_lookup = None
        return self


def _train(inner, x: np.ndarray, seed: int, max_points: int | None) -> None:
    """Train IVF / PQ quantizers on a seeded sample with fixed k-means seeds (reproducible)."""
    if max_points and len(x) > max_points:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))]
    ivf = faiss.downcast_index(faiss.extract_index_ivf(inner))
    ivf.cp.seed = seed
    if isinstance(ivf, faiss.IndexIVFPQ):
        ivf.pq.cp.seed = seed
        ivf.do_polysemous_training = False  # only for Hamming-filtered search, which we skip
    inner.train(x)
