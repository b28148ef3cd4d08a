"""The English LiPost comparison's method: folds, single-task budgets, scores, paired differences
and the issue's targets (the job that trains and evaluates: recsim/jobs/finetune.py).

Models, per fold f, every fine-tune trained on the texts of the other folds only:

    base              the frozen encoder
    single-task       one fine-tune per training task, evaluated on its own task
    single-task-wise  that fine-tune's weights averaged with the base's (WiSE-FT, `wise_alpha`)
    multi-task        one fine-tune on all training tasks, evaluated on every task (the
                      zero-shot ones were never trained on)
    multi-task-wise   its WiSE-FT mix with the base

Every task's texts are split into the same folds (embeddings/crossval.py: by a hash of the
text), so a review held out of the rating task is held out of the department task too; each
evaluated text is predicted once per model, by the model of its fold. Differences between two
models are paired over texts (each text scored by both), with a bootstrap interval.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from sklearn.metrics import f1_score

from embeddings.crossval import fold_view, paired_bootstrap
from embeddings.tasks import Task

MODELS = ("base", "single-task", "single-task-wise", "multi-task", "multi-task-wise")


def cv_views(tasks: dict[str, Task], k: int, seed: int, n_test: int) -> list[dict[str, Task]]:
    """Per fold: task name -> the task with that fold's texts as test texts (at most
    ceil(n_test / k) of them, so about n_test texts per task are evaluated over all folds) and
    the other folds' texts as training and validation texts."""
    max_test = math.ceil(n_test / k)
    return [{name: fold_view(task, f, k, seed, max_test=max_test) for name, task in tasks.items()}
            for f in range(k)]


def single_task_budget(probabilities: dict[str, float], steps: int,
                       warmup_steps: int) -> dict[str, tuple[int, int]]:
    """(steps, warmup steps) of each task's single-task fine-tune: the number of batches of that
    task the multi-task fine-tune draws in expectation (p_task x steps), warm-up scaled alike.
    Each single-task model thus sees as many batches of its task as the multi-task model, and
    the single-task models together cost what the multi-task one costs."""
    out = {}
    for name, p in probabilities.items():
        n = max(1, round(p * steps))
        out[name] = (n, min(n, max(1, round(warmup_steps * n / steps))))
    return out


def scores(predictions: pl.DataFrame, small_dim: int = 64) -> pl.DataFrame:
    """Per model and task: n texts, kNN accuracy, macro-F1 and text-to-label MRR at full
    dimension, and kNN accuracy at `small_dim` (null when not evaluated)."""
    full_dim = int(predictions["dim"].max())
    rows = []
    for (model, task), part in predictions.group_by("model", "task", maintain_order=True):
        full = part.filter(pl.col("dim") == full_dim)
        small = part.filter(pl.col("dim") == small_dim)
        y, pred = full["label"].to_numpy(), full["pred"].to_numpy()
        rows.append({"model": model, "task": task, "n": full.height,
                     "accuracy": float((y == pred).mean()),
                     "macro_f1": float(f1_score(y, pred, average="macro")),
                     "mrr": float((1.0 / full["rank"].to_numpy()).mean()),
                     f"accuracy_{small_dim}d": (float((small["label"] == small["pred"]).mean())
                                                if small.height else None)})
    return pl.DataFrame(rows)


def comparisons(train_tasks: list[str], zero_shot: list[str]) -> list[tuple[str, str, list[str]]]:
    """(model, versus, tasks): every difference the comparison reports."""
    return [("multi-task-wise", "single-task-wise", train_tasks),
            ("multi-task", "single-task", train_tasks),
            ("multi-task-wise", "base", train_tasks + zero_shot),
            ("multi-task", "base", train_tasks + zero_shot)]


def differences(predictions: pl.DataFrame, pairs: list[tuple[str, str, list[str]]], n_boot: int,
                seed: int) -> pl.DataFrame:
    """Per (model, versus, task): n paired texts, mean accuracy difference at full dimension and
    its paired bootstrap 95% interval. A pair whose models were not both evaluated is skipped."""
    full = predictions.filter(pl.col("dim") == pl.col("dim").max())
    correct = full.select("model", "task", "text",
                          correct=(pl.col("label") == pl.col("pred")).cast(pl.Float64))
    rows = []
    for model, versus, tasks in pairs:
        paired = (correct.filter(pl.col("model") == model, pl.col("task").is_in(tasks)).drop("model")
                  .join(correct.filter(pl.col("model") == versus).drop("model"),
                        on=["task", "text"], suffix="_versus"))
        for task in (t for t in tasks if t in set(paired["task"])):
            part = paired.filter(pl.col("task") == task)
            diff, lo, hi = paired_bootstrap(part["correct"].to_numpy(),
                                            part["correct_versus"].to_numpy(), n_boot, seed)
            rows.append({"model": model, "versus": versus, "task": task, "n": part.height,
                         "diff": diff, "ci_low": lo, "ci_high": hi})
    return pl.DataFrame(rows)


def targets(diffs: pl.DataFrame, table: pl.DataFrame, train_tasks: list[str], zero_shot: list[str],
            multi: str, single: str, small_dim: int = 64) -> dict:
    """The issue's targets, measured for the pre-registered pair of models (`multi` vs `single`,
    `multi` vs base), reading "the interval not below zero" as its lower end >= 0."""
    def rows(versus: str, tasks: list[str]) -> dict[str, dict]:
        part = diffs.filter(pl.col("model") == multi, pl.col("versus") == versus,
                            pl.col("task").is_in(tasks)) if diffs.height else diffs
        return {r["task"]: r for r in part.iter_rows(named=True)}

    transfer, zero = rows(single, train_tasks), rows("base", zero_shot)
    mine = table.filter(pl.col("model") == multi)
    small = mine[f"accuracy_{small_dim}d"].to_numpy().astype(np.float64)
    kept = float(np.nansum(small) / mine["accuracy"].sum()) if mine.height else float("nan")
    return {
        "models": {"multi": multi, "single": single},
        "transfer_point_estimate_not_below_zero": {t: r["diff"] >= 0 for t, r in transfer.items()},
        "transfer_interval_not_below_zero": {t: r["ci_low"] >= 0 for t, r in transfer.items()},
        "transfer_interval_above_zero": [t for t, r in transfer.items() if r["ci_low"] > 0],
        "transfer_interval_below_zero": [t for t, r in transfer.items() if r["ci_high"] < 0],
        "positive_transfer_target_met": (bool(transfer) and len(transfer) == len(train_tasks)
                                         and all(r["diff"] >= 0 and r["ci_low"] >= 0 for r in transfer.values())
                                         and sum(r["ci_low"] > 0 for r in transfer.values())
                                         >= min(4, len(train_tasks))),
        "zero_shot_interval_not_below_zero": {t: r["ci_low"] >= 0 for t, r in zero.items()},
        "zero_shot_target_met": (bool(zero) and len(zero) == len(zero_shot)
                                 and all(r["diff"] >= 0 and r["ci_low"] >= 0 for r in zero.values())),
        f"accuracy_kept_at_{small_dim}d": kept,
        f"matryoshka_{small_dim}d_target_met": bool(kept >= 0.95),
    }
