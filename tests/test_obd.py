"""The Open Bandit Dataset adapter against obp's own protocol (recomputed here with numpy)."""

import json
import re

import numpy as np
import polars as pl
import pytest

from recsim.jobs import obd as obd_job
from recsim.ope.adapters import obd, obd_eval
from recsim.ope.estimators import Bootstrap, evaluate

FAST_SIM = 20_000  # BTS simulations in the fast tests (obp's protocol: 1e6, the slow test)


def _obp_select_actions(campaign: str, n_sim: int, seed: int = 12345) -> np.ndarray:
    """obp 0.4.1's BernoulliTS(is_zozotown_prior=True).compute_batch_action_dist, written out:
    one `beta(a, b)` call per simulation (a = 0 clicks + alpha, b = 0 misses + beta), the items
    by `argsort()[::-1][:len_list]`, counted per position and divided by n_sim."""
    alpha, beta = obd.bts_prior(campaign)
    rng = np.random.RandomState(seed)
    count = np.zeros((len(alpha), 3))
    for _ in np.arange(n_sim):
        selected = rng.beta(a=np.zeros(len(alpha)) + alpha, b=np.zeros(len(alpha)) + beta)
        for pos, action in enumerate(selected.argsort()[::-1][:3]):
            count[action, pos] += 1
    return count / n_sim


@pytest.mark.parametrize("campaign", ["all", "men"])
def test_bts_table_equals_obps_simulation_loop(campaign):
    ours = obd.bts_action_dist(campaign, n_sim=1000, chunk=300)  # chunks cross simulations
    assert np.array_equal(ours, _obp_select_actions(campaign, 1000))
    assert np.allclose(ours.sum(axis=0), 1.0)


def test_item_counts_come_from_the_data():
    assert {c: obd.n_items(c) for c in obd.CAMPAIGNS} == {"all": 80, "men": 34, "women": 46}
    men = obd.load_log("random", "men")
    assert np.allclose(men["propensity"], 1 / 34)  # not 1/80
    assert np.allclose(obd.action_dist("random", "men"), np.full((34, 3), 1 / 34))
    assert obd.action_dist("bts", "women", n_sim=FAST_SIM).shape == (46, 3)
    assert obd.logging_is_uniform(men, 34) and not obd.logging_is_uniform(men, 80)
    assert not obd.logging_is_uniform(obd.load_log("bts", "men"), 34)


def test_logs_are_in_obps_order():
    raw = pl.read_csv(obd.log_path("random", "men"))
    log = obd.load_log("random", "men")
    assert log.height == 10_000 and log["member_id"].to_list() == list(range(10_000))
    assert log["timestamp"].is_sorted()
    # pandas' quicksort (obp sorts by timestamp) swaps two tied rows of this file
    moved = (log["item_id"] != raw["item_id"]) | (log["position"] != raw["position"])
    assert moved.sum() <= 2 and (log["timestamp"] == raw["timestamp"]).all()


@pytest.mark.parametrize("call, message", [
    (lambda: obd.load_log("greedy"), "OBD policy 'greedy' is unknown"),
    (lambda: obd.load_log("random", "kids"), "OBD campaign 'kids' is unknown"),
    (lambda: obd_eval.evaluate_obd("all", "bts->random"), "OBD direction 'bts->random'"),
    (lambda: obd_eval.evaluate_obd("all", estimators=["iips"]), "choose one or more"),
    (lambda: obd_eval.relative_error_protocol("men", "bts_to_random", n_runs=1), "n_runs"),
])
def test_bad_choices_name_the_option(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _set_row_7(column, value):
    return lambda f: f.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(value)
                                    .otherwise(pl.col(column)).alias(column))


@pytest.mark.parametrize("change, message", [
    (_set_row_7("propensity_score", 0.0),
     r"column 'propensity_score': 1 bad value\(s\) \(first: \[0.0\]\)"),
    (_set_row_7("position", 4), r"column 'position': 1 bad value\(s\) \(first: \[4\]\)"),
    (_set_row_7("click", 2), r"column 'click': 1 bad value\(s\) \(first: \[2\]\)"),
    (lambda f: f.drop("click"), r"missing column\(s\) \['click'\]"),
    (lambda f: f.head(0), "no rows"),
])
def test_a_bad_log_names_its_file_and_column(tmp_path, change, message):
    frame = change(pl.read_csv(obd.log_path("random", "men")).head(50))
    path = tmp_path / "random" / "men" / "men.csv"
    path.parent.mkdir(parents=True)
    frame.write_csv(path)
    with pytest.raises(ValueError, match=re.escape(f"{path}: ") + message):
        obd.load_log("random", "men", data_dir=tmp_path)


