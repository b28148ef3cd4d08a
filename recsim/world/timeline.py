"""The world's clock: its start and hours since it.

    WORLD_START                       the instant hour 0 of every world
    hours_since_start(expr)           polars expr: a Datetime column -> Float64 hours since it
"""

from __future__ import annotations

import datetime as dt

import polars as pl

WORLD_START = dt.datetime(2026, 1, 1)
US_PER_HOUR = 3_600_000_000


def hours_since_start(timestamps: pl.Expr) -> pl.Expr:
    """Float64 hours from WORLD_START to each timestamp (microsecond-exact before the division)."""
    return (timestamps - pl.lit(WORLD_START)).dt.total_microseconds().cast(pl.Float64) / US_PER_HOUR
