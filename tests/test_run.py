"""The main job through its real Hydra entry point, and every config in conf/."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF = Path(__file__).resolve().parents[1] / "conf"
ROOT = CONF.parent


def _run(tmp_path, *overrides, check=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [sys.executable, "-m", "recsim.jobs.run", f"hydra.run.dir={tmp_path}", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_debug_run_end_to_end_writes_a_complete_report(tmp_path):
    _run(tmp_path, "experiment=debug")
    report = json.loads((tmp_path / "report.json").read_text())
    markdown = (tmp_path / "report.md").read_text()

    names = {lift["estimator"] for lift in report["lifts"]}
    assert names == {"replay", "ips", "clipped_ips", "snips", "dm", "dr", "sndr", "iips", "pbm"}
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "simulated online A/B" in html
    assert "<script" not in html and "<link" not in html and 'src="http' not in html
    truth = report["truth"]
    for lift in report["lifts"]:
        assert lift["ci_low"] <= lift["ci_high"]
        assert 0.0 <= lift["p_value"] <= 1.0
        if lift["estimator"] == "replay":  # the world's logging policy is not uniform
            assert lift["status"] == "assumption broken: replay needs uniform logging"
        else:  # both policies rank the logged candidates: full support, but a tiny log
            assert lift["status"] == "ok" or lift["status"].startswith("effective sample size")
        scope_truth = truth["lift"] if lift["scope"] == "slate" else truth["top_slot"]["lift"]
        assert lift["true_lift"] == scope_truth
        for role in ("control", "treatment"):
            est = lift[role]
            assert est["ci_low"] <= est["ci_high"]
            if lift["estimator"] not in ("dr", "sndr"):  # a DR correction can go below 0
                assert 0.0 <= est["ci_low"]
            if lift["scope"] == "top slot":
                assert est["n"] == report["sim"]["n_requests"] > 0
    assert truth["control"] > 0 and truth["treatment"] > 0
    assert truth["lift"] == pytest.approx(truth["treatment"] / truth["control"] - 1)
    assert truth["per_action"]["control"]["metric"] == truth["control"]  # metric = click here
    online = truth["online_ab"]
    assert online["ci_low"] <= online["lift"] <= online["ci_high"]
    assert online["n_requests_control"] + online["n_requests_treatment"] == report["sim"]["n_requests"]
    for name, funnel in report["funnel"].items():
        assert funnel["source"] == "logged" and funnel["candidates_per_request"] == 40
        assert funnel["slate_share_logged"] == pytest.approx(1.0)
        assert report["support"][name]["status"] == "full support"
    for value in report["retrieval"]["recall"].values():
        assert 0.0 <= value <= 1.0
    recalls = list(report["retrieval"]["recall"].values())
    assert recalls == sorted(recalls)  # recall@K grows with K
    for metrics in report["ranker"].values():
        assert 0.0 <= metrics["auc"] <= 1.0
    assert report["seed"] == 0
    assert report["versions"]["torchrec"] == "1.8.0"
    assert report["config"]["world"]["n_members"] == 300
    assert set(report["fingerprints"]) == {"posts", "members", "impressions", "candidates"}
    assert "The answer: simulated online A/B" in markdown.split("\n## ")[1]  # the answer first
    assert markdown.split("\n")[2].startswith("Verdict from the log: ")  # the first line
    assert report["verdict"]["text"] in markdown
    assert "recall@10" in markdown and "seed: 0" in markdown
    # The tiny debug log leaves few decisions that agree with a deterministic policy.
    assert "effective sample size below" in markdown


def test_a_retrieval_policy_is_served_from_faiss_and_its_offline_estimates_say_biased(tmp_path):
    _run(tmp_path, "experiment=debug", "sim.treatment.source=retrieval", "sim.treatment.top_k=60",
         "sim.treatment.exclude_seen=true", "sim.n_bootstrap=50")
    report = json.loads((tmp_path / "report.json").read_text())
    treatment = report["sim"]["treatment"]
    funnel = report["funnel"][treatment]
    assert funnel["source"] == "retrieval" and funnel["candidates_per_request"] == 60
    assert 0 < funnel["slate_share_logged"] < 1
    support = report["support"][treatment]
    assert support["support"] < 1 and support["status"].startswith("partial support")
    assert all(lift["status"].startswith("partial support") for lift in report["lifts"]
               if lift["estimator"] != "replay")
    assert "partial support" in report["verdict"]["text"]  # no estimator can speak here
    markdown = (tmp_path / "report.md").read_text()
    assert "retrieval (Flat, K=60, unseen)" in markdown
    assert report["truth"]["lift"] == pytest.approx(
        report["truth"]["treatment"] / report["truth"]["control"] - 1)


def test_bad_config_fails_clearly_and_writes_nothing(tmp_path):
    proc = _run(tmp_path, "experiment=debug", "sim.estimators=[ips,magic]", check=False)
    assert proc.returncode != 0
    assert "sim.estimators: unknown ['magic']" in proc.stderr
    assert not (tmp_path / "report.json").exists() and not (tmp_path / "report.md").exists()


def test_unknown_feature_group_fails_clearly(tmp_path):
    proc = _run(tmp_path, "experiment=debug", "sim.treatment.features=[ids,colour]", check=False)
    assert proc.returncode != 0
    assert "unknown feature group(s) ['colour']" in proc.stderr


def test_policies_with_their_own_encoders(tmp_path):
    """The embeddings_ab path: each policy embeds posts with its own encoder directory."""
    from transformers import AutoModel, AutoTokenizer

    from embeddings.encoder import default_model_dir

    model_dir = tmp_path / "tiny_encoder"
    AutoModel.from_pretrained(default_model_dir(), num_hidden_layers=1).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(default_model_dir()).save_pretrained(model_dir)
    _run(tmp_path / "run", "experiment=debug", f"sim.treatment.encoder_dir={model_dir}")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    by_policy = report["retrieval"]["recall_by_policy"]
    assert set(by_policy) == {"ranker_without_embeddings", "ranker_with_embeddings"}
    encoders = {m["encoder"] for m in report["ranker"].values()}
    assert encoders == {"default", str(model_dir)}
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "| post encoder |" in markdown and str(model_dir) in markdown


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose("config", overrides=overrides)


def test_policy_text_prefix_gets_its_own_encoder():
    """experiment=multilingual_ab: e5 sees "passage: " before every post, the control does not."""
    from hydra.utils import instantiate

    from embeddings.post_vectors import pool_for
    from recsim.ope import policies

    embed_cfg = instantiate(_compose(["experiment=debug"]).embeddings)
    roles = {"control": policies.PolicyConfig(name="a"),
             "treatment": policies.PolicyConfig(name="b", text_prefix="passage: "),
             "same": policies.PolicyConfig(name="c", text_prefix="passage: ")}
    encoders = {role: pool_for(embed_cfg, p.encoder_dir, p.text_prefix) for role, p in roles.items()}
    assert encoders["control"] == ((None, None), embed_cfg)
    assert encoders["treatment"][0] == (None, "passage: ") == encoders["same"][0]
    assert encoders["treatment"][1].encoder.text_prefix == "passage: "
    assert encoders["treatment"][1].encoder.model_dir == embed_cfg.encoder.model_dir
    ml = _compose(["experiment=multilingual_ab"]).sim
    assert ml.treatment.text_prefix == "passage: " and ml.control.text_prefix is None


def test_missing_encoder_dir_fails_before_any_work(tmp_path):
    proc = _run(tmp_path, "experiment=embeddings_ab",
                "sim.treatment.encoder_dir=/nonexistent/model", check=False)
    assert proc.returncode != 0
    assert "/nonexistent/model is not a model directory" in proc.stderr
    assert "make finetune" in proc.stderr


def test_html_report_renders_in_headless_chromium_with_the_verdict(tmp_path):
    """The debug report in headless Chromium (installed by scripts/setup.sh): the page lays out,
    the verdict is its first paragraph, and a screenshot is a page with tables and plots."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from render_report import find_chromium, rendered_dom, screenshot

    assert find_chromium() is not None, "no chromium: scripts/setup.sh installs it (apt-get)"
    _run(tmp_path, "experiment=debug", "sim.n_bootstrap=50")
    dom = rendered_dom(tmp_path / "report.html")
    first = dom.split('<p class="verdict">', 1)[1].split("</p>", 1)[0]
    assert first.startswith("Verdict from the log: ") and "<b>" in first
    assert dom.index('class="verdict"') < dom.index("<h2>")  # above every section
    png = screenshot(tmp_path / "report.html", tmp_path / "report.png")
    assert png.stat().st_size > 50_000  # a page with tables and plots, not a blank one
