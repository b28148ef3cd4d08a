"""The member's response (recsim/world/user_model.sample_outcomes)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from recsim.world import world as world_module
from recsim.world.user_model import UserModel, sample_outcomes

# --- the member's response ------------------------------------------------------------------


def test_sample_outcomes_replays_build_worlds_step_4(small_corpus, monkeypatch):
    """Build a world, catch the rng state after the slates are sampled (step 3) and the outcome
    probabilities of step 4; sample_outcomes from that state must give the logged outcomes."""
    caught = {}
    sample_slates = world_module.sample_slates
    outcome_probabilities = UserModel.outcome_probabilities

    def catch_state(*args, **kwargs):
        out = sample_slates(*args, **kwargs)
        rng = args[3] if len(args) > 3 else kwargs["rng"]
        caught["state"] = copy.deepcopy(rng.bit_generator.state)
        return out

    def catch_probs(self, *args, **kwargs):
        caught["probs"] = outcome_probabilities(self, *args, **kwargs)
        return caught["probs"]

    monkeypatch.setattr(world_module, "sample_slates", catch_state)
    monkeypatch.setattr(UserModel, "outcome_probabilities", catch_probs)
    cfg = world_module.WorldConfig(seed=11, n_members=150, n_authors=40, n_impressions=3000,
                                   slate_size=5, n_candidates=15)
    imp = world_module.build_world(cfg, corpus=small_corpus).impressions
    rng = np.random.default_rng()
    rng.bit_generator.state = caught["state"]
    got = sample_outcomes(caught["probs"], rng)
    for col in ("click", "like", "comment", "share", "dwell_seconds"):
        assert got[col].shape == (600, 5)
        assert np.array_equal(got[col].ravel(), imp[col].to_numpy()), col
    assert 0 < imp["like"].sum() < imp["click"].sum()


def test_sample_outcomes_respects_the_probabilities():
    n = 200_000
    probs = {"click": np.full(n, 0.3), "like": np.full(n, 0.15), "comment": np.full(n, 0.03),
             "share": np.zeros(n), "_mu": np.full(n, np.log(15.0)), "_sigma": np.full(n, 0.5),
             "_examine": np.full(n, 0.5)}
    out = sample_outcomes(probs, np.random.default_rng(0))
    assert abs(out["click"].mean() - 0.3) < 0.005
    assert abs(out["like"].mean() - 0.15) < 0.005 and not (out["like"] & ~out["click"]).any()
    assert abs(out["comment"].mean() - 0.03) < 0.002 and not out["share"].any()
    want_dwell = 0.3 * 15 * np.exp(0.125) + 0.7 * 2.0 * 0.5
    assert out["dwell_seconds"].mean() == pytest.approx(want_dwell, rel=0.02)
