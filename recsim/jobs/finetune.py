"""The full LiPost comparison as one command: base vs single-task vs multi-task fine-tunes.

    python -m recsim.jobs.finetune                       # the full comparison (~1 hour, 2 cores)
    python -m recsim.jobs.finetune training=debug        # a quick check
    python -m recsim.jobs.finetune --cfg job             # the composed config

Steps: 1. tasks from the real corpora; 2. the frozen base model; 3. one fine-tune per training
task (evaluated on its own task); 4. the multi-task fine-tune (evaluated on every task, the
zero-shot ones included, at every Matryoshka dimension); 5. the comparison table, the targets,
and the multi-task model card. Trained models go to `models_dir` (not committed); a model
whose directory already holds a finished training with the same config is not retrained.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import polars as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from embeddings.encoder import EncoderConfig, load_encoder
from embeddings.evaluate import EvalConfig, evaluate
from embeddings.tasks import TASK_SPECS, build_task
from embeddings.train import TrainConfig, train_once, write_model_card
from recsim.jobs.schemas import register
from recsim.paths import conf_dir
from recsim.report.tables import markdown_table

log = logging.getLogger("recsim.jobs.finetune")
register("finetune")  # conf/finetune.yaml's schemas, before Hydra composes it


def _train_config(cfg: DictConfig, steps: int) -> TrainConfig:
    training = OmegaConf.to_container(cfg.training, resolve=True)
    training.pop("single_task_steps")
    return TrainConfig(**{**training, "steps": steps,
                          "base_model_dir": cfg.model.model_dir, "pooling": cfg.model.pooling,
                          "num_layers": cfg.model.num_layers, "seed": cfg.seed})


def _encoder(cfg: DictConfig, model_dir: str | None) -> EncoderConfig:
    return EncoderConfig(model_dir=model_dir, pooling=cfg.model.pooling,
                         max_length=cfg.training.max_length,
                         num_layers=cfg.model.num_layers if model_dir is None else None)


def check_configs(cfg: DictConfig) -> list:
    """Every config the comparison builds from `cfg`, built up front: a bad value fails before any
    work, with an error naming its key (the dataclasses check themselves)."""
    try:
        single = _train_config(cfg, cfg.training.single_task_steps)
    except ValueError as err:  # TrainConfig calls its steps training.steps
        raise ValueError(str(err).replace("training.steps:", "training.single_task_steps:", 1)) from None
    return [_train_config(cfg, cfg.training.steps), single, _encoder(cfg, cfg.model.model_dir),
            EvalConfig(**OmegaConf.to_container(cfg.evaluation, resolve=True), seed=cfg.seed)]


def summarize(table: pl.DataFrame, train_tasks: list[str], zero_shot: list[str],
              full_dim: int, small_dim: int = 64) -> tuple[pl.DataFrame, dict]:
    """Per-task comparison at full dimension and the issue's targets, measured."""
    full = table.filter(pl.col("dim") == full_dim)
    wide = full.pivot(on="model", index="task", values=["knn_accuracy", "mrr"])
    multi = table.filter(pl.col("model") == "multi-task")
    acc = dict(zip(*multi.filter(pl.col("dim") == full_dim).select("task", "knn_accuracy")))
    small = dict(zip(*multi.filter(pl.col("dim") == small_dim).select("task", "knn_accuracy")))
    col = lambda metric, model: f"{metric}_{model}"
    rows = {r["task"]: r for r in wide.iter_rows(named=True)}
    beats_base = {t: rows[t][col("knn_accuracy", "multi-task")] > rows[t][col("knn_accuracy", "base")]
                  for t in train_tasks + zero_shot}
    vs_single = {t: rows[t][col("knn_accuracy", "multi-task")] >= rows[t][col("knn_accuracy", "single-task")]
                 for t in train_tasks if col("knn_accuracy", "single-task") in rows[t]
                 and rows[t][col("knn_accuracy", "single-task")] is not None}
    kept = (sum(small[t] for t in small) / sum(acc[t] for t in small)) if small else float("nan")
    targets = {
        "multi_beats_base_on_every_task": all(beats_base.values()),
        "multi_beats_base": beats_base,
        "multi_matches_or_beats_single": sum(vs_single.values()),
        "of_single_tasks": len(vs_single),
        # None when no single-task models were trained (single_task=false): not measured.
        "positive_transfer_target_met": (sum(vs_single.values()) >= min(5, len(vs_single))
                                         if vs_single else None),
        f"knn_accuracy_kept_at_{small_dim}d": kept,
        f"matryoshka_{small_dim}d_target_met": kept >= 0.95,
    }
    return wide.sort("task"), targets


