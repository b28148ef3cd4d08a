"""The slate estimators' inputs as frames: checked, then padded into per-request matrices.

`recsim.ope.slate_offline` (the marginals and the decisions) and `recsim.ope.slate_pbm` (the
examination-weighted exposures) read the log and a target's scores through these:

    check_columns / check_policy   a ValueError that names the frame, the column and the first
                                   bad rows; nothing is computed from a bad frame
    logged_rows                    the impressions of the requests to evaluate, sorted by request
                                   and position, after checking slots 1..S and their candidates
    pad                            per request the union of its logged candidates and the
                                   policy's, in post_id order, as [R, C] matrices
    padded_log                     the same for the log alone (the logging policy's marginals)

Shape legend: R requests, C candidates per request (the padded union), S slots.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

KEY = ["request_id", "post_id"]


# --- frames in, checked -----------------------------------------------------------------------


def _first(frame: pl.DataFrame, n: int = 3) -> list:
    return frame.head(n).rows()


def int_keys(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with its key columns as Int64 (any integer width comes in)."""
    return frame.with_columns(pl.col(c).cast(pl.Int64) for c in KEY if c in frame.columns)


def check_columns(frame: pl.DataFrame, source: str, needs: tuple[str, ...]) -> None:
    """Every column of `needs` present in `frame` (named `source`) and free of nulls."""
    missing = [c for c in needs if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}")
    nulls = [c for c in needs if frame[c].null_count()]
    if nulls:
        raise ValueError(f"{source}: column(s) {nulls} hold null values")


def _check_scored(frame: pl.DataFrame, source: str, score: str) -> None:
    """(request_id, post_id, score): present, no duplicate pair, every score finite."""
    check_columns(frame, source, ("request_id", "post_id", score))
    dup = frame.filter(pl.struct(KEY).is_duplicated())
    if dup.height:
        first = _first(dup.select(KEY).unique(maintain_order=True))
        raise ValueError(f"{source}: columns ['request_id', 'post_id']: {dup.height} rows repeat a "
                         f"(request, post) pair (first: {first})")
    bad = frame.filter(~pl.col(score).cast(pl.Float64).is_finite())
    if bad.height:
        raise ValueError(f"{source}: column '{score}': {bad.height} NaN or infinite value(s) "
                         f"(first (request_id, post_id): {_first(bad.select(KEY))})")


def check_policy(policy_scores: pl.DataFrame, temperature: float, slate_size: int,
                  epsilon: float) -> None:
    _check_scored(policy_scores, "policy_scores", "score")
    if temperature < 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature}")
    if not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    if slate_size < 1:
        raise ValueError(f"slate_size must be >= 1, got {slate_size}")
    short = policy_scores.group_by("request_id").len().filter(pl.col("len") < slate_size)
    if short.height:
        raise ValueError(f"policy_scores: column 'post_id': {short.height} request(s) with fewer "
                         f"than slate_size={slate_size} candidates (first (request_id, n): "
                         f"{_first(short.sort('request_id'))})")


def logged_rows(impressions: pl.DataFrame, candidates: pl.DataFrame, requests: pl.DataFrame,
                 slate_size: int) -> pl.DataFrame:
    """The impressions of `requests` (request_id), sorted, after checking that every request is
    in the log with slots 1..S and with candidates."""
    check_columns(impressions, "impressions",
                   ("request_id", "member_id", "post_id", "position", "propensity"))
    _check_scored(candidates, "candidates", "logging_score")
    unlogged = requests.join(impressions.select("request_id").unique(), on="request_id", how="anti")
    if unlogged.height:
        first = unlogged["request_id"].head(3).to_list()
        raise ValueError(f"policy_scores: column 'request_id': {unlogged.height} request(s) not in "
                         f"the log's impressions (first: {first})")
    rows = impressions.join(requests, on="request_id", how="semi").sort("request_id", "position")
    slots = rows.group_by("request_id").agg(
        ok=(pl.len() == slate_size) & (pl.col("position").sort() == pl.int_range(1, pl.len() + 1))
        .all())
    bad = slots.filter(~pl.col("ok"))
    if bad.height:
        first = bad["request_id"].head(3).to_list()
        raise ValueError(f"impressions: column 'position': {bad.height} request(s) without exactly "
                         f"the slots 1..{slate_size} (first: {first})")
    missing = rows.join(candidates, on=KEY, how="anti")
    if missing.height:
        raise ValueError(f"impressions: column 'post_id': {missing.height} logged post(s) not "
                         f"among the request's candidates (first (request_id, post_id): "
                         f"{_first(missing.select(KEY))})")
    return rows


# --- frames to padded matrices ----------------------------------------------------------------


@dataclass
class Padded:
    """Per request the union of its logged and policy candidates, in post_id order.
    R requests, C the largest union, S slots."""

    request_id: np.ndarray  # [R] sorted
    post_id: np.ndarray  # [R, C] -1 for padding
    logging_score: np.ndarray  # [R, C] -inf off the log's candidates
    score: np.ndarray  # [R, C] the policy's; -inf off its candidates
    shown: np.ndarray | None  # [R, S] column of the logged post at each slot (None: no log)


def pad(policy_scores: pl.DataFrame, candidates: pl.DataFrame | None = None,
         rows: pl.DataFrame | None = None) -> Padded:
    """[R, C] matrices over the union of the policy's candidates and (if given) the log's."""
    union = policy_scores.select(pl.col(KEY).cast(pl.Int64), pl.col("score").cast(pl.Float64))
    if candidates is not None:
        logged = candidates.select(pl.col(KEY).cast(pl.Int64),
                                   pl.col("logging_score").cast(pl.Float64))
        logged = logged.join(union.select("request_id").unique(), on="request_id", how="semi")
        union = logged.join(union, on=KEY, how="full", coalesce=True)
    union = union.sort(KEY).with_columns(row=pl.col("request_id").rank("dense").cast(pl.Int64) - 1,
                                         col=pl.int_range(pl.len()).over("request_id"))
    n_req, n_cand = int(union["row"].max()) + 1, int(union["col"].max()) + 1
    r, c = union["row"].to_numpy(), union["col"].to_numpy()

    def matrix(column: str, fill) -> np.ndarray:
        out = np.full((n_req, n_cand), fill)
        if column in union.columns:
            out[r, c] = union[column].fill_null(fill).to_numpy()
        return out

    shown = None
    if rows is not None:
        at = rows.join(union.select(*KEY, "col"), on=KEY, how="left", maintain_order="left")
        shown = at["col"].to_numpy().reshape(n_req, -1)
    request_id = union.select(pl.col("request_id").unique(maintain_order=True)).to_series()
    return Padded(request_id.to_numpy(), matrix("post_id", -1), matrix("logging_score", -np.inf),
                  matrix("score", -np.inf), shown)


def padded_log(impressions: pl.DataFrame, candidates: pl.DataFrame, requests: pl.DataFrame,
               slate_size: int) -> Padded:
    """The log alone, padded: the logged candidates of `requests` (request_id; sorted by id)
    with the logging scores and the logged slates. Everything the logging policy's own
    marginals need, whatever target is evaluated later."""
    impressions, candidates = int_keys(impressions), int_keys(candidates)
    requests = requests.select(pl.col("request_id").cast(pl.Int64)).unique()
    rows = logged_rows(impressions, candidates, requests, slate_size)
    own = candidates.join(requests, on="request_id", how="semi").select(
        *KEY, score=pl.col("logging_score"))
    return pad(own, candidates, rows)
