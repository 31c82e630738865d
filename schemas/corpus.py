"""Corpus stage: source config, the canonical fields of each task, reason codes, the table schema.

Every task has a fixed set of canonical text fields. A source maps them from its own record
layout with dotted paths; a numeric part indexes a list, e.g. SQuAD's first answer:

    {"task": "qa", "path": "squad.parquet", "fields": {"answer": "answers.text.0"}}

Sources are JSONL (also .gz), Parquet, CSV/TSV, plain text files or folders, a `datasets`
dataset saved with `save_to_disk`, or a hub dataset name (`format: hub`, pinned `revision`).
"""

from typing import Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from schemas.base import StrictModel, runtime_field

TaskName = Literal["pretrain", "translation", "summarization", "qa", "preference"]
Format = Literal["auto", "jsonl", "parquet", "csv", "tsv", "text", "disk", "hub"]

TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "pretrain": ("text",),
    "translation": ("source_text", "target_text"),
    "summarization": ("document", "summary"),
    "qa": ("context", "question", "answer"),
    "preference": ("prompt", "chosen", "rejected"),
}

# Columns every corpus table carries besides the task fields: lineage back to the raw record,
# the grouping key that decided the split, and the source's mixing weight.
RECORD_COLUMNS: tuple[str, ...] = ("id", "source", "file", "line", "split", "group", "weight")

# Why a record is not in the corpus. Every line of rejects.jsonl carries one of these codes.
REASONS: dict[str, str] = {
    "unreadable_file": "the file cannot be opened or parsed as its format (every record of it)",
    "schema_mismatch": "the file's columns differ from the source's first file",
    "invalid_utf8": "bytes that are not UTF-8, or a lone surrogate escape",
    "invalid_json": "a JSONL line that does not parse (e.g. truncated)",
    "invalid_csv": "a CSV/TSV row that does not parse or has the wrong number of cells",
    "not_an_object": "a JSONL line that is not a JSON object",
    "missing_id": "no usable id in the id field",
    "missing_field": "a mapped field is absent, None or NaN",
    "wrong_type": "a mapped field is not text",
    "bad_chat": "chat messages without role/content, or no assistant turn after the prompt",
    "empty_field": "a field is empty after normalisation (or shorter than min_chars)",
    "too_long": "a field is longer than max_chars",
    "chosen_equals_rejected": "a preference pair whose sides are equal",
    "duplicate_id": "an id already seen in this task",
    "exact_duplicate": "the same content as an earlier record of this task",
    "near_duplicate": "MinHash Jaccard estimate >= near_dup_threshold with an earlier record",
    "contaminated": "a training record that shares an n-gram with validation text",
    "blank_line": "an empty or whitespace-only line or row (JSONL, CSV/TSV): nothing to read",
}
# Cleaning decisions and empty lines, not bad data: they do not count towards max_reject_rate.
POLICY_REASONS = frozenset({"exact_duplicate", "near_duplicate", "contaminated", "blank_line"})


class Source(StrictModel):
    task: TaskName
    # Where the data is does not define the artifact: its content hash does (tasks.plan.raw_refs).
    # A file, a folder of files of one format, a `save_to_disk` folder, or a hub dataset name.
    path: str = runtime_field(..., min_length=1)
    format: Format = "auto"
    fields: dict[str, str] = Field(default_factory=dict)
    id_field: str | None = "id"  # None: ids are generated as "<file content hash>:<line>"
    source_field: str = "source"
    group_field: str | None = None  # records sharing this key share a split (default: the id)
    weight: float = Field(1.0, gt=0)  # mixing weight, stored per row for the samplers downstream
    text_unit: Literal["file", "paragraph"] = "file"  # text sources: one document per ...
    split: str | None = None  # which split of a DatasetDict / hub dataset
    subset: str | None = None  # hub dataset config name
    revision: str | None = None  # hub dataset commit; required for format hub

    @model_validator(mode="after")
    def consistent(self) -> "Source":
        unknown = sorted(set(self.fields) - set(TASK_FIELDS[self.task]))
        if unknown:
            raise ValueError(
                f"fields {unknown} are not fields of task {self.task!r}: {TASK_FIELDS[self.task]}"
            )
        if self.format == "text" and self.task != "pretrain":
            raise ValueError(f"text sources hold documents: task must be 'pretrain', not {self.task!r}")
        if self.format == "hub" and not self.revision:
            raise ValueError(f"hub dataset {self.path!r} needs a pinned `revision` (a commit sha)")
        return self

    def field_path(self, field: str) -> str:
        return self.fields.get(field, field)


class CorpusConfig(StrictModel):
    sources: list[Source] = Field(min_length=1)
    validation_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    min_chars: int = Field(1, ge=1)
    max_chars: int = Field(100_000, ge=1)
    split_salt: str = "lmpipe"
    # Near-duplicates: MinHash over word n-grams of the task fields; None turns it off.
    near_dup_threshold: float | None = Field(0.85, gt=0.0, le=1.0)
    minhash_perm: int = Field(64, ge=16, le=512)
    shingle_words: int = Field(3, ge=1, le=20)
    # Decontamination: training records sharing a word n-gram with validation text are
    # rejected; None turns it off.
    decontam_ngram: int | None = Field(13, ge=4, le=64)
    # Share of bad records (reasons outside POLICY_REASONS) above which the stage fails.
    # It decides whether an artifact is published, not what it contains: not fingerprinted.
    max_reject_rate: float = runtime_field(0.05, ge=0.0, le=1.0)
    # The same for each file of FILE_MIN_RECORDS or more: a half-garbage file fails the stage,
    # named, even when good sources dilute it below max_reject_rate. Not fingerprinted either.
    max_file_reject_rate: float = runtime_field(0.5, ge=0.0, le=1.0)
    # How pass one runs (none of it changes a byte of the output): jobs of one file each, or of
    # about `chunk_bytes` of an uncompressed JSONL or a Parquet file, on Prefect's thread pool or a local
    # Dask cluster of `workers` processes, or an existing cluster at `dask_address` (its
    # workers must see the sources and the staging folder at the same paths).
    chunk_bytes: int = runtime_field(1 << 20, ge=1)
    runner: Literal["threads", "dask"] = runtime_field("threads")
    workers: int = runtime_field(2, ge=1)
    dask_address: str | None = runtime_field(None)

    @field_validator("sources")
    @classmethod
    def distinct(cls, v: list[Source]) -> list[Source]:
        seen = [(s.task, s.path, s.split) for s in v]
        if len(seen) != len(set(seen)):
            raise ValueError("the same source is listed twice")
        return v


def table_schema(task: str) -> pa.Schema:
    """Arrow schema of `<task>.parquet` in the corpus artifact."""
    meta = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("weight", pa.float64(), nullable=False),
    ]
    return pa.schema(meta + [pa.field(f, pa.string(), nullable=False) for f in TASK_FIELDS[task]])
