"""Ranker feature ablation: summarise a `recsim-run -m experiment=ranker_ablation` sweep.

Each job of the sweep is an offline A/B: the all-features ranker (control) against one variant
(treatment: a feature group dropped, or the post embedding from another encoder). This reads
every job's report.json and writes one table and one plot into the sweep directory
(ablation.md / ablation.json / ablation.html): per variant, ΔAUC and ΔNE per head (variant minus
control, on the evaluation period), the offline lift of the variant's policy with its interval,
and the ground-truth lift from the world's user model.

    python -m recsim.jobs.ablation multirun/ranker_ablation/<date>_<time> [--estimators snips replay]

The sweep runs it itself after each job (the `AblationSummary` Hydra callback in the experiment).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def _job(report: dict, estimators: list[str], job_dir: Path) -> dict:
    sim = report["sim"]
    control, treatment = report["ranker"][sim["control"]], report["ranker"][sim["treatment"]]
    heads = {h: {"auc": m["auc"], "normalized_entropy": m["normalized_entropy"],
                 "d_auc": m["auc"] - control["heads"][h]["auc"],
                 "d_ne": m["normalized_entropy"] - control["heads"][h]["normalized_entropy"]}
             for h, m in treatment["heads"].items()}
    lifts = {lift["estimator"]: {k: lift[k] for k in ("lift", "ci_low", "ci_high", "p_value")}
             for lift in report["lifts"] if lift["estimator"] in estimators}
    return {"variant": sim["treatment"], "control": sim["control"],
            "features": treatment["features"], "encoder": treatment.get("encoder", "default"),
            "heads": heads, "lifts": lifts, "true_lift": report["truth"]["lift"],
            "control_heads": {h: {"auc": m["auc"], "normalized_entropy": m["normalized_entropy"]}
                              for h, m in control["heads"].items()},
            "n_requests": sim["n_requests"], "alpha": sim.get("alpha"), "job_dir": str(job_dir)}


def summarize(sweep_dir: str | Path, estimators: list[str] | tuple[str, ...] = ("snips", "replay")
              ) -> dict:
    """Read the sweep's job reports; write ablation.{md,json,html} into `sweep_dir`."""
    from recsim.report.contract import restore_nan
    from recsim.report.writer import write_ablation_report

    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"{sweep_dir}: no such sweep directory")
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    rows, failed = [], []
    for job in jobs:
        path = job / "report.json"
        if path.exists():
            report = restore_nan(json.loads(path.read_text()))  # null -> NaN (contract.py)
            rows.append(_job(report, list(estimators), job))
        elif (job / ".hydra").exists():
            failed.append(job.name)
    if not rows:
        raise FileNotFoundError(f"{sweep_dir}: no job has a report.json (failed jobs: {failed}); "
                                "see each job's run.log")
    controls = {json.dumps(r["control_heads"], sort_keys=True) for r in rows}
    summary = {"sweep_dir": str(sweep_dir), "estimators": list(estimators), "variants": rows,
               "control": rows[0]["control"], "control_heads": rows[0]["control_heads"],
               "alpha": rows[0]["alpha"],  # the interval level of the lifts (1 - alpha)
               "control_identical_across_jobs": len(controls) == 1, "failed_jobs": failed}
    paths = write_ablation_report(summary, sweep_dir)
    log.info("ranker ablation: %d variants%s -> %s", len(rows),
             f" ({len(failed)} failed: {failed})" if failed else "", paths["md"])
    return summary


class AblationSummary(Callback):
    """Hydra callback: rewrite the sweep's summary after every job of a multirun.

    After each job rather than at the multirun's end: Hydra skips `on_multirun_end` when a job
    fails (e.g. the fine-tuned variant without `.cache/models/multitask`), and the summary of
    the variants that did run should still be there, with the failed job named.
    """

    def __init__(self, estimators: list[str] | None = None):
        self.estimators = list(estimators or ("snips", "replay"))

    def on_job_end(self, config: DictConfig, job_return=None, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        try:
            summarize(config.hydra.sweep.dir, self.estimators)
        except FileNotFoundError as err:  # no job has finished yet
            log.warning("ranker ablation summary: %s", err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a multirun directory of experiment=ranker_ablation")
    parser.add_argument("--estimators", nargs="+", default=["snips", "replay"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    summary = summarize(args.sweep_dir, args.estimators)
    print((Path(summary["sweep_dir"]) / "ablation.md").read_text())


if __name__ == "__main__":
    main()
