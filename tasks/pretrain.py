"""Pretrain stage: a small Llama-style decoder from scratch on the packed shards (the recipe is
tasks.pretraining, shared with the encoder stage)."""

from pathlib import Path

from schemas.manifest import ContractResult
from schemas.pretrain import PretrainConfig
from tasks import pretraining
from tasks.checkpoints import check_checkpoint


def build(cfg: PretrainConfig, inputs: dict[str, Path], out: Path) -> dict:
    return pretraining.build(cfg, inputs, out, "pretrain")


def validate(cfg: PretrainConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    return check_checkpoint(out, stats, pretraining.AUTO[cfg.objective])
