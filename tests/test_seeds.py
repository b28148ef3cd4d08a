"""The seed summary (recsim/jobs/seeds.py): per-seed rows read from real report.json files, the t
interval over seeds against a hand computation, grouping by overrides, and bad sweeps."""

import copy
import json
import math

import pytest
import yaml

from recsim.jobs import seeds
from recsim.report.contract import jsonable


def _write_job(sweep, num: int, report: dict, overrides: list[str]) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / "report.json").write_text(json.dumps(jsonable(report)))


def _report(tiny_report: dict, seed: int, true_lift: float, auc_new: float) -> dict:
    r = copy.deepcopy(tiny_report)
    r["seed"] = seed
    r["truth"]["lift"] = true_lift
    r["ranker"]["new"]["auc"] = auc_new
    r["retrieval"]["recall_by_policy"]["new"] = {10: 0.1, 100: 0.5}
    return r


def _one_job(sweep, tiny_report):
    _write_job(sweep, 0, _report(tiny_report, 0, 0.1, 0.7), ["seed=0"])
    return sweep


def test_seeds_from_several_sweeps_go_to_one_table(tmp_path, tiny_report):
    first, second = tmp_path / "first", tmp_path / "second"
    _write_job(first, 0, _report(tiny_report, 0, 0.1, 0.7), ["experiment=a", "seed=0"])
    _write_job(second, 0, _report(tiny_report, 3, 0.3, 0.7), ["experiment=a", "seed=3"])
    summary = seeds.summarize([first, second], out=tmp_path / "both")
    (group,) = summary["groups"]
    assert group["seeds"] == [0, 3]
    assert group["over_seeds"]["true_lift"]["mean"] == pytest.approx(0.2)
    assert (tmp_path / "both" / "seeds.md").exists() and not (first / "seeds.md").exists()


def test_over_seeds_is_the_t_interval_by_hand():
    s = seeds.over_seeds([0.01, 0.02, 0.03, float("nan")])
    # mean .02, sd .01, t(0.975, 2) = 4.302653
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert s["n"] == 3 and s["above_zero"] == 3
    assert s["mean"] == pytest.approx(0.02)
    assert s["ci_low"] == pytest.approx(0.02 - half, abs=1e-6)
    assert s["ci_high"] == pytest.approx(0.02 + half, abs=1e-6)
    one = seeds.over_seeds([0.5])
    assert one["mean"] == 0.5 and math.isnan(one["ci_low"])


def test_summary_groups_by_overrides_and_reads_each_measurement(tmp_path, tiny_report):
    sweep = tmp_path / "sweep"
    lifts, aucs = [0.10, -0.02, 0.04], [0.71, 0.73, 0.69]
    for i, (lift, auc) in enumerate(zip(lifts, aucs)):
        _write_job(sweep, i, _report(tiny_report, i, lift, auc), ["experiment=a", f"seed={i}"])
        _write_job(sweep, 10 + i, _report(tiny_report, i, 2 * lift, auc),
                   [f"seed={i}", "experiment=b"])
    (sweep / "99" / ".hydra").mkdir(parents=True)  # a job that failed: no report
    summary = seeds.summarize(sweep)
    assert [g["overrides"] for g in summary["groups"]] == ["experiment=a", "experiment=b"]
    assert summary["failed_jobs"] == [str(sweep / "99")]
    a, b = summary["groups"]
    assert a["seeds"] == [0, 1, 2]
    assert a["over_seeds"]["true_lift"]["mean"] == pytest.approx(sum(lifts) / 3)
    assert b["over_seeds"]["true_lift"]["mean"] == pytest.approx(2 * sum(lifts) / 3)
    assert a["over_seeds"]["true_lift"]["above_zero"] == 2
    # click AUC: the treatment's ("new") minus the control's (0.7, tiny_report's base head)
    assert a["over_seeds"]["click_auc"]["mean"] == pytest.approx(sum(aucs) / 3 - 0.7)
    job = a["jobs"][0]
    assert job["recall100"] == pytest.approx({"control": 0.4, "treatment": 0.5, "difference": 0.1})
    assert job["funnel_recall"]["difference"] == pytest.approx(0.0)
    assert job["online_ci"] == [-0.05, 0.2]
    md = (sweep / "seeds.md").read_text()
    assert "## `experiment=a`: base -> new" in md and "over 3 seeds" in md
    assert json.loads((sweep / "seeds.json").read_text())["groups"][1]["overrides"] == "experiment=b"


def test_bad_sweeps_say_what_is_wrong(tmp_path, tiny_report):
    with pytest.raises(FileNotFoundError, match="no such sweep"):
        seeds.summarize(tmp_path / "missing")
    (tmp_path / "empty" / "0" / ".hydra").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no job has a report.json"):
        seeds.summarize(tmp_path / "empty")
    twice = tmp_path / "twice"
    for num in (0, 1):
        _write_job(twice, num, _report(tiny_report, 0, 0.1, 0.7), ["seed=0"])
    with pytest.raises(ValueError, match="has a seed twice"):
        seeds.summarize(twice)
    with pytest.raises(ValueError, match="has a seed twice"):  # the same sweep given twice
        seeds.summarize([logs_ok := _one_job(tmp_path / "a", tiny_report), logs_ok])
    logs = tmp_path / "logs"
    no_truth = _report(tiny_report, 0, 0.1, 0.7)
    no_truth["truth"] = None
    _write_job(logs, 0, no_truth, ["data=logs"])
    with pytest.raises(ValueError, match="no truth"):
        seeds.summarize(logs)


def test_the_callback_summarises_a_multirun_and_only_warns_when_it_cannot(tmp_path, tiny_report,
                                                                          caplog):
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    sweep = tmp_path / "sweep"
    callback = seeds.SeedsSummary()
    config = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep)}}})
    sweep.mkdir()
    callback.on_job_end(config)  # nothing finished yet: a warning, no exception
    assert "no job has a report.json" in caplog.text and not (sweep / "seeds.md").exists()
    _write_job(sweep, 0, _report(tiny_report, 0, 0.1, 0.7), ["experiment=a", "seed=0"])
    callback.on_job_end(config)
    assert "over 1 seeds" in (sweep / "seeds.md").read_text()
    single = OmegaConf.create({"hydra": {"mode": RunMode.RUN, "sweep": {"dir": str(tmp_path / "x")}}})
    callback.on_job_end(single)  # a single run: nothing written
    assert not (tmp_path / "x").exists()
