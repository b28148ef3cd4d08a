"""The Open Bandit Dataset (OBD) as logs and policies: data, item counts, action distributions.

ZOZOTOWN's fashion e-commerce site showed 3 items per impression in three campaigns (`all`: 80
items, `men`: 34, `women`: 46), with one log per logging policy: `random` (uniform, 1 / items
per item and position) and `bts` (Bernoulli Thompson sampling). The sample that ships in the
`obp==0.4.1` wheel has 10,000 rows per log (one row per shown position) with click and
propensity_score; the full-size download has the same layout (`data_dir`). The obp library is
not imported (it does not run on this Python); only its files are read, and what it computes is
recomputed here to the same numbers:

    rows          sorted by timestamp as obp sorts them (pandas' default quicksort, which
                  reorders two tied rows of random/men), numbered 0..n-1: a row is one
                  impression and its own bootstrap cluster (the sample has no user id)
    item count    from the data, as obp does (largest item_id + 1), never assumed
    random        1 / items at every position
    bts           obp's `BernoulliTS(is_zozotown_prior=True, random_state=12345)
                  .compute_batch_action_dist(n_sim=1e6)`: per simulation one Beta draw per item
                  from the production prior (obp/policy/conf/prior_bts.yaml) with numpy's legacy
                  `RandomState(12345)`, the items ranked by draw (argsort, reversed), the top 3
                  counted per position; divided by n_sim. Drawn here in chunks of simulations
                  (the legacy generator gives the same stream whether drawn one simulation or
                  a block of them at a time), so memory stays at one chunk.

The evaluation on top of these (estimates, the on-policy truth, obp's relative-error protocol):
recsim/ope/adapters/obd_eval.py.
"""

from __future__ import annotations

import functools
import logging
from importlib import metadata
from pathlib import Path

import numpy as np
import polars as pl
import yaml

from recsim.ope import verdict

log = logging.getLogger(__name__)

POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
N_POSITIONS = 3
OBP_SEED = 12345  # obp's examples/obd: random_state of the BTS action distribution
OBP_N_SIM = 1_000_000  # obp's examples/obd: n_sim_to_compute_action_dist
_CHUNK = 20_000  # simulations per block of Beta draws (20k x 80 doubles = 12.8 MB)
_COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score")


def _obp_file(suffix: str) -> Path:
    try:
        files = metadata.files("obp") or []
    except metadata.PackageNotFoundError as err:
        raise FileNotFoundError("the Open Bandit Dataset sample comes with the obp==0.4.1 wheel: "
                                "pip install --no-deps obp==0.4.1") from err
    for f in files:
        if str(f).endswith(suffix):
            return Path(f.locate())
    raise FileNotFoundError(f"obp package has no file ending in {suffix}")


def check_choice(kind: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"OBD {kind} '{value}' is unknown; choose from {list(choices)}")
    return value


def log_path(policy: str, campaign: str = "all", data_dir: str | Path | None = None) -> Path:
    """The CSV of one (policy, campaign): from the obp wheel, or `data_dir`/policy/campaign/."""
    check_choice("policy", policy, POLICIES)
    check_choice("campaign", campaign, CAMPAIGNS)
    relative = f"{policy}/{campaign}/{campaign}.csv"
    return Path(data_dir) / relative if data_dir is not None else _obp_file(f"obd/{relative}")


def _check_log(frame: pl.DataFrame, path: Path) -> None:
    """ValueError naming the file, the column and the first bad values."""
    if frame.height == 0:
        raise ValueError(f"{path}: no rows")
    bad_rules = {
        "item_id": pl.col("item_id").is_null() | (pl.col("item_id") < 0),
        "position": ~pl.col("position").is_in(list(range(1, N_POSITIONS + 1))),
        "click": ~pl.col("click").is_in([0, 1]),
        "propensity_score": pl.col("propensity_score").is_null()
        | ~pl.col("propensity_score").is_between(0, 1, closed="right"),
    }
    for col, rule in bad_rules.items():
        bad = frame.filter(rule.fill_null(True))[col]
        if len(bad):
            raise ValueError(f"{path}: column '{col}': {len(bad)} bad value(s) (first: "
                             f"{bad.head(3).to_list()}); expected {_EXPECTED[col]}")


_EXPECTED = {"item_id": "integers >= 0", "position": f"1..{N_POSITIONS}", "click": "0 or 1",
             "propensity_score": "probabilities in (0, 1]"}


def load_log(policy: str, campaign: str = "all", data_dir: str | Path | None = None
             ) -> pl.DataFrame:
    """One logging policy's log: (member_id, timestamp, item_id, position, reward, propensity).

    Rows in obp's order (sorted by timestamp with numpy's quicksort, as pandas' sort_values
    does); member_id is the row number in that order; positions are 1-3.
    """
    path = log_path(policy, campaign, data_dir)
    try:
        missing = [c for c in _COLUMNS if c not in pl.scan_csv(path).collect_schema()]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        frame = pl.read_csv(path, columns=list(_COLUMNS))
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable Open Bandit Dataset CSV ({err})") from err
    _check_log(frame, path)
    order = np.argsort(np.asarray(frame["timestamp"].to_list(), dtype=object), kind="quicksort")
    return frame[order].with_row_index("member_id").select(
        pl.col("member_id").cast(pl.Int64), "timestamp", pl.col("item_id").cast(pl.Int64),
        pl.col("position").cast(pl.Int64), reward=pl.col("click").cast(pl.Float64),
        propensity=pl.col("propensity_score").cast(pl.Float64))


