"""report.json as a contract: schema version, JSON Schema, null with a reason for NaN, the config
once, the sweep's objective, alpha-aware labels (recsim/report/contract.py, writer.py, plots.py).

Every report the suite writes through `write_report` (tests/test_run.py's debug runs too) is
validated against recsim/report/report.schema.json before a file is written."""

import json
import math
import os
import stat

import jsonschema
import pytest

from recsim.report import contract, plots
from recsim.report.tables import level_pct
from recsim.report.writer import render_markdown, write_report


def _strict(text: str) -> dict:
    """json.loads that refuses NaN / Infinity, as strict parsers (JavaScript's JSON.parse) do."""
    def refuse(token):
        raise ValueError(f"bare {token}")
    return json.loads(text, parse_constant=refuse)


def test_the_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(contract.schema())
    assert contract.schema()["properties"]["schema_version"]["pattern"] == "^1\\.[0-9]+$"


def test_non_finite_numbers_become_null_with_their_reason(tiny_report):
    data = _strict(contract.to_json(tiny_report))
    assert data["segments"][0]["lift"] is None  # control 0: infinite lift
    assert data["ranker"]["base"]["heads"]["share"]["auc"] is None  # no positives
    assert data["nulls"]["/segments/0/lift"].startswith("Infinity: a relative lift divides by")
    assert data["nulls"]["/ranker/base/heads/share/auc"] == (
        "NaN: AUC needs both classes among the evaluation labels")
    assert set(data["nulls"]) == {"/segments/0/lift", "/segments/0/ci_low", "/segments/0/ci_high",
                                  "/ranker/base/heads/share/auc",
                                  "/ranker/base/heads/share/normalized_entropy",
                                  "/ranker/new/heads/share/auc",
                                  "/ranker/new/heads/share/normalized_entropy"}
    assert data["segments"][1]["lift"] == pytest.approx(0.2)  # finite values untouched
    assert data["retrieval"]["recall"] == {"10": 0.1, "100": 0.4}  # keys as JSON has them


def test_write_report_writes_strict_json_that_loads_back(tiny_report, tmp_path):
    paths = write_report(tiny_report, tmp_path)
    data = _strict(paths["json"].read_text())
    assert data == contract.load_report(tmp_path, nan=False) == contract.load_report(
        paths["json"], nan=False)
    assert data["schema_version"] == contract.SCHEMA_VERSION
    umask = os.umask(0)
    os.umask(umask)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask for p in paths.values())


def test_load_report_gives_back_the_non_finite_numbers(tiny_report, tmp_path):
    """With nan (the default) the loaded report has NaN / inf where the run's had them."""
    write_report(tiny_report, tmp_path)
    loaded = contract.load_report(tmp_path)
    assert loaded["segments"][0]["lift"] == float("inf")
    assert math.isnan(loaded["ranker"]["new"]["heads"]["share"]["auc"])
    assert json.dumps(loaded, sort_keys=True) == json.dumps(
        {**json.loads(json.dumps(tiny_report)), "nulls": loaded["nulls"]}, sort_keys=True)


def test_the_config_is_stored_once(tiny_report, tmp_path):
    """report.json holds the config once (no YAML copy); the Markdown renders it as YAML."""
    paths = write_report(tiny_report, tmp_path)
    text = paths["json"].read_text()
    assert "config_yaml" not in text and text.count('"n_members": 300') == 1
    assert "```yaml\nseed: 0\nworld:\n  _target_: recsim.world.world.WorldConfig\n" \
        "  n_members: 300\n" in paths["md"].read_text()


@pytest.mark.parametrize("break_it, where", [
    (lambda r: r["lifts"][1].update(scope="everything"), "/lifts/1/scope"),
    (lambda r: r["truth"].pop("lift"), "/truth: 'lift' is a required property"),
    (lambda r: r.pop("schema_version"), "/: 'schema_version' is a required property"),
    (lambda r: r["sim"].update(alpha=1.5), "/sim/alpha"),
    (lambda r: r["fingerprints"].update(posts="xyz"), "/fingerprints/posts"),
])
def test_a_report_that_breaks_the_schema_writes_nothing(tiny_report, tmp_path, break_it, where):
    break_it(tiny_report)
    with pytest.raises(ValueError, match="break report.schema.json") as err:
        write_report(tiny_report, tmp_path)
    assert where in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_value_that_is_not_json_data_is_named(tiny_report, tmp_path):
    tiny_report["timings"]["5_policies"] = {1, 2}
    with pytest.raises(ValueError, match=r"field /timings/5_policies: a set is not JSON data"):
        write_report(tiny_report, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_report_refuses_another_major_version(tiny_report, tmp_path):
    path = write_report(tiny_report, tmp_path)["json"]
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "schema_version": "1.7"}))
    assert contract.load_report(path)["schema_version"] == "1.7"  # minor: fields added only
    path.write_text(json.dumps({**data, "schema_version": "2.0"}))
    with pytest.raises(ValueError, match="schema_version 2.0; this recsim reads 1.x"):
        contract.load_report(path)


