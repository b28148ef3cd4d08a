"""Off-policy estimators with one contract, and one shared clustered bootstrap.

An estimator is a function from a polars frame of logged decisions to per-row contributions
`num` and `den`; its value is sum(num) / sum(den). IPS has den = 1 (a mean), SNIPS has den = the
importance weight (a self-normalised mean). The input frame has one row per logged decision:

    member_id   the bootstrap cluster (members are resampled, not impressions)
    propensity  the logging policy's probability of the logged action, in (0, 1]
    target_prob the evaluation policy's probability of the same action, in [0, 1]
    reward      the observed outcome (click, any engagement, dwell, ...)

`bootstrap` turns contributions into replicate values with a Poisson bootstrap over members
(each member's rows get one Poisson(1) weight per replicate): vectorised, and per-shard sums
combine by addition. `estimate` wraps it into an `Estimate` with a percentile interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

REQUIRED = ("member_id", "propensity", "target_prob", "reward")


@dataclass(frozen=True)
class Estimate:
    name: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    diagnostics: dict = field(default_factory=dict)


def check_decisions(frame: pl.DataFrame, source: str = "decisions") -> pl.DataFrame:
    """Clear errors for what would silently give a wrong number."""
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}")
    if frame.height == 0:
        raise ValueError(f"{source}: no logged decisions to evaluate (empty log)")
    nulls = [c for c in REQUIRED if frame[c].null_count()]
    if nulls:
        raise ValueError(f"{source}: null values in column(s) {nulls}")
    bad = frame.filter((pl.col("propensity") <= 0) | (pl.col("propensity") > 1))
    if bad.height:
        raise ValueError(f"{source}: column 'propensity': {bad.height} values outside (0, 1] "
                         f"(first: {bad['propensity'][0]}); propensity must be in (0, 1]")
    bad = frame.filter((pl.col("target_prob") < 0) | (pl.col("target_prob") > 1))
    if bad.height:
        raise ValueError(f"{source}: column 'target_prob': {bad.height} values outside [0, 1]")
    return frame


def _weights(frame: pl.DataFrame) -> pl.Expr:
    return pl.col("target_prob") / pl.col("propensity")


def ips(frame: pl.DataFrame) -> pl.DataFrame:
    """Inverse propensity scoring: mean of w * r."""
    return frame.with_columns(num=_weights(frame) * pl.col("reward"), den=pl.lit(1.0))


def snips(frame: pl.DataFrame) -> pl.DataFrame:
    """Self-normalised IPS: sum(w * r) / sum(w); bounded by the reward range."""
    return frame.with_columns(num=_weights(frame) * pl.col("reward"), den=_weights(frame))


ESTIMATORS = {"ips": ips, "snips": snips}


@dataclass(frozen=True)
class Bootstrap:
    """Poisson(1) weights [G, B] for G member clusters and B replicates, and the row -> cluster map."""

    cluster_of_row: np.ndarray
    weights: np.ndarray

    @classmethod
    def over_members(cls, member_ids: pl.Series, n_boot: int, seed: int) -> "Bootstrap":
        codes = member_ids.rank("dense").cast(pl.Int64).to_numpy() - 1
        rng = np.random.default_rng(seed)
        return cls(codes, rng.poisson(1.0, size=(int(codes.max()) + 1, n_boot)).astype(np.float64))

    def replicates(self, contributions: pl.DataFrame) -> tuple[float, np.ndarray]:
        """Point value and [B] replicate values of sum(num) / sum(den)."""
        g = self.weights.shape[0]
        num = np.bincount(self.cluster_of_row, contributions["num"].to_numpy(), minlength=g)
        den = np.bincount(self.cluster_of_row, contributions["den"].to_numpy(), minlength=g)
        with np.errstate(invalid="ignore", divide="ignore"):
            return num.sum() / den.sum(), (self.weights.T @ num) / (self.weights.T @ den)


def percentile_interval(replicates: np.ndarray, alpha: float) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def diagnostics(frame: pl.DataFrame) -> dict:
    w = (frame["target_prob"] / frame["propensity"]).to_numpy()
    return {
        "effective_sample_size": float(w.sum() ** 2 / max((w**2).sum(), 1e-300)),
        "max_weight": float(w.max()),
        "mean_weight": float(w.mean()),
    }


def estimate(name: str, frame: pl.DataFrame, boot: Bootstrap,
             alpha: float = 0.05) -> tuple[Estimate, np.ndarray]:
    """Run estimator `name` on `frame`; return its Estimate and bootstrap replicates."""
    contributions = ESTIMATORS[name](frame)
    value, reps = boot.replicates(contributions)
    lo, hi = percentile_interval(reps, alpha)
    return Estimate(name, float(value), lo, hi, frame.height, diagnostics(frame)), reps
