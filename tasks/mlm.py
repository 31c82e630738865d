"""Masked-LM pretraining of an encoder (ModernBERT-style) on the same packed shards.

Of the real tokens of a row (never padding or control tokens), `mask_prob` (15%) are chosen;
of those 80% become `<mask>`, 10% a random ordinary token, 10% stay; the loss is only on the
chosen ones. Example, mask_prob 0.5 on `<bos> the cat sat <eos>`:

    input_ids  <bos> the <mask> sat <eos>      labels  -  -  cat  -  -

The draw is seeded by (seed, micro-batch index), so a resumed run masks exactly as the
uninterrupted one. Packed documents attend bidirectionally within themselves only: position
ids restart at each document, and the mask of the model's attention kernel is built from them
(tasks.attention.use: a dense mask for sdpa/eager, a BlockMask for flex).
"""

import pyarrow as pa
import torch

from schemas.shards import IGNORE_INDEX
from schemas.tokens import BOS, EOS, MASK, PAD, SEP, SPECIAL_TOKENS, token_id
from schemas.training import ModelConfig
from tasks import shard_reading


def new_encoder(mcfg: ModelConfig, vocab_size: int, max_positions: int):
    """A ModernBERT masked LM with random weights; every layer attends globally."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    config = ModernBertConfig(
        vocab_size=vocab_size,
        hidden_size=mcfg.hidden_size,
        intermediate_size=mcfg.intermediate_size,
        num_hidden_layers=mcfg.num_layers,
        num_attention_heads=mcfg.num_heads,
        max_position_embeddings=max_positions,
        global_attn_every_n_layers=1,
        pad_token_id=token_id(PAD),
        bos_token_id=token_id(BOS),
        cls_token_id=token_id(BOS),
        eos_token_id=token_id(EOS),
        sep_token_id=token_id(SEP),
        attn_implementation="sdpa",
    )
    return ModernBertForMaskedLM(config)


def mask_tokens(
    ids: torch.Tensor, prob: float, vocab: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrupted input ids, labels): 80/10/10 on a `prob` share of the ordinary tokens."""
    ordinary = ids >= len(SPECIAL_TOKENS)
    chosen = (torch.rand(ids.shape, generator=gen) < prob) & ordinary
    roll = torch.rand(ids.shape, generator=gen)
    random_ids = torch.randint(len(SPECIAL_TOKENS), vocab, ids.shape, generator=gen)
    corrupted = torch.where(chosen & (roll < 0.8), token_id(MASK), ids)
    corrupted = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, corrupted)
    return corrupted, torch.where(chosen, ids, IGNORE_INDEX)


def masked_batch(table: pa.Table, rows: list[int], prob: float, vocab: int, seed: int) -> dict:
    cols = shard_reading.take_rows(table, rows, ["input_ids", "position_ids"])
    gen = torch.Generator().manual_seed(seed)
    inputs, labels = mask_tokens(torch.tensor(cols["input_ids"], dtype=torch.long), prob, vocab, gen)
    return {
        "input_ids": inputs,
        "labels": labels,
        "position_ids": torch.tensor(cols["position_ids"], dtype=torch.long),
    }


@torch.no_grad()
def masked_accuracy(model, batches: list[dict], device) -> float:
    """Share of chosen tokens the encoder restores exactly."""
    model.to(device).eval()
    right, total = 0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        predicted = model(**batch).logits.argmax(-1)
        scored = batch["labels"] != IGNORE_INDEX
        right += int((predicted[scored] == batch["labels"][scored]).sum())
        total += int(scored.sum())
    model.train()
    return right / max(total, 1)
