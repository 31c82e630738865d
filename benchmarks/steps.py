"""Training throughput: our stages' loops against a bare loop and TRL's trainers.

Rows of `python -m benchmarks` (alone: `python -m benchmarks --only steps`). Every side trains
a fresh copy of the same tiny Llama (hidden 128, 2 layers, the 8k tokenizer's vocab) on CPU
in float32, on the embedded SFT examples / preference pairs, sides alternating each round.

Pretraining, batch 8 × 256 packed tokens: `training.fit` reading the packed Arrow rows against
the bare loop over the same batches in memory (benchmarks.training's two sides). Unit: scored
tokens per second.

SFT, batch 8 × up to 256 tokens: `training.fit` over the SFT stage's one-bucket padded batches
against the bare PyTorch loop of benchmarks.training over the same batches in memory, and
against TRL's `SFTTrainer` with packing (rows of 256, padding-free) on the same token ids and
labels. Unit: real (non-padding) input tokens per second.

DPO + LoRA (r=8), batch 4 pairs: the DPO stage's trainer (`tasks.dpo.make_trainer`: pre-
tokenized pairs, one-bucket batches) against TRL's `DPOTrainer` as a user runs it on the same
records' text (its own tokenization, random batches), in float32 and with TRL's default bf16
autocast. Unit: pairs per second. Trainer timings run from the first step's start to the last
step's end (dataset preparation is left out on both sides).
"""

import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

from benchmarks import training as pretrain_bench
from benchmarks.common import alternate
from benchmarks.suite import measured
from schemas.config import load_config
from schemas.dpo import DpoConfig
from schemas.sft import SftConfig
from schemas.shards import IGNORE_INDEX, PRETRAIN_SCHEMA
from tasks import dpo, packing, pretraining, sft, shards, training

SEQ_LEN, BATCH, PAIRS = pretrain_bench.SEQ_LEN, pretrain_bench.BATCH, 4
CPU = torch.device("cpu")
# What both TRL baselines share: CPU, no saving, no logging in the timed steps, seeded.
TRL_ARGS = {
    "use_cpu": True,
    "warmup_steps": 1,
    "logging_steps": 10**6,
    "save_strategy": "no",
    "report_to": [],
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
    "seed": 0,
}


class Clock:
    """A trainer callback: seconds from the first step's start to the last step's end."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            start = end = None

            def on_step_begin(self, args, state, control, **kwargs):
                self.start = self.start or time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                self.end = time.perf_counter()

            @property
            def seconds(self) -> float:
                return self.end - self.start

        return _Clock()


def pretrain_rows(data, repeats: int) -> list[dict]:
    """The stage loop (`fit` reading the packed Arrow table) vs the bare loop over the same batches."""
    table = pa.Table.from_pylist(
        shards.pack_pretrain(data.pretrain_docs(), SEQ_LEN)[0], schema=PRETRAIN_SCHEMA
    )
    vocab = data.tok.get_vocab_size()
    plan = pretraining.epoch_plan(table.num_rows, BATCH, 0)(0)
    steps = min(3 if data.quick else 30, len(plan))
    batches = [pretraining.packed_batch(table, rows) for rows in plan[:steps]]
    pretrain_bench.bare(batches[:1], vocab)  # warm-up, as for SFT
    _, rates = alternate(
        {
            "ours": lambda: pretrain_bench.ours(table, vocab, steps),
            "bare": lambda: pretrain_bench.bare(batches, vocab),
        },
        repeats,
    )
    return [
        measured(
            f"pretraining step, tiny Llama, vocab {vocab:,}, batch {BATCH}×{SEQ_LEN}, CPU float32",
            "training.fit (packed Arrow rows)",
            "bare PyTorch loop (AdamW), batches in memory",
            "scored tokens/s",
            rates["ours"],
            rates["bare"],
            "≥ 0.9× tokens/s",
            lambda o, r: r >= 0.9,
            f"{table.num_rows:,} packed rows, {steps} steps a run, {torch.get_num_threads()} torch thread(s)",
        )
    ]


def sft_table(data) -> pa.Table:
    """The SFT examples that fit in SEQ_LEN, with the stage's buckets (bounds capped at SEQ_LEN)."""
    bounds = [b for b in load_config("tiny").shards.bucket_boundaries if b < SEQ_LEN] + [SEQ_LEN]
    rows = [
        {
            "input_ids": ex["input_ids"],
            "labels": ex["labels"],
            "bucket": packing.bucket_of(len(ex["input_ids"]), bounds),
            "length": len(ex["input_ids"]),  # the SFT stream sorts by it within windows
        }
        for ex in data.sft_examples(SEQ_LEN)
    ]
    return pa.Table.from_pylist(rows)


