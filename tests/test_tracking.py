"""MLflow tracking (recsim/jobs/tracking.py): a run logged into a temporary file store and read
back through MLflow's client API; a real Hydra multirun's jobs under one parent run."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from recsim.jobs import tracking
from recsim.jobs.api import compose_config
from recsim.report.contract import load_report
from recsim.report.writer import write_report

ROOT = Path(__file__).resolve().parents[1]


def _cfg(store, enabled=True, **extra):
    return OmegaConf.create({"tracking": {"enabled": enabled, "tracking_uri": store.as_uri(),
                                          "experiment_name": "test", **extra}})


def test_flatten_params():
    config = {"seed": 0, "world": {"_target_": "x.WorldConfig", "n_members": 300,
                                   "member_langs": {"en": 0.9}},
              "retrieval": {"recall_at": [10, 100]}, "report": {"output_dir": None}}
    assert tracking.flatten_params(config) == {
        "seed": "0", "world.n_members": "300", "world.member_langs.en": "0.9",
        "retrieval.recall_at": "[10, 100]", "report.output_dir": "None"}


def test_report_metrics_are_the_finite_key_figures(tiny_report):
    metrics = tracking.report_metrics(tiny_report)
    assert metrics["offline/snips/lift"] == pytest.approx(0.2)
    assert metrics["offline/iips/ci_high"] == pytest.approx(0.2)
    assert metrics["offline/snips/true_lift"] == 0.25
    assert metrics["truth/lift"] == 0.1 and metrics["truth/top_slot_lift"] == 0.25
    assert metrics["online_ab/ci_low"] == -0.05
    assert metrics["retrieval/recall_at_100"] == 0.4
    assert metrics["ranker/new/click/auc"] == 0.72 and metrics["ranker/base/click/ne"] == 0.9
    assert "ranker/base/share/auc" not in metrics  # NaN: left out
    assert metrics["time/4_ranker"] == 2.0 and metrics["objective"] == pytest.approx(0.2)
    # 2 estimators x 4, truth 2, online test 3, recall 2, 2 rankers x click (auc, ne), 2 steps
    assert len(metrics) == 8 + 2 + 3 + 2 + 4 + 2 + 1
    assert all(math.isfinite(v) for v in metrics.values())


def test_a_run_round_trips_through_mlflow(tiny_report, tmp_path):
    out, store = tmp_path / "run", tmp_path / "mlruns"
    write_report(tiny_report, out)
    run_id = tracking.log_run(_cfg(store), tiny_report, out)

    client = MlflowClient(store.as_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "test"
    assert run.data.params["sim.alpha"] == "0.05" and run.data.params["world.n_members"] == "300"
    assert "world._target_" not in run.data.params
    assert run.data.metrics == pytest.approx(tracking.report_metrics(tiny_report))
    assert run.data.tags["recsim.output_dir"] == str(out)
    assert run.data.tags["recsim.verdict"] == tiny_report["verdict"]["text"]
    assert "mlflow.parentRunId" not in run.data.tags
    assert sorted(a.path for a in client.list_artifacts(run_id)) == [
        "report.html", "report.json", "report.md"]
    fetched = client.download_artifacts(run_id, "report.json", str(tmp_path / "fetched"))
    assert load_report(fetched, nan=False) == load_report(out, nan=False)


def test_jobs_of_a_sweep_are_children_of_one_parent(tiny_report, tmp_path):
    store, cfg = tmp_path / "mlruns", _cfg(tmp_path / "mlruns")
    sweep = OmegaConf.merge(cfg, {"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    callback = tracking.MultirunParent()
    callback.on_multirun_start(sweep)
    ids = [tracking.log_run(cfg, tiny_report, tmp_path / f"job{i}", sweep_dir=tmp_path / "sweep")
           for i in range(2)]
    callback.on_multirun_end(sweep)
    tracking.log_run(cfg, tiny_report, tmp_path / "other", sweep_dir=tmp_path / "other_sweep")

    client = MlflowClient(store.as_uri())
    parents = {client.get_run(i).data.tags["mlflow.parentRunId"] for i in ids}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    assert parent.data.tags["recsim.role"] == "sweep" and parent.info.status == "FINISHED"
    assert parent.data.tags["recsim.sweep_dir"] == str(tmp_path / "sweep")
    runs = client.search_runs([parent.info.experiment_id])
    assert sum(r.data.tags.get("recsim.role") == "sweep" for r in runs) == 2  # one per sweep


def test_off_with_one_switch(tiny_report, tmp_path, monkeypatch):
    assert tracking.log_run(_cfg(tmp_path / "mlruns", enabled=False), tiny_report, tmp_path) is None
    tracking.MultirunParent().on_multirun_start(OmegaConf.merge(
        _cfg(tmp_path / "mlruns", enabled=False), {"hydra": {"sweep": {"dir": str(tmp_path)}}}))
    assert not (tmp_path / "mlruns").exists()
    monkeypatch.delenv("RECSIM_TRACKING", raising=False)
    assert compose_config([]).tracking.enabled is True  # on by default
    assert compose_config(["tracking.enabled=false"]).tracking.enabled is False
    monkeypatch.setenv("RECSIM_TRACKING", "false")  # what tests/conftest.py sets
    assert compose_config([]).tracking.enabled is False


def test_the_default_store_is_mlruns_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_uri(None) == (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.resolve_uri(None) == "http://mlflow.example:5000"
    assert tracking.resolve_uri("sqlite:///x.db") == "sqlite:///x.db"


@pytest.mark.parametrize("values, message", [
    ({"enabled": "yes"}, "tracking.enabled: must be true or false, not 'yes'"),
    ({"experiment_name": ""}, "tracking.experiment_name: a non-empty name"),
    ({"uri": "x"}, r"tracking: unknown key\(s\) \['uri'\]"),
])
def test_a_bad_tracking_config_is_refused_naming_its_key(values, message):
    with pytest.raises(ValueError, match=message):
        tracking.TrackingConfig.of(OmegaConf.create({"tracking": values}))


def test_a_tracking_failure_says_where_the_report_is(tiny_report, tmp_path):
    cfg = OmegaConf.create({"tracking": {"tracking_uri": "nosuchscheme://x"}})
    with pytest.raises(RuntimeError, match=f"the report itself is in {tmp_path}"):
        tracking.log_run(cfg, tiny_report, tmp_path)


APP = """
import json
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from recsim.jobs.tracking import log_run

