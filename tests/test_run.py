"""The main job through its real Hydra entry point, and every config in conf/."""

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hydra import compose, initialize_config_dir

from recsim.report.contract import load_report
from recsim.world.timeline import WORLD_START

CONF = Path(__file__).resolve().parents[1] / "conf"
ROOT = CONF.parent


def _run(tmp_path, *overrides, check=True, capture=None):
    """`python -m recsim.jobs.run` with `overrides`; with `capture` (a folder), the same entry
    point with step 7's inputs saved there (_CAPTURE)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    entry = ["-m", "recsim.jobs.run"]
    if capture is not None:
        entry, env["RECSIM_TEST_CAPTURE"] = ["-c", _CAPTURE], str(capture)
    proc = subprocess.run(
        [sys.executable, *entry, f"hydra.run.dir={tmp_path}", *overrides],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


# The real main job, with recsim.ope.offline.ground_truth (step 7) wrapped to save its inputs:
# each policy's slates, the evaluation requests and the world's user model. The wrapper returns
# what the real step returns, so the report is the one `recsim-run` writes.
_CAPTURE = """
import os, pickle, runpy
from recsim.ope import offline

real, out = offline.ground_truth, os.environ["RECSIM_TEST_CAPTURE"]

def ground_truth(truth, served, sim, seed, segments=None):
    for role, output in served.outputs.items():
        output.slates.write_parquet(f"{out}/{role}_slates.parquet")
    served.requests.write_parquet(f"{out}/requests.parquet")
    with open(f"{out}/user_model.pkl", "wb") as f:
        pickle.dump(truth, f)
    return real(truth, served, sim, seed, segments)

offline.ground_truth = ground_truth
runpy.run_module("recsim.jobs.run", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory):
    """The debug experiment, run once: (report.json, report.md, run dir, step 7's inputs dir)."""
    run_dir, captured = tmp_path_factory.mktemp("debug_run"), tmp_path_factory.mktemp("step7")
    _run(run_dir, "experiment=debug", capture=captured)
    report = load_report(run_dir / "report.json")  # NaN where the file has null with a reason
    return report, (run_dir / "report.md").read_text(), run_dir, captured


def _interval_or_void(row: dict) -> None:
    """ci_low <= ci_high, or (nan, nan) with the non-finite bootstrap replicates counted."""
    if math.isnan(row["ci_low"]) or math.isnan(row["ci_high"]):
        assert math.isnan(row["ci_low"]) and math.isnan(row["ci_high"]) and row["n_nonfinite"] > 0
    else:
        assert row["ci_low"] <= row["ci_high"]


def test_debug_run_end_to_end_writes_a_complete_report(debug_run):
    report, markdown, run_dir, _ = debug_run
    names = {lift["estimator"] for lift in report["lifts"]}
    assert names == {"replay", "ips", "clipped_ips", "snips", "dm", "dr", "sndr", "iips", "pbm"}
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "simulated online A/B" in html
    assert "<script" not in html and "<link" not in html and 'src="http' not in html
    truth = report["truth"]
    for lift in report["lifts"]:
        _interval_or_void(lift)
        assert 0.0 <= lift["p_value"] <= 1.0 or (math.isnan(lift["p_value"]) and lift["n_nonfinite"])
        if lift["estimator"] == "replay":  # the world's logging policy is not uniform
            assert lift["status"] == "assumption broken: replay needs uniform logging"
        else:  # both policies rank the logged candidates: full support, but a tiny log
            assert lift["status"] == "ok" or lift["status"].startswith("effective sample size")
        for role in ("control", "treatment"):
            est = lift[role]
            _interval_or_void(est)
            if lift["estimator"] not in ("dr", "sndr") and not math.isnan(est["ci_low"]):
                assert 0.0 <= est["ci_low"]  # a DR correction can go below 0
            if lift["scope"] == "top slot":
                assert est["n"] == report["sim"]["n_requests"] > 0
    assert truth["control"] > 0 and truth["treatment"] > 0
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