def test_resample_is_obps_bootstrap_draw():
    frame = obd.load_log("random", "women")
    # numpy's legacy choice(range(n), n, replace=True) is randint(0, n, n)
    expected = np.random.RandomState(3).randint(0, frame.height, size=frame.height)
    assert np.array_equal(obd_eval.resample(frame, 3)["member_id"].to_numpy(), expected)


def test_point_estimates_equal_the_bootstrapped_values():
    frame = obd.decisions(obd.load_log("random", "men"), obd.action_dist("bts", "men", FAST_SIM))
    names = ["replay", "ips", "snips", "dm", "dr"]
    points = obd_eval.point_estimates(names, frame, "men")
    full = evaluate(names, frame, Bootstrap(20, 0))
    for name in names:
        assert points[name][0] == pytest.approx(full[name][0].value, rel=1e-12)
    # on uniform logging replay is SNIPS, and IPS is the mean of w * click, by hand
    assert points["replay"][0] == pytest.approx(points["snips"][0], rel=1e-12)
    w = frame["target_prob"] / frame["propensity"]
    assert points["ips"][0] == pytest.approx(float((w * frame["reward"]).mean()), rel=1e-12)


def test_estimates_beside_the_on_policy_truth_and_replay_status():
    rows = obd_eval.evaluate_obd("men", "random_to_bts", ["replay", "ips", "dr"], n_boot=100,
                                 n_sim=FAST_SIM)
    truth = float(obd.load_log("bts", "men")["reward"].mean())
    for r in rows:
        assert r["on_policy"] == pytest.approx(truth)
        assert r["on_policy_low"] < truth < r["on_policy_high"]
        assert r["relative_error"] == pytest.approx(abs(r["estimate"] - truth) / truth)
        assert r["status"] == "ok" and r["unsupported_mass"] == 0.0
    back = obd_eval.evaluate_obd("men", "bts_to_random", ["replay", "ips"], n_boot=50)
    status = {r["estimator"]: r["status"] for r in back}
    assert status["replay"] == "assumption broken: replay needs uniform logging"
    assert status["ips"] != status["replay"]


def test_ips_estimates_bts_from_the_random_log_within_its_interval():
    rows = obd_eval.evaluate_obd("all", "random_to_bts", ["ips"], n_boot=100, n_sim=FAST_SIM)
    assert rows[0]["on_policy_inside"] and rows[0]["relative_error"] < 0.5


def test_protocol_rows_carry_obps_figures_where_published():
    rows = obd_eval.relative_error_protocol("women", "bts_to_random", ["ips", "snips"], n_runs=4)
    assert [r["estimator"] for r in rows] == ["ips", "snips"]
    assert all(r["obp_mean"] is None and r["mean"] >= 0 and r["std"] >= 0 for r in rows)
    assert obd_eval.OBP_PUBLISHED[("all", "random_to_bts")]["ips"] == (0.311082, 0.311170)


@pytest.mark.slow
def test_protocol_reproduces_obps_published_ipw_and_snipw():
    """obp's examples/obd README: IPW 0.311082 (std 0.311170), SNIPW 0.311795 (0.334736) over 30
    resamples with the 1e6-simulation BTS table: identical here to six digits."""
    rows = {r["estimator"]: r for r in obd_eval.relative_error_protocol(
        "all", "random_to_bts", ["ips", "snips", "dm", "dr"])}
    for name in ("ips", "snips"):
        assert rows[name]["mean"] == pytest.approx(rows[name]["obp_mean"], abs=1e-6)
        assert rows[name]["std"] == pytest.approx(rows[name]["obp_std"], abs=1e-6)


def test_cli_protocol_writes_rows_and_help_lists_options(tmp_path, capsys):
    out = tmp_path / "obd.json"
    rows = obd_job.run(["--mode", "protocol", "--campaign", "men", "--direction",
                         "bts_to_random", "--estimators", "ips", "snips", "--n-runs", "3",
                         "--out", str(out)])
    assert json.loads(out.read_text()) == rows and len(rows) == 2
    assert obd_job.main(["--mode", "protocol", "--campaign", "men", "--direction",
                         "bts_to_random", "--estimators", "ips", "--n-runs", "2",
                         "--out", str(out)]) is None  # a console script's exit status 0
    with pytest.raises(SystemExit):
        obd_job.main(["--help"])
    text = capsys.readouterr().out
    for option in ("--mode", "--campaign", "--direction", "--estimators", "--n-runs", "--n-sim"):
        assert option in text