@pytest.mark.parametrize("name, expected", [
    ("verdict", 0.12 / 0.10 - 1), ("snips", 0.12 / 0.10 - 1), ("iips", 0.55 / 0.50 - 1),
    ("true_lift", 0.1), ("online_ab", 0.09),
])
def test_the_objective_by_name(tiny_report, name, expected):
    assert contract.objective_value(tiny_report, name) == pytest.approx(expected)


def test_the_objective_when_the_log_cannot_tell_and_an_unknown_name(tiny_report):
    tiny_report["verdict"]["estimator"] = None
    assert contract.objective_value(tiny_report, "verdict") != contract.objective_value(
        tiny_report, "verdict")  # NaN
    with pytest.raises(ValueError, match="'dr' is neither one of"):
        contract.objective_value(tiny_report, "dr")
    with pytest.raises(ValueError, match=r"report.objective: unknown 'magic'; choose from "
                                         r"\['verdict', 'true_lift', 'online_ab', 'snips'\]"):
        contract.check_objective("magic", ["snips"])


@pytest.mark.parametrize("alpha, label", [(0.05, "95%"), (0.1, "90%"), (0.07, "93%"),
                                          (0.001, "99.9%"), (0.2, "80%")])
def test_level_pct(alpha, label):
    assert level_pct(alpha) == label


def _titles(monkeypatch) -> list[str]:
    """Draw without PNGs: each figure's axes titles, and legend texts, recorded instead."""
    seen = []

    def record(fig):
        for ax in fig.axes:
            legend = ax.get_legend()
            seen.append(" | ".join([ax.get_title()] + ([t.get_text() for t in legend.get_texts()]
                                                       if legend else [])))
        return ""
    monkeypatch.setattr(plots, "_png", record)
    return seen


def test_labels_follow_alpha(tiny_report, monkeypatch):
    tiny_report["sim"]["alpha"] = 0.1
    markdown = render_markdown(tiny_report)
    assert "Intervals: 90% bootstrap over members" in markdown
    assert "(90% member bootstrap; MDE" in markdown  # the online test's, in the answer
    assert "Intervals at level 95% (alpha / m)" in markdown  # 2 segments: 0.1 / 2
    assert markdown.count("95%") == 1
    seen = _titles(monkeypatch)
    plots.lifts_figure(tiny_report)
    plots.segments_figure(tiny_report)
    assert seen[0].startswith("Lift of treatment over control, with 90% intervals")
    assert seen[1].startswith("Lift per segment (95% intervals: alpha / m, m = 2 segments)")


def test_ablation_and_validity_labels_follow_alpha(monkeypatch):
    import polars as pl

    seen = _titles(monkeypatch)
    variant = {"variant": "no_ids", "heads": {"click": {"d_auc": -0.01, "d_ne": 0.01}},
               "lifts": {"snips": {"lift": 0.1, "ci_low": 0.0, "ci_high": 0.2}}, "true_lift": 0.1}
    plots.ablation_figure({"variants": [variant], "control_heads": {"click": {}},
                           "estimators": ["snips"], "alpha": 0.1})
    assert seen[-1] == "snips lift (90% interval) and true lift (x)"
    table = pl.DataFrame({"regime": ["a"], "estimator": ["snips"], "interval": ["percentile"],
                          "coverage": [0.9]})
    plots.validity_figure(table, alpha=0.2)
    assert seen[-1] == "a | target 80%"


def test_the_ablation_summary_reads_nulls_back_as_nan(tiny_report, tmp_path):
    """recsim/jobs/ablation.py reads job reports whose AUC of a head without positives is null."""
    from recsim.jobs.ablation import summarize

    (tmp_path / "0_job" / ".hydra").mkdir(parents=True)
    (tmp_path / "0_job" / "report.json").write_text(contract.to_json(tiny_report))
    summary = summarize(tmp_path, ["snips"])
    heads = summary["variants"][0]["heads"]
    assert heads["click"]["d_auc"] == pytest.approx(0.02) and math.isnan(heads["share"]["d_auc"])
    assert summary["alpha"] == 0.05
    assert "95% member bootstrap interval" in (tmp_path / "ablation.md").read_text()


def test_a_resumed_validity_run_reads_nulls_back_as_nan(tiny_report, tmp_path):
    """recsim/jobs/validity.py reuses a finished run's report.json: as the run returned it."""
    from recsim.jobs.validity import _run_one

    (tmp_path / "report.json").write_text(contract.to_json(tiny_report))
    (tmp_path / "overrides.json").write_text(json.dumps(["seed=3"]))
    assert _run_one(["seed=3"], tmp_path)["segments"][0]["lift"] == float("inf")
