"""`recsim-run data=obd`: the Open Bandit Dataset sample through the main job.

The run's figures are checked against the adapter that computes them (evaluate_obd, with the
same settings) and against a recomputation by hand from the logs (IPS, the truth). The BTS
table is drawn with FAST_SIM simulations here (obp's protocol: 1e6, 10-20 s on this machine).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from recsim.jobs.run import run
from recsim.ope.adapters import obd, obd_eval
from recsim.paths import CONF_DIR
from recsim.report.contract import load_report
from recsim.report.obd import obd_verdict

ROOT = Path(__file__).resolve().parents[1]
FAST_SIM = 20_000
FAST = ["data=obd", f"data.n_sim={FAST_SIM}", "sim.n_bootstrap=50", "seed=3"]


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose("config", overrides=overrides)


def _run(out: Path, *extra: str) -> dict:
    return run(_compose([*FAST, *extra]), str(out))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("obd")
    return _run(out), out


def test_the_report_is_schema_valid_and_its_ips_is_evaluate_obds(report):
    written = load_report(report[1])  # checked against report.schema.json
    assert written["data"]["source"] == "obd" and written["data"]["estimates_only"] is False
    assert written["lifts"] == [] and written["truth"] is None
    rows = obd_eval.evaluate_obd("all", "random_to_bts", list(obd_eval.DEFAULT_ESTIMATORS),
                                 n_boot=50, seed=3, n_sim=FAST_SIM)
    ours = {row["estimator"]: row for row in written["obd"]["rows"]}
    assert set(ours) == set(obd_eval.DEFAULT_ESTIMATORS)
    for row in rows:
        mine = ours[row["estimator"]]
        assert mine["status"] == row["status"]
        for key in ("estimate", "ci_low", "ci_high", "relative_error"):
            assert mine[key] == pytest.approx(row[key], rel=1e-12), key
    truth = written["obd"]["truth"]
    assert (truth["value"], truth["ci_low"], truth["ci_high"]) == pytest.approx(
        (rows[0]["on_policy"], rows[0]["on_policy_low"], rows[0]["on_policy_high"]))


def test_ips_and_the_truth_recomputed_by_hand_from_the_logs(report):
    o = report[0]["obd"]
    random_log, bts_log = obd.load_log("random", "all"), obd.load_log("bts", "all")
    dist = obd.bts_action_dist("all", FAST_SIM)
    item, pos = random_log["item_id"].to_numpy(), random_log["position"].to_numpy() - 1
    w = dist[item, pos] / random_log["propensity"].to_numpy()
    ips = float(np.mean(w * random_log["reward"].to_numpy()))
    rows = {row["estimator"]: row for row in o["rows"]}
    assert rows["ips"]["estimate"] == pytest.approx(ips, rel=1e-12)
    assert o["truth"]["value"] == pytest.approx(float(bts_log["reward"].mean()), rel=1e-12)
    assert o["truth"]["n"] == bts_log.height == 10_000 and o["n_items"] == 80


def test_the_verdict_rests_on_the_first_recommended_ok_estimator(report):
    data, out = report
    rows = {row["estimator"]: row for row in data["obd"]["rows"]}
    first = next(n for n in data["sim"]["recommended"] if rows.get(n, {}).get("status") == "ok")
    assert data["verdict"]["estimator"] == first == "dr"  # random logging: every status ok
    assert data["objective"] == {"name": "verdict", "value": rows["dr"]["estimate"]}
    md = (out / "report.md").read_text()
    assert md.startswith("# Open Bandit Dataset: the bts policy's click rate from the random log")
    assert f"Verdict from the log: {data['verdict']['text']}" in md
    assert f"{rows['dr']['estimate']:.4f}" in data["verdict"]["text"]
    assert "not a paired lift" in md and "Skipped: embeddings, retrieval, ranker" in md
    assert '<img alt="Each estimator' in (out / "report.html").read_text()


def test_bts_logging_marks_replay_invalid_and_men_has_34_items(tmp_path):
    data = _run(tmp_path, "data.direction=bts_to_random", "data.campaign=men",
                "sim.recommended=[replay,ips,snips]", "report.objective=ips")
    o = data["obd"]
    rows = {row["estimator"]: row for row in o["rows"]}
    assert (o["behavior"], o["evaluation"], o["n_items"]) == ("bts", "random", 34)
    assert rows["replay"]["status"] == "assumption broken: replay needs uniform logging"
    assert data["verdict"]["estimator"] != "replay"
    assert data["objective"]["value"] == rows["ips"]["estimate"]
    assert json.loads((tmp_path / "report.json").read_text())["obd"]["campaign"] == "men"


def test_no_ok_recommended_estimator_means_the_log_cannot_tell():
    o = {"behavior": "bts", "evaluation": "random", "truth": {"value": 0.005},
         "rows": [{"estimator": "replay", "status": "assumption broken: replay needs uniform "
                   "logging"}]}
    verdict = obd_verdict(o, ["replay", "dr"])
    assert verdict["estimator"] is None and verdict["text"].startswith("**This log cannot tell")
    assert "replay: assumption broken" in verdict["text"]


@pytest.mark.parametrize("overrides, fragment", [
    (["data.campaign=kids"], "data.campaign: must be one of ['all', 'men', 'women'], got 'kids'"),
    (["data.direction=bts"], "data.direction: must be one of"),
    (["data.estimators=[ips,iips]"], "data.estimators: unknown ['iips']"),
    (["data.n_sim=0"], "data.n_sim: must be >= 1"),
    (["data.data_dir=/no/such/dir"], "data.data_dir: /no/such/dir is not a directory"),
    (["sim.metric=like", "sim.estimators=[ips]", "sim.segment_estimator=ips"], "sim.metric: 'like'; the Open Bandit Dataset logs clicks only"),
    (["report.objective=true_lift"], "report.objective: 'true_lift' is not computed with data=obd"),
])
def test_a_bad_setting_names_its_key_and_writes_nothing(tmp_path, overrides, fragment):
    out = tmp_path / "report"
    with pytest.raises(Exception) as err:
        _run(out, *overrides)
    message = str(err.value) + str(err.value.__cause__)
    assert fragment in message, message
    assert not out.exists()


def test_the_cli_help_lists_the_obd_option_and_composes_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "recsim.jobs.run", "data=obd", "--help"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          check=True)
    assert "data: logs, obd, world" in proc.stdout
    config = proc.stdout.split("== Config ==")[1]
    assert "_target_: recsim.jobs.run_obd.ObdDataConfig" in config
    assert "campaign: all" in config and "direction: random_to_bts" in config
    assert list(tmp_path.iterdir()) == []