def _expected_clicks(user_model, slates: pl.DataFrame, requests: pl.DataFrame) -> float:
    """Expected clicks per request, written out from the user model's formula (its docstring):
    sum over slate rows of prob * position ** -decay * sigmoid(base + topic_w * interest
    + author_w * member . author / sqrt(D) + fresh_w * 0.5 ** (age / halflife) + quality),
    divided by the number of requests."""
    um, c = user_model, user_model.config
    assert c.language_weight == 0  # the debug world has no language term
    rows = slates.join(requests, on="request_id")
    m = np.searchsorted(um.member_ids, rows["member_id"].to_numpy())
    p = np.searchsorted(um.post_ids, rows["post_id"].to_numpy())
    assert (um.member_ids[m] == rows["member_id"].to_numpy()).all()
    assert (um.post_ids[p] == rows["post_id"].to_numpy()).all()
    hours = (rows["timestamp"].to_numpy() - np.datetime64(WORLD_START)) / np.timedelta64(1, "h")
    author = (um.member_latent[m] * um.author_latent[um.post_author[p]]).sum(axis=1)
    fresh = 0.5 ** (np.maximum(hours - um.post_created[p], 0) / c.freshness_halflife_hours)
    logit = (c.base_logit + c.topic_weight * um.interests[m, um.post_topic[p]]
             + c.author_weight * author / np.sqrt(c.latent_dim) + c.freshness_weight * fresh
             + um.post_quality[p])
    click = rows["position"].to_numpy() ** -c.position_decay / (1 + np.exp(-logit))
    return float((rows["prob"].to_numpy() * click).sum() / requests.height)


def test_true_lift_of_the_debug_run_from_the_click_probabilities(debug_run):
    """The report's truth against the policies' slates put through the user model by hand."""
    report, _, _, captured = debug_run
    requests = pl.read_parquet(captured / "requests.parquet")
    user_model = pickle.loads((captured / "user_model.pkl").read_bytes())
    slates = {role: pl.read_parquet(captured / f"{role}_slates.parquet")
              for role in ("control", "treatment")}
    assert requests.height == report["sim"]["n_requests"]
    slate = {role: _expected_clicks(user_model, s, requests) for role, s in slates.items()}
    top = {role: _expected_clicks(user_model, s.filter(pl.col("position") == 1), requests)
           for role, s in slates.items()}
    truth = report["truth"]
    assert (truth["control"], truth["treatment"]) == pytest.approx(
        (slate["control"], slate["treatment"]), rel=1e-9)
    true_lift = {"slate": slate["treatment"] / slate["control"] - 1,
                 "top slot": top["treatment"] / top["control"] - 1}
    assert truth["lift"] == pytest.approx(true_lift["slate"], rel=1e-9)
    assert truth["top_slot"]["lift"] == pytest.approx(true_lift["top slot"], rel=1e-9)
    assert true_lift["slate"] != pytest.approx(true_lift["top slot"], rel=1e-3)  # two answers
    for lift in report["lifts"]:  # each estimator is judged against the truth of its scope
        assert lift["true_lift"] == pytest.approx(true_lift[lift["scope"]], rel=1e-9)


def test_a_retrieval_policy_is_served_from_faiss_and_its_offline_estimates_say_biased(tmp_path):
    _run(tmp_path, "experiment=debug", "sim.treatment.source=retrieval", "sim.treatment.top_k=60",
         "sim.treatment.exclude_seen=true", "sim.n_bootstrap=50")
    report = load_report(tmp_path / "report.json")
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


@pytest.mark.parametrize("offset", [0, 1])
def test_an_aa_policy_differs_only_by_its_rankers_seed(tmp_path, offset):
    """Two arms alike but for sim.treatment.ranker_seed_offset: offset 0 is the control itself
    (identical ranker metrics, true lift exactly 0); offset 1 trains another ranker."""
    _run(tmp_path, "experiment=debug", "sim.treatment.features=[ids,history,counts,context]",
         "sim.treatment.name=reseeded", f"sim.treatment.ranker_seed_offset={offset}",
         "sim.n_bootstrap=20")
    report = load_report(tmp_path / "report.json")
    control, treatment = report["ranker"]["ranker_without_embeddings"], report["ranker"]["reseeded"]
    assert report["config"]["sim"]["treatment"]["ranker_seed_offset"] == offset
    if offset == 0:
        assert treatment["auc"] == control["auc"] and treatment["log_loss"] == control["log_loss"]
        assert report["truth"]["lift"] == 0.0
    else:
        assert treatment["log_loss"] != control["log_loss"]
        assert report["truth"]["treatment"] != report["truth"]["control"]


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
    report = load_report(tmp_path / "run" / "report.json")
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
