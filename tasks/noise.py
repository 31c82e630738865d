"""Noisy teacher forcing: corrupt a share of the model's *inputs* during training.

The labels stay the clean tokens, so the model learns to predict the right next token from a
slightly wrong prefix, as it must at generation time after its own mistakes. Only ordinary
tokens are eligible: special tokens (`<bos>`, task tokens, `<prompt>`/`<answer>`, `<eos>`,
padding) are never touched, nor the labels. Each row gets exactly round(fraction × eligible)
corrupted positions, drawn with a generator seeded by the micro-batch index, so a resumed run
corrupts the same tokens. Example, fraction 0.25, replace_with "mask":

    input_ids  <bos> The cat sat down <to-fr> Le chat <eos>
    noisy      <bos> The <mask> sat down <to-fr> Le <mask> <eos>
    labels     -100  ...  unchanged                Le chat <eos>
"""

import torch

from schemas.sft import NoiseConfig
from schemas.tokens import MASK, SPECIAL_TOKENS, token_id

Batch = dict[str, torch.Tensor]
FIRST_ORDINARY = len(SPECIAL_TOKENS)  # ids below this are control tokens


def corrupt(batch: Batch, cfg: NoiseConfig, vocab_size: int, seed: int) -> Batch:
    """A copy of `batch` whose input_ids have `cfg.fraction` of their ordinary tokens replaced."""
    if cfg.fraction == 0:
        return batch
    ids = batch["input_ids"]
    eligible = ids >= FIRST_ORDINARY
    if "attention_mask" in batch:
        eligible &= batch["attention_mask"].bool()
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(ids.shape, generator=g).masked_fill(~eligible, 2.0)  # ineligible sort last
    rank = scores.argsort(dim=1).argsort(dim=1)
    count = (eligible.sum(dim=1) * cfg.fraction).round().long()
    chosen = rank < count[:, None]
    if cfg.replace_with == "mask":
        replacement = torch.full_like(ids, token_id(MASK))
    else:  # uniform over the ordinary ids other than the original one
        r = torch.randint(FIRST_ORDINARY, vocab_size - 1, ids.shape, generator=g)
        replacement = r + (r >= ids).long()
    return {**batch, "input_ids": torch.where(chosen, replacement, ids)}


def noisy(stream, cfg: NoiseConfig, vocab_size: int, seed: int):
    """The same data stream with corrupted inputs (micro-batch k seeds its corruption)."""
    if cfg.fraction == 0:
        return stream
    return type(stream)(
        stream.plan, lambda rows, k: corrupt(stream.make(rows, k), cfg, vocab_size, seed * 1_000_003 + k)
    )


def summary(cfg: NoiseConfig, clean: list[Batch], noisy_batches: list[Batch]) -> dict:
    """What the corruption did to these micro-batches, for the manifest: realized share,
    and proof that no label and no special token changed."""
    eligible = changed = special_changed = labels_changed = 0
    for a, b in zip(clean, noisy_batches, strict=True):
        diff = a["input_ids"] != b["input_ids"]
        ordinary = a["input_ids"] >= FIRST_ORDINARY
        if "attention_mask" in a:
            ordinary &= a["attention_mask"].bool()
        eligible += int(ordinary.sum())
        changed += int(diff.sum())
        special_changed += int((diff & ~ordinary).sum())
        labels_changed += int((a["labels"] != b["labels"]).sum())
    return {
        "fraction": cfg.fraction,
        "replace_with": cfg.replace_with,
        "micro_batches_checked": len(clean),
        "eligible_tokens": eligible,
        "corrupted_tokens": changed,
        "realized_fraction": round(changed / max(eligible, 1), 4),
        "special_tokens_changed": special_changed,
        "labels_changed": labels_changed,
    }
