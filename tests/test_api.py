"""The Python API (`import recsim`; recsim/jobs/api.py): lazy, the entry points a notebook needs,
and the README's example run as written."""

import re
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from hydra.errors import ConfigCompositionException

import recsim

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
EXAMPLE = re.compile(r"<!-- api-example -->\s*```python\n(.*?)```\s*<!-- /api-example -->", re.DOTALL)


def test_import_recsim_loads_nothing_heavy():
    """`import recsim` (and a world module) must not pull in the jobs layer or its libraries."""
    code = ("import sys, recsim, recsim.paths; "
            "print(sorted(m for m in ('polars', 'torch', 'hydra', 'mlflow', 'recsim.jobs', "
            "'recsim.report') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_the_entry_points_are_the_library_functions():
    from recsim.report.contract import load_report
    from recsim.world.world import WorldConfig, build_world

    assert recsim.build_world is build_world and recsim.WorldConfig is WorldConfig
    assert recsim.load_report is load_report
    assert set(recsim.__all__) <= set(dir(recsim))
    with pytest.raises(AttributeError, match="no attribute 'magic'"):
        recsim.magic  # noqa: B018
    from recsim import ope  # submodules still import through the package

    assert ope.__name__ == "recsim.ope"


def _log() -> pl.DataFrame:
    """Four logged decisions; w = target / propensity = [2, 2, 0, 1]."""
    return pl.DataFrame({"member_id": [1, 2, 3, 4], "propensity": [0.5, 0.25, 0.5, 1.0],
                         "target_prob": [1.0, 0.5, 0.0, 1.0], "reward": [1.0, 0.0, 1.0, 1.0]})


def test_evaluate_gives_the_hand_computed_values():
    # The four decisions made by 10 members each: the same values, and no bootstrap replicate
    # that resamples no member at all (with 4 members some do: their interval is void).
    log = pl.concat([_log().with_columns(pl.col("member_id") + 10 * k) for k in range(10)])
    estimates = recsim.evaluate(log, ["ips", "snips"], n_boot=50)
    assert estimates["ips"].value == pytest.approx((2 * 1 + 2 * 0 + 0 * 1 + 1 * 1) / 4)
    assert estimates["snips"].value == pytest.approx(3 / 5)
    for est in estimates.values():
        assert est.n == 40 and est.n_nonfinite == 0 and est.ci_low <= est.value <= est.ci_high


def test_evaluate_refuses_a_bad_log_naming_the_column():
    with pytest.raises(ValueError, match=r"decisions: column 'propensity': 1 values outside"):
        recsim.evaluate(_log().with_columns(propensity=pl.Series([0.5, 0.0, 0.5, 1.0])))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['reward'\]"):
        recsim.evaluate(_log().drop("reward"))


def test_compose_config():
    assert recsim.compose_config(["experiment=debug"]).world.n_members == 300
    with pytest.raises(ConfigCompositionException):
        recsim.compose_config(["sim.n_bootstrap=abc"])


def _readme_example() -> str:
    found = EXAMPLE.search(README.read_text())
    if not found:
        pytest.skip("README.md has no ```python block between <!-- api-example --> and "
                    "<!-- /api-example --> (recsim/jobs/api.py's docstring holds the text to paste)")
    return found.group(1)


def test_the_readme_example_is_the_one_in_the_api_docstring():
    from recsim.jobs import api

    assert _readme_example() == EXAMPLE.search(api.__doc__).group(1)


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path, monkeypatch):
    """The README's API example, as written, in an empty directory: a world, estimates, the
    debug pipeline (about a minute), its report loaded back."""
    code = _readme_example()
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md api-example", "exec"), namespace)
    report = recsim.load_report(tmp_path / "runs" / "debug")
    assert report["verdict"]["text"] == namespace["report"]["verdict"]["text"]
    estimates = namespace["estimates"]
    assert 0 <= estimates["snips"].value <= 1 and estimates["ips"].n == namespace["log"].height
