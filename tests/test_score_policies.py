"""A policy from a file of the team's own model scores is served and estimated the very way a
trained ranker's scores are; the data config group and the score-file keys fail clearly."""

import dataclasses

import numpy as np
import polars as pl
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ranker.config import RankerConfig
from ranker.retrieval.history import MemberHistory
from ranker.train import fit_ranker
from recsim.jobs.run import run
from recsim.ope import ab
from recsim.ope.config import SimConfig
from recsim.ope.offline import estimate_offline, ground_truth, serve_policies
from recsim.ope.policies import PolicyConfig, score_file_scorer
from recsim.paths import CONF_DIR
from recsim.world.logs import LogsConfig, WorldDataConfig, read_scores
from recsim.world.timeline import time_split
from recsim.world.world import build_world, logging_policy

ROLES = ("control", "treatment")


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose("config", overrides=overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The debug world and a small TorchRec ranker (ids, context) trained on its first 70%."""
    world_cfg = instantiate(_compose(["world=debug"]).world)
    world = build_world(world_cfg)
    split = time_split(world.impressions, 0.7)
    vectors = np.random.default_rng(0).standard_normal((world.posts.height, 8)).astype(np.float32)
    history = MemberHistory(world.impressions, world.posts["post_id"].to_numpy(), vectors, 3.0)
    ranker = fit_ranker(["ids", "context"], world.posts, vectors, world.members, history,
                        world.impressions, split.train, split.test,
                        RankerConfig(epochs=1, embedding_dims=8), 0, "ranker",
                        tmp_path_factory.mktemp("ranker") / "ranker.pt")
    return world_cfg, world, split, ranker


def _sim(scores: dict[str, str] | None = None) -> SimConfig:
    """Control: top-10 by score; treatment: Plackett-Luce at 0.5 over the same scores."""
    scores = scores or {}
    return SimConfig(
        estimators=["replay", "ips", "clipped_ips", "snips"], n_bootstrap=50, extra_intervals=[],
        slate_estimators=["iips"], slate_samples=8,
        control=PolicyConfig(name="control", temperature=0.0, scores=scores.get("control")),
        treatment=PolicyConfig(name="treatment", temperature=0.5, scores=scores.get("treatment")))


def _evaluate(trained, sim: SimConfig, scorers: dict):
    world_cfg, world, split, _ = trained
    served = serve_policies(split.test, world.candidates, scorers, dict.fromkeys(ROLES), sim,
                            world_cfg.slate_size, 0)
    segments = ab.member_segments(world.members)
    offline = estimate_offline(served, sim, split.test, world.candidates,
                               logging_policy(world_cfg), segments, world_cfg.slate_size, 0)
    return served, offline, ground_truth(world.truth, served, sim, 0, segments)


def test_score_files_equal_to_the_rankers_scores_give_its_estimates_and_truth(trained, tmp_path):
    _, world, _, ranker = trained
    served, offline, truth = _evaluate(trained, _sim(), {r: ranker.score for r in ROLES})
    path = tmp_path / "ranker_scores.parquet"
    served.outputs["control"].candidates.select("request_id", "post_id", "score").write_parquet(path)
    known = {"request_id": world.impressions["request_id"], "post_id": world.posts["post_id"]}
    scorer = score_file_scorer(read_scores(str(path), known), str(path))
    served_f, offline_f, truth_f = _evaluate(trained, _sim(dict.fromkeys(ROLES, str(path))),
                                             dict.fromkeys(ROLES, scorer))

    for role in ROLES:
        assert served_f.outputs[role].slates.equals(served.outputs[role].slates)
    lifts = [(x.estimator, x.lift, x.ci_low, x.ci_high, x.p_value) for x in offline.lifts]
    np.testing.assert_equal([(x.estimator, x.lift, x.ci_low, x.ci_high, x.p_value)
                             for x in offline_f.lifts], lifts)  # NaN where replay has no match
    assert [x[0] for x in lifts] == ["replay", "ips", "clipped_ips", "snips", "iips"]
    assert abs(lifts[1][1]) > 1e-3  # the two slates differ: a real comparison, not 0 = 0
    np.testing.assert_equal([dataclasses.asdict(x) for x in offline_f.segments],
                            [dataclasses.asdict(x) for x in offline.segments])
    np.testing.assert_equal(offline_f.support, offline.support)
    assert truth_f.lift == truth.lift and truth_f.top_slot == truth.top_slot


def test_a_score_file_must_score_every_candidate_of_the_policy(trained, tmp_path):
    world = trained[1]
    scores = world.candidates.select("request_id", "post_id", score="logging_score").slice(1)
    scorer = score_file_scorer(scores, "prod.parquet")
    rows = world.candidates.head(3).select("request_id", "post_id")
    with pytest.raises(ValueError, match=r"prod.parquet: column 'score': 1 of the policy's 3 "
                                         r"candidates \(request_id, post_id\) have no score"):
        scorer(rows)
    assert scorer(rows.slice(1)).score.tolist() == world.candidates["logging_score"][1:3].to_list()


def test_the_data_group_composes_and_builds(tmp_path):
    assert isinstance(instantiate(_compose([]).data), WorldDataConfig)  # the default
    (tmp_path / "p.csv").write_text("x")
    cfg = _compose(["data=logs", f"data.posts={tmp_path / 'p.csv'}",
                    f"data.impressions={tmp_path / 'p.csv'}", "data.columns.timestamp=time",
                    "+data.columns.label_class=category", "data.position_base=0"])
    data = instantiate(cfg.data)
    assert isinstance(data, LogsConfig) and data.position_base == 0
    assert data.columns["timestamp"] == "time" and data.columns["label_class"] == "category"


@pytest.mark.parametrize("overrides, message", [
    (["data=logs", "data.posts=P"], "data.impressions: required with data=logs"),
    (["data=logs", "data.posts=P", "data.impressions=/nonexistent/imp.parquet"],
     "data.impressions: /nonexistent/imp.parquet does not exist"),
    (["data=logs", "data.posts=P", "data.impressions=P", "data.position_base=2"],
     "data.position_base: must be one of [0, 1], got 2"),
    (["data=logs", "data.posts=P", "data.impressions=P", "+data.columns.colour=hue"],
     "data.columns: unknown ['colour']"),
    (["data=logs", "data.posts=P", "data.impressions=P", "data.logging_temperature=0"],
     "data.logging_temperature: must be > 0"),
])
def test_bad_data_configs_name_their_key(tmp_path, overrides, message):
    (tmp_path / "p.csv").write_text("x")
    overrides = [o.replace("=P", f"={tmp_path / 'p.csv'}") for o in overrides]
    with pytest.raises(Exception) as err:
        instantiate(_compose(overrides).data)
    assert message in str(err.value)


@pytest.mark.parametrize("overrides, message", [
    (["sim.control.scores=/nonexistent/s.parquet"],
     "sim.control.scores: /nonexistent/s.parquet does not exist"),
    (["sim.treatment.scores=S", "sim.treatment.source=retrieval", "sim.treatment.top_k=20"],
     "sim.treatment.scores: a score file scores the logged candidates, so "),
    (["sim.control.scores=S", "sim.reward_model=control"],
     "sim.reward_model: the control's policy is a score file"),
])
def test_bad_score_file_policies_name_their_key(tmp_path, overrides, message):
    (tmp_path / "s.parquet").write_text("x")
    overrides = [o.replace("=S", f"={tmp_path / 's.parquet'}") for o in overrides]
    with pytest.raises(Exception) as err:
        instantiate(_compose(overrides).sim)
    assert message in str(err.value)


def test_data_logs_needs_both_policies_as_score_files(tmp_path):
    (tmp_path / "p.csv").write_text("x")
    cfg = _compose(["data=logs", f"data.posts={tmp_path / 'p.csv'}",
                    f"data.impressions={tmp_path / 'p.csv'}",
                    f"sim.control.scores={tmp_path / 'p.csv'}"])
    with pytest.raises(ValueError, match="sim.treatment.scores: data=logs evaluates the team's own"):
        run(cfg, str(tmp_path / "report"))
    assert not (tmp_path / "report").exists()


def test_score_file_rows_are_looked_up_not_positional():
    scores = pl.DataFrame({"request_id": [1, 1, 2], "post_id": [10, 20, 10],
                           "score": [0.5, -1.0, 2.0]})
    rows = pl.DataFrame({"request_id": [2, 1, 1], "post_id": [10, 20, 10]})
    assert score_file_scorer(scores, "s")(rows).score.tolist() == [2.0, -1.0, 0.5]
