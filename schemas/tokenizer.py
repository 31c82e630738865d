"""Tokenizer stage config: train a byte-level BPE on a sample, or adopt an existing tokenizer.

Adopting names a `tokenizer.json` (or an HF tokenizer folder holding one) and pins its sha256,
so the fingerprint follows the file's content, not its path:

    tokenizer: {adopt: /models/gpt2/tokenizer.json, adopt_sha256: 3f1c...}
"""

from pydantic import Field, model_validator

from schemas.base import StrictModel, runtime_field


class TokenizerConfig(StrictModel):
    vocab_size: int = Field(
        4096,
        ge=300,
        le=262_144,
        description="Tokens in the trained vocabulary, special tokens included. Ignored when adopting.",
    )
    min_frequency: int = Field(
        2, ge=1, description="A pair of tokens is merged only if it occurs at least this often in the sample."
    )
    # Cost stays bounded as the corpus grows.
    max_train_chars: int = Field(
        20_000_000,
        ge=1000,
        description="Characters of training text the BPE is trained on: train-split records drawn "
        "uniformly (by hashed id) across all tasks and sources, up to this many.",
    )
    adopt: str | None = runtime_field(
        None,
        min_length=1,
        description="Path of an existing BPE `tokenizer.json` (or a folder holding one) to use "
        "instead of training; null trains one. Its content is pinned by `adopt_sha256`, so the "
        "path itself is not fingerprinted.",
    )
    adopt_sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="The sha256 (64 hex digits) of the adopted `tokenizer.json`; required with "
        "`adopt`. The stage fails when the file's hash differs.",
    )
    sample_per_source: int = runtime_field(
        200,
        ge=1,
        description="Records per source whose round trip (decode(encode(x)) == x) and fertility "
        "(tokens per word) are checked and reported.",
    )

    @model_validator(mode="after")
    def pinned(self) -> "TokenizerConfig":
        if (self.adopt is None) != (self.adopt_sha256 is None):
            raise ValueError("`adopt` and `adopt_sha256` go together: pin the sha256 of the tokenizer.json")
        return self


def key_figures(s: dict) -> str:
    """The few numbers a person looks at first: `vocab 4096, fertility 1.21-1.64`."""
    fertility = s.get("fertility", {})
    spread = f", fertility {min(fertility.values())}-{max(fertility.values())}" if fertility else ""
    return f"vocab {s['vocab_size']}" + (f" ({s['adopted']})" if s.get("adopted") else "") + spread