@hydra.main(version_base="1.3", config_path=".", config_name="app")
def main(cfg):
    report = json.loads(open(cfg.report_file).read())
    report["config"] = OmegaConf.to_container(cfg)
    log_run(cfg, report, HydraConfig.get().runtime.output_dir)
    return cfg.x

main()
"""


def test_a_hydra_multirun_logs_its_jobs_under_one_parent(tiny_report, tmp_path):
    """A real Hydra multirun (basic launcher) with the MultirunParent callback of
    conf/config.yaml: a tiny task that logs a report, so it runs in seconds."""
    store = tmp_path / "mlruns"
    (tmp_path / "report.json").write_text(json.dumps(tiny_report, allow_nan=True))
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "app.yaml").write_text(textwrap.dedent(f"""
        x: 0
        report_file: {tmp_path / "report.json"}
        tracking: {{enabled: true, tracking_uri: "{store.as_uri()}", experiment_name: sweep}}
        hydra:
          callbacks:
            tracking: {{_target_: recsim.jobs.tracking.MultirunParent}}
          sweep: {{dir: "{tmp_path / "multirun"}"}}
        """))
    proc = subprocess.run([sys.executable, "app.py", "-m", "x=1,2"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(store.as_uri())
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    parents = [r for r in runs if r.data.tags.get("recsim.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("recsim.role") == "job"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.params["x"] for r in children) == ["1", "2"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(r.info.run_name for r in children) == ["x=1", "x=2"]
