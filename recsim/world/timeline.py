"""The world's clock: its start, hours since it, and the one split of a log in time.

    WORLD_START                       the instant hour 0 of every world
    hours_since_start(expr)           polars expr: a Datetime column -> Float64 hours since it
    to_timestamps(hours)              the inverse: hours since the start -> a Datetime("us") Series
    time_split(frame, fraction)       (train, test, split_time): the first `fraction` of rows by
                                      timestamp train, the rest is held out

Every job and model that splits a log in time goes through `time_split`, so that training and
held-out periods mean the same thing everywhere (the run, the retrieval sweep, the ranker's
early-stopping window).
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import numpy as np
import polars as pl

WORLD_START = dt.datetime(2026, 1, 1)
US_PER_HOUR = 3_600_000_000


def hours_since_start(timestamps: pl.Expr) -> pl.Expr:
    """Float64 hours from WORLD_START to each timestamp (microsecond-exact before the division)."""
    return (timestamps - pl.lit(WORLD_START)).dt.total_microseconds().cast(pl.Float64) / US_PER_HOUR


def to_timestamps(hours: np.ndarray) -> pl.Series:
    """Datetime("us") timestamps at `hours` since WORLD_START (rounded to the microsecond)."""
    micros = np.round(hours * US_PER_HOUR).astype(np.int64)
    base = int(WORLD_START.replace(tzinfo=dt.timezone.utc).timestamp() * 1_000_000)
    return pl.Series(micros + base).cast(pl.Datetime("us"))


class TimeSplit(NamedTuple):
    """A log split in time; unpacks as (train, test, split_time)."""

    train: pl.DataFrame  # rows with timestamp < split_time
    test: pl.DataFrame  # rows with timestamp >= split_time (the boundary rows are held out)
    split_time: dt.datetime | None  # None only for an empty frame

    @property
    def split_hours(self) -> float:
        """split_time in hours since WORLD_START (what point-in-time lookups take as `t`)."""
        if self.split_time is None:
            raise ValueError("time_split: an empty log has no split time")
        return (self.split_time - WORLD_START).total_seconds() / 3600


def time_split(frame: pl.DataFrame, fraction: float) -> TimeSplit:
    """Split `frame` [N rows, a `timestamp` column] at its `fraction` time quantile.

    split_time is the timestamp quantile with "nearest" interpolation, so it is one of the log's
    own timestamps; train holds the rows strictly before it, test the rows at or after it (a
    slate at the boundary is held out whole, since its rows share a timestamp). Every row lands
    in exactly one half, in the frame's order. fraction 0 puts every row in test; fraction 1
    still holds out the rows at the latest timestamp.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"time_split: fraction must be in [0, 1], got {fraction}")
    if frame.height == 0:
        return TimeSplit(frame, frame.clear(), None)
    split_time = frame["timestamp"].quantile(fraction, "nearest")
    return TimeSplit(frame.filter(pl.col("timestamp") < split_time),
                     frame.filter(pl.col("timestamp") >= split_time), split_time)
