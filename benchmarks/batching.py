"""Padding of SFT and DPO batches: our length buckets against the usual ways of batching.

Rows of `python -m benchmarks` (run alone: `python -m benchmarks --only batching`).

SFT at seq_len 512, 16 examples a batch, examples never split: one-bucket batches (the SFT
stage's sampler) against random batches, transformers' `LengthGroupedSampler` (what
`group_by_length=True` uses) and TRL's `pack_dataset` (bfd, inside `datasets.map`; rows
padded to 512). Packed SFT rows (the shards stage's `sft_packing`) against TRL's packing.

DPO, 8 pairs a batch: TRL's collator puts prompt+chosen and prompt+rejected of every pair in
one batch, right-padded to the longest of the 16 sequences; that is the padding counted here.
One-bucket batches (the DPO stage's sampler) against random and fully length-sorted batches.
"""

import torch

from benchmarks.packing import trl_packed
from benchmarks.suite import measured
from schemas.config import load_config
from tasks import packing, shards

SFT_LEN, SFT_BATCH, DPO_BATCH, SEED = 512, 16, 8, 0


def length_grouped(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Batches in the order transformers' LengthGroupedSampler yields (megabatches sorted by length)."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    order = list(
        LengthGroupedSampler(batch_size, lengths=lengths, generator=torch.Generator().manual_seed(SEED))
    )
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def pct(x: float) -> float:
    return round(100 * x, 3)


def sft_rows(data) -> list[dict]:
    examples = data.sft_examples(SFT_LEN)
    lengths = [len(ex["input_ids"]) for ex in examples]
    bounds = load_config("tiny").shards.bucket_boundaries
    ours = pct(packing.padding_fraction(lengths, bucket_plan(lengths, bounds, SFT_BATCH)))
    trl_rows = trl_packed([ex["input_ids"] for ex in examples], SFT_LEN)
    baselines = {
        f"random batches of {SFT_BATCH}": packing.padding_fraction(
            lengths, packing.random_batches(len(lengths), SFT_BATCH, SEED)
        ),
        "HF group_by_length (LengthGroupedSampler)": packing.padding_fraction(
            lengths, length_grouped(lengths, SFT_BATCH)
        ),
        "TRL packing (pack_dataset bfd, rows padded to 512)": 1 - sum(trl_rows) / (len(trl_rows) * SFT_LEN),
        "fully length-sorted (the floor; no randomness)": packing.padding_fraction(
            lengths, sorted_batches(lengths, SFT_BATCH)
        ),
    }
    note = f"{len(examples):,} examples, {sum(lengths):,} tokens; buckets {bounds}"
    packed, stats = shards.pack_sft(examples, SFT_LEN)
    whole = sorted(i for r in packed for i in r["ids"]) == sorted(ex["id"] for ex in examples)
    packed_row = measured(
        f"SFT batches at seq_len {SFT_LEN}, examples never split",
        "packed SFT rows (shards.pack_sft, BFD)",
        "TRL packing (pack_dataset bfd, rows padded to 512)",
        "padding %",
        [pct(1 - stats["fill_rate"])],
        [pct(baselines["TRL packing (pack_dataset bfd, rows padded to 512)"])],
        "packed ≤ 0.1% padding, examples whole",
        lambda o, r: o <= 0.1 and whole,
        f"{len(packed)} rows of {SFT_LEN}; every example whole, once: {'yes' if whole else 'NO'}",
    )
    return [packed_row] + [
        measured(
            f"SFT batches at seq_len {SFT_LEN}, examples never split",
            f"one-bucket batches of {SFT_BATCH}",
            name,
            "padding %",
            [ours],
            [pct(base)],
            "≤ 2% padding" if k == 0 else "",
            (lambda o, r: o <= 2.0) if k == 0 else None,
            note if k == 0 else "",
        )
        for k, (name, base) in enumerate(baselines.items())
    ]


def bucket_plan(lengths: list[int], bounds: list[int], batch_size: int) -> list[list[int]]:
    buckets = [packing.bucket_of(n, bounds) for n in lengths]
    return packing.bucket_batches(buckets, batch_size, SEED, lengths=lengths)


def pair_padding(pairs: list[dict], batches: list[list[int]]) -> float:
    """Padding when each batch holds both sequences of its pairs, padded to the longest."""
    seqs = [len(p["prompt_ids"]) + len(p[side]) for p in pairs for side in ("chosen_ids", "rejected_ids")]
    return packing.padding_fraction(seqs, [[2 * i + s for i in b for s in (0, 1)] for b in batches])


def dpo_rows(data) -> list[dict]:
    pairs = data.dpo_examples(SFT_LEN)
    lengths = [len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) for p in pairs]
    bounds = load_config("tiny").shards.bucket_boundaries
    plan = bucket_plan(lengths, bounds, DPO_BATCH)
    whole = sorted(i for b in plan for i in b) == list(range(len(pairs)))  # each pair once, never split
    ours = pct(pair_padding(pairs, plan))
    baselines = {
        f"random batches of {DPO_BATCH} pairs": packing.random_batches(len(pairs), DPO_BATCH, SEED),
        "length-sorted batches": sorted_batches(lengths, DPO_BATCH),
    }
    return [
        measured(
            f"DPO batches of {DPO_BATCH} pairs",
            "one-bucket batches",
            name,
            "padding %",
            [ours],
            [pct(pair_padding(pairs, base))],
            "≤ 5% padding, pairs never split" if k == 0 else "",
            (lambda o, r: o <= 5.0 and whole) if k == 0 else None,
            f"{len(pairs):,} pairs; every pair once, chosen and rejected together: {'yes' if whole else 'NO'}"
            if k == 0
            else "",
        )
        for k, (name, base) in enumerate(baselines.items())
    ]


def suite(data, repeats: int) -> list[dict]:
    """Rows of `python -m benchmarks` (padding is deterministic: `repeats` does not apply)."""
    return sft_rows(data) + dpo_rows(data)
