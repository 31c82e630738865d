"""Config of the seq2seq stage: an encoder-decoder assembled from the encoder and the decoder."""

from typing import Literal

from pydantic import Field

from schemas.training import TrainConfig, learning_rate, training_figures


class Seq2SeqConfig(TrainConfig):
    """An encoder-decoder assembled from the encoder and the pretrained decoder (tasks.seq2seq).

    `cross_steps` train only the new cross-attention (both parts frozen) at `cross_lr`; then
    `max_steps` train everything at `lr`.
    """

    lr: float = learning_rate(5e-4)
    cross_steps: int = Field(
        50,
        ge=0,
        description="Steps of phase 1, which trains only the new cross-attention (encoder and decoder "
        "frozen); 0 skips it.",
    )
    cross_lr: float = Field(2e-3, gt=0, description="Peak learning rate of phase 1.")
    cross_heads: int = Field(
        4,
        ge=1,
        description="Attention heads of each new cross-attention block; must divide the decoder's width.",
    )
    tasks: list[Literal["translation", "summarization", "qa"]] = Field(
        default_factory=lambda: ["translation", "summarization"],
        min_length=1,
        description="The SFT tasks whose shards it trains and is evaluated on.",
    )
    eval_examples: int = Field(
        48,
        ge=1,
        description="Validation examples per task answered for the generation metrics (the same rows "
        "as SFT's, for comparison).",
    )
    eval_max_new_tokens: int = Field(64, ge=1, description="Most tokens generated for one evaluation answer.")


def key_figures(s: dict) -> str:
    """The training figures, against the decoder-only SFT model on the same validation rows."""
    sft = s["sft_generation"]
    return (
        training_figures(s)
        + "; decoder-only sft "
        + ", ".join(
            f"{metric} {sft[task][metric]:.1f}"
            for task, metric in (("translation", "chrf"), ("summarization", "rougeL"), ("qa", "f1"))
            if metric in sft.get(task, {})
        )
    )
