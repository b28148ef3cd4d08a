"""The English LiPost comparison as one command: base vs single-task vs multi-task fine-tunes
(and their WiSE-FT mixes with the base), k-fold cross-validated, with paired intervals.

    python -m recsim.jobs.finetune                                      # the pre-registered comparison
    python -m recsim.jobs.finetune training=lipost_debug evaluation=debug   # a quick check
    python -m recsim.jobs.finetune --cfg job                            # the composed config

Steps, per fold (the method: embeddings/lipost.py and embeddings/crossval.py): 1. the tasks from
the real corpora, split into folds shared by every task; 2. the frozen base model predicts the
fold's texts of every task; 3. the multi-task fine-tune, trained on the other folds' texts of
the training tasks, and its WiSE-FT mix with the base, predict the fold's texts of every task;
4. one fine-tune per training task (as many batches of its task as the multi-task fine-tune
draws) and its mix predict the fold's texts of that task. Then 5. scores, paired differences,
the targets: `compare.md` / `compare.json` / `predictions.parquet` in the Hydra run directory.
Fine-tunes go to models_dir/lipost-cv and per-(model, fold) predictions to models_dir/lipost-eval
(not committed); a rerun reuses whatever is finished, so a stopped run resumes.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import time
from pathlib import Path

import hydra
import polars as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from embeddings.crossval import TextVectors, eval_texts, fold_predictions
from embeddings.encoder import EncoderConfig, default_model_dir, load_encoder
from embeddings.evaluate import EvalConfig
from embeddings.lipost import (MODELS, comparisons, cv_views, differences, scores,
                               single_task_budget, targets)
from embeddings.tasks import TASK_SPECS, build_task
from embeddings.train import TrainConfig, task_probabilities, train_once, weight_ensemble, write_model_card
from recsim.jobs.schemas import register
from recsim.paths import conf_dir
from recsim.report.tables import markdown_table

log = logging.getLogger("recsim.jobs.finetune")
register("finetune")  # conf/finetune.yaml's schemas, before Hydra composes it
BUDGETS = ("matched", "fixed")


def _train_config(cfg: DictConfig, **override) -> TrainConfig:
    training = OmegaConf.to_container(cfg.training, resolve=True)
    training.pop("single_task_steps")
    return TrainConfig(**{**training, "base_model_dir": cfg.model.model_dir, "pooling": cfg.model.pooling,
                          "num_layers": cfg.model.num_layers, "seed": cfg.seed, **override})


def _encoder(cfg: DictConfig, model_dir: str | None) -> EncoderConfig:
    return EncoderConfig(model_dir=model_dir, pooling=cfg.model.pooling,
                         max_length=cfg.training.max_length,
                         num_layers=cfg.model.num_layers if model_dir is None else None)


def check_configs(cfg: DictConfig) -> list:
    """Every config the comparison builds from `cfg`, built up front: a bad value fails before any
    work, with an error naming its key (the dataclasses check themselves)."""
    try:
        single = _train_config(cfg, steps=cfg.training.single_task_steps)
    except ValueError as err:  # TrainConfig calls its steps training.steps
        raise ValueError(str(err).replace("training.steps:", "training.single_task_steps:", 1)) from None
    if cfg.single_task_budget not in BUDGETS:
        raise ValueError(f"single_task_budget: must be one of {BUDGETS}, got {cfg.single_task_budget!r}")
    if not 0.0 <= cfg.wise_alpha <= 1.0:
        raise ValueError(f"wise_alpha: must be in [0, 1], got {cfg.wise_alpha}")
    k, folds = int(cfg.folds), list(cfg.only_folds) if cfg.only_folds is not None else list(range(cfg.folds))
    if k < 2 or not folds or not set(folds) <= set(range(k)):
        raise ValueError(f"folds must be >= 2 and only_folds within 0..{k - 1}; got folds={k}, "
                         f"only_folds={cfg.only_folds}")
    unknown = sorted({cfg.primary.multi, cfg.primary.single} - set(MODELS))
    if unknown:
        raise ValueError(f"primary: unknown models {unknown}; choose from {list(MODELS)}")
    if cfg.model.num_layers is not None:
        raise ValueError("model.num_layers: WiSE-FT mixes each fine-tune with the whole base model; "
                         "a truncated backbone is not supported by this comparison")
    overlap = set(cfg.tasks.train) & set(cfg.tasks.zero_shot)
    if overlap:
        raise ValueError(f"tasks.zero_shot must not be trained on; also in tasks.train: {sorted(overlap)}")
    return [_train_config(cfg), single, _encoder(cfg, cfg.model.model_dir),
            EvalConfig(**OmegaConf.to_container(cfg.evaluation, resolve=True), seed=cfg.seed)]


@dataclasses.dataclass
class _Run:
    """What every fold shares: the configs, the folds' task views, where models and results go."""

    cfg: DictConfig
    tcfg: TrainConfig  # the multi-task recipe
    eval_cfg: EvalConfig
    tasks: dict  # task name -> the task with the corpus's own splits
    views: list[dict]  # per fold: task name -> its view
    base_dir: str
    cv_dir: Path  # fine-tunes of this recipe, data and folds
    eval_dir: Path
    key: dict  # what an evaluation depends on besides the model and the fold

    def evaluate(self, name: str, fold: int, model_id, encoder, tasks: list[str]) -> pl.DataFrame:
        """One model's predictions for the fold's texts of `tasks`, cached by config; `encoder()`
        is called (and the texts embedded) only when the cache misses."""
        key = hashlib.sha256(json.dumps({**self.key, "model": model_id, "fold": fold, "tasks": tasks},
                                        sort_keys=True, default=str).encode()).hexdigest()[:16]
        path = self.eval_dir / f"{name}-fold{fold}-{key}.parquet"
        if path.exists():
            return pl.read_parquet(path)
        view = {t: self.views[fold][t] for t in tasks}
        vectors = TextVectors.embed(encoder(), eval_texts(view, self.eval_cfg), self.eval_cfg.batch_size)
        predictions = fold_predictions(vectors, view, self.eval_cfg).with_columns(
            model=pl.lit(name), fold=pl.lit(fold))
        path.parent.mkdir(parents=True, exist_ok=True)
        predictions.write_parquet(path)
        return predictions

    def fine_tune(self, model: str, fold: int, tasks: list[str], tcfg: TrainConfig) -> list[pl.DataFrame]:
        """Train `model` (multi-task or single-task) on the fold's training texts of `tasks`
        (reused when finished), mix it with the base (WiSE-FT), and evaluate both on the fold's
        texts: of every task for the multi-task model, of its own task for a single-task one."""
        name = model if model == "multi-task" else f"{model}-{tasks[0]}"
        tuned = train_once({t: self.views[fold][t] for t in tasks}, tcfg, self.cv_dir / f"fold{fold}" / name)
        alpha = float(self.cfg.wise_alpha)
        wise = weight_ensemble(self.base_dir, tuned, alpha, tuned.with_name(f"{name}-wise{alpha:g}"))
        evaluated = list(self.views[fold]) if model == "multi-task" else tasks
        out = []
        for tag, model_dir in ((model, tuned), (f"{model}-wise", wise)):
            encoder = functools.partial(load_encoder, _encoder(self.cfg, str(model_dir)))
            model_id = json.loads((model_dir / "training.json").read_text())
            out.append(self.evaluate(tag, fold, model_id, encoder, evaluated))
        return out