def real_tokens(batches: list[training.Batch]) -> int:
    return sum(int(b["attention_mask"].sum()) for b in batches)


def scored_tokens(batches: list[training.Batch]) -> int:
    return sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches)


def sft_ours(table: pa.Table, vocab: int, steps: int) -> float:
    """Real tokens/s of `training.fit` over the SFT stage's stream."""
    stream = sft.stream(table, BATCH, 0)
    tokens = real_tokens([stream(k) for k in range(steps)])
    cfg = SftConfig(
        max_steps=steps, batch_size=BATCH, warmup_steps=1, log_every=10**6, checkpoint_every=10**6
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        training.fit(
            pretrain_bench.model(vocab),
            sft.stream(table, BATCH, 0),
            cfg,
            training.runtime_on(CPU),
            Path(out),
            {},
            "bench",
        )
        return tokens / (time.perf_counter() - start)


def sft_bare(batches: list[training.Batch], vocab: int) -> float:
    """Real tokens/s of the bare loop (it reports scored tokens/s; the time is the same)."""
    seconds = scored_tokens(batches) / pretrain_bench.bare(batches, vocab)
    return real_tokens(batches) / seconds


def sft_trl(data, table: pa.Table, vocab: int, steps: int) -> float:
    """Real tokens/s of TRL's packed, padding-free SFTTrainer on the same ids and labels."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    clock = Clock()
    with tempfile.TemporaryDirectory() as scratch:
        args = SFTConfig(
            output_dir=scratch,
            bf16=False,
            packing=True,
            max_length=SEQ_LEN,
            per_device_train_batch_size=BATCH,
            max_steps=steps,
            learning_rate=1e-3,
            include_num_input_tokens_seen="non_padding",
            **TRL_ARGS,
        )
        trainer = SFTTrainer(
            model=pretrain_bench.model(vocab),
            args=args,
            train_dataset=Dataset.from_dict(table.select(["input_ids", "labels"]).to_pydict()),
            processing_class=AutoTokenizer.from_pretrained(data.tokenizer_dir),
            callbacks=[clock],
        )
        trainer.remove_callback(PrinterCallback)  # its log dicts would interleave with the table
        trainer.train()
    return trainer.state.num_input_tokens_seen / clock.seconds


def sft_rows(data, repeats: int) -> list[dict]:
    table = sft_table(data)
    vocab = data.tok.get_vocab_size()
    steps = 3 if data.quick else 30
    stream = sft.stream(table, BATCH, 0)
    batches = [stream(k) for k in range(steps)]
    pretrain_bench.bare(batches[:1], vocab)  # warm-up: one-off allocations must not count for the first side
    _, rates = alternate(
        {
            "ours": lambda: sft_ours(table, vocab, steps),
            "bare": lambda: sft_bare(batches, vocab),
            "trl": lambda: sft_trl(data, table, vocab, steps),
        },
        repeats,
    )
    ours = rates["ours"]
    work = f"SFT step, tiny Llama, batch {BATCH}×{SEQ_LEN}, CPU float32"
    note = f"{table.num_rows:,} examples, {steps} steps a run, {torch.get_num_threads()} torch thread(s)"
    return [
        measured(
            work,
            "training.fit (SFT stream)",
            "bare PyTorch loop (AdamW)",
            "tokens/s",
            ours,
            rates["bare"],
            "≥ 0.9× the bare loop",
            lambda o, r: r >= 0.9,
            note,
        ),
        measured(
            work,
            "training.fit (SFT stream)",
            "TRL SFTTrainer, packed, padding-free",
            "tokens/s",
            ours,
            rates["trl"],
            "(about 3× TRL)",
            None,
            "",
        ),
    ]


def dpo_tables(data) -> tuple[pa.Table, list[dict]]:
    """The DPO stage's pairs (with buckets) and the same records as text, for TRL."""
    pairs = data.dpo_examples(SEQ_LEN)
    bounds = load_config("tiny").shards.bucket_boundaries
    table = pa.Table.from_pylist(
        [
            {
                **{c: p[c] for c in dpo.COLUMNS},
                "bucket": packing.bucket_of(
                    len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])), bounds
                ),
            }
            for p in pairs
        ]
    )
    keep = {p["id"] for p in pairs}
    text = [
        {k: r[k] for k in ("prompt", "chosen", "rejected")}
        for r in data.train("preference")
        if r["id"] in keep
    ]
    return table, text


