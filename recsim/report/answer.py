"""The report's first sections: the answer (the simulated online A/B) and each policy's funnel.
Plain data (title, text, headers, rows, notes, figure) rendered by recsim/report/writer.py."""

from __future__ import annotations


from recsim.report.tables import level_pct, pct
from recsim.world.rewards import EXPECTED_COLUMNS




def answer_section(r: dict) -> dict:
    """The simulated online A/B on the synthetic world: the expected whole-slate engagement of
    each policy under the user model (the true lift) and the online test as it would be run."""
    sim, truth = r["sim"], r["truth"]
    online, per = truth["online_ab"], truth["per_action"]
    level = level_pct(sim["alpha"])
    verdict = ("treatment better" if online["ci_low"] > 0 else
               "treatment worse" if online["ci_high"] < 0 else "no detectable difference")
    return {
        "title": "The answer: simulated online A/B",
        "text": [f"**True lift of {sim['treatment']} over {sim['control']}: "
                 f"{pct(truth['lift'])}** in {sim['metric']} per request over the whole "
                 f"{sim.get('slate_size', '')}-slot slate (the world's user model, every slot with "
                 f"its position effect, {sim['n_requests']:,} evaluation requests).",
                 f"An online test of this traffic (members split by a seeded hash: "
                 f"{online['n_members_control']:,} / {online['n_members_treatment']:,}; outcomes "
                 f"sampled) would report {pct(online['lift'])} [{pct(online['ci_low'])}, "
                 f"{pct(online['ci_high'])}] ({level} member bootstrap; MDE "
                 f"{100 * online['mde']:.1f}%): **{verdict}**."],
        "headers": ["action", sim["control"], sim["treatment"], "true lift"],
        "rows": [[a, f"{per['control'][a]:.4f}", f"{per['treatment'][a]:.4f}",
                  pct(per["lift"][a])] for a in (*EXPECTED_COLUMNS, "metric") if a in per["control"]],
        "notes": ["Expected engagement per request of each policy's whole slate; dwell in "
                  "seconds. The offline estimates below are judged against these."]
        + (["True lift per segment: " + "; ".join(
            f"{s['segment']}={s['value']} {pct(s['lift'])} ({s['requests']:,} requests)"
            for s in truth["by_segment"])] if truth.get("by_segment") else []),
        "figure": None,
    }


def funnel_section(r: dict) -> dict:
    """Per policy: candidate source, candidates per request, recall of later engagements, the
    slate's share on logged candidates (support), time per request by stage."""
    funnel, support = r["funnel"], r.get("support", {})
    rows = []
    for name, f in funnel.items():
        recall = f["recall_of_later_engagements"]
        ms = f["ms_per_request"]
        source = (f"retrieval ({f['index']}, K={f['top_k']}"
                  + (", unseen" if f["exclude_seen"] else "") + ")"
                  if f["source"] == "retrieval" else "logged")
        rows.append([name, source, f"{f['candidates_per_request']:.0f}",
                     ", ".join(f"{k.removeprefix('recall')} {v:.3f}" for k, v in recall.items()),
                     f"{f['slate_share_logged']:.3f}",
                     support.get(name, {}).get("status", ""),
                     f"T={f['temperature']:g}",
                     " / ".join(f"{ms.get(s, 0.0):.2f}"
                                for s in ("candidates", "features", "scoring", "slate"))])
    return {
        "title": "The funnel of each policy",
        "text": ["Each policy is a funnel: candidate source -> ranker -> slate. Recall: the share "
                 "of the member's engagements after the request (in the log) that its candidates "
                 "hold (@k: in its top k by ranker score). Logged share: the slate's mass on posts "
                 "the logging policy could have shown (offline estimators see only those)."],
        "headers": ["policy", "candidates", "per request", "recall of later engagements",
                    "slate on logged", "support", "slate",
                    "ms/request: candidates / features / scoring / slate"],
        "rows": rows, "notes": [], "figure": None,
    }
