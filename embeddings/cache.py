"""A cache of post vectors shared by runs and multirun jobs: stored by (model version, text hash).

    .cache/embeddings/<model key>/<shard>.npz     text hashes [N] uint64, vectors [N, D] float32,
                                                  and a checksum of both

The model key is a hash of everything a vector depends on: the model's weights (their files'
sha256), pooling, max length, Matryoshka width, layers kept, text prefix, and the device / dtype /
backend that computed it (bf16 on CPU and fp32 on GPU give different last bits). A text's key is
the sha256 of its text (first 8 bytes).

    1. lookup   read every shard of the model key; a shard whose checksum does not match (a
                truncated or corrupt file) is logged, deleted and its texts recomputed
    2. embed    the texts that missed, in one call
    3. store    the new vectors as one new shard, written to a temporary file and renamed
                (atomic: a reader never sees half a shard; concurrent jobs write different
                shards, named by a random suffix)

A cached vector is the one the first run computed, so a second run of the same config gives the
same numbers, and takes a fraction of the time (no encoder, no Ray).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def text_hashes(texts: list[str]) -> np.ndarray:
    """[N] uint64: the first 8 bytes of each text's sha256."""
    return np.array([int.from_bytes(hashlib.sha256(t.encode("utf-8")).digest()[:8], "little")
                     for t in texts], dtype=np.uint64)


@functools.cache
def _files_digest(model_dir: str) -> str:
    """sha256 over the directory's weight and config files (names and bytes)."""
    h = hashlib.sha256()
    for path in sorted(Path(model_dir).iterdir()):
        if path.is_file() and path.suffix in (".safetensors", ".bin", ".json", ".txt", ".model"):
            h.update(path.name.encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def model_key(encoder_cfg, model_dir: str, computed_on: str) -> str:
    """16 hex digits naming everything a vector depends on (module docstring)."""
    fields = {"weights": _files_digest(model_dir), "pooling": encoder_cfg.pooling,
              "max_length": encoder_cfg.max_length, "dim": encoder_cfg.dim,
              "num_layers": encoder_cfg.num_layers, "text_prefix": encoder_cfg.text_prefix,
              "computed_on": computed_on}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _checksum(hashes: np.ndarray, vectors: np.ndarray) -> str:
    return hashlib.sha256(hashes.tobytes() + vectors.tobytes()).hexdigest()


def _read_shards(folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Every valid shard's (hashes [N], vectors [N, D]); corrupt shards are deleted."""
    hashes, vectors = [], []
    for path in sorted(folder.glob("*.npz")):
        try:
            with np.load(path) as shard:
                h, v, check = shard["hashes"], shard["vectors"], str(shard["checksum"])
            if _checksum(h, v) != check:
                raise ValueError("checksum mismatch")
        except Exception as err:  # a truncated zip, a missing array, a wrong checksum
            log.warning("embedding cache: %s is corrupt (%s); deleted, its texts are recomputed",
                        path, err)
            path.unlink(missing_ok=True)
            continue
        hashes.append(h)
        vectors.append(v)
    if not hashes:
        return np.empty(0, dtype=np.uint64), None
    return np.concatenate(hashes), np.concatenate(vectors)


def _write_shard(folder: Path, hashes: np.ndarray, vectors: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{uuid.uuid4().hex}.npz"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, hashes=hashes, vectors=vectors, checksum=np.array(_checksum(hashes, vectors)))
    os.replace(tmp, out)
    return out


def cached_embed(texts: list[str], embed: Callable[[list[str]], np.ndarray], folder: Path
                 ) -> tuple[np.ndarray, int]:
    """([N, D] float32 vectors of `texts` in order, number of cache hits): vectors found in
    `folder` are read, the rest computed by `embed(missing texts)` and stored."""
    keys = text_hashes(texts)
    known, stored = _read_shards(folder)
    row = {int(k): i for i, k in enumerate(known)}
    at = np.array([row.get(int(k), -1) for k in keys], dtype=np.int64)
    missing = np.flatnonzero(at < 0)
    if len(missing):
        unique_missing, first = np.unique(keys[missing], return_index=True)
        order = np.argsort(first)  # embed in input order: a cold run batches as without a cache
        unique_missing, first = unique_missing[order], first[order]
        fresh = np.asarray(embed([texts[i] for i in missing[first]]), dtype=np.float32)
        _write_shard(folder, unique_missing, fresh)
        dim = fresh.shape[1]
    else:
        dim = stored.shape[1]
    out = np.empty((len(texts), dim), dtype=np.float32)
    hit = at >= 0
    if hit.any():
        out[hit] = stored[at[hit]]
    if len(missing):
        pos = {int(k): i for i, k in enumerate(unique_missing)}
        out[missing] = fresh[[pos[int(k)] for k in keys[missing]]]
    log.info("embedding cache %s: %d of %d texts found, %d computed", folder.name,
             int(hit.sum()), len(texts), len(np.unique(keys[missing])) if len(missing) else 0)
    return out, int(hit.sum())
