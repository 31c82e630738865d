"""The outline every training stage shares: set up -> train -> evaluate -> save.

Pretrain and SFT run `train_loop` (a plain PyTorch loop: AdamW, warmup + cosine/linear decay,
gradient accumulation, clipping, fixed seeds); DPO runs TRL's trainer inside the same outline.
Checkpoints are safetensors + config + tokenizer + loss curve + model card; never a pickle.
"""

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from schemas.tokens import BOS, EOS, PAD, token_id
from schemas.training import ModelConfig, TrainConfig

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


def setup(cfg: TrainConfig) -> torch.device:
    """Seeds and device: CUDA when present, else CPU float32."""
    torch.manual_seed(cfg.seed)
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, min(os.cpu_count() or 1, 4)))
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def new_decoder(mcfg: ModelConfig, vocab_size: int, max_positions: int):
    """A Llama-style causal LM with random weights, sized for our tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=mcfg.hidden_size,
        intermediate_size=mcfg.intermediate_size,
        num_hidden_layers=mcfg.num_layers,
        num_attention_heads=mcfg.num_heads,
        num_key_value_heads=mcfg.num_heads,
        max_position_embeddings=max_positions,
        pad_token_id=token_id(PAD),
        bos_token_id=token_id(BOS),
        eos_token_id=token_id(EOS),
        tie_word_embeddings=True,
        use_cache=False,  # packed documents would see each other through the cache path
    )
    return LlamaForCausalLM(config)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier: linear warmup, then cosine/linear decay to 0 (or constant)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress)) if cfg.schedule == "cosine" else 1 - progress


def train_loop(model, batches: Iterator[Batch], cfg: TrainConfig, device) -> list[dict]:
    """Run `cfg.max_steps` optimizer steps; returns the loss history."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, cfg))
    history, tokens, start = [], 0, time.perf_counter()
    for step in range(cfg.max_steps):
        total = 0.0
        for _ in range(cfg.grad_accum):
            batch = {k: v.to(device) for k, v in next(batches).items()}
            loss = model(**batch, use_cache=False).loss / cfg.grad_accum
            loss.backward()
            total += loss.item()
            tokens += int((batch["labels"] != -100).sum())
        if not math.isfinite(total):
            raise FloatingPointError(
                f"loss is {total} at step {step}; stopping before the weights are ruined"
            )
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        history.append({"step": step + 1, "loss": round(total, 5), "lr": scheduler.get_last_lr()[0]})
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.max_steps:
            rate = tokens / (time.perf_counter() - start)
            log.info(
                f"step {step + 1}/{cfg.max_steps} loss {total:.4f} lr {history[-1]['lr']:.2e} {rate:,.0f} tok/s"
            )
    return history


@torch.no_grad()
def evaluate(model, batches: list[Batch], device) -> float:
    """Mean loss per scored token over the given batches."""
    model.to(device).eval()
    total, count = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += model(**batch, use_cache=False).loss.item() * n
        count += n
    model.train()
    return total / max(count, 1)


def save_checkpoint(
    model, tokenizer_dir: Path, out: Path, history: list[dict], metrics: dict, card: str
) -> None:
    """Weights (safetensors), config, tokenizer, loss history and curve, metrics, model card."""
    model.save_pretrained(out)  # safetensors by default in transformers 5
    for f in tokenizer_dir.glob("tokenizer*.json"):
        shutil.copy(f, out / f.name)
    (out / "history.json").write_text(json.dumps(history) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_losses(history, out / "loss.png")
    (out / "README.md").write_text(card)


def plot_losses(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history])
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def model_card(stage: str, metrics: dict, cfg: TrainConfig, inputs: dict[str, Path]) -> str:
    lines = [
        f"# lmpipe {stage} checkpoint",
        "",
        "Load (no remote code, safetensors only):",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)",
        "tokenizer = AutoTokenizer.from_pretrained(path)",
        "```",
        "",
        "## Metrics",
        *[f"- {k}: {v}" for k, v in metrics.items()],
        "",
        "## Inputs",
        *[f"- {k}: {p}" for k, p in inputs.items()],
        "",
        "## Config",
        "```json",
        json.dumps(cfg.model_dump(), indent=2),
        "```",
        "",
        "Data fingerprints, file hashes and lineage: see manifest.json.",
    ]
    return "\n".join(lines) + "\n"