def render(wide: pl.DataFrame, table: pl.DataFrame, targets: dict, minutes: float,
           zero_shot: list[str]) -> str:
    models = [m for m in ("base", "single-task", "multi-task") if f"knn_accuracy_{m}" in wide.columns]
    rows = []
    for r in wide.iter_rows(named=True):
        name = r["task"] + (" (zero-shot)" if r["task"] in zero_shot else "")
        cells = [r.get(f"knn_accuracy_{m}") for m in models] + [r.get(f"mrr_{m}") for m in models]
        rows.append([name, *("" if c is None else f"{c:.3f}" for c in cells)])
    headers = ["task", *(f"kNN acc {m}" for m in models), *(f"MRR {m}" for m in models)]
    lines = ["## Base vs single-task vs multi-task (full dimension)", "",
             markdown_table(headers, rows)]
    multi = table.filter(pl.col("model") == "multi-task")
    dims = sorted(multi["dim"].unique().to_list(), reverse=True)
    rows = []
    for task in multi["task"].unique(maintain_order=True).to_list():
        accs = {r["dim"]: r["knn_accuracy"] for r in multi.filter(pl.col("task") == task).iter_rows(named=True)}
        rows.append([task, *(f"{accs[d]:.3f}" for d in dims)])
    lines += ["", "## Matryoshka dimensions (multi-task, kNN accuracy)", "",
              markdown_table(["task", *(f"{d}-d" for d in dims)], rows)]
    lines += ["", "## Targets", "",
              f"- multi-task beats the frozen base on every task (zero-shot included): "
              f"**{targets['multi_beats_base_on_every_task']}** "
              f"({', '.join(t for t, ok in targets['multi_beats_base'].items() if not ok) or 'no exceptions'})",
              (f"- multi-task matches or beats single-task on {targets['multi_matches_or_beats_single']} "
               f"of {targets['of_single_tasks']} tasks (target 5): "
               f"**{targets['positive_transfer_target_met']}**")
              if targets["of_single_tasks"] else "- positive transfer: not measured (single_task=false)",
              f"- 64-d keeps {100 * targets['knn_accuracy_kept_at_64d']:.1f}% of full-dimension kNN "
              f"accuracy (target 95%): **{targets['matryoshka_64d_target_met']}**",
              f"- wall time {minutes:.1f} min (target 60)", ""]
    return "\n".join(lines)


def compare(cfg: DictConfig, output_dir: str | Path) -> dict:
    from recsim.world.corpus import load_corpus

    check_configs(cfg)
    start = time.perf_counter()
    out = Path(output_dir)
    models_dir = Path(cfg.models_dir)
    eval_cfg = EvalConfig(**OmegaConf.to_container(cfg.evaluation, resolve=True), seed=cfg.seed)
    train_names, zero_names = list(cfg.tasks.train), list(cfg.tasks.zero_shot)
    overlap = set(train_names) & set(zero_names)
    if overlap:
        raise ValueError(f"tasks.zero_shot must not be trained on; also in tasks.train: {sorted(overlap)}")

    # 1. Tasks from the real corpora.
    names = train_names + zero_names
    sources = sorted({TASK_SPECS[n].source for n in names if n in TASK_SPECS})
    corpus = load_corpus(sources, cfg.corpus_max_per_source, seed=cfg.seed)
    tasks = {n: build_task(n, corpus, cfg.tasks.min_label_count, seed=cfg.seed) for n in names}
    train_tasks = {n: tasks[n] for n in train_names}

    # 2. The frozen base model on every task.
    results = [evaluate(load_encoder(_encoder(cfg, cfg.model.model_dir)), tasks, eval_cfg, "base")]

    # 3. One fine-tune per training task, evaluated on its own task.
    if cfg.single_task:
        for name, task in train_tasks.items():
            model_dir = train_once({name: task}, _train_config(cfg, cfg.training.single_task_steps),
                                 models_dir / f"single_{name}")
            results.append(evaluate(load_encoder(_encoder(cfg, str(model_dir))), {name: task},
                                    eval_cfg, "single-task"))

    # 4. The multi-task fine-tune on every task, zero-shot ones included.
    multi_dir = train_once(train_tasks, _train_config(cfg, cfg.training.steps), models_dir / "multitask")
    results.append(evaluate(load_encoder(_encoder(cfg, str(multi_dir))), tasks, eval_cfg, "multi-task"))

    # 5. Table, targets, model card.
    table = pl.concat(results, how="diagonal")
    full_dim = int(table["dim"].max())
    wide, targets = summarize(table, train_names, zero_names, full_dim)
    minutes = (time.perf_counter() - start) / 60
    markdown = render(wide, table, targets, minutes, zero_names)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(f"# LiPost comparison\n\n{markdown}")
    (out / "compare.json").write_text(json.dumps({
        "rows": table.to_dicts(), "targets": targets, "minutes": minutes,
        "config": OmegaConf.to_container(cfg, resolve=True), "multitask_model": str(multi_dir),
    }, indent=2))
    training = json.loads((multi_dir / "training.json").read_text())
    write_model_card(multi_dir, training, markdown)
    log.info("comparison written to %s (%.1f min); multi-task model: %s", out / "compare.md",
             minutes, multi_dir)
    return {"table": table, "targets": targets, "minutes": minutes, "multitask_model": multi_dir}


@hydra.main(version_base="1.3", config_path=conf_dir("finetune"), config_name="finetune")
def main(cfg: DictConfig) -> None:
    compare(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
