"""The one point-in-time search (PointInTimeEvents, last_k) and its users, on hand-made events."""

import datetime as dt

import numpy as np
import polars as pl

from ranker.retrieval.history import MemberHistory, PointInTimeEvents, last_k
from ranker.retrieval.prompts import recent_posts_before
from recsim.world.timeline import WORLD_START

KEYS = np.array([2, 1, 2, 2, 3, 2])
TIMES = np.array([5.0, 1.0, 3.0, 5.0, 0.0, 7.0])  # key 2 has two events at 5h


def test_events_strictly_before_t():
    events = PointInTimeEvents(KEYS, TIMES)
    assert events.order.tolist() == [1, 2, 0, 3, 5, 4]  # by (key, time); ties keep input order
    keys = np.array([2, 2, 2, 1, 3])
    t = np.array([5.0, 5.0 + 1e-9, np.inf, 1.0, -1.0])
    start, end = events.before(keys, t)
    # An event at exactly t is excluded (2 at 5h sees only its 3h event); just after, both
    # 5h events count; key 1 at its own event's time and key 3 before its event see none.
    assert (end - start).tolist() == [1, 3, 4, 0, 0]
    assert events.order[start[1]: end[1]].tolist() == [2, 0, 3]
    assert events.count_before(keys, t).tolist() == [1, 3, 4, 0, 0]


def test_keys_without_events_get_an_empty_block():
    events = PointInTimeEvents(KEYS, TIMES)
    start, end = events.before(np.array([0, 4, 99]), np.array([10.0, 10.0, 10.0]))
    assert (start == end).all()
    empty = PointInTimeEvents(np.array([], dtype=np.int64), np.array([]))
    assert empty.count_before(np.array([1, 2]), np.array([1.0, 1.0])).tolist() == [0, 0]


def test_times_a_microsecond_apart_stay_apart_among_many_keys():
    """A float key * span + time composite rounds a 1 us gap away at this many keys."""
    n, us = 200_000, 1 / 3.6e9
    t = np.full(n, 336.0)
    t[0] = 0.0
    events = PointInTimeEvents(np.arange(n), t)
    q = np.full(3, n - 1)
    assert events.count_before(q, np.array([336.0, 336.0 + us, 336.0 - us])).tolist() == [0, 1, 0]


def test_last_k_takes_the_latest_events_of_each_block():
    flat, lengths = last_k(np.array([0, 3, 5]), np.array([3, 3, 9]), k=2)
    assert lengths.tolist() == [2, 0, 2]
    assert flat.tolist() == [1, 2, 7, 8]  # oldest first within a block


def _log(rows: list[tuple[int, int, float, bool]]) -> pl.DataFrame:
    member, post, hours, click = zip(*rows)
    return pl.DataFrame({"member_id": member, "post_id": post, "click": click,
                         "timestamp": [WORLD_START + dt.timedelta(hours=h) for h in hours]})


def test_users_of_the_search_exclude_the_event_at_t():
    imps = _log([(1, 10, 1.0, True), (1, 20, 2.0, True), (1, 30, 2.0, False), (2, 30, 1.0, True)])
    posts = pl.DataFrame({"post_id": [10, 20, 30], "text": ["ten", "twenty  words", "thirty"]})
    queries = pl.DataFrame({"member_id": [1, 1, 2, 7], "t_hours": [2.0, 9.0, 1.0, 9.0]})
    recent = recent_posts_before(imps, posts, queries, "click", n_recent=5, chars=40)
    assert recent == [["ten"], ["twenty words", "ten"], [], []]  # most recent first
    vectors = np.eye(3, dtype=np.float32)
    history = MemberHistory(imps, posts["post_id"].to_numpy(), vectors, halflife_days=1.0)
    out, count = history.vectors_at(queries["member_id"].to_numpy(), queries["t_hours"].to_numpy())
    assert count.tolist() == [1, 2, 0, 0]
    np.testing.assert_allclose(out[0], [1, 0, 0])  # only post 10, clicked before 2h
