"""The validation harness on a tiny world (the N-seed numbers come from `python -m recsim.jobs.validate`)."""

import numpy as np
import pytest

from recsim.jobs import validate
from recsim.ope.adapters import obd

TINY = dict(n_members=300, n_authors=60, n_impressions=4000, slate_size=5, n_candidates=20,
            max_posts_per_source=400)


@pytest.fixture(scope="module")
def seed_record(small_corpus):
    return validate.run_seed(0, small_corpus, n_boot=50, n_samples=16, world_overrides=TINY)


def test_one_seed_reports_every_estimator_beside_the_truth(seed_record):
    names = {r["estimator"] for r in seed_record["estimates"]}
    assert names == set(validate.TOP_SLOT_ESTIMATORS) | {"iips", "rips", "pbm"}
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


def test_obd_logs_load_with_their_propensities():
    random_log, bts_log = obd.load_log("random"), obd.load_log("bts")
    assert random_log.height == bts_log.height == 10_000
    assert (random_log["propensity"] == 1 / 80).all()
    assert bts_log["position"].unique().sort().to_list() == [1, 2, 3]
    dist = obd.bts_action_dist(n_sim=20_000)
    assert np.allclose(dist.sum(axis=0), 1.0) and dist.shape == (80, 3)
    with pytest.raises(ValueError, match="OBD policy 'greedy' is unknown"):
        obd.load_log("greedy")


def test_obd_ips_estimates_bts_from_the_random_log_within_its_interval():
    rows = obd.relative_errors(n_boot=100)
    ips = next(r for r in rows if r["estimator"] == "ips" and r["behavior"] == "random")
    assert ips["on_policy_inside"] and ips["relative_error"] < 0.5
