"""The validation harness on a tiny world (the N-seed numbers come from `python -m recsim.jobs.validate`)."""

import pytest

from recsim.jobs import validate

TINY = dict(n_members=300, n_authors=60, n_impressions=4000, slate_size=5, n_candidates=20,
            max_posts_per_source=400)


@pytest.fixture(scope="module")
def seed_record(small_corpus):
    return validate.run_seed(0, small_corpus, n_boot=50, n_samples=16, world_overrides=TINY)


def test_one_seed_reports_every_estimator_beside_the_truth(seed_record):
    names = {r["estimator"] for r in seed_record["estimates"]}
    assert names == set(validate.TOP_SLOT_ESTIMATORS) | {"iips", "rips"}
    for r in seed_record["estimates"]:
        assert r["true_lift"] == pytest.approx(r["true_treatment"] / r["true_control"] - 1)
        assert r["ci_low"] <= r["ci_high"]
    truth = seed_record["truth"]["treatment"]
    assert truth["slate"] > truth["top"] > 0  # the whole slate earns more than its top slot


def test_summary_has_bias_and_coverage_per_estimator(seed_record):
    table = validate.summarize([seed_record, seed_record])
    assert table["n_seeds"].to_list() == [2] * table.height
    assert set(table.columns) >= {"estimator", "bias", "coverage", "rmse", "mean_width"}
    assert table["coverage"].is_between(0, 1).all()

