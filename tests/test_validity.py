"""The validity job's summary against hand-computed coverage, bias and wrong-sign counts."""

import polars as pl
import pytest

from recsim.jobs.validity import run_rows, summarize


def test_summary_by_hand():
    rows = pl.DataFrame({
        "regime": ["a"] * 4, "estimator": ["ips"] * 4, "scope": ["top slot"] * 4,
        "interval": ["percentile"] * 4,
        "lift": [0.10, 0.00, -0.20, 0.05], "ci_low": [0.05, -0.10, -0.30, -0.05],
        "ci_high": [0.15, 0.10, -0.10, 0.15], "true_lift": [0.10, 0.02, 0.05, 0.30],
        "status_ok": [True, True, False, True]})
    (row,) = summarize(rows).to_dicts()
    assert row["coverage"] == pytest.approx(2 / 4)  # seeds 1 and 2 cover
    assert row["bias"] == pytest.approx((0.0 - 0.02 - 0.25 - 0.25) / 4)
    assert row["significant"] == 2 and row["wrong_sign"] == 1  # seed 3: [-30%, -10%] vs +5%
    assert row["wrong_sign_ok"] == 0 and row["status_ok"] == 3  # seed 3 carried a warning
    assert row["width"] == pytest.approx((0.10 + 0.20 + 0.20 + 0.20) / 4)


def test_run_rows_take_the_online_test_and_every_interval_method():
    report = {"truth": {"lift": 0.1, "online_ab": {"lift": 0.12, "ci_low": 0.0, "ci_high": 0.2}},
              "lifts": [{"estimator": "snips", "scope": "top slot", "lift": 0.2, "ci_low": 0.1,
                         "ci_high": 0.3, "true_lift": 0.15, "status": "ok",
                         "intervals": {"studentized": [0.05, 0.35]}}]}
    rows = run_rows(report, "stochastic", 3)
    assert [(r["estimator"], r["interval"]) for r in rows] == [
        ("online test", "percentile"), ("snips", "percentile"), ("snips", "studentized")]
    assert rows[2]["ci_low"] == 0.05 and rows[1]["true_lift"] == 0.15


def test_a_finished_run_with_the_same_overrides_is_read_back_not_rerun(tmp_path):
    import json

    from recsim.jobs.validity import _run_one

    overrides = ["seed=3", "sim.policy_temperature=0.5"]
    (tmp_path / "report.json").write_text(json.dumps({"lifts": [], "marker": 7}))
    (tmp_path / "overrides.json").write_text(json.dumps(overrides))
    assert _run_one(overrides, tmp_path)["marker"] == 7  # no Hydra context: a rerun would raise
    with pytest.raises(AssertionError, match="GlobalHydra"):  # other overrides: it must run
        _run_one(["seed=4"], tmp_path)
