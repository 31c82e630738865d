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

    by: Literal["length", "rarity", "column"]
    column: str | None = None  # the corpus column, for by: column

    @model_validator(mode="after")
    def column_iff_by_column(self) -> "Curriculum":
        if (self.by == "column") != (self.column is not None):
            raise ValueError("curriculum.column names the corpus column, and is needed only with by: column")
        return self


class ShardsConfig(StrictModel):
    seq_len: int = Field(512, ge=16)
    max_len: int = Field(512, ge=16)
    packing: Literal["bfd", "concat"] = "bfd"  # concat = the concatenate-and-chunk baseline
    # Upper length bounds of the SFT/DPO buckets, or "auto": `auto_buckets` boundaries at
    # length quantiles of the training split (recorded in the manifest stats).
    bucket_boundaries: list[int] | Literal["auto"] = Field(default_factory=lambda: [64, 128, 256, 512])
    auto_buckets: int = Field(16, ge=1, le=1024)
    # Batch size at which the stage reports the padding fraction of bucketed vs random batches;
    # training stages batch with their own batch_size and record their actual padding.
    stats_batch_size: int = runtime_field(16, ge=1)
    rows_per_shard: int = Field(2048, ge=1)
    # Also write `sft_packed-*` shards: SFT examples (never split) packed best-fit-decreasing
    # into rows of max_len, positions reset per example, loss on answers only.
    sft_packing: bool = False
    curriculum: Curriculum | None = None  # None: stored by bucket (SFT, DPO) / packing order
    sft_tasks: list[str] = Field(default_factory=lambda: ["translation", "summarization", "qa"])
    instruct: InstructConfig = Field(default_factory=InstructConfig)
    seed: int = 0
    # How tokenising runs (none of it changes a byte of the output): records per chunk job, and
    # where the jobs run: Prefect's thread pool, or a local Dask cluster of `workers` processes.
    chunk_rows: int = runtime_field(5000, ge=1)
    runner: Literal["threads", "dask"] = runtime_field("threads")
    workers: int = runtime_field(2, ge=1)
    # With runner dask: an existing cluster's scheduler ("tcp://scheduler:8786") instead of a
    # local one (`workers` is then the cluster's business). Its workers must see the corpus,
    # tokenizer and staging paths at the same place (a shared filesystem).
    dask_address: str | None = runtime_field(None)

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
