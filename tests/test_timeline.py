"""The world's clock and the one time split of a log, on hand-made frames."""

import datetime as dt

import polars as pl
import pytest

from recsim.world.timeline import WORLD_START, hours_since_start, time_split

HOURS = [5, 0, 3, 3, 1, 8, 3, 6, 2, 7]  # unsorted; three rows share hour 3


def _log(hours: list[float]) -> pl.DataFrame:
    return pl.DataFrame({"row": list(range(len(hours))),
                         "timestamp": [WORLD_START + dt.timedelta(hours=h) for h in hours]})


def test_hours_since_start():
    frame = _log([0, 1.5, 48])
    assert frame.select(hours_since_start(pl.col("timestamp"))).to_series().to_list() == [0, 1.5, 48]


def test_time_split_at_a_known_time_keeps_the_boundary_rows_held_out():
    # Sorted hours 0 1 2 3 3 3 5 6 7 8: the 0.4 quantile ("nearest", index 0.4 * 9 -> 4) is hour 3.
    frame = _log(HOURS)
    train, test, split_time = time_split(frame, 0.4)
    assert split_time == WORLD_START + dt.timedelta(hours=3)
    assert time_split(frame, 0.4).split_hours == 3.0
    assert train["row"].to_list() == [1, 4, 8]  # hours 0, 1, 2, in the frame's order
    assert test["row"].to_list() == [0, 2, 3, 5, 6, 7, 9]  # the three rows at hour 3 included
    assert set(train["row"]).isdisjoint(test["row"])
    assert train.height + test.height == frame.height


def test_time_split_ends_and_errors():
    frame = _log(HOURS)
    train, test, _ = time_split(frame, 0.0)
    assert train.height == 0 and test.height == frame.height
    train, test, split_time = time_split(frame, 1.0)  # the latest timestamp is still held out
    assert test["row"].to_list() == [5] and train.height == frame.height - 1
    train, test, split_time = time_split(frame.clear(), 0.7)
    assert train.height == test.height == 0 and split_time is None
    with pytest.raises(ValueError, match="no split time"):
        time_split(frame.clear(), 0.7).split_hours
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\]"):
        time_split(frame, 1.5)
