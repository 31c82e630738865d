"""Config of the sft stage: instruction tuning of the pretrained decoder on the task templates."""

from typing import Annotated, Literal

from pydantic import Field

from schemas.base import StrictModel
from schemas.training import GainFields, LoraFields, TrainConfig, learning_rate


class NoiseConfig(StrictModel):
    """Noisy teacher forcing (tasks.noise): this share of the ordinary input tokens of each
    training example is replaced by a random token or `<mask>`; labels and special tokens never."""

    fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of each training example's ordinary input tokens replaced; 0 turns it off.",
    )
    replace_with: Literal["random", "mask"] = Field(
        "random", description="What replaces them: a random token of the vocabulary, or `<mask>`."
    )


class SftConfig(TrainConfig, LoraFields, GainFields):
    lr: float = learning_rate(5e-4)
    method: Literal["full", "lora"] = Field(
        "full",
        description="`full`: every weight trains; `lora`: adapters on attention plus the task "
        "tokens' embeddings.",
    )
    eval_examples: int = Field(
        48,
        ge=1,
        description="Validation examples per task answered before and after training, for the "
        "generation metrics (chrF, ROUGE-L, QA F1).",
    )
    eval_max_new_tokens: int = Field(64, ge=1, description="Most tokens generated for one evaluation answer.")
    noise: NoiseConfig = Field(
        default_factory=NoiseConfig,
        description="Noisy teacher forcing: input tokens replaced during training.",
    )
    # Without it a task with few records (the default corpus has 219 QA records against 9660
    # translations) is seen too rarely to be learned.
    repeat: dict[Literal["translation", "summarization", "qa"], Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict,
        description="How many times each training example of a task appears per epoch (`{qa: 8}`); "
        "tasks left out appear once.",
    )
