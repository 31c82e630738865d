"""Tokenizer stage config."""

from pydantic import Field

from schemas.base import StrictModel


class TokenizerConfig(StrictModel):
    vocab_size: int = Field(4096, ge=300, le=262_144)
    min_frequency: int = Field(2, ge=1)
    # Training reads at most this many characters: cost stays bounded as the corpus grows.
    max_train_chars: int = Field(20_000_000, ge=1000)
