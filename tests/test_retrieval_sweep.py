"""experiment=retrieval_sweep through the real Hydra entry point, on a tiny world."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # about 2 minutes on the shared cores: Ray, four embedding passes, training
def test_retrieval_sweep_writes_one_table(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "recsim.jobs.retrieval_sweep", "world=debug",
         f"hydra.run.dir={tmp_path}", "embeddings.encoder.num_layers=1",
         "retrieval_sweep.ks=[10,50,100]", "retrieval_sweep.indexes=[Flat,HNSW]",
         "retrieval_sweep.dual_encoder.num_layers=1", "retrieval_sweep.dual_encoder.steps=3",
         "retrieval_sweep.dual_encoder.batch_size=8", "retrieval_sweep.dual_encoder.precision=fp32",
         "retrieval_sweep.dual_encoder.prompt_max_length=48",
         "retrieval_sweep.dual_encoder.post_max_length=24"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "retrieval_sweep.json").read_text())
    rows = result["recall"]
    methods = {(r["member_vectors"], r["numbers"], r["trained"], r["index"]) for r in rows}
    assert methods == {
        ("history (profile fallback)", "-", "-", "Flat"), ("history (profile fallback)", "-", "-", "HNSW"),
        ("history (prior fallback)", "-", "-", "Flat"),
        ("dual encoder", "raw", "untrained", "Flat"), ("dual encoder", "raw", "trained", "Flat"),
        ("dual encoder", "quantized", "untrained", "Flat"),
        ("dual encoder", "quantized", "trained", "Flat")}
    assert {r["segment"] for r in rows} == {"all", "new", "established"}
    for r in rows:
        values = [r[f"recall@{k}"] for k in (10, 50, 100)]
        if r["members"]:
            assert all(0 <= v <= 1 for v in values) and values == sorted(values)
    by_seg = {(r["member_vectors"], r["index"], r["numbers"], r["trained"], r["segment"]): r["members"]
              for r in rows}
    key = ("history (profile fallback)", "Flat", "-", "-")
    assert by_seg[(*key, "all")] == by_seg[(*key, "new")] + by_seg[(*key, "established")] > 0
    assert len(result["number_probe"]) == 4
    markdown = (tmp_path / "retrieval_sweep.md").read_text()
    assert "| member_vectors |" in markdown and "recall@100" in markdown
    assert not (tmp_path / "report.json").exists()  # the sweep, not the A/B run


def test_unknown_index_type_in_the_sweep_fails_before_any_work(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "recsim.jobs.retrieval_sweep", "world=debug",
         f"hydra.run.dir={tmp_path}", "retrieval_sweep.indexes=[Flat,ScaNN]"],
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode != 0
    assert "retrieval_sweep.indexes: unknown index type 'ScaNN'" in proc.stderr
