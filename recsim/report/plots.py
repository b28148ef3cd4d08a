"""The report's plots, drawn from the report dict with matplotlib (Agg) as base64 PNGs.

    lifts     each estimator's lift with its interval, the true lift as a line
    weights   distribution of importance weights per policy (log10), share of zero weights
    segments  lift per segment with its (Bonferroni-level) interval
    evidence  retrieval recall@K curve; ranker AUC and normalized entropy
    obd       data=obd: each estimator's click rate with its interval, the truth as a band
"""

from __future__ import annotations

import base64
import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from recsim.report.tables import level_pct


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _forest(ax, labels, values, lows, highs, truth=None):
    """Points with horizontal interval bars, in percent; optional vertical truth line.
    Rows without a finite value (a control of 0) are labelled n/a."""
    finite = [all(math.isfinite(x) for x in t) for t in zip(values, lows, highs)]
    labels = [lab if ok else f"{lab} (n/a)" for lab, ok in zip(labels, finite)]
    values, lows, highs = ([x if ok else 0.0 for x, ok in zip(xs, finite)]
                           for xs in (values, lows, highs))
    y = list(range(len(labels)))[::-1]
    pct = lambda xs: [100 * x for x in xs]  # noqa: E731
    v, lo, hi = pct(values), pct(lows), pct(highs)
    ax.errorbar(v, y, xerr=[[a - b for a, b in zip(v, lo)], [b - a for a, b in zip(v, hi)]],
                fmt="o", color="#1f5fa8", ecolor="#7aa6d6", capsize=3)
    ax.axvline(0, color="#999", lw=0.8)
    if truth is not None:
        ax.axvline(100 * truth, color="#c0392b", ls="--", label=f"true lift {100 * truth:+.1f}%")
        ax.legend(loc="best", fontsize=8)
    ax.set_yticks(y, labels)
    ax.set_xlabel("relative lift (%)")


def lifts_figure(r: dict) -> str:
    """The online test first, then each offline estimator; a red cross marks the true lift of
    what each row estimates (the whole slate, or the top slot for the top-slot family)."""
    online = r["truth"]["online_ab"] if r.get("truth") else None
    rows = ([{"estimator": "online test (simulated)", "lift": online["lift"],
              "ci_low": online["ci_low"], "ci_high": online["ci_high"],
              "true_lift": r["truth"]["lift"]}] if online else []) + r["lifts"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.4))
    labels = [f"{x['estimator']} ({x['scope']})" if "scope" in x else x["estimator"] for x in rows]
    _forest(ax, labels, [x["lift"] for x in rows], [x["ci_low"] for x in rows],
            [x["ci_high"] for x in rows])
    y = list(range(len(rows)))[::-1]
    known = [(100 * x["true_lift"], yi) for x, yi in zip(rows, y) if x.get("true_lift") is not None]
    if known:  # no truth (data=logs): no crosses
        ax.scatter(*zip(*known), marker="x", color="#c0392b", zorder=3,
                   label="true lift (user model)")
        ax.legend(loc="best", fontsize=8)
    ax.set_title(f"Lift of treatment over control, with {level_pct(r['sim']['alpha'])} intervals")
    return _png(fig)


def weights_figure(r: dict) -> str:
    fig, ax = plt.subplots(figsize=(7, 3))
    for policy, h in r["weights"].items():
        edges, counts = h["log10_edges"], h["log10_counts"]
        if counts:
            ax.stairs(counts, edges, label=f"{policy} ({100 * h['zero_share']:.0f}% zero)")
    ax.set_xlabel("log10 importance weight (target / logging), non-zero weights")
    ax.set_ylabel("decisions")
    ax.set_title("Importance weights")
    ax.legend(fontsize=8)
    return _png(fig)


def segments_figure(r: dict) -> str:
    seg = r["segments"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(seg) + 1.4))
    _forest(ax, [f"{s['segment']}={s['value']}" for s in seg], [s["lift"] for s in seg],
            [s["ci_low"] for s in seg], [s["ci_high"] for s in seg],
            r["truth"]["top_slot"]["lift"] if r.get("truth") else None)
    level = level_pct(r["sim"]["alpha"] / len(seg))
    ax.set_title(f"Lift per segment ({level} intervals: alpha / m, m = {len(seg)} segments)")
    return _png(fig)


def evidence_figure(r: dict) -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3))
    recall = r["retrieval"]["recall"]
    ks = [int(k) for k in recall]
    left.plot(ks, list(recall.values()), marker="o")
    left.set_xscale("log")
    left.set_xlabel("K")
    left.set_ylabel("recall@K")
    left.set_title("Retrieval recall")
    names = list(r["ranker"])
    x = range(len(names))
    right.bar([i - 0.2 for i in x], [r["ranker"][n]["auc"] for n in names], 0.4, label="AUC")
    right.bar([i + 0.2 for i in x], [r["ranker"][n]["normalized_entropy"] for n in names], 0.4,
              label="normalized entropy")
    right.set_xticks(list(x), [n.replace("_", "\n") for n in names], fontsize=7)
    top = max([1.0] + [r["ranker"][n]["normalized_entropy"] for n in names])
    right.set_ylim(0, 1.05 * top)
    right.set_title("Rankers")
    right.legend(fontsize=7)
    return _png(fig)


