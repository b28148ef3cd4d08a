"""An A/B over seeds: summarise a `recsim-run -m experiment=... seed=0,1,2` sweep.

One run is one draw: its world, its rankers' training and its evaluation requests all come from
its seed, so a difference between two encoders in one run may be that seed's luck. This reads
every job's report.json in a multirun directory, groups the jobs by their overrides without the
seed, and for each group gives per seed and over seeds, control -> treatment:
- retrieval recall@100 of later engagements from history vectors (each policy's encoder),
- funnel recall (the share of later engagements among the policy's candidates, recall@all),
- the ranker's click AUC on the evaluation period,
- the true whole-slate lift (the world's user model) and the sampled online test.

Over seeds: the mean difference with a t interval over the seeds (n - 1 degrees of freedom), so
the interval holds the seed-to-seed spread of world, training and evaluation together, and the
count of seeds on which the treatment is ahead. With 3 seeds the t quantile is 4.30: an interval
that excludes zero needs a difference several times its seed-to-seed spread.

    recsim-seeds multirun/<date>/<time>      # writes seeds.md and seeds.json there
    recsim-seeds SWEEP_A SWEEP_B --out DIR   # seeds from several sweeps (each seed once)

The embeddings_ab / embeddings_aa experiments write it themselves after each job of a multirun
(the `SeedsSummary` Hydra callback).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import numpy as np
import yaml
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from scipy import stats

log = logging.getLogger(__name__)

# (key, label, how a value is shown, what the difference is): the per-seed measurements
METRICS = (
    ("recall100", "recall@100 (history vectors)", ".3f", "difference"),
    ("funnel_recall", "funnel recall@all", ".3f", "difference"),
    ("click_auc", "ranker click AUC", ".3f", "difference"),
    ("true_lift", "true slate lift", "+.2%", "lift"),
    ("online_lift", "online test lift", "+.2%", "lift"),
)


def _recall(section: dict | None, policy: str, key: str) -> float:
    value = (section or {}).get(policy, {}).get(key)
    return float(value) if value is not None else math.nan


def job_row(report: dict, job_dir: Path) -> dict:
    """One job's measurements (`report` as `load_report` gives it back), per policy (control,
    treatment) and as treatment vs control."""
    sim, truth = report["sim"], report.get("truth")
    if truth is None:
        raise ValueError(f"{job_dir / 'report.json'}: no truth (data=logs or data=obd); a seed "
                         "summary needs the synthetic world's user model")
    control, treatment = sim["control"], sim["treatment"]
    funnel = {p: f["recall_of_later_engagements"] for p, f in (report.get("funnel") or {}).items()}
    retrieval = (report.get("retrieval") or {}).get("recall_by_policy") or {}
    ranker = report.get("ranker") or {}

    def pair(get) -> tuple[float, float]:
        return get(control), get(treatment)

    per_policy = {
        "recall100": pair(lambda p: _recall(retrieval, p, "100")),
        "funnel_recall": pair(lambda p: _recall(funnel, p, "recall@all")),
        "click_auc": pair(lambda p: float(ranker.get(p, {}).get("auc", math.nan))),
    }
    online = truth["online_ab"]
    row = {"seed": int(report["seed"]), "control": control, "treatment": treatment,
           "job_dir": str(job_dir), "n_requests": int(sim["n_requests"]),
           "online_ci": [float(online["ci_low"]), float(online["ci_high"])],
           "online_mde": float(online["mde"])}
    for key, (c, t) in per_policy.items():
        row[key] = {"control": c, "treatment": t, "difference": t - c}
    row["true_lift"] = {"control": float(truth["control"]), "treatment": float(truth["treatment"]),
                        "lift": float(truth["lift"])}
    row["online_lift"] = {"control": float(online["control_mean"]),
                          "treatment": float(online["treatment_mean"]), "lift": float(online["lift"])}
    return row


def over_seeds(values: list[float], alpha: float = 0.05) -> dict:
    """Mean, t interval over seeds (n - 1 df) and how many are above zero; NaNs are dropped."""
    x = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    n = int(x.size)
    mean = float(x.mean()) if n else math.nan
    if n >= 2:
        half = float(stats.t.ppf(1 - alpha / 2, n - 1) * x.std(ddof=1) / math.sqrt(n))
        low, high = mean - half, mean + half
    else:
        low = high = math.nan
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": n, "above_zero": int((x > 0).sum())}


def _overrides(job_dir: Path) -> str:
    path = job_dir / ".hydra" / "overrides.yaml"
    items = yaml.safe_load(path.read_text()) if path.exists() else []
    kept = [o for o in (items or []) if o.split("=", 1)[0].lstrip("+~") != "seed"]
    return " ".join(kept) or "(defaults)"


def summarize(sweep_dirs: str | Path | list, alpha: float = 0.05, out: str | Path | None = None
              ) -> dict:
    """Read the job reports of one sweep directory or several (e.g. seeds 0-2, then 3-7), group
    them by overrides without the seed, and write seeds.md and seeds.json into `out` (default:
    the first sweep directory)."""
    from recsim.report.contract import load_report

    dirs = [Path(d) for d in (sweep_dirs if isinstance(sweep_dirs, list | tuple) else [sweep_dirs])]
    groups: dict[str, list[dict]] = {}
    failed = []
    for sweep_dir in dirs:
        if not sweep_dir.is_dir():
            raise FileNotFoundError(f"{sweep_dir}: no such sweep directory")
        for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            path = job / "report.json"
            if path.exists():
                groups.setdefault(_overrides(job), []).append(job_row(load_report(path), job))
            elif (job / ".hydra").exists():
                failed.append(str(job))
    sweep_dir = Path(out) if out is not None else dirs[0]
    if not groups:
        raise FileNotFoundError(f"{', '.join(map(str, dirs))}: no job has a report.json "
                                f"(failed jobs: {failed})")
    summary = {"sweep_dir": str(sweep_dir), "sweep_dirs": [str(d) for d in dirs], "alpha": alpha, "failed_jobs": failed, "groups": []}
    for name, rows in groups.items():
        rows.sort(key=lambda r: r["seed"])
        seeds = [r["seed"] for r in rows]
        if len(set(seeds)) < len(seeds):
            raise ValueError(f"group '{name}' has a seed twice ({seeds}): "
                             + ", ".join(r["job_dir"] for r in rows))
        summary["groups"].append({
            "overrides": name, "control": rows[0]["control"], "treatment": rows[0]["treatment"],
            "seeds": seeds, "jobs": rows,
            "over_seeds": {key: over_seeds([r[key][kind] for r in rows], alpha)
                           for key, _, _, kind in METRICS}})
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "seeds.json").write_text(json.dumps(summary, indent=2, allow_nan=True))
    (sweep_dir / "seeds.md").write_text(render(summary))
    log.info("seed summary: %d groups -> %s", len(summary["groups"]), sweep_dir / "seeds.md")
    return summary


def render(summary: dict) -> str:
    """Per group: a row per seed, then the mean difference with its interval over seeds."""
    from recsim.report.tables import markdown_table

    level = f"{100 * (1 - summary['alpha']):g}%"
    intro = (f"Control -> treatment per seed; the last row: the mean difference (lifts: the mean "
             f"lift) with a {level} t interval over the seeds, and the seeds with the treatment "
             "ahead.")
    lines = ["# An A/B over seeds", "", intro, ""]
    for g in summary["groups"]:
        lines += [f"## `{g['overrides']}`: {g['control']} -> {g['treatment']}", ""]
        rows = []
        for r in g["jobs"]:
            cells = [str(r["seed"])]
            for key, _, fmt, kind in METRICS:
                m = r[key]
                if kind == "difference":
                    cells.append(f"{m['control']:{fmt}} -> {m['treatment']:{fmt}}")
                elif key == "online_lift":
                    lo, hi = r["online_ci"]
                    cells.append(f"{m['lift']:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]")
                else:
                    cells.append(f"{m['lift']:{fmt}}")
            rows.append(cells)
        cells = [f"over {len(g['seeds'])} seeds"]
        for key, _, fmt, _ in METRICS:
            s = g["over_seeds"][key]
            signed = fmt if fmt.startswith("+") else "+" + fmt  # differences carry their sign
            ci = (f" [{s['ci_low']:{signed}}, {s['ci_high']:{signed}}]"
                  if np.isfinite(s["ci_low"]) else "")
            cells.append(f"**{s['mean']:{signed}}**{ci}, {s['above_zero']}/{s['n']} > 0")
        rows.append(cells)
        lines += [markdown_table(["seed", *(label for _, label, _, _ in METRICS)], rows), ""]
    if summary["failed_jobs"]:
        lines += ["Jobs without a report (failed or running): "
                  + ", ".join(summary["failed_jobs"]), ""]
    return "\n".join(lines)


class SeedsSummary(Callback):
    """Hydra callback: rewrite the sweep's seeds.md / seeds.json after every job of a multirun
    (after each job, not at the multirun's end, which Hydra skips when a job fails)."""

    def on_job_end(self, config: DictConfig, job_return=None, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        try:
            summarize(config.hydra.sweep.dir)
        except (FileNotFoundError, ValueError) as err:  # no report yet, or no truth (data=logs)
            log.warning("seed summary: %s", err)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", nargs="+", metavar="sweep_dir",
                        help="multirun directories of recsim-run jobs over seeds")
    parser.add_argument("--alpha", type=float, default=0.05, help="1 - the interval's level")
    parser.add_argument("--out", default=None,
                        help="where seeds.md and seeds.json go (default: the first sweep_dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = summarize(args.sweep_dirs, args.alpha, args.out)
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"recsim.jobs.seeds: {err}") from None
    print((Path(summary["sweep_dir"]) / "seeds.md").read_text())


if __name__ == "__main__":
    main()
