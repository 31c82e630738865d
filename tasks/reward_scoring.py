"""The reward model as the reward and rl stages use it: load one, score token sequences with it,
and check that the preference pairs it learns from can teach it anything.

    model = load(reward_dir)
    scores(model, [[1, 20, 30, 2]], torch.device("cpu"))   # e.g. [1.7]: one reward per sequence
"""

from pathlib import Path

import torch

from schemas.manifest import ContractResult
from schemas.tokens import PAD, token_id
from tasks import shard_reading
from tasks.contracts import require


def load(path: Path):
    """A reward model (one score per sequence) from a checkpoint: a reward stage's, or an LM's
    (then the score head starts random)."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, use_safetensors=True)
    model.config.pad_token_id = token_id(PAD)  # the score is read before the first padding
    return model


@torch.no_grad()
def scores(model, seqs: list[list[int]], device, batch_size: int = 32) -> list[float]:
    """One reward per token sequence (right-padded batches)."""
    model.to(device).eval()
    out: list[float] = []
    for k in range(0, len(seqs), batch_size):
        chunk = seqs[k : k + batch_size]
        width = max(map(len, chunk))
        ids = torch.tensor([s + [token_id(PAD)] * (width - len(s)) for s in chunk], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in chunk], device=device)
        out += model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, 0].float().tolist()
    return out


def pairs_differ(shards_dir: Path) -> ContractResult:
    """chosen != rejected in every preference pair the stage reads (train and validation)."""
    bad, checked = [], 0
    for split in ("train", "validation"):
        cols = (
            shard_reading.load(shards_dir, "dpo", split)
            .select(["id", "chosen_ids", "rejected_ids"])
            .to_pydict()
        )
        checked += len(cols["id"])
        bad += [f"id={i}: chosen equals rejected" for i, c, r in zip(*cols.values(), strict=True) if c == r]
    return require("reward/chosen-differs", bad, checked, "chosen differs from rejected in every pair")
