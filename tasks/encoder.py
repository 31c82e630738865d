"""Encoder stage: a ModernBERT-style masked-LM encoder from scratch, next to the decoder.

The same packed pretraining shards and the same loop as `pretrain` (tasks.pretraining with
`objective: masked`, see tasks.mlm), published as its own checkpoint so a pipeline can hold a
decoder and an encoder at once. It feeds the encoder task heads (tasks.heads) and the
encoder-decoder assembly (tasks.seq2seq).
"""

from pathlib import Path

from schemas.encoder import EncoderConfig
from schemas.manifest import ContractResult
from tasks import pretraining
from tasks.checkpoints import check_checkpoint


def build(cfg: EncoderConfig, inputs: dict[str, Path], out: Path) -> dict:
    return pretraining.build(cfg, inputs, out, "encoder")


def validate(cfg: EncoderConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    return check_checkpoint(out, stats, pretraining.AUTO[cfg.objective])
