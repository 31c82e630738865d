"""Configs of the encoder stages: masked-LM pretraining of an encoder, and its task heads.

The encoder is pretrained exactly like the decoder (same shards, same loop, same resume), with
the masked objective fixed, so one config can hold both models side by side.
"""

from typing import Literal

from pydantic import Field

from schemas.base import runtime_field
from schemas.training import PretrainConfig, TrainConfig


class EncoderConfig(PretrainConfig):
    objective: Literal["masked"] = "masked"


HeadName = Literal["domain", "pair", "tagging", "qa"]


class HeadsConfig(TrainConfig):
    """Task heads fine-tuned from the encoder, each from its own copy (tasks.heads)."""

    lr: float = Field(5e-4, gt=0)
    heads: list[HeadName] = Field(default_factory=lambda: ["domain", "pair", "tagging", "qa"], min_length=1)
    max_len: int = Field(512, ge=8)  # longer examples go to rejects.jsonl, never cut (<= encoder positions)
    train_examples: int = Field(4000, ge=1)  # per head: the first N records of the training split
    eval_examples: int = Field(400, ge=1)  # per head, from the validation split
    # Publishing requires every head to beat its trivial baseline (majority class, first-token
    # span) on validation. It decides whether to publish, not what is built: not fingerprinted.
    require_baseline: bool = runtime_field(True)


class Seq2SeqConfig(TrainConfig):
    """An encoder-decoder assembled from the encoder and the pretrained decoder (tasks.seq2seq).

    `cross_steps` train only the new cross-attention (both parts frozen) at `cross_lr`; then
    `max_steps` train everything at `lr`.
    """

    lr: float = Field(5e-4, gt=0)
    cross_steps: int = Field(50, ge=0)
    cross_lr: float = Field(2e-3, gt=0)
    cross_heads: int = Field(4, ge=1)
    tasks: list[Literal["translation", "summarization", "qa"]] = Field(
        default_factory=lambda: ["translation", "summarization"], min_length=1
    )
    eval_examples: int = Field(48, ge=1)  # per task, for generation metrics (same rows as SFT's)
    eval_max_new_tokens: int = Field(64, ge=1)
