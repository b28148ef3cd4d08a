"""The Open Bandit Dataset job: relative estimation error of each estimator on the obp sample.

    recsim-obd                          # both directions, campaign all
    python -m recsim.jobs.obd --n-boot 200 --out obd.json

The adapter (logs, action distributions, the protocol): recsim/ope/adapters/obd.py.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import polars as pl

from recsim.ope.adapters.obd import relative_errors

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-boot", type=int, default=500)
    parser.add_argument("--out", default="obd_relative_errors.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    rows = relative_errors(args.n_boot)
    with pl.Config(tbl_rows=30, tbl_cols=20, float_precision=5, tbl_width_chars=200):
        log.info("Open Bandit Dataset sample (obp 0.4.1), click rate:\n%s", pl.DataFrame(rows))
    Path(args.out).write_text(json.dumps(rows, indent=2))
    log.info("wrote %s", args.out)
    return rows


if __name__ == "__main__":
    main()