def obd_figure(r: dict) -> str:
    """data=obd: each estimator's click rate with its interval; the truth (the evaluated
    policy's own log) as a dashed line in its shaded interval. Non-finite rows are left out."""
    o = r["obd"]
    rows = [x for x in o["rows"]
            if all(v is not None and math.isfinite(v) for v in (x["estimate"], x["ci_low"],
                                                                  x["ci_high"]))]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1.4))
    y = list(range(len(rows)))[::-1]
    v = [x["estimate"] for x in rows]
    ax.errorbar(v, y, xerr=[[a - x["ci_low"] for a, x in zip(v, rows)],
                            [x["ci_high"] - a for a, x in zip(v, rows)]],
                fmt="o", color="#1f5fa8", ecolor="#7aa6d6", capsize=3)
    truth = o["truth"]
    ax.axvspan(truth["ci_low"], truth["ci_high"], color="#c0392b", alpha=0.12)
    ax.axvline(truth["value"], color="#c0392b", ls="--",
               label=f"truth: {o['evaluation']}'s own log {truth['value']:.4f}")
    ax.legend(loc="best", fontsize=8)
    ax.set_yticks(y, [f"{x['estimator']} ({x['status'] if x['status'] == 'ok' else 'not ok'})"
                      for x in rows])
    ax.set_xlabel("click rate")
    ax.set_title(f"{o['evaluation']} from the {o['behavior']} log, campaign {o['campaign']} "
                 f"({level_pct(r['sim']['alpha'])} intervals)")
    return _png(fig)


def report_figures(r: dict) -> dict[str, list[tuple[str, str]]]:
    """Section figure name -> [(base64 PNG, caption)]."""
    if r.get("obd"):  # data=obd: one policy's value, no lift
        caption = "Each estimator's click rate with its interval; dashed: the truth, shaded: its interval"
        return {"obd": [(obd_figure(r), caption)]}
    caption = ("The simulated online test and each offline estimator, with its interval; "
               "crosses: the true lift of what the row estimates")
    out = {"lifts": [(lifts_figure(r), caption)]}
    if r.get("retrieval"):  # data=logs has no retrieval or ranker step
        out["evidence"] = [(evidence_figure(r), "Retrieval recall@K and ranker metrics")]
    if r.get("weights"):
        out["weights"] = [(weights_figure(r), "Distribution of importance weights per policy")]
    if r.get("segments"):
        out["segments"] = [(segments_figure(r), "Lift per member segment")]
    return out


def ablation_figure(s: dict) -> str:
    """Ranker ablation: ΔAUC and ΔNE per head (grouped bars), lift with interval and truth."""
    variants = [v["variant"] for v in s["variants"]]
    heads = list(s["control_heads"])
    fig, axes = plt.subplots(1, 3, figsize=(14, 0.5 * len(variants) + 2.2), sharey=True)
    y = list(range(len(variants)))[::-1]
    height = 0.8 / len(heads)
    for ax, key, title in ((axes[0], "d_auc", "ΔAUC vs all features"),
                           (axes[1], "d_ne", "ΔNE vs all features (lower is better)")):
        for i, h in enumerate(heads):
            ax.barh([yy + 0.4 - (i + 0.5) * height for yy in y],
                    [v["heads"][h][key] for v in s["variants"]], height, label=h)
        ax.axvline(0, color="#999", lw=0.8)
        ax.set_title(title, fontsize=10)
    axes[0].set_yticks(y, variants)
    axes[0].legend(fontsize=7, loc="best")
    est = s["estimators"][0]
    ax = axes[2]
    for yy, v in zip(y, s["variants"]):
        lift = v["lifts"].get(est)
        if lift and all(math.isfinite(x) for x in lift.values()):
            ax.errorbar([100 * lift["lift"]], [yy], xerr=[[100 * (lift["lift"] - lift["ci_low"])],
                                                          [100 * (lift["ci_high"] - lift["lift"])]],
                        fmt="o", color="#1f5fa8", ecolor="#7aa6d6", capsize=3)
        ax.plot([100 * v["true_lift"]], [yy], "x", color="#c0392b", ms=8)
    ax.axvline(0, color="#999", lw=0.8)
    ax.set_xlabel("lift over all features (%)")
    level = f"{level_pct(s['alpha'])} " if s.get("alpha") else ""
    ax.set_title(f"{est} lift ({level}interval) and true lift (x)", fontsize=10)
    return _png(fig)


def validity_figure(table, alpha: float = 0.05) -> bytes:
    """Coverage of the true lift per estimator (and interval method), one panel per regime, the
    target coverage 1 - alpha as a dashed line; returns PNG bytes."""
    regimes = table["regime"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(regimes), figsize=(4 * len(regimes), 0.3 * table.height / max(len(regimes), 1) + 2),
                             squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        part = table.filter(table["regime"] == regime)
        labels = [f"{e} ({m})" if m != "percentile" else e
                  for e, m in zip(part["estimator"], part["interval"])]
        y = list(range(len(labels)))[::-1]
        ax.barh(y, part["coverage"].to_list(), color="#7aa6d6")
        ax.axvline(1 - alpha, color="#c0392b", ls="--", lw=1, label=f"target {level_pct(alpha)}")
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_title(regime, fontsize=9)
        ax.set_xlabel("coverage of the true lift")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return base64.b64decode(_png(fig))
