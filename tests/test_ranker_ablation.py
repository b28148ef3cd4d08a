"""The ranker ablation summary: job reports of a sweep -> one table and one plot."""

import json

import pytest

from recsim.jobs.ablation import summarize

HEADS = ("click", "like", "comment", "share")


def _report(variant: str, auc: float, lift: float, truth: float) -> dict:
    heads = lambda a, ne: {h: {"auc": a, "normalized_entropy": ne} for h in HEADS}  # noqa: E731
    return {
        "sim": {"control": "all_features", "treatment": variant, "n_requests": 100},
        "ranker": {"all_features": {"features": ["ids", "cosine"], "heads": heads(0.70, 0.95)},
                   variant: {"features": ["ids"], "encoder": "default", "heads": heads(auc, 0.97)}},
        "lifts": [{"estimator": e, "lift": lift, "ci_low": lift - 0.1, "ci_high": lift + 0.1,
                   "p_value": 0.5} for e in ("snips", "replay", "ips")],
        "truth": {"lift": truth},
    }


def test_summary_of_a_sweep(tmp_path):
    for i, (variant, auc, lift, truth) in enumerate([("no_ids", 0.65, -0.2, -0.15),
                                                     ("no_counts", 0.69, -0.01, 0.02)]):
        job = tmp_path / f"{i}_ablation={variant}"
        (job / ".hydra").mkdir(parents=True)
        (job / "report.json").write_text(json.dumps(_report(variant, auc, lift, truth)))
    (tmp_path / "2_ablation=finetuned" / ".hydra").mkdir(parents=True)  # a job that failed

    summary = summarize(tmp_path)
    assert [v["variant"] for v in summary["variants"]] == ["no_ids", "no_counts"]
    no_ids = summary["variants"][0]
    assert no_ids["heads"]["click"]["d_auc"] == pytest.approx(-0.05)
    assert no_ids["heads"]["share"]["d_ne"] == pytest.approx(0.02)
    assert set(no_ids["lifts"]) == {"snips", "replay"} and no_ids["true_lift"] == -0.15
    assert summary["failed_jobs"] == ["2_ablation=finetuned"]
    assert summary["control_identical_across_jobs"]
    md = (tmp_path / "ablation.md").read_text()
    assert "| no_ids | -0.0500 |" in md and "ΔNE share" in md and "-20.00% [-30.00%, -10.00%]" in md
    assert "Failed jobs" in md
    assert "data:image/png;base64," in (tmp_path / "ablation.html").read_text()
    assert json.loads((tmp_path / "ablation.json").read_text())["control"] == "all_features"


def test_an_empty_sweep_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no job has a report.json"):
        summarize(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such sweep directory"):
        summarize(tmp_path / "missing")


@pytest.mark.slow
def test_sweep_summary_names_a_failed_job(tmp_path):
    """A real tiny multirun of two jobs, the second with a missing encoder directory: the sweep
    fails with the clear error, and the callback has still summarised the job that ran."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    proc = subprocess.run(
        [sys.executable, "-m", "recsim.jobs.run", "-m", "experiment=ranker_ablation",
         "hydra.sweeper.params.ablation=no_counts", "sim.control.encoder_dir=null,no_such_model",
         "sim.n_bootstrap=50", "world.n_members=300", "world.n_impressions=6000",
         "world.max_posts_per_source=100", "embeddings.encoder.num_layers=2",
         f"hydra.sweep.dir={tmp_path}"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode != 0 and "no_such_model is not a model directory" in proc.stderr
    summary = json.loads((tmp_path / "ablation.json").read_text())
    assert [v["variant"] for v in summary["variants"]] == ["no_counts"]
    (failed,) = summary["failed_jobs"]  # job directories are named by their overrides
    assert failed.startswith("1_ablation=no_counts,") and "encoder_dir=no_such_model" in failed
    assert "Failed jobs" in (tmp_path / "ablation.md").read_text()
