"""Shards stage: config and the Arrow IPC schemas of the three shard kinds.

pretrain rows are fixed-length packed sequences; sft and dpo rows are single examples (never
split), sorted by length bucket so a batch sampler can draw each batch from one bucket.
"""

from typing import Literal

import pyarrow as pa
from pydantic import Field, model_validator

from schemas.base import StrictModel, runtime_field
from schemas.instruct import InstructConfig

IGNORE_INDEX = -100  # label value that carries no loss (prompt, padding, document starts)

ids = pa.list_(pa.int32())

PRETRAIN_SCHEMA = pa.schema(
    [
        pa.field("input_ids", ids, nullable=False),
        pa.field("labels", ids, nullable=False),
        pa.field("position_ids", ids, nullable=False),
        pa.field("doc_lens", ids, nullable=False),  # lengths of the packed documents (cu_seqlens diffs)
        pa.field("n_tokens", pa.int32(), nullable=False),  # real (non-pad) tokens in the row
    ]
)

SFT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),
        pa.field("format", pa.string(), nullable=False),  # task | instruct | heldout (tasks.instruct)
        pa.field("input_ids", ids, nullable=False),
        pa.field("labels", ids, nullable=False),
        pa.field("length", pa.int32(), nullable=False),
        pa.field("n_loss", pa.int32(), nullable=False),
        pa.field("bucket", pa.int32(), nullable=False),
    ]
)

DPO_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("prompt_ids", ids, nullable=False),
        pa.field("chosen_ids", ids, nullable=False),
        pa.field("rejected_ids", ids, nullable=False),
        pa.field("length", pa.int32(), nullable=False),  # prompt + longer completion
        pa.field("bucket", pa.int32(), nullable=False),
    ]
)

# Optional packed SFT rows (`sft_packing`): whole examples packed like pretraining rows, the
# labels of each example kept as they are (loss on its answer only), plus the examples' ids
# and tasks in packing order.
SFT_PACKED_SCHEMA = pa.schema(
    [
        *PRETRAIN_SCHEMA,
        pa.field("ids", pa.list_(pa.string()), nullable=False),
        pa.field("tasks", pa.list_(pa.string()), nullable=False),
    ]
)

SCHEMAS = {
    "pretrain": PRETRAIN_SCHEMA,
    "sft": SFT_SCHEMA,
    "sft_packed": SFT_PACKED_SCHEMA,
    "dpo": DPO_SCHEMA,
}


# Tokenised records before packing/bucketing: the chunk files of tasks.shard_chunks (staging
# only, never published). "score" is the curriculum column's value, null without one.
_score = pa.field("score", pa.float64())
TOKENIZED_SCHEMAS = {
    "pretrain": pa.schema([pa.field("id", pa.string()), pa.field("input_ids", ids), _score]),
    "sft": pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("task", pa.string()),
            pa.field("format", pa.string()),
            pa.field("input_ids", ids),
            pa.field("labels", ids),
            _score,
        ]
    ),
    "dpo": pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("prompt_ids", ids),
            pa.field("chosen_ids", ids),
            pa.field("rejected_ids", ids),
            _score,
        ]
    ),
}


class Curriculum(StrictModel):
    """Store the training split easy -> hard (tasks.curriculum): by token count, by mean token
    rarity, or by a numeric column of the corpus table."""

    by: Literal["length", "rarity", "column"] = Field(
        description="The difficulty: `length` (token count), `rarity` (mean surprisal of the "
        "tokens under the training split's unigram counts), or `column` (a numeric corpus column)."
    )
    column: str | None = Field(
        None, description="The numeric corpus column to order by; only with `by: column`."
    )

    @model_validator(mode="after")
    def column_iff_by_column(self) -> "Curriculum":
        if (self.by == "column") != (self.column is not None):
            raise ValueError("curriculum.column names the corpus column, and is needed only with by: column")
        return self


