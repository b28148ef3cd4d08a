"""Multilingual posts: the English MiniLM vs multilingual e5, frozen vs multi-task fine-tuned.

The study's parts: corpus, folds, kNN predictions, cross-lingual hits, paired bootstrap. The job
that runs it (fine-tunes, caches, tables) is recsim/jobs/multilingual.py:

    recsim-multilingual                                  # the comparison, 5 folds (~45 min on 2 cores)
    recsim-multilingual training=debug evaluation=debug  # a quick check

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

import logging

import numpy as np
import polars as pl
from sklearn.metrics import f1_score

from embeddings.crossval import TextVectors, eval_texts, paired_bootstrap
from embeddings.evaluate import EvalConfig
from embeddings.tasks import TASK_SPECS, Task

log = logging.getLogger(__name__)
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


# --- 2. folds (embeddings/crossval.py: fold_of, fold_view) ---------------------------------

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

def texts_needed(views: dict[str, Task], queries: pl.DataFrame, pool: pl.DataFrame,
                 cfg: EvalConfig) -> list[str]:
    """Every text one fold's evaluation embeds: test texts, neighbours, labels, the pool."""
    return eval_texts(views, cfg) + queries["text"].to_list() + pool["text"].to_list()


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
