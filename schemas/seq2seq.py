"""Config of the seq2seq stage: an encoder-decoder assembled from the encoder and the decoder."""

from typing import Literal

from pydantic import Field

from schemas.training import TrainConfig


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
