"""The report of `recsim-run data=obd` (recsim/jobs/run_obd.py): a single-policy value check.

    obd_title     the report's title (the policy evaluated, from which log)
    obd_verdict   the report's first line, from the first recommended estimator whose status
                  is ok: the evaluated policy's estimated click rate with its interval, beside
                  the truth (its own log) and whether the interval holds it
    obd_section   the table: the truth, then each estimator's click rate, interval, relative
                  error, effective sample size and status
Plain data (title, text, headers, rows, notes, figure) rendered by recsim/report/writer.py.
"""

from __future__ import annotations

from recsim.ope.verdict import cannot_tell, first_usable
from recsim.report.tables import level_pct


def _interval(row: dict, low: str = "ci_low", high: str = "ci_high") -> str:
    return f"[{row[low]:.4f}, {row[high]:.4f}]"


def obd_title(r: dict) -> str:
    o = r["obd"]
    return (f"Open Bandit Dataset: the {o['evaluation']} policy's click rate from the "
            f"{o['behavior']} log (campaign {o['campaign']})")


def obd_verdict(o: dict, preference: list[str]) -> dict:
    """{"estimator", "text", "detectable"} from the first estimator of `preference` with an ok
    status; estimator None when none is. `detectable` is False: no lift is tested here."""
    row, truth = first_usable(o["rows"], preference), o["truth"]
    if row is None:
        return cannot_tell(o["rows"], preference, f"none of {preference} computed")
    inside = "inside" if row["on_policy_inside"] else "OUTSIDE"
    return {"estimator": row["estimator"], "detectable": False,
            "text": f"**{o['evaluation']}'s click rate from the {o['behavior']} log: "
                    f"{row['estimate']:.4f} {_interval(row)}** ({row['estimator']}, the first "
                    f"recommended estimator whose status is ok); its own log shows "
                    f"{truth['value']:.4f} {_interval(truth)}: {inside} the interval, relative "
                    f"error {100 * row['relative_error']:.1f}%."}


def obd_section(r: dict) -> dict:
    """Each estimator's click rate of the evaluated policy beside the truth."""
    o, sim = r["obd"], r["sim"]
    truth = o["truth"]
    source = "the full-size dataset" if o["data_dir"] else "the sample in the obp 0.4.1 wheel"
    notes = []
    if any(row["status"].startswith("assumption broken") for row in o["rows"]):
        notes.append(f"Replay assumes uniform logging; the {o['behavior']} log is not uniform, so "
                     "its row is invalid.")
    notes += [
        ("DM / DR / SNDR's reward model: the click rate per (item, position) of the behaviour "
         "log, shrunk toward the position's rate (obp fits a logistic regression on user "
         "features, so these differ from obp's); DM's interval holds that model fixed, so it is "
         "too narrow. IPS and SNIPS are obp's IPW and SNIPW."),
        f"Evaluated policy: {o['evaluation']}" + (
            f", its action distribution by obp's protocol (production prior, RandomState(12345), "
            f"{o['n_sim']:,} simulations)." if o["evaluation"] == "bts" else ", 1 / items per "
            "item and position."),
        "obp's 30-resample relative-error protocol: `recsim-obd --mode protocol`."]
    return {
        "title": "The answer: a single-policy value check",
        "text": [(f"The click rate of ZOZOTOWN's **{o['evaluation']}** policy (campaign "
                 f"{o['campaign']}, {o['n_items']} items, 3 positions; {source}) estimated from "
                 f"{sim['n_requests']:,} rows logged by the **{o['behavior']}** policy, beside the "
                 f"click rate of {o['evaluation']}'s own log ({truth['n']:,} rows): the truth, "
                 "with its own interval. Not a paired lift: one policy's value, no control and "
                 "no treatment."),
                 (f"Intervals: {level_pct(sim['alpha'])} percentile bootstrap "
                 f"({sim['n_bootstrap']} replicates, seed {r['seed']}); each row is its own "
                 "cluster (the sample has no user id). Relative error: |estimate - truth| / "
                 "truth.")],
        "headers": ["estimator", "click rate", "interval", "truth inside?", "relative error",
                    "effective sample size", "max weight", "status"],
        "rows": [[f"truth: {o['evaluation']}'s own log", f"{truth['value']:.4f}",
                  _interval(truth), "", "", "", "", ""]]
        + [[row["estimator"], f"{row['estimate']:.4f}", _interval(row),
            "yes" if row["on_policy_inside"] else "NO", f"{100 * row['relative_error']:.1f}%",
            f"{row['effective_sample_size']:,.0f}", f"{row['max_weight']:.1f}", row["status"]]
           for row in o["rows"]],
        "notes": notes, "figure": "obd",
    }
