"""SFT stage: continue from the pretrained checkpoint on the task shards, loss on answers only.

Batches come from one length bucket each (tasks.packing.bucket_batches) and are padded to
their longest example; padding has label -100 and attention mask 0. `method: lora` trains
adapters on the attention projections plus the task tokens' embedding rows (peft's
`trainable_token_indices`), then merges them, so the published checkpoint is full weights.
The model is judged by generation on the validation split, before and after (tasks.evaluation).
"""

from pathlib import Path

import pyarrow as pa
import torch

from schemas.manifest import ContractResult
from schemas.sft import SftConfig
from schemas.shards import IGNORE_INDEX
from schemas.tokens import BOS, EOS, PAD, TASK_TOKENS, token_id
from tasks import distributed, evaluation, instruct, noise, packing, shard_reading, training
from tasks.batching import padding_of
from tasks.checkpoints import check_checkpoint


def padded_batch(table: pa.Table, rows: list[int]) -> training.Batch:
    """Right-padded input_ids / labels / attention_mask for the given rows."""
    cols = shard_reading.take_rows(table, rows, ["input_ids", "labels"])
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


def epoch_rows(table: pa.Table, repeat: dict[str, int]) -> list[int]:
    """Row numbers of one epoch: each row once, the rows of `repeat`'s tasks that many times.
    Tasks [translation, qa, translation] with {"qa": 3} -> [0, 1, 1, 1, 2]."""
    return [i for i, task in enumerate(table["task"].to_pylist()) for _ in range(repeat.get(task, 1))]


def stream(
    table: pa.Table, batch_size: int, seed: int, repeat: dict[str, int] | None = None
) -> training.Stream:
    """Bucketed batches of the rows of `epoch_rows` (all rows once when `repeat` is empty)."""
    rows = epoch_rows(table, repeat or {})
    buckets, lengths = table["bucket"].to_pylist(), table["length"].to_pylist()
    buckets, lengths = [buckets[i] for i in rows], [lengths[i] for i in rows]

    def plan(epoch: int) -> list[list[int]]:
        return [
            [rows[j] for j in b] for b in packing.bucket_batches(buckets, batch_size, seed, epoch, lengths)
        ]

    return training.Stream(plan, lambda batch_rows, k: padded_batch(table, batch_rows))


def with_lora(model, cfg: SftConfig):
    """Adapters on attention; the control tokens' embedding rows train too (tied to the head)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        trainable_token_indices={"embed_tokens": [token_id(t) for t in (BOS, EOS, *TASK_TOKENS)]},
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def measure(
    model, cfg: SftConfig, inputs: dict[str, Path], val: pa.Table, val_batches, runtime: training.Runtime
) -> dict:
    """Validation loss and generation metrics of the model as it is now."""
    gen = instruct.generation_by_format(
        model, inputs["tokenizer"], val, cfg.eval_examples, cfg.eval_max_new_tokens, runtime.device
    )
    return {"val_loss": round(training.evaluate(model, val_batches, runtime), 4), **gen}


def noise_check(train: pa.Table, data: training.Stream, cfg: SftConfig, micro_batches: int = 32) -> dict:
    """Input corruption as it was applied to the first training micro-batches (for the manifest)."""
    ks = range(min(micro_batches, cfg.max_steps * cfg.grad_accum))
    return noise.summary(cfg.noise, [padded_batch(train, data.rows(k)) for k in ks], [data(k) for k in ks])


def build(cfg: SftConfig, inputs: dict[str, Path], out: Path) -> dict:
    from transformers import AutoModelForCausalLM

    if (metrics := distributed.launch("sft", cfg, inputs, out)) is not None:
        return metrics  # trained by `cfg.processes` processes; rank 0 saved the checkpoint
    # set up
    runtime = training.setup(cfg)
    train = shard_reading.load(inputs["shards"], "sft", "train")
    val = shard_reading.load(inputs["shards"], "sft", "validation")
    model = AutoModelForCausalLM.from_pretrained(inputs["pretrain"], use_safetensors=True)
    val_plan = packing.bucket_batches(val["bucket"].to_pylist(), cfg.batch_size, cfg.seed)[: cfg.eval_batches]
    val_batches = [padded_batch(val, rows) for rows in val_plan]
    before = training.cached_json(
        out / training.RESUME / "before.json", lambda: measure(model, cfg, inputs, val, val_batches, runtime)
    )
    if cfg.method == "lora":
        model = with_lora(model, cfg)
    # train
    data = noise.noisy(
        stream(train, cfg.batch_size, cfg.seed, cfg.repeat), cfg.noise, model.config.vocab_size, cfg.seed
    )
    history = training.fit(model, data, cfg, runtime, out, inputs, "sft")
    if not training.is_main():
        return {}  # rank 0 evaluates and saves
    # evaluate
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if cfg.method == "lora":
        model.save_pretrained(out / "adapter")
        model = model.merge_and_unload()
    after = measure(model, cfg, inputs, val, val_batches, runtime)
    metrics = {
        "val_loss_before": before["val_loss"],
        "val_loss": after["val_loss"],
        "train_loss": round(sum(h["loss"] for h in history[-10:]) / len(history[-10:]), 4),
        # per format (task token, instruct, held-out instructions): generation_<format>[_before]
        **{f"{k}_before": v for k, v in before.items() if k.startswith("generation")},
        **{k: v for k, v in after.items() if k.startswith("generation")},
        "trainable_parameters": trainable,
        "steps": cfg.max_steps,
        "padding_fraction": padding_of(train, cfg.batch_size, cfg.seed),
        "comparisons": [
            evaluation.comparison("val loss", before["val_loss"], after["val_loss"], False),
            *[
                row
                for key in after
                if key.startswith("generation")
                for row in evaluation.generation_comparisons(
                    before[key], after[key], key.removeprefix("generation").strip("_")
                )
            ],
        ],
    }
    if cfg.noise.fraction:
        metrics["noise"] = noise_check(train, data, cfg)
    # save
    training.finish(
        out, model, inputs["tokenizer"], history, metrics, training.model_card("sft", metrics, cfg, inputs)
    )
    return metrics


def validate(cfg: SftConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    gain = evaluation.gain_check(stats, evaluation.SFT_GAIN, cfg.require_gain)
    return [*check_checkpoint(out, stats), gain]
