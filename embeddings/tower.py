"""The trainable text tower: tokenizer + Hugging Face backbone + pooling + CPU precision.

Both contrastive trainers use it: the LiPost post encoder (embeddings/train.py) and the
member/post dual encoder (ranker/retrieval/dual_encoder.py). Corpus-scale inference of a
finished model goes through embeddings/encoder.py (`load_encoder`, `embed_batch`: GPU,
OpenVINO, Matryoshka truncation) instead.

The backbone is any Hugging Face directory: an encoder (mean / CLS pooling) or a causal LM
(last-token pooling; the tokenizer pads on the right and borrows EOS as pad token if it has
none). Shape legend: B texts, D hidden size.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from embeddings.encoder import POOLINGS, cpu_has_bf16, default_model_dir, pool

PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TextTower:
    model: torch.nn.Module
    tokenizer: object
    pooling: str  # mean | cls | last
    autocast: contextlib.AbstractContextManager  # bf16 autocast on CPU, or a no-op

    @classmethod
    def load(cls, model_dir: str | None = None, pooling: str = "mean", num_layers: int | None = None,
             freeze_embeddings: bool = True, precision: str = "auto",
             field: str = "tower") -> TextTower:
        """Load a backbone to fine-tune: its first `num_layers` layers (all when None), the
        input embeddings frozen if asked, bf16 autocast when `precision` is bf16, or auto on a
        CPU with native bf16. `field` names the config section in error messages."""
        from transformers import AutoModel, AutoTokenizer

        if pooling not in POOLINGS:
            raise ValueError(f"{field}.pooling: must be one of {POOLINGS}, got {pooling!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"{field}.precision: must be one of {PRECISIONS}, got {precision!r}")
        model_dir = model_dir or default_model_dir()
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"{field}.model_dir: {model_dir} is not a directory")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        extra = {"num_hidden_layers": num_layers} if num_layers else {}
        model = AutoModel.from_pretrained(model_dir, **extra)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if tokenizer.pad_token is None:  # causal LMs often have none
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"  # pool(..., "last") expects right padding
        if freeze_embeddings:
            for p in model.get_input_embeddings().parameters():
                p.requires_grad_(False)
        use_bf16 = precision == "bf16" or (precision == "auto" and cpu_has_bf16())
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
        return cls(model, tokenizer, pooling, autocast)

    @property
    def dim(self) -> int:
        """D, the width of the pooled vectors."""
        return self.model.config.hidden_size

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def encode(self, texts: list[str], max_length: int) -> torch.Tensor:
        """[B] texts -> [B, D] float32 pooled states (not normalised; gradients flow), in the
        model's current train / eval mode."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                max_length=max_length, return_tensors="pt")
        with self.autocast:
            hidden = self.model(**tokens).last_hidden_state
        return pool(hidden.float(), tokens["attention_mask"], self.pooling)

    def embed(self, texts: list[str], max_length: int, batch_size: int = 64) -> np.ndarray:
        """[N] texts -> [N, D] float32 unit vectors in input order: eval mode, no gradients,
        batches of similar length. The model's train / eval mode is restored afterwards."""
        was_training = self.model.training
        self.model.eval()
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                rows = order[i: i + batch_size]
                out[rows] = F.normalize(self.encode([texts[j] for j in rows], max_length),
                                        dim=-1).numpy()
        self.model.train(was_training)
        return out
