"""The validation harness on a tiny world (the N-seed numbers come from `python -m recsim.jobs.validate`)."""

import numpy as np
import pytest

from recsim.jobs import validate

TINY = dict(n_members=300, n_authors=60, n_impressions=4000, slate_size=5, n_candidates=20,
            max_posts_per_source=400)


SEEDS = (0, 1, 2)  # distinct worlds: coverage over copies of one seed would only be 0 or 1


@pytest.fixture(scope="module")
def seed_records(small_corpus):
    return [validate.run_seed(seed, small_corpus, n_boot=50, n_samples=16, world_overrides=TINY)
            for seed in SEEDS]


def test_one_seed_reports_every_estimator_beside_the_truth(seed_records):
    seed_record = seed_records[0]
    names = {r["estimator"] for r in seed_record["estimates"]}
    assert names == set(validate.TOP_SLOT_ESTIMATORS) | {"iips", "rips", "pbm"}
    for r in seed_record["estimates"]:
        assert r["true_lift"] == pytest.approx(r["true_treatment"] / r["true_control"] - 1)
        assert r["ci_low"] <= r["ci_high"]
    truth = seed_record["truth"]["treatment"]
    assert truth["slate"] > truth["top"] > 0  # the whole slate earns more than its top slot


def test_summary_over_distinct_seeds_is_the_mean_of_their_records(seed_records):
    assert [r["seed"] for r in seed_records] == list(SEEDS)
    assert len({r["true_lift"]["top"] for r in seed_records}) == len(SEEDS)  # distinct worlds
    table = validate.summarize(seed_records)
    assert table["n_seeds"].to_list() == [len(SEEDS)] * table.height
    assert set(table.columns) >= {"estimator", "bias", "coverage", "rmse", "mean_width"}
    for row in table.iter_rows(named=True):
        recs = [e for r in seed_records for e in r["estimates"] if e["estimator"] == row["estimator"]]
        errors = np.array([e["lift"] - e["true_lift"] for e in recs])
        covered = [e["ci_low"] <= e["true_lift"] <= e["ci_high"] for e in recs]
        assert row["coverage"] == pytest.approx(np.mean(covered))
        assert row["bias"] == pytest.approx(errors.mean())
        assert row["rmse"] == pytest.approx(np.sqrt((errors ** 2).mean()))
    # Over distinct seeds an interval covers the truth in some worlds and misses it in others;
    # over one seed repeated, every coverage would be 0 or 1.
    assert set(table["coverage"].to_list()) - {0.0, 1.0}

