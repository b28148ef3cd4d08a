import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No MLflow tracking from tests (conf/config.yaml's tracking.enabled defaults to this variable;
# subprocess jobs inherit it): tests/test_tracking.py turns it on into a temporary store.
os.environ.setdefault("RECSIM_TRACKING", "false")


@pytest.fixture(scope="session", autouse=True)
def hydra_schemas():
    """Every root's config schemas in Hydra's ConfigStore, as the entry modules register them,
    so that tests composing any conf/ root see them (recsim/jobs/schemas.py)."""
    from recsim.jobs.schemas import register_all

    register_all()


@pytest.fixture(scope="session")
def small_corpus():
    from recsim.world.corpus import load_corpus

    return load_corpus(max_per_source=400, seed=0)


@pytest.fixture(scope="session")
def small_world_config():
    from recsim.world.world import WorldConfig

    return WorldConfig(seed=7, n_members=400, n_authors=80, n_impressions=20_000,
                       slate_size=5, n_candidates=20)


@pytest.fixture(scope="session")
def small_world(small_corpus, small_world_config):
    from recsim.world.world import build_world

    return build_world(small_world_config, corpus=small_corpus)


def _estimate(name: str, value: float, n: int = 200) -> dict:
    return {"name": name, "value": value, "ci_low": value / 2, "ci_high": value * 1.5, "n": n,
            "diagnostics": {"effective_sample_size": 150.0, "max_weight": 4.0,
                            "reward_model": "fitted"}}


def _lift(name: str, control: float, treatment: float) -> dict:
    lift = treatment / control - 1 if control else float("inf")
    return {"estimator": name, "control": _estimate(name, control),
            "treatment": _estimate(name, treatment), "lift": lift, "ci_low": lift - 0.1,
            "ci_high": lift + 0.1, "p_value": 0.2, "std_error": 0.05, "mde": 0.15}


@pytest.fixture
def tiny_report() -> dict:
    """A report as recsim/report/assemble.py builds it, by hand and small: two estimators (snips
    top slot, iips slate), a segment whose control is 0 (infinite lift) and a ranker head with no
    positives (AUC NaN). Fresh for each test."""
    from recsim.report.contract import SCHEMA_VERSION

    nan = float("nan")
    head = {"auc": 0.7, "log_loss": 0.3, "normalized_entropy": 0.9, "calibration": 1.0,
            "ece": 0.01, "base_rate": 0.08, "positives": 40}
    no_positives = {**head, "auc": nan, "normalized_entropy": nan, "base_rate": 0.0, "positives": 0}
    ranker = lambda heads: {"features": ["ids"], "encoder": "default", "interaction": "dlrm",
                            **heads["click"], "heads": heads, "steps": 10, "best_step": 8,
                            "stopped_early": True, "n_train": 100, "n_validation": 20,
                            "n_eval": 50}
    snips, iips = _lift("snips", 0.10, 0.12), _lift("iips", 0.50, 0.55)
    return {
        "schema_version": SCHEMA_VERSION, "seed": 0,
        "objective": {"name": "verdict", "value": snips["lift"]},
        "sim": {"metric": "click", "alpha": 0.05, "n_bootstrap": 100, "n_requests": 200,
                "n_members": 120, "control": "base", "treatment": "new", "slate_size": 5,
                "recommended": ["snips", "iips"], "slate_estimators": ["iips"],
                "segment_estimator": "snips", "min_effective_sample_size": 100.0},
        "lifts": [{**snips, "scope": "top slot", "interval": "percentile", "intervals": {},
                   "true_lift": 0.25, "status": "ok"},
                  {**iips, "scope": "slate", "interval": "percentile",
                   "intervals": {"bca": [0.0, 0.2]}, "true_lift": 0.08, "status": "ok"}],
        "verdict": {"estimator": "snips", "text": "treatment better by +20.0% [+10.0%, +30.0%]",
                    "detectable": True},
        "segments": [{"segment": "tenure", "value": "new", "p_adjusted": 0.4,
                      **_lift("snips", 0.0, 0.2)},
                     {"segment": "tenure", "value": "tenured", "p_adjusted": 0.3,
                      **_lift("snips", 0.1, 0.12)}],
        "weights": {"base": {"n": 200, "zero_share": 0.5, "quantiles": {"0.5": 0.0, "1.0": 4.0},
                             "log10_counts": [3, 2], "log10_edges": [0.0, 0.3, 0.6]}},
        "estimates": [{"policy": "base", **_estimate("snips", 0.10)},
                      {"policy": "logging", **_estimate("ips", 0.09)}],
        "truth": {"metric": "click", "control": 0.8, "treatment": 0.88, "lift": 0.1,
                  "per_action": {"control": {"click": 0.8, "metric": 0.8},
                                 "treatment": {"click": 0.88, "metric": 0.88},
                                 "lift": {"click": 0.1, "metric": 0.1}},
                  "online_ab": {"lift": 0.09, "ci_low": -0.05, "ci_high": 0.2, "p_value": 0.3,
                                "mde": 0.2, "control_mean": 0.8, "treatment_mean": 0.87,
                                "n_members_control": 60, "n_members_treatment": 60,
                                "n_requests_control": 100, "n_requests_treatment": 100},
                  "top_slot": {"control": 0.16, "treatment": 0.2, "logging": 0.18, "lift": 0.25},
                  "logging": 0.18, "by_segment": []},
        "support": {name: {"top_slot": 1.0, "support": 1.0, "status": "full support"}
                    for name in ("base", "new")},
        "funnel": {name: {"source": "logged", "top_k": None, "index": None,
                          "exclude_seen": False, "temperature": 0.0, "candidates_per_request": 20.0,
                          "recall_of_later_engagements": {"recall@10": 0.2, "recall@all": 0.5},
                          "slate_share_logged": 1.0,
                          "ms_per_request": {"features": 0.3, "scoring": 6.0}}
                   for name in ("base", "new")},
        "retrieval": {"index": "Flat", "n_posts": 100, "n_members": 50,
                      "recall": {10: 0.1, 100: 0.4},
                      "recall_by_policy": {"base": {10: 0.1, 100: 0.4}}},
        "ranker": {"base": ranker({"click": head, "share": no_positives}),
                   "new": ranker({"click": {**head, "auc": 0.72}, "share": no_positives})},
        "world": {"posts": 100, "members": 60, "impressions": 1000, "ctr": 0.08},
        "embeddings": {"model": "all-MiniLM-L6-v2", "dim": 384, "dtype": "torch.float32 on cpu"},
        "fingerprints": {"posts": "0123456789abcdef"},
        "timings": {"1_world": 0.5, "4_ranker": 2.0},
        "versions": {"python": "3.11.7", "polars": "2.1.0"},
        "config": {"seed": 0, "world": {"_target_": "recsim.world.world.WorldConfig",
                                        "n_members": 300},
                   "embeddings": {}, "retrieval": {"index": "Flat", "recall_at": [10, 100]},
                   "ranker": {}, "sim": {"alpha": 0.05, "estimators": ["snips"]},
                   "report": {"output_dir": None, "objective": "verdict"}},
    }