def n_items(campaign: str = "all", data_dir: str | Path | None = None) -> int:
    """The campaign's item count as obp reads it (largest item_id + 1); both logs must agree."""
    counts = {p: int(load_log(p, campaign, data_dir)["item_id"].max()) + 1 for p in POLICIES}
    if len(set(counts.values())) > 1:
        raise ValueError(f"OBD campaign '{campaign}': the logs disagree on the item count "
                         f"({counts})")
    return counts["random"]


def bts_prior(campaign: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """ZOZOTOWN's production Beta prior (alpha, beta) per item, from obp's prior_bts.yaml."""
    check_choice("campaign", campaign, CAMPAIGNS)
    prior = yaml.safe_load(_obp_file("obp/policy/conf/prior_bts.yaml").read_text())[campaign]
    return np.asarray(prior["alpha"], dtype=float), np.asarray(prior["beta"], dtype=float)


@functools.lru_cache(maxsize=8)
def _bts_counts(campaign: str, n_sim: int, seed: int, chunk: int) -> np.ndarray:
    alpha, beta = bts_prior(campaign)
    n = len(alpha)
    rng = np.random.RandomState(seed)  # obp: sklearn's check_random_state(12345)
    counts = np.zeros((n, N_POSITIONS), dtype=np.int64)
    for start in range(0, n_sim, chunk):
        theta = rng.beta(alpha, beta, size=(min(chunk, n_sim - start), n))
        top = np.argsort(theta, axis=1)[:, ::-1][:, :N_POSITIONS]  # obp: argsort()[::-1][:3]
        for k in range(N_POSITIONS):
            counts[:, k] += np.bincount(top[:, k], minlength=n)
    return counts


def bts_action_dist(campaign: str = "all", n_sim: int = OBP_N_SIM, seed: int = OBP_SEED,
                    chunk: int = _CHUNK) -> np.ndarray:
    """[items, 3] probability of each item at each position under production BTS, by obp's
    protocol (module docstring); the same numbers for any `chunk`. Cached per process."""
    if n_sim < 1 or chunk < 1:
        raise ValueError(f"bts_action_dist: n_sim and chunk must be >= 1, got {n_sim}, {chunk}")
    return _bts_counts(campaign, int(n_sim), int(seed), int(chunk)) / n_sim


def action_dist(policy: str, campaign: str = "all", n_sim: int = OBP_N_SIM,
                data_dir: str | Path | None = None) -> np.ndarray:
    """[items, 3] evaluation policy's probability of each item at each position."""
    check_choice("policy", policy, POLICIES)
    n = n_items(campaign, data_dir)
    if policy == "random":
        return np.full((n, N_POSITIONS), 1.0 / n)
    dist = bts_action_dist(campaign, n_sim)
    if dist.shape[0] != n:
        raise ValueError(f"OBD campaign '{campaign}': the BTS prior has {dist.shape[0]} items, "
                         f"the logs {n}")
    return dist


def logging_is_uniform(behavior: pl.DataFrame, items: int, tol: float = 1e-9) -> bool:
    """True when every logged propensity is 1 / items (random logging; replay's assumption),
    decided by recsim/ope/verdict.py's rule with every item a candidate of every impression."""
    ids = behavior["member_id"]
    candidates = pl.DataFrame({"request_id": np.repeat(ids.to_numpy(), items)})
    logged = behavior.select(request_id=ids, propensity="propensity")
    return verdict.logging_is_uniform(logged, candidates, tol)


def decisions(behavior: pl.DataFrame, target: np.ndarray, smoothing: float = 10.0) -> pl.DataFrame:
    """The behaviour log framed for the estimators, with an evaluation policy's probabilities.

    target: [items, positions] evaluation policy. The reward model of DM / DR is the click rate
    per (item, position), shrunk toward the position's rate with `smoothing`
    pseudo-impressions, fitted on `behavior` itself (obp fits a logistic regression on user
    features instead, so DM / DR differ from obp's; IPS / SNIPS do not depend on it).
    """
    items, positions = target.shape
    item = behavior["item_id"].to_numpy()
    pos = behavior["position"].to_numpy() - 1
    if item.max() >= items or pos.max() >= positions:
        raise ValueError(f"decisions: the log has item {item.max()} / position {pos.max() + 1}, "
                         f"beyond the evaluation policy's {items} items x {positions} positions")
    reward = behavior["reward"].to_numpy()
    n = np.zeros((items, positions))
    clicks = np.zeros((items, positions))
    np.add.at(n, (item, pos), 1.0)
    np.add.at(clicks, (item, pos), reward)
    rate = clicks.sum(axis=0) / np.maximum(n.sum(axis=0), 1.0)  # per position
    q = (clicks + smoothing * rate) / (n + smoothing)
    shown = n.sum(axis=1) > 0
    return behavior.with_columns(
        target_prob=target[item, pos],
        reward_hat=q[item, pos],
        target_reward_hat=(target * q).sum(axis=0)[pos],
        unsupported_mass=target[~shown].sum(axis=0)[pos],
    )
