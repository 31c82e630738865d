"""Tokenizer stage config: train a byte-level BPE on a sample, or adopt an existing tokenizer.

Adopting names a `tokenizer.json` (or an HF tokenizer folder holding one) and pins its sha256,
so the fingerprint follows the file's content, not its path:

    tokenizer: {adopt: /models/gpt2/tokenizer.json, adopt_sha256: 3f1c...}
"""

from pydantic import Field, model_validator

from schemas.base import StrictModel, runtime_field


class TokenizerConfig(StrictModel):
    vocab_size: int = Field(4096, ge=300, le=262_144)  # ignored when adopting
    min_frequency: int = Field(2, ge=1)
    # The training sample: train-split records drawn uniformly (by hashed id) across all tasks
    # and sources, up to this many characters. Cost stays bounded as the corpus grows.
    max_train_chars: int = Field(20_000_000, ge=1000)
    adopt: str | None = runtime_field(None, min_length=1)  # the path; its content is pinned below
    adopt_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    # Records per source whose round trip and fertility (tokens per word) are checked.
    sample_per_source: int = runtime_field(200, ge=1)

    @model_validator(mode="after")
    def pinned(self) -> "TokenizerConfig":
        if (self.adopt is None) != (self.adopt_sha256 is None):
            raise ValueError("`adopt` and `adopt_sha256` go together: pin the sha256 of the tokenizer.json")
        return self
