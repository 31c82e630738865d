"""SFT stage: continue from the pretrained checkpoint on the task shards, loss on answers only.

Batches come from one length bucket each (tasks.packing.bucket_batches) and are padded to
their longest example; padding has label -100 and attention mask 0.
"""

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import torch

from schemas.manifest import ContractResult
from schemas.shards import IGNORE_INDEX
from schemas.tokens import PAD, token_id
from schemas.training import SftConfig
from tasks import packing, training
from tasks import shards as shards_task
from tasks.pretrain import check_checkpoint


def padded_batch(table: pa.Table, rows: list[int]) -> training.Batch:
    """Right-padded input_ids / labels / attention_mask for the given rows."""
    cols = table.take(rows).select(["input_ids", "labels"]).to_pydict()
    width = max(len(x) for x in cols["input_ids"])
    pad = token_id(PAD)

    def fill(seqs, value):
        return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)

    ids = fill(cols["input_ids"], pad)
    return {
        "input_ids": ids,
        "labels": fill(cols["labels"], IGNORE_INDEX),
        "attention_mask": (fill(cols["input_ids"], -1) != -1).long(),
    }


def batches(table: pa.Table, batch_size: int, seed: int) -> Iterator[training.Batch]:
    buckets = table["bucket"].to_pylist()
    epoch = 0
    while True:
        for rows in packing.bucket_batches(buckets, batch_size, seed, epoch):
            yield padded_batch(table, rows)
        epoch += 1


def padding_of(table: pa.Table, batch_size: int, seed: int) -> float:
    plan = packing.bucket_batches(table["bucket"].to_pylist(), batch_size, seed)
    return round(packing.padding_fraction(table["length"].to_pylist(), plan), 4)


def build(cfg: SftConfig, inputs: dict[str, Path], out: Path) -> dict:
    from transformers import AutoModelForCausalLM

    device = training.setup(cfg)
    train = shards_task.load(inputs["shards"], "sft", "train")
    val = shards_task.load(inputs["shards"], "sft", "validation")
    model = AutoModelForCausalLM.from_pretrained(inputs["pretrain"], use_safetensors=True)
    val_plan = packing.bucket_batches(val["bucket"].to_pylist(), cfg.batch_size, cfg.seed)[: cfg.eval_batches]
    val_batches = [padded_batch(val, rows) for rows in val_plan]
    before = training.evaluate(model, val_batches, device)
    history = training.train_loop(model, batches(train, cfg.batch_size, cfg.seed), cfg, device)
    metrics = {
        "val_loss_before": round(before, 4),
        "val_loss": round(training.evaluate(model, val_batches, device), 4),
        "train_loss": round(sum(h["loss"] for h in history[-10:]) / len(history[-10:]), 4),
        "steps": cfg.max_steps,
        "padding_fraction": padding_of(train, cfg.batch_size, cfg.seed),
    }
    card = training.model_card("sft", metrics, cfg, inputs)
    training.save_checkpoint(model, inputs["tokenizer"], out, history, metrics, card)
    return metrics


def validate(cfg: SftConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    return check_checkpoint(out, stats)