def _setup(cfg: DictConfig, eval_cfg: EvalConfig, tcfg: TrainConfig, names: list[str]) -> _Run:
    """Step 1: the tasks from the real corpora, their folds, and where results go."""
    from recsim.world.corpus import load_corpus

    sources = sorted({TASK_SPECS[n].source for n in names})
    corpus = load_corpus(sources, cfg.corpus_max_per_source, seed=cfg.seed)
    tasks = {n: build_task(n, corpus, cfg.tasks.min_label_count, seed=cfg.seed) for n in names}
    k = int(cfg.folds)
    data = {"folds": k, "seed": cfg.seed, "corpus_max_per_source": cfg.corpus_max_per_source,
            "min_label_count": cfg.tasks.min_label_count}
    recipe = hashlib.sha256(json.dumps({**dataclasses.asdict(tcfg), **data}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:8]
    models_dir = Path(cfg.models_dir)
    return _Run(cfg, tcfg, eval_cfg, tasks, cv_views(tasks, k, cfg.seed, eval_cfg.n_test),
                cfg.model.model_dir or default_model_dir(), models_dir / "lipost-cv" / f"k{k}-{recipe}",
                models_dir / "lipost-eval",
                {"evaluation": dataclasses.asdict(eval_cfg), **data, "max_length": cfg.training.max_length})


def _single_budgets(cfg: DictConfig, run: _Run, fold: int, train_names: list[str]) -> dict[str, TrainConfig]:
    """Each training task's single-task recipe: the multi-task one with its own step budget."""
    if cfg.single_task_budget == "fixed":
        return {t: dataclasses.replace(run.tcfg, steps=cfg.training.single_task_steps) for t in train_names}
    views = {t: run.views[fold][t] for t in train_names}
    probs = dict(zip(train_names, task_probabilities(views, run.tcfg)))
    return {t: dataclasses.replace(run.tcfg, steps=s, warmup_steps=w)
            for t, (s, w) in single_task_budget(probs, run.tcfg.steps, run.tcfg.warmup_steps).items()}


def _final_model(run: _Run, train_names: list[str], markdown: str) -> Path:
    """The recipe trained on the training tasks' corpus train splits and mixed with the base:
    models_dir/multitask, the encoder `experiment=embeddings_ab` serves (its card carries the
    comparison). The plain fine-tune stays beside it, in models_dir/multitask-finetune."""
    models_dir = Path(run.cfg.models_dir)
    tuned = train_once({t: run.tasks[t] for t in train_names}, run.tcfg, models_dir / "multitask-finetune")
    out = weight_ensemble(run.base_dir, tuned, float(run.cfg.wise_alpha), models_dir / "multitask")
    write_model_card(out, json.loads((out / "training.json").read_text()), markdown)
    log.info("the recipe's model (WiSE-FT mix, every training text): %s", out)
    return out


def compare(cfg: DictConfig, output_dir: str | Path) -> dict:
    tcfg, _, base_encoder, eval_cfg = check_configs(cfg)
    start = time.perf_counter()
    train_names, zero_names = list(cfg.tasks.train), list(cfg.tasks.zero_shot)
    names = train_names + zero_names
    folds = list(cfg.only_folds) if cfg.only_folds is not None else list(range(cfg.folds))

    # 1. Tasks and folds (shared by every task).
    run = _setup(cfg, eval_cfg, tcfg, names)
    base = functools.cache(functools.partial(load_encoder, base_encoder))
    predictions, budgets = [], {}
    for f in folds:
        # 2. The frozen base model on every task.
        predictions.append(run.evaluate("base", f, {"base": run.base_dir, "num_layers": cfg.model.num_layers},
                                        base, names))
        # 3. The multi-task fine-tune and its WiSE-FT mix, on every task.
        predictions += run.fine_tune("multi-task", f, train_names, tcfg)
        log.info("fold %d: multi-task done (%.1f min)", f, (time.perf_counter() - start) / 60)
        # 4. One fine-tune per training task, on its own task.
        if cfg.single_task:
            for task, single_cfg in _single_budgets(cfg, run, f, train_names).items():
                budgets.setdefault(task, []).append(single_cfg.steps)
                predictions += run.fine_tune("single-task", f, [task], single_cfg)
            log.info("fold %d: single-task done (%.1f min)", f, (time.perf_counter() - start) / 60)

    # 5. Scores, paired differences, targets.
    predictions = pl.concat(predictions, how="diagonal")
    table = scores(predictions)
    diffs = differences(predictions, comparisons(train_names, zero_names), cfg.bootstrap, cfg.seed)
    met = targets(diffs, table, train_names, zero_names, cfg.primary.multi, cfg.primary.single)
    minutes = (time.perf_counter() - start) / 60
    budget = {"multi_task_steps": tcfg.steps, "batch_size": tcfg.batch_size,
              "mini_batch_size": tcfg.mini_batch_size, "single_task_steps_per_fold": budgets,
              "wise_alpha": float(cfg.wise_alpha), "folds": int(cfg.folds), "evaluated_folds": folds}
    markdown = render(table, diffs, met, budget, zero_names, minutes)
    if len(folds) < int(cfg.folds):
        markdown = f"Only folds {folds} of {cfg.folds} were run (`only_folds`).\n\n" + markdown
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(f"# LiPost comparison\n\n{markdown}")
    (out / "compare.json").write_text(json.dumps({
        "scores": table.to_dicts(), "differences": diffs.to_dicts(), "targets": met, "budget": budget,
        "minutes": minutes, "config": OmegaConf.to_container(cfg, resolve=True)}, indent=2))
    predictions.write_parquet(out / "predictions.parquet")
    log.info("comparison written to %s (%.1f min)", out / "compare.md", minutes)
    if cfg.final_model:  # 6. The recipe on every training text: the model the funnel A/B uses.
        _final_model(run, train_names, markdown)
    return {"scores": table, "differences": diffs, "targets": met, "predictions": predictions,
            "markdown": markdown, "minutes": minutes}


def render(table: pl.DataFrame, diffs: pl.DataFrame, met: dict, budget: dict, zero_shot: list[str],
           minutes: float) -> str:
    """Accuracy per task and model (with 64-d), the paired differences, then the targets."""
    models = [m for m in MODELS if m in set(table["model"])]
    by = {(r["task"], r["model"]): r for r in table.iter_rows(named=True)}
    tasks = table["task"].unique(maintain_order=True).to_list()
    n = {t: by[(t, "base")]["n"] if (t, "base") in by else "" for t in tasks}

    def fmt(t: str, m: str, key: str = "accuracy") -> str:
        value = by[(t, m)][key] if (t, m) in by else None
        return "" if value is None else f"{value:.3f}"

    multi = met["models"]["multi"]
    lines = [f"## kNN accuracy ({budget['folds']}-fold cross-validation, full dimension; "
             f"{multi} at 64-d)", "",
             "Each text is predicted once per model, by the model of its fold (trained on the other "
             "folds only); n = texts.", "",
             markdown_table(["task", "n", *models, f"{multi} 64-d"],
                            [[t + (" (zero-shot)" if t in zero_shot else ""), n[t], *(fmt(t, m) for m in models),
                              fmt(t, multi, "accuracy_64d")] for t in tasks])]
    if diffs.height:
        pairs = diffs.select("model", "versus").unique(maintain_order=True).rows()
        cell = {(r["task"], r["model"], r["versus"]): r for r in diffs.iter_rows(named=True)}

        def show(r: dict | None) -> str:
            return f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" if r else ""

        lines += ["", "## Paired differences in accuracy [95% bootstrap interval over texts]", "",
                  markdown_table(["task", *(f"{m} - {v}" for m, v in pairs)],
                                 [[t, *(show(cell.get((t, m, v))) for m, v in pairs)] for t in tasks])]
    lines += ["", f"## Targets ({multi} vs {met['models']['single']} and base)", "", *_target_lines(met),
              f"- budget: {budget}", f"- wall time {minutes:.1f} min", ""]
    return "\n".join(lines)


def _target_lines(met: dict) -> list[str]:
    worse = met["transfer_interval_below_zero"]
    return [
        f"- positive transfer (>= single-task on every trained task, interval not below zero, "
        f"above zero on >= 4): **{met['positive_transfer_target_met']}**; interval above zero on "
        f"{len(met['transfer_interval_above_zero'])} ({', '.join(met['transfer_interval_above_zero']) or 'none'}), "
        f"entirely below zero on {len(worse)} ({', '.join(worse) or 'none'})",
        f"- zero-shot tasks >= base, interval not below zero: **{met['zero_shot_target_met']}** "
        f"({met['zero_shot_interval_not_below_zero']})",
        f"- 64-d keeps {100 * met['accuracy_kept_at_64d']:.1f}% of full-dimension kNN accuracy "
        f"(target 95%): **{met['matryoshka_64d_target_met']}**"]


@hydra.main(version_base="1.3", config_path=conf_dir("finetune"), config_name="finetune")
def main(cfg: DictConfig) -> None:
    compare(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
