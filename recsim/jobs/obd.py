"""The Open Bandit Dataset job: off-policy estimates on the obp sample against the on-policy truth.

    recsim-obd                                  # estimates: every campaign, both directions
    recsim-obd --mode protocol                  # obp's 30-resample relative-error table
    recsim-obd --campaign men --direction bts_to_random --estimators ips snips dr
    python -m recsim.jobs.obd --help

The evaluation (estimates, truth, protocol, obp's published figures):
recsim/ope/adapters/obd_eval.py; the data and policies: recsim/ope/adapters/obd.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import polars as pl

from recsim.ope.adapters import obd, obd_eval

log = logging.getLogger(__name__)

_SHOWN = {"estimate": ["campaign", "direction", "estimator", "estimate", "ci_low", "ci_high",
                       "on_policy", "on_policy_low", "on_policy_high", "relative_error",
                       "on_policy_inside", "effective_sample_size", "status"],
          "protocol": ["campaign", "direction", "estimator", "mean", "std", "obp_mean",
                       "obp_std", "on_policy", "status"]}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", choices=("estimate", "protocol"), default="estimate",
                   help="estimate: each estimator with its bootstrap interval beside the truth; "
                        "protocol: obp's relative error, mean and std over --n-runs resamples")
    p.add_argument("--campaign", nargs="+", choices=obd.CAMPAIGNS, default=list(obd.CAMPAIGNS),
                   help="ZOZOTOWN campaigns (80, 34, 46 items)")
    p.add_argument("--direction", nargs="+", choices=tuple(obd_eval.DIRECTIONS),
                   default=list(obd_eval.DIRECTIONS), help="behaviour log -> evaluated policy")
    p.add_argument("--estimators", nargs="+", choices=obd_eval.DEFAULT_ESTIMATORS,
                   default=list(obd_eval.DEFAULT_ESTIMATORS), help="recsim/ope/estimators.py")
    p.add_argument("--n-boot", type=int, default=500, help="bootstrap replicates (estimate)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (estimate)")
    p.add_argument("--n-runs", type=int, default=obd_eval.N_RUNS, help="resamples (protocol)")
    p.add_argument("--n-sim", type=int, default=obd.OBP_N_SIM,
                   help="simulations of the BTS action distribution")
    p.add_argument("--min-ess", type=float, default=100.0,
                   help="effective sample size below which a status is not ok")
    p.add_argument("--data-dir", default=None,
                   help="root of the full-size dataset (random|bts/campaign/campaign.csv); "
                        "None: the sample in the obp wheel")
    p.add_argument("--out", default="obd.json", help="JSON file of the rows")
    return p


def run(argv: list[str] | None = None) -> list[dict]:
    """Parse `argv`, evaluate every (campaign, direction), log the table, write --out."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    start, rows = time.perf_counter(), []
    for campaign in args.campaign:
        for direction in args.direction:
            common = {"campaign": campaign, "direction": direction, "min_ess": args.min_ess,
                      "estimators": args.estimators, "n_sim": args.n_sim,
                      "data_dir": args.data_dir}
            rows += (obd_eval.relative_error_protocol(n_runs=args.n_runs, **common)
                     if args.mode == "protocol"
                     else obd_eval.evaluate_obd(n_boot=args.n_boot, seed=args.seed, **common))
    with pl.Config(tbl_rows=100, tbl_cols=20, float_precision=5, tbl_width_chars=250,
                   fmt_str_lengths=60):
        log.info("Open Bandit Dataset (%s), %s, %.1f s:\n%s", args.data_dir or "obp 0.4.1 sample",
                 args.mode, time.perf_counter() - start,
                 pl.DataFrame(rows).select(_SHOWN[args.mode]))
    Path(args.out).write_text(json.dumps(rows, indent=2))
    log.info("wrote %s", args.out)
    return rows


def main(argv: list[str] | None = None) -> None:
    """The console script (its return value would become the exit status)."""
    run(argv)


if __name__ == "__main__":
    main()
