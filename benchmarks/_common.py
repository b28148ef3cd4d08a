"""Shared helpers for benchmark scripts: print a table and write it as JSON."""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def report(name: str, rows: list[dict], extra: dict | None = None) -> Path:
    """Print `rows` as an aligned table and write {rows, extra, machine} to results/<name>.json."""
    cols = list(rows[0])
    width = {c: max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r[c]).ljust(width[c]) for c in cols))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name, "rows": rows, **(extra or {}),
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "polars": metadata.version("polars"), "numpy": metadata.version("numpy")},
    }
    out.write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {out}")
    return out


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