class ShardsConfig(StrictModel):
    seq_len: int = Field(
        512,
        ge=16,
        description="Tokens per packed pretraining row. Longer documents are split into pieces; "
        "shorter ones are packed together, positions restarting at each document.",
    )
    max_len: int = Field(
        512,
        ge=16,
        description="The longest SFT example or DPO pair (prompt + longer completion), in tokens; "
        "longer ones go to `rejects.jsonl`, never cut. Also the row length of `sft_packing` rows.",
    )
    packing: Literal["bfd", "concat"] = Field(
        "bfd",
        description="How pretraining rows are filled: `bfd` packs documents best-fit-decreasing, "
        "cutting only those longer than a row; `concat` is the concatenate-and-chunk baseline, "
        "which cuts documents at row edges.",
    )
    bucket_boundaries: list[int] | Literal["auto"] = Field(
        default_factory=lambda: [64, 128, 256, 512],
        description="Upper length bounds (tokens) of the SFT and DPO length buckets, increasing, the "
        "last ≥ `max_len`; a batch is drawn from one bucket to cut padding. `auto`: "
        "`auto_buckets` bounds at length quantiles of the training split (recorded in the manifest).",
    )
    auto_buckets: int = Field(
        16, ge=1, le=1024, description="How many buckets `bucket_boundaries: auto` makes."
    )
    # Training stages batch with their own batch_size and record their actual padding.
    stats_batch_size: int = runtime_field(
        16,
        ge=1,
        description="Batch size at which the manifest reports the padding fraction of bucketed "
        "versus random batches.",
    )
    rows_per_shard: int = Field(
        2048, ge=1, description="Rows (packed sequences, examples or pairs) per shard file."
    )
    sft_packing: bool = Field(
        False,
        description="Also write `sft_packed-*` shards: whole SFT examples packed best-fit-decreasing "
        "into rows of `max_len`, positions reset per example, loss on answers only.",
    )
    curriculum: Curriculum | None = Field(
        None,
        description="Store the training split easy -> hard by a difficulty. null: stored by bucket "
        "(SFT, DPO) and in packing order (pretrain).",
    )
    sft_tasks: list[str] = Field(
        default_factory=lambda: ["translation", "summarization", "qa"],
        description="Corpus tasks whose records become SFT examples.",
    )
    instruct: InstructConfig = Field(
        default_factory=InstructConfig,
        description="The natural-language instruct format of SFT examples (beside the task-token format).",
    )
    seed: int = Field(0, description="Seed of the batch plans behind the padding statistics.")
    # How tokenising runs: none of it changes a byte of the output.
    chunk_rows: int = runtime_field(5000, ge=1, description="Records per tokenising job.")
    runner: Literal["threads", "dask"] = runtime_field(
        "threads",
        description="Where the tokenising jobs run: Prefect's thread pool, or a Dask cluster (local "
        "with `workers` processes, or the one at `dask_address`).",
    )
    workers: int = runtime_field(
        2, ge=1, description="Processes of the local Dask cluster (with `runner: dask`)."
    )
    dask_address: str | None = runtime_field(
        None,
        description="An existing Dask scheduler (`tcp://scheduler:8786`) to use instead of a local "
        "cluster. Its workers must see the corpus, tokenizer and staging paths at the same place "
        "(a shared filesystem).",
    )

    @model_validator(mode="after")
    def buckets_cover_max_len(self) -> "ShardsConfig":
        b = self.bucket_boundaries
        if b == "auto":
            return self
        if not b or any(x <= 0 for x in b) or b != sorted(set(b)):
            raise ValueError(
                f"bucket_boundaries must be non-empty, positive and strictly increasing, got {b}"
            )
        if b[-1] < self.max_len:
            raise ValueError(f"the last bucket boundary ({b[-1]}) must be >= max_len ({self.max_len})")
        return self


def key_figures(s: dict) -> str:
    """The few numbers a person looks at first: rows, tokens and fill of the pretraining shards,
    padding of the SFT and DPO batches."""
    p, sft, dpo = s["pretrain_train"], s["sft_train"], s["dpo_train"]
    pad = next(k for k in sft if k.startswith("padding_bucketed"))
    return (
        f"pretrain {p['rows']} rows, {p['tokens']} tokens, fill {p['fill_rate']:.2%}; "
        f"sft {sft['examples']} ex, padding {sft[pad]:.1%}; dpo {dpo['examples']} pairs, padding {dpo[pad]:.1%}"
        + (
            f"; {s['split_documents']} document pieces from splitting, {s['rejected_too_long']} too long"
            if "split_documents" in s
            else ""
        )
    )