def dpo_ours(data, table: pa.Table, vocab: int, steps: int) -> float:
    """Pairs/s of the DPO stage's trainer (pre-tokenized pairs, one-bucket batches, LoRA r=8)."""
    from transformers import AutoTokenizer

    cfg = DpoConfig(max_steps=steps, batch_size=PAIRS, lora_r=8, warmup_steps=1, log_every=10**6)
    clock = Clock()
    with tempfile.TemporaryDirectory() as scratch:
        tok = AutoTokenizer.from_pretrained(data.tokenizer_dir)
        trainer = dpo.make_trainer(
            cfg, pretrain_bench.model(vocab), table, table.slice(0, PAIRS), tok, scratch
        )
        trainer.add_callback(clock)
        trainer.train()
    return steps * PAIRS / clock.seconds


def dpo_trl(data, text: list[dict], vocab: int, steps: int, bf16: bool) -> tuple[float, float]:
    """Pairs/s of TRL's DPOTrainer on the records' text (bf16: TRL's default autocast on CPU),
    and the tokens per pair its own tokenization made (prompt counted twice, as it is run)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    clock = Clock()
    with tempfile.TemporaryDirectory() as scratch:
        args = DPOConfig(
            output_dir=scratch,
            bf16=bf16,
            per_device_train_batch_size=PAIRS,
            max_steps=steps,
            learning_rate=5e-4,
            **TRL_ARGS,
        )
        lora = LoraConfig(
            r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"
        )
        trainer = DPOTrainer(
            model=pretrain_bench.model(vocab),
            args=args,
            train_dataset=Dataset.from_list(text),
            processing_class=AutoTokenizer.from_pretrained(data.tokenizer_dir),
            peft_config=lora,
            callbacks=[clock],
        )
        trainer.remove_callback(PrinterCallback)  # its log dicts would interleave with the table
        trainer.train()
    ds = trainer.train_dataset
    tokens = sum(len(p) * 2 + len(c) + len(r) for p, c, r in zip(*(ds[k] for k in dpo.COLUMNS), strict=True))
    return steps * PAIRS / clock.seconds, tokens / len(ds)


def dpo_rows(data, repeats: int) -> list[dict]:
    table, text = dpo_tables(data)
    vocab = data.tok.get_vocab_size()
    steps = 2 if data.quick else 15
    _, rates = alternate(
        {
            "ours": lambda: dpo_ours(data, table, vocab, steps),
            "trl": lambda: dpo_trl(data, text, vocab, steps, bf16=False),
        },
        repeats,
    )
    # TRL's default (bf16 autocast on this CPU) once: it only shows why float32 is our default.
    _, slow = alternate({"trl_bf16": lambda: dpo_trl(data, text, vocab, steps, bf16=True)}, 1)
    trl, trl_tokens = [r for r, _ in rates["trl"]], rates["trl"][-1][1]
    ours_tokens = sum(
        2 * len(p) + len(c) + len(r)
        for p, c, r in zip(*table.select(dpo.COLUMNS).to_pydict().values(), strict=True)
    )
    work = f"DPO + LoRA (r=8), batch {PAIRS} pairs, CPU"
    note = (
        f"{table.num_rows:,} pairs, {steps} steps a run, {torch.get_num_threads()} torch thread(s); tokens per pair: "
        f"ours {ours_tokens / table.num_rows:.0f}, TRL's tokenization {trl_tokens:.0f}"
    )
    return [
        measured(
            work,
            "DPO stage trainer (float32)",
            "TRL DPOTrainer, float32",
            "pairs/s",
            rates["ours"],
            trl,
            "≥ TRL's pairs/s",
            lambda o, r: r >= 1.0,
            note,
        ),
        measured(
            work,
            "DPO stage trainer (float32)",
            "TRL DPOTrainer, its default bf16 autocast",
            "pairs/s",
            rates["ours"],
            [r for r, _ in slow["trl_bf16"]],
            "",
            None,
            "one bf16 run: why lmpipe picks float32 on CPU",
        ),
    ]


def suite(data, repeats: int) -> list[dict]:
    return pretrain_rows(data, repeats) + sft_rows(data, repeats) + dpo_rows(data, repeats)
