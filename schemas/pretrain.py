"""Config of the pretrain stage: a decoder (or, with the masked objective, an encoder) trained
from scratch on the shards."""

from typing import Literal

from pydantic import Field

from schemas.base import runtime_field
from schemas.training import ModelConfig, TrainConfig


class PretrainConfig(TrainConfig):
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="The architecture of the model trained from scratch."
    )
    objective: Literal["causal", "masked"] = Field(
        "causal",
        description="`causal`: next-token prediction (a decoder); `masked`: BERT-style masked LM "
        "(an encoder).",
    )
    mask_prob: float = Field(
        0.15, gt=0, lt=1, description="Share of tokens masked for prediction, with `objective: masked`."
    )
    attention: Literal["auto", "flex", "sdpa", "eager"] = runtime_field(
        "auto",
        description="The attention kernel on packed rows. `auto`: `flex` (FlexAttention with a block "
        "mask, no L x L mask) on CUDA, `sdpa` (a dense mask) on CPU, where flex cannot train; "
        "`eager` is the transformers reference implementation (also a dense mask).",
    )
