"""Guard rails: each status, the verdict's wording for each case, uniform-logging detection."""

import polars as pl
import pytest

from recsim.ope import verdict


def _row(name, lift, lo, hi, mde=0.10, status="ok"):
    return {"estimator": name, "lift": lift, "ci_low": lo, "ci_high": hi, "mde": mde,
            "status": status}


@pytest.mark.parametrize("args, expected", [
    (("replay", 100, 5000, 1.0, False), "assumption broken: replay needs uniform logging"),
    (("replay", 100, 5000, 1.0, True), "ok"),
    (("ips", 100, 5000, 0.63, False), "partial support (0.63): biased"),
    (("ips", 100, 76, 1.0, False), "effective sample size 76 < 100"),
    (("snips", 100, 100, 1.0, False), "ok"),
    (("dm", 100, 5, 1.0, False), "ok"),  # no importance weights: the sample-size rule is not DM's
])
def test_status_of_each_kind(args, expected):
    assert verdict.status(*args) == expected


def test_verdict_better_worse_and_not_detectable():
    better = verdict.verdict([_row("dr", 0.08, 0.02, 0.14)], ["dr"])
    assert better["text"].startswith("**Treatment better by +8.0%** [+2.0%, +14.0%]")
    worse = verdict.verdict([_row("dr", -0.08, -0.14, -0.02)], ["dr"])
    assert worse["text"].startswith("**Treatment worse by -8.0%**")
    flat = verdict.verdict([_row("dr", 0.02, -0.08, 0.12, mde=0.10)], ["dr"])
    # MDE 10% against a 2% lift: (10 / 2)^2 = 25 times the requests
    assert "this log detects lifts above +10.0% (MDE); about 25 times the requests" in flat["text"]
    assert flat["text"].startswith("**No detectable difference**") and not flat["detectable"]


def test_verdict_skips_rows_that_are_not_ok_and_says_when_the_log_cannot_tell():
    rows = [_row("sndr", 0.3, 0.2, 0.4, status="effective sample size 40 < 100"),
            _row("dr", 0.05, 0.01, 0.09)]
    assert verdict.verdict(rows, ["sndr", "dr"])["estimator"] == "dr"
    none = verdict.verdict([_row("iips", 0.3, 0.1, 0.5, status="partial support (0.20): biased")],
                           ["iips"])
    assert none["estimator"] is None and none["text"].startswith("**This log cannot tell.**")
    assert "partial support (0.20)" in none["text"]


def test_uniform_logging_is_detected_from_the_propensities():
    candidates = pl.DataFrame({"request_id": [1, 1, 1, 1, 2, 2], "post_id": [1, 2, 3, 4, 1, 2]})
    uniform = pl.DataFrame({"request_id": [1, 2], "propensity": [0.25, 0.5]})
    assert verdict.logging_is_uniform(uniform, candidates)
    assert not verdict.logging_is_uniform(uniform.with_columns(propensity=pl.lit(0.3)), candidates)


def test_replay_is_refused_on_the_worlds_non_uniform_log(small_world):
    first = small_world.impressions.filter(pl.col("position") == 1)
    assert not verdict.logging_is_uniform(first, small_world.candidates)
