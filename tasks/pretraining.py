"""Pretraining from scratch on the packed shards: the recipe of the pretrain stage (a small
Llama-style decoder, causal objective) and of the encoder stage (masked objective, tasks.mlm).

Teacher forcing on packed rows; position ids restart at each document, and with no attention
mask and the cache off the model attends block-diagonally, so packed documents never see each
other (proved in tests/stages/test_pretrain.py, on every kernel of `attention:`, tasks.attention). Learning is measured against the unigram baseline:
the cross-entropy of the validation tokens under the training split's token frequencies, the
best a model that ignores context can do.
"""

import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from schemas.config import ConfigError
from schemas.pretrain import PretrainConfig
from schemas.shards import IGNORE_INDEX
from tasks import attention, distributed, evaluation, mlm, shard_reading, training
from tasks.tokenizer_file import load as load_tokenizer

# The transformers class each objective's checkpoint loads with.
AUTO = {"causal": "AutoModelForCausalLM", "masked": "AutoModelForMaskedLM"}


def packed_batch(table: pa.Table, rows: list[int]) -> training.Batch:
    cols = shard_reading.take_rows(table, rows)
    return {k: torch.tensor(cols[k], dtype=torch.long) for k in ("input_ids", "labels", "position_ids")}


def epoch_plan(n_rows: int, batch_size: int, seed: int):
    """Seeded shuffle of the rows per epoch, cut into full batches."""

    def plan(epoch: int) -> list[list[int]]:
        order = list(range(n_rows))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        return [order[k : k + batch_size] for k in range(0, n_rows - batch_size + 1, batch_size)]

    return plan


def eval_batches(table: pa.Table, batch_size: int, limit: int) -> list[training.Batch]:
    n = min(table.num_rows, batch_size * limit)
    return [packed_batch(table, list(range(k, min(k + batch_size, n)))) for k in range(0, n, batch_size)]


def scored_counts(tables: Iterable[pa.Table], vocab: int) -> np.ndarray:
    """How often each token id is a scored target (label != -100), one record batch at a time."""
    counts = np.zeros(vocab, np.int64)
    for table in tables:
        for batch in table.to_batches():
            labels = pc.list_flatten(batch.column("labels")).to_numpy()
            counts += np.bincount(labels[labels != IGNORE_INDEX], minlength=vocab)
    return counts


def unigram_baseline(train: Iterable[pa.Table], val: Iterable[pa.Table], vocab: int) -> float:
    """Cross-entropy (nats/token) of validation targets under add-one-smoothed train unigrams.
    It reads the shards one at a time (`shard_reading.shard_tables`), so memory holds one shard's labels.

    >>> unigram_baseline(train, val, 4096)  # tiny preset
    6.37...
    """
    counts = scored_counts(train, vocab) + 1.0
    logp = np.log(counts / counts.sum())
    seen = scored_counts(val, vocab)
    return float(-(seen * logp).sum() / seen.sum())


def objective(cfg: PretrainConfig, train: pa.Table, val: pa.Table, vocab: int):
    """(model, make(rows, k) -> batch, validation batches) for the causal or masked objective."""
    seq_len = len(train["input_ids"][0])
    model = new_model(cfg, vocab, seq_len)
    if cfg.objective == "masked":
        n = min(val.num_rows, cfg.batch_size * cfg.eval_batches)
        val_batches = [
            mlm.masked_batch(val, list(range(k, min(k + cfg.batch_size, n))), cfg.mask_prob, vocab, -1 - k)
            for k in range(0, n, cfg.batch_size)
        ]
        return (
            model,
            lambda rows, k: mlm.masked_batch(train, rows, cfg.mask_prob, vocab, cfg.seed * 1_000_003 + k),
            val_batches,
        )
    return (
        model,
        lambda rows, k: packed_batch(train, rows),
        eval_batches(val, cfg.batch_size, cfg.eval_batches),
    )


def new_model(cfg: PretrainConfig, vocab: int, seq_len: int):
    """The randomly initialised model of the objective: a decoder, or an encoder (masked)."""
    if cfg.objective == "masked":
        return mlm.new_encoder(cfg.model, vocab, seq_len)
    return training.new_decoder(cfg.model, vocab, seq_len)


