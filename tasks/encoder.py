"""Encoder stage: a ModernBERT-style masked-LM encoder from scratch, next to the decoder.

The same packed pretraining shards and the same loop as `pretrain` (tasks.pretrain with
`objective: masked`, see tasks.mlm), published as its own checkpoint so a pipeline can hold a
decoder and an encoder at once. It feeds the encoder task heads (tasks.heads) and the
encoder-decoder assembly (tasks.seq2seq).
"""

from pathlib import Path

from schemas.encoder import EncoderConfig
from schemas.manifest import ContractResult
from tasks import pretrain


def build(cfg: EncoderConfig, inputs: dict[str, Path], out: Path) -> dict:
    return pretrain.build(cfg, inputs, out, stage="encoder")


def validate(cfg: EncoderConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    return pretrain.check_checkpoint(out, stats)
