"""Config of the encoder stage: masked-LM pretraining of an encoder.

The encoder is pretrained exactly like the decoder (same shards, same loop, same resume), with
the masked objective fixed, so one config can hold both models side by side.
"""

from typing import Literal

from pydantic import Field

from schemas.pretrain import PretrainConfig


class EncoderConfig(PretrainConfig):
    objective: Literal["masked"] = Field(
        "masked", description="Always `masked`: the encoder learns masked-LM (BERT-style)."
    )
