"""Validity of the real pipeline: does each estimator's interval cover the true lift?

    recsim-validity                                   # conf/validity.yaml: 20 seeds x 4 regimes
    recsim-validity seeds=3 regimes=[deterministic]   # a quick look

For every regime and seed, the main job's `run(cfg)` (recsim/jobs/run.py: trained rankers, funnel
policies, every estimator, the simulated online A/B) runs on its config with the regime's
overrides; each lift row of its report is compared with the true lift of what it estimates (the
whole slate, or the top slot). Per regime, estimator and interval method:

    coverage      share of seeds whose interval holds the true lift
    bias, RMSE    of the estimated lift against the true lift (points of lift)
    width         mean interval width
    wrong sign    seeds whose interval excludes 0 on the side opposite to the true lift;
                  wrong_sign_ok: those among rows shown without a warning (status ok)
    status ok     seeds where the row's validity status was ok (recsim/ope/verdict.py)
    ess           mean effective sample size (the smaller of control's and treatment's): how
                  much of the log the estimator's weights keep

Writes validity.md, validity.json, validity.csv and validity.png; per-run reports go under
runs/<regime>/seed<k>/.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import polars as pl
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from recsim.jobs.schemas import register
from recsim.paths import CONF_DIR
from recsim.report.tables import frame_table

log = logging.getLogger("recsim.jobs.validity")
register("config")


def run_rows(report: dict, regime: str, seed: int) -> list[dict]:
    """One row per (lift row, interval method) of a report, with its truth."""
    rows = []
    online = report["truth"]["online_ab"]
    sources = [{"estimator": "online test", "scope": "slate", "lift": online["lift"],
                "ci_low": online["ci_low"], "ci_high": online["ci_high"],
                "true_lift": report["truth"]["lift"], "status": "ok"}] + report["lifts"]
    for lift in sources:
        intervals = {"percentile": (lift["ci_low"], lift["ci_high"]),
                     **{m: tuple(v) for m, v in lift.get("intervals", {}).items()}}
        for method, (lo, hi) in intervals.items():
            rows.append({"regime": regime, "seed": seed, "estimator": lift["estimator"],
                         "scope": lift["scope"], "interval": method, "lift": lift["lift"],
                         "ci_low": lo, "ci_high": hi, "true_lift": lift["true_lift"],
                         "status_ok": lift["status"] == "ok", "ess": _ess(lift)})
    return rows


def _ess(lift: dict) -> float | None:
    """The smaller effective sample size of a lift row's two estimates (None: not weighted)."""
    found = [lift[role]["diagnostics"].get("effective_sample_size")
             for role in ("control", "treatment") if role in lift]
    found = [e for e in found if e is not None]
    return min(found) if found else None


def summarize(rows: pl.DataFrame) -> pl.DataFrame:
    """Per (regime, estimator, interval): coverage, bias, RMSE, width, wrong-sign calls."""
    err = pl.col("lift") - pl.col("true_lift")
    significant = (pl.col("ci_low") > 0) | (pl.col("ci_high") < 0)
    wrong = significant & ((pl.col("ci_low") > 0) != (pl.col("true_lift") > 0))
    return (rows.filter(pl.col("lift").is_finite())
            .group_by("regime", "estimator", "scope", "interval", maintain_order=True)
            .agg(seeds=pl.len(),
                 coverage=((pl.col("ci_low") <= pl.col("true_lift"))
                           & (pl.col("true_lift") <= pl.col("ci_high"))).mean(),
                 bias=err.mean(), rmse=(err ** 2).mean().sqrt(),
                 width=(pl.col("ci_high") - pl.col("ci_low")).mean(),
                 significant=significant.sum(), wrong_sign=wrong.sum(),
                 wrong_sign_ok=(wrong & pl.col("status_ok")).sum(),
                 status_ok=pl.col("status_ok").sum(),
                 true_lift=pl.col("true_lift").mean(),
                 **({"ess": pl.col("ess").mean()} if "ess" in rows.columns else {})))


def _run_one(overrides: list[str], out: Path) -> dict:
    """The main job's report for `overrides`, written under `out`; a finished run whose
    overrides match is read back instead of rerun (an interrupted validity run resumes)."""
    from recsim.jobs.run import run
    from recsim.report.contract import restore_nan

    done, stamp = out / "report.json", out / "overrides.json"
    if done.exists() and stamp.exists() and json.loads(stamp.read_text()) == overrides:
        log.info("validity: reusing %s", done)
        return restore_nan(json.loads(done.read_text()))  # null -> NaN, as the run returned
    cfg = compose("config", overrides=overrides)
    report = run(cfg, str(out))
    stamp.write_text(json.dumps(overrides))
    return report


def validity(cfg: DictConfig, output_dir: str | Path) -> pl.DataFrame:
    """Every regime at each seed, seed after seed (so a run stopped early still has a balanced
    table); the table is rewritten after each seed."""
    out = Path(output_dir)
    unknown = sorted(set(cfg.regimes) - set(cfg.regime_overrides))
    if unknown:
        raise ValueError(f"regimes: unknown {unknown}; choose from {list(cfg.regime_overrides)}")
    rows, start = [], time.perf_counter()
    for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
        for regime in cfg.regimes:
            overrides = [*cfg.base, *cfg.regime_overrides[regime], f"seed={seed}"]
            report = _run_one(overrides, out / "runs" / regime / f"seed{seed}")
            rows += run_rows(report, regime, seed)
            log.info("validity %s seed %d done (%.1f min so far)", regime, seed,
                     (time.perf_counter() - start) / 60)
        table = summarize(pl.DataFrame(rows))
        write(table, pl.DataFrame(rows), cfg, out, (time.perf_counter() - start) / 60,
              seed - cfg.first_seed + 1)
    return table


def write(table: pl.DataFrame, rows: pl.DataFrame, cfg: DictConfig, out: Path, minutes: float,
          seeds_done: int | None = None) -> None:
    from recsim.report.plots import validity_figure

    out.mkdir(parents=True, exist_ok=True)
    rows.write_csv(out / "validity_runs.csv")
    table.write_csv(out / "validity.csv")
    (out / "validity.json").write_text(json.dumps(
        {"summary": table.to_dicts(), "minutes": minutes, "seeds_done": seeds_done,
         "config": OmegaConf.to_container(cfg, resolve=True)}, indent=2, default=str))
    (out / "validity.png").write_bytes(validity_figure(table))
    shown = table.with_columns(pl.col("coverage", "bias", "rmse", "width", "true_lift").round(3),
                               *([pl.col("ess").round(0)] if "ess" in table.columns else []))
    (out / "validity.md").write_text(
        f"# Validity of the pipeline's intervals\n\n{seeds_done or cfg.seeds} of {cfg.seeds} "
        "seeds per regime, "
        f"{minutes:.0f} min. Coverage: share of seeds whose interval holds the true lift "
        "(target 0.95); bias / RMSE / width in lift (0.01 = 1 point); wrong sign: seeds whose "
        "interval excludes 0 on the wrong side (wrong_sign_ok: of rows whose status was ok); "
        "ess: mean effective sample size.\n\n" + frame_table(shown) + "\n")
    log.info("validity table in %s", out / "validity.md")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="validity")
def main(cfg: DictConfig) -> None:
    validity(cfg, cfg.output_dir or HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