def check_sizes(
    stage: str, cfg: PretrainConfig, train: pa.Table, val: pa.Table, vocab: int, device, kernel: str
) -> dict:
    """Before any training: a batch must fit the training split (epoch_plan keeps only full
    batches), the validation split must hold rows to measure learning on, and one step must fit
    the device's memory; ConfigError naming the field otherwise. The step's estimated memory in
    MiB."""
    if not val.num_rows:
        raise ConfigError(
            "corpus.validation_fraction: the shards' pretrain validation split holds no rows, so "
            f"{stage} cannot measure what it learns; add pretraining text or raise corpus.validation_fraction"
        )
    if train.num_rows < cfg.batch_size:
        raise ConfigError(
            f"{stage}.batch_size: {cfg.batch_size} rows per batch, but the shards' pretrain training split "
            f"holds {train.num_rows} packed rows of {len(train['input_ids'][0])} tokens; set "
            f"{stage}.batch_size to at most {train.num_rows}, or add pretraining text"
        )
    seq_len = len(train["input_ids"][0])
    # attention scores are held whole by eager attention, and by sdpa with a mask on CPU (its
    # math kernel); flex and CUDA's sdpa kernels compute them block by block
    dense = kernel == "eager" or (kernel == "sdpa" and device.type == "cpu")
    return training.check_memory(
        stage, cfg, lambda: new_model(cfg, vocab, seq_len), seq_len, vocab, device, dense
    )


def build(cfg: PretrainConfig, inputs: dict[str, Path], out: Path, stage: str) -> dict:
    """Train, evaluate and save the checkpoint of the `stage` (pretrain or encoder) into `out`."""
    if (metrics := distributed.launch(stage, cfg, inputs, out)) is not None:
        return metrics  # trained by `cfg.processes` processes; rank 0 saved the checkpoint
    # set up
    runtime = training.setup(cfg)
    device = runtime.device
    train = shard_reading.load(inputs["shards"], "pretrain", "train")
    val = shard_reading.load(inputs["shards"], "pretrain", "validation")
    vocab = load_tokenizer(inputs["tokenizer"]).get_vocab_size()
    kernel = attention.resolve(cfg.attention, device)
    attention.check_trainable(kernel, device)
    check_sizes(stage, cfg, train, val, vocab, device, kernel)
    model, make, val_batches = objective(cfg, train, val, vocab)
    attention.use(model, kernel, causal=cfg.objective == "causal")
    before = training.cached_json(
        out / training.RESUME / "before.json",
        lambda: {"val_loss_before": round(training.evaluate(model, val_batches, runtime), 4)},
    )
    # train
    stream = training.Stream(epoch_plan(train.num_rows, cfg.batch_size, cfg.seed), make)
    history = training.fit(model, stream, cfg, runtime, out, inputs, stage)
    if not training.is_main():
        return {}  # rank 0 evaluates and saves
    # evaluate
    val_loss = training.evaluate(model, val_batches, runtime)
    metrics = {
        "objective": cfg.objective,
        "parameters": sum(p.numel() for p in model.parameters()),
        **before,
        "val_loss": round(val_loss, 4),
        "train_loss": round(sum(h["loss"] for h in history[-10:]) / len(history[-10:]), 4),
        "steps": cfg.max_steps,
        "tokens_seen": sum(h["tokens"] for h in history),
    }
    if cfg.objective == "masked":
        metrics["val_masked_accuracy"] = round(mlm.masked_accuracy(model, val_batches, device), 4)
    else:
        metrics["val_perplexity"] = round(float(np.exp(val_loss)), 2)
        metrics["unigram_baseline"] = round(
            unigram_baseline(
                shard_reading.shard_tables(inputs["shards"], "pretrain", "train"),
                shard_reading.shard_tables(inputs["shards"], "pretrain", "validation"),
                vocab,
            ),
            4,
        )
    metrics["comparisons"] = [
        evaluation.comparison("val loss", metrics["val_loss_before"], metrics["val_loss"], False)
    ]
    if "unigram_baseline" in metrics:  # learned more than token frequencies
        metrics["comparisons"].append(
            evaluation.comparison(
                "val loss vs unigram baseline", metrics["unigram_baseline"], metrics["val_loss"], False
            )
        )
    # save
    card = training.model_card(stage, metrics, cfg, inputs, AUTO[cfg.objective])
    training.finish(out, model, inputs["tokenizer"], history, metrics, card)
    return metrics
