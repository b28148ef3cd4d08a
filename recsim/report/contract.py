"""report.json as a contract: a schema version, a JSON Schema, no bare NaN, the sweep objective.

    SCHEMA_VERSION      "MAJOR.MINOR" written into every report; a minor release only adds
                        fields (readers ignore what they do not know), a major one renames,
                        removes or retypes a field
    report.schema.json  the JSON Schema (draft 2020-12) beside this file: every section and field,
                        with what it means; `write_report` validates each report against it
                        before writing anything, `load_report` when reading one back
    nulls               JSON has no NaN or Infinity: a non-finite number is written as null, and
                        the top-level "nulls" map says why, keyed by the field's JSON Pointer
                        (RFC 6901), e.g. {"/segments/1/lift": "Infinity: the control's value
                        is 0 ..."}
    objective           the number `recsim-run` returns to a Hydra sweeper (report.objective in
                        conf/report/default.yaml; see `objective_value`)

Reading a report from a notebook:

    import recsim
    report = recsim.load_report("outputs/2025-01-01/12-00-00/report.json")
    {row["estimator"]: row["lift"] for row in report["lifts"]}
"""

from __future__ import annotations

import functools
import json
import math
from importlib import resources
from pathlib import Path, PurePath

import numpy as np

SCHEMA_VERSION = "1.2"  # 1.1: "data"; truth, retrieval, embeddings null for data=logs; 1.2: "obd"
SCHEMA_FILE = "report.schema.json"

# Objectives beside an estimator's name (that estimator's lift).
OBJECTIVES = {
    "verdict": "the lift of the estimator the verdict rests on (null when the log cannot tell)",
    "true_lift": "the true whole-slate lift under the world's user model",
    "online_ab": "the lift the simulated online A/B test measured",
}

_LIFT_WHY = ("a relative lift divides by the control's value, which is 0 here (or no "
             "bootstrap replicate had a finite lift)")
_WHY = {  # a field's name (or JSON Pointer) -> why it can be non-finite
    **{k: _LIFT_WHY for k in ("lift", "ci_low", "ci_high", "p_value", "std_error", "mde",
                              "true_lift", "top_slot_lift")},
    "auc": "AUC needs both classes among the evaluation labels",
    "normalized_entropy": "the base rate is 0 or 1: no entropy to normalize by",
    "calibration": "no positive labels to divide the predictions by",
    "value": "the estimator's denominator is 0 (no logged decision the policy agrees with)",
    "/objective/value": "the objective's estimator gave no lift, or the verdict rests on none "
                        "(the log cannot tell)",
}


@functools.cache
def schema() -> dict:
    """The report's JSON Schema (recsim/report/report.schema.json), read from the package."""
    return json.loads(resources.files("recsim.report").joinpath(SCHEMA_FILE).read_text())


def jsonable(report: dict) -> dict:
    """`report` as plain JSON data: numpy scalars as Python numbers, tuples as lists, paths as
    strings, keys as strings, and each non-finite float as None, with its reason in a top-level
    "nulls" map (JSON Pointer -> reason). A value of any other type is a ValueError naming it."""
    nulls: dict[str, str] = {}
    out = _clean(report, "", nulls)
    out["nulls"] = nulls
    return out


def _clean(value, pointer: str, nulls: dict[str, str]):
    if isinstance(value, dict):
        return {str(k): _clean(v, f"{pointer}/{_escape(str(k))}", nulls) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_clean(v, f"{pointer}/{i}", nulls) for i, v in enumerate(value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value):
            return float(value)
        token = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        why = _WHY.get(pointer) or _WHY.get(pointer.rsplit("/", 1)[-1], "not a finite number")
        nulls[pointer] = f"{token}: {why}"
        return None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    raise ValueError(f"report: field {pointer or '/'}: a {type(value).__name__} is not JSON "
                     f"data ({str(value)[:80]!r})")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def validate(data: dict, source: str = "report") -> None:
    """ValueError naming the first fields (JSON Pointers) where `data` breaks the schema."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        where = "; ".join(f"/{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}"
                          for e in errors[:5])
        raise ValueError(f"{source}: {len(errors)} field(s) break report.schema.json "
                         f"(schema_version {SCHEMA_VERSION}): {where}")


def to_json(report: dict) -> str:
    """report.json's text: cleaned (`jsonable`), validated, strict JSON (no NaN / Infinity)."""
    data = jsonable(report)
    validate(data)
    return json.dumps(data, indent=2, allow_nan=False)


def load_report(path: str | Path, nan: bool = True) -> dict:
    """A report.json (or the run directory holding one), checked against the schema; with `nan`,
    each null listed in "nulls" is the NaN / Infinity it was (`restore_nan`), so the dict is the
    one the run returned; without, the JSON data as written.

    A report of another major schema version is refused: its fields may mean something else."""
    path = Path(path)
    path = path / "report.json" if path.is_dir() else path
    data = json.loads(path.read_text())
    version = str(data.get("schema_version", "none")) if isinstance(data, dict) else "none"
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ValueError(f"{path}: schema_version {version}; this recsim reads "
                         f"{SCHEMA_VERSION.split('.')[0]}.x (written by another release?)")
    validate(data, str(path))
    return restore_nan(data) if nan else data


def restore_nan(data: dict) -> dict:
    """Put back, in place, the non-finite numbers that `jsonable` wrote as null (the pointers of
    data["nulls"], their value the reason's first word); a dict without "nulls" is unchanged."""
    for pointer, reason in data.get("nulls", {}).items():
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in pointer.split("/")[1:]]
        node = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        value = float(reason.split(":", 1)[0].replace("Infinity", "inf"))
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


def check_objective(name: str, estimators: list[str]) -> None:
    """ValueError unless `name` is one of OBJECTIVES or of the run's `estimators`."""
    if name not in OBJECTIVES and name not in estimators:
        raise ValueError(f"report.objective: unknown {name!r}; choose from "
                         f"{[*OBJECTIVES, *estimators]}")


def objective_value(report: dict, name: str) -> float:
    """The number a sweeper optimizes, by `name` (report.objective): see OBJECTIVES, or an
    estimator's name for its lift. NaN where the report has none (the log cannot tell). A
    data=obd report has no lift: its estimators' click rates stand in for the lifts."""
    lifts = ({row["estimator"]: row["estimate"] for row in report["obd"]["rows"]}
             if report.get("obd") else {row["estimator"]: row["lift"] for row in report["lifts"]})
    if name == "verdict":
        chosen = report["verdict"].get("estimator")
        value = lifts[chosen] if chosen else None
    elif name == "true_lift":
        value = report["truth"]["lift"]
    elif name == "online_ab":
        value = report["truth"]["online_ab"]["lift"]
    elif name in lifts:
        value = lifts[name]
    else:
        raise ValueError(f"report.objective: {name!r} is neither one of {list(OBJECTIVES)} nor "
                         f"an estimator of this report ({list(lifts)})")
    return float("nan") if value is None else float(value)
