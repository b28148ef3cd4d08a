"""Experiment tracking: each run's config, key metrics and report files logged to MLflow.

    recsim-run experiment=debug                     # a run in ./mlruns (a local file store)
    recsim-run tracking.tracking_uri=http://mlflow.internal:5000 tracking.experiment_name=feed-ab
    recsim-run tracking.enabled=false               # nothing logged (RECSIM_TRACKING=false too)
    recsim-run -m seed=0,1,2                        # a parent run per sweep, a child per job

The `tracking:` block of conf/config.yaml: `tracking_uri: null` is $MLFLOW_TRACKING_URI when set,
else the file store ./mlruns under the working directory (nothing to start; MLflow 3 keeps that
backend in maintenance mode and asks for MLFLOW_ALLOW_FILE_STORE=true, which this sets for it).
Any URI MLflow takes works (http://..., databricks, sqlite:///mlflow.db with the full mlflow
package). What a run logs:

    params     the composed config, flattened: "sim.alpha", "world.n_members", ... (Hydra's
               _target_ / _convert_ left out)
    metrics    offline/<estimator>/{lift, ci_low, ci_high, true_lift}; truth/lift,
               truth/top_slot_lift; online_ab/{lift, ci_low, ci_high}; retrieval/recall_at_<K>;
               ranker/<policy>/<head>/{auc, ne}; time/<step> (s); objective (what a sweeper gets)
    artifacts  report.json, report.md, report.html
    tags       recsim.output_dir, recsim.schema_version, recsim.verdict, the job's overrides

A multirun's jobs are child runs of one parent run per sweep directory: the `MultirunParent`
Hydra callback (conf/config.yaml, hydra.callbacks) opens it before the first job and closes it
after the last; each job finds it by the sweep directory's tag, so jobs that a launcher runs in
other processes join it too. Metrics that are not finite (NaN: see report.json's "nulls") are
left out rather than logged as NaN.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

REPORT_FILES = ("report.json", "report.md", "report.html")
_BATCH = 100  # params per MLflow log_batch call (its limit)
_PARAM_CHARS = 6000  # MLflow's limit on a param value
_TAG_CHARS = 5000


@dataclass(frozen=True)
class TrackingConfig:
    """conf/config.yaml `tracking:`."""

    enabled: bool = True
    tracking_uri: str | None = None
    experiment_name: str = "recsim"

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            raise ValueError(f"tracking.enabled: must be true or false, not {self.enabled!r}")
        if self.tracking_uri is not None and not isinstance(self.tracking_uri, str):
            raise ValueError(f"tracking.tracking_uri: a URI or null, not {self.tracking_uri!r}")
        if not isinstance(self.experiment_name, str) or not self.experiment_name.strip():
            raise ValueError(f"tracking.experiment_name: a non-empty name, not "
                             f"{self.experiment_name!r}")

    @classmethod
    def of(cls, cfg: DictConfig) -> TrackingConfig:
        """The `tracking` node of a composed config; absent: the defaults."""
        node = OmegaConf.select(cfg, "tracking", default=None)
        values = OmegaConf.to_container(node, resolve=True) if node is not None else {}
        unknown = sorted(set(values) - {"enabled", "tracking_uri", "experiment_name"})
        if unknown:
            raise ValueError(f"tracking: unknown key(s) {unknown}; known: enabled, "
                             "tracking_uri, experiment_name")
        return cls(**values)


def resolve_uri(uri: str | None) -> str:
    """`uri`, else $MLFLOW_TRACKING_URI, else ./mlruns as a file URI; opts in to MLflow's file
    store when the URI is one."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or (Path.cwd() / "mlruns").as_uri()
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, values as text (lists as JSON), Hydra's
    `_target_` / `_convert_` left out, values cut at MLflow's 6,000 characters."""
    out = {}
    for key, value in config.items():
        if str(key).startswith("_"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_params(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            out[name] = text[:_PARAM_CHARS]
    return out


def _name(text: str) -> str:
    """A metric-name part MLflow accepts (letters, digits, _ - . / space)."""
    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", str(text))


def report_metrics(report: dict) -> dict[str, float]:
    """The report's key figures as MLflow metrics (finite values only)."""
    truth = report["truth"] or {}  # null: no truth (data=logs)
    online = truth.get("online_ab", {})
    out = {"truth/lift": truth.get("lift"),
           "truth/top_slot_lift": truth.get("top_slot", {}).get("lift"),
           **{f"online_ab/{k}": online.get(k) for k in ("lift", "ci_low", "ci_high")},
           "objective": report.get("objective", {}).get("value")}
    for row in report["lifts"]:
        for key in ("lift", "ci_low", "ci_high", "true_lift"):
            out[f"offline/{_name(row['estimator'])}/{key}"] = row[key]
    for k, recall in (report["retrieval"] or {}).get("recall", {}).items():
        out[f"retrieval/recall_at_{k}"] = recall
    for policy, ranker in report["ranker"].items():
        for head, m in ranker.get("heads", {}).items():
            out[f"ranker/{_name(policy)}/{_name(head)}/auc"] = m["auc"]
            out[f"ranker/{_name(policy)}/{_name(head)}/ne"] = m["normalized_entropy"]
    out.update({f"time/{_name(step)}": s for step, s in report["timings"].items()})
    return {k: float(v) for k, v in out.items()
            if isinstance(v, (int, float)) and math.isfinite(v)}


def _client(tracking: TrackingConfig):
    from mlflow.tracking import MlflowClient  # imported only when a run is tracked

    client = MlflowClient(resolve_uri(tracking.tracking_uri))
    experiment = client.get_experiment_by_name(tracking.experiment_name)
    experiment_id = (experiment.experiment_id if experiment is not None
                     else client.create_experiment(tracking.experiment_name))
    return client, experiment_id


def _sweep_key(sweep_dir: str) -> str:
    return hashlib.sha256(str(Path(sweep_dir).absolute()).encode()).hexdigest()[:16]


def parent_run_id(client, experiment_id: str, sweep_dir: str, create: bool = True) -> str | None:
    """The sweep's parent run (tagged with its directory's key); opened when absent and `create`."""
    key = _sweep_key(sweep_dir)
    runs = client.search_runs([experiment_id], max_results=1, filter_string=(
        f"tags.`recsim.sweep_key` = '{key}' and tags.`recsim.role` = 'sweep'"))
    if runs:
        return runs[0].info.run_id
    if not create:
        return None
    run = client.create_run(experiment_id, run_name=f"sweep {Path(sweep_dir).name}", tags={
        "recsim.sweep_key": key, "recsim.role": "sweep",
        "recsim.sweep_dir": str(Path(sweep_dir).absolute())})
    return run.info.run_id


def _hydra_job() -> dict:
    """The Hydra job's sweep directory (multirun only), run name and overrides; {} outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {}
    hc = HydraConfig.get()
    return {"sweep_dir": hc.sweep.dir if hc.mode == RunMode.MULTIRUN else None,
            "name": hc.job.override_dirname or hc.job.name,
            "overrides": " ".join(hc.overrides.task)}


def log_run(cfg: DictConfig, report: dict, output_dir: str | Path,
            sweep_dir: str | None = None) -> str | None:
    """Log one run (its report and the report files in `output_dir`) to MLflow, under the
    sweep's parent run in a multirun (`sweep_dir`, or Hydra's); returns the run id, or None when
    tracking is off. An error says the report is on disk nonetheless."""
    tracking = TrackingConfig.of(cfg)
    if not tracking.enabled:
        return None
    job = _hydra_job()
    sweep_dir = sweep_dir or job.get("sweep_dir")
    output_dir = Path(output_dir).absolute()
    try:
        client, experiment_id = _client(tracking)
        tags = {"recsim.output_dir": str(output_dir), "recsim.role": "job",
                "recsim.schema_version": str(report.get("schema_version")),
                "recsim.verdict": report["verdict"]["text"][:_TAG_CHARS],
                "recsim.overrides": job.get("overrides", "")[:_TAG_CHARS]}
        if sweep_dir:
            tags |= {"mlflow.parentRunId": parent_run_id(client, experiment_id, sweep_dir),
                     "recsim.sweep_key": _sweep_key(sweep_dir)}
        run_id = client.create_run(experiment_id, run_name=job.get("name") or output_dir.name,
                                   tags=tags).info.run_id
        _log_values(client, run_id, flatten_params(report["config"]), report_metrics(report))
        for name in REPORT_FILES:
            if (output_dir / name).exists():
                client.log_artifact(run_id, str(output_dir / name))
        client.set_terminated(run_id, "FINISHED")
    except Exception as err:
        raise RuntimeError(f"tracking: logging the run to {resolve_uri(tracking.tracking_uri)} "
                           f"failed ({err}); the report itself is in {output_dir}") from err
    log.info("tracked: run %s in experiment %r at %s", run_id, tracking.experiment_name,
             resolve_uri(tracking.tracking_uri))
    return run_id


def _log_values(client, run_id: str, params: dict[str, str], metrics: dict[str, float]) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    items = sorted(params.items())
    for i in range(0, max(len(items), 1), _BATCH):
        client.log_batch(run_id, params=[Param(k, v) for k, v in items[i:i + _BATCH]],
                         metrics=[Metric(k, v, now, 0) for k, v in metrics.items()] if i == 0
                         else [])


class MultirunParent(Callback):
    """Hydra callback (conf/config.yaml): a multirun's parent MLflow run, opened before its first
    job and marked finished after its last (Hydra skips the end when a job fails: the parent then
    stays RUNNING, its children say which failed)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        tracking = TrackingConfig.of(config)
        if tracking.enabled:
            client, experiment_id = _client(tracking)
            parent_run_id(client, experiment_id, config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        tracking = TrackingConfig.of(config)
        if tracking.enabled:
            client, experiment_id = _client(tracking)
            run_id = parent_run_id(client, experiment_id, config.hydra.sweep.dir, create=False)
            if run_id:
                client.set_terminated(run_id, "FINISHED")
