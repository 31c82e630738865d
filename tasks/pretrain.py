"""Pretrain stage: a small Llama-style decoder from scratch on the packed shards.

Teacher forcing on packed rows; position ids restart at each document, and with no attention
mask and the cache off the model attends block-diagonally, so packed documents never see each
other (proved in tests/test_pretrain.py).
"""

import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import torch

from schemas.manifest import ContractResult
from schemas.training import PretrainConfig
from tasks import shards as shards_task
from tasks import training
from tasks.contracts import require
from tasks.tokenizer import load as load_tokenizer


def packed_batch(table: pa.Table, rows: list[int]) -> training.Batch:
    cols = table.take(rows).to_pydict()
    return {k: torch.tensor(cols[k], dtype=torch.long) for k in ("input_ids", "labels", "position_ids")}


def batches(table: pa.Table, batch_size: int, seed: int) -> Iterator[training.Batch]:
    """Endless seeded shuffles of the rows, one epoch after another."""
    epoch = 0
    while True:
        order = list(range(table.num_rows))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        for k in range(0, len(order) - batch_size + 1, batch_size):
            yield packed_batch(table, order[k : k + batch_size])
        epoch += 1


def eval_batches(table: pa.Table, batch_size: int, limit: int) -> list[training.Batch]:
    n = min(table.num_rows, batch_size * limit)
    return [packed_batch(table, list(range(k, min(k + batch_size, n)))) for k in range(0, n, batch_size)]


def build(cfg: PretrainConfig, inputs: dict[str, Path], out: Path) -> dict:
    device = training.setup(cfg)
    train = shards_task.load(inputs["shards"], "pretrain", "train")
    val = shards_task.load(inputs["shards"], "pretrain", "validation")
    vocab = load_tokenizer(inputs["tokenizer"]).get_vocab_size()
    seq_len = len(train["input_ids"][0])
    model = training.new_decoder(cfg.model, vocab, seq_len)
    val_batches = eval_batches(val, cfg.batch_size, cfg.eval_batches)
    before = training.evaluate(model, val_batches, device)
    history = training.train_loop(model, batches(train, cfg.batch_size, cfg.seed), cfg, device)
    metrics = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "val_loss_before": round(before, 4),
        "val_loss": round(training.evaluate(model, val_batches, device), 4),
        "train_loss": round(sum(h["loss"] for h in history[-10:]) / len(history[-10:]), 4),
        "steps": cfg.max_steps,
    }
    card = training.model_card("pretrain", metrics, cfg, inputs)
    training.save_checkpoint(model, inputs["tokenizer"], out, history, metrics, card)
    return metrics


def validate(cfg: PretrainConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    return check_checkpoint(out, stats)


def check_checkpoint(out: Path, stats: dict) -> list[ContractResult]:
    """A checkpoint is safetensors only, reloads, and learned something (val loss went down)."""
    from transformers import AutoModelForCausalLM

    pickles = [p.name for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".pth")]
    results = [require("checkpoint/no-pickle", pickles, 1, "weights in safetensors only")]
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    ids = torch.tensor([[1, 20, 30, 40]])
    with torch.no_grad():
        finite = torch.isfinite(model(ids, use_cache=False).logits).all().item()
    results.append(
        require("checkpoint/loads", [] if finite else ["non-finite logits"], 1, "reloads with finite logits")
    )
    worse = (
        []
        if stats["val_loss"] < stats["val_loss_before"]
        else [f"val loss {stats['val_loss_before']} -> {stats['val_loss']}"]
    )
    results.append(require("checkpoint/learned", worse, 1, "validation loss decreased during training"))
    return results
