"""The Ray mode gives exactly the single-process numbers for the same seed."""

import numpy as np
import polars as pl
import pytest

from recsim.ope.distributed import evaluate_on_ray, shard_by_member
from recsim.ope.estimators import Bootstrap, evaluate


def _log(n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.uniform(0, 0.3, n)
    return pl.DataFrame({"member_id": rng.integers(0, 1500, n) * 7 + 3,
                         "propensity": rng.uniform(0.05, 1, n), "target_prob": rng.random(n),
                         "reward": (rng.random(n) < q).astype(float), "reward_hat": q,
                         "target_reward_hat": q * 1.2})


def test_shards_hold_each_member_once_and_keep_row_order():
    frame = _log().with_row_index("row")
    shards = shard_by_member(frame, 4)
    assert sum(s.height for s in shards) == frame.height
    members = [set(s["member_id"]) for s in shards]
    assert all(not (a & b) for i, a in enumerate(members) for b in members[i + 1:])
    assert all(s["row"].is_sorted() for s in shards)


def test_shard_summaries_combine_to_the_single_process_numbers():
    """What each Ray task does, run in-process: summarize per shard, join, one bootstrap."""
    from recsim.ope.bootstrap import concat_sums
    from recsim.ope.estimators import finish_all, summarize

    frame, names, boot = _log(), ["ips", "snips", "dr", "sndr"], Bootstrap(200, seed=5)
    parts = [summarize(names, s) for s in shard_by_member(frame, 3)]
    combined = finish_all(concat_sums([p[0] for p in parts]), parts[0][1],
                          {n: max(p[2][n] for p in parts) for n in names}, boot)
    single = evaluate(names, frame, boot)
    for name in names:
        assert combined[name][0] == single[name][0]
        assert np.array_equal(combined[name][1], single[name][1])


@pytest.mark.slow
def test_ray_mode_equals_single_process_bit_for_bit():
    import ray

    frame = _log()
    names = ["ips", "snips", "dr", "sndr"]
    boot = Bootstrap(200, seed=5)
    single = evaluate(names, frame, boot)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        sharded = evaluate_on_ray(names, frame, boot, n_shards=3)
    finally:
        ray.shutdown()
    for name in names:
        a, reps_a = single[name]
        b, reps_b = sharded[name]
        assert a == b, name
        assert np.array_equal(reps_a, reps_b), name


def test_bad_shard_count_is_refused():
    with pytest.raises(ValueError, match="n_shards must be >= 1"):
        shard_by_member(_log(100), 0)
