"""Configs of the three training stages (pretrain, sft, dpo), which share one outline."""

from typing import Literal

from pydantic import Field

from schemas.base import StrictModel, runtime_field


class ModelConfig(StrictModel):
    """A small Llama-style decoder built from scratch (random init)."""

    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(384, ge=8)


class TrainConfig(StrictModel):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    max_steps: int = Field(100, ge=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    eval_batches: int = Field(8, ge=1)
    seed: int = 0
    log_every: int = runtime_field(10, ge=1)


class PretrainConfig(TrainConfig):
    model: ModelConfig = Field(default_factory=ModelConfig)


class SftConfig(TrainConfig):
    lr: float = Field(5e-4, gt=0)


class DpoConfig(TrainConfig):
    lr: float = Field(5e-4, gt=0)
    beta: float = Field(0.1, gt=0)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
