"""Corpus stage: source config, the canonical fields of each task, the output table schema.

Every task has a fixed set of canonical text fields. A source maps them from its own record
layout with dotted paths, e.g. `{"source_text": "translation.en"}`.
"""

from typing import Literal

import pyarrow as pa
from pydantic import Field, field_validator

from schemas.base import StrictModel, runtime_field

TaskName = Literal["pretrain", "translation", "summarization", "qa", "preference"]

TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "pretrain": ("text",),
    "translation": ("source_text", "target_text"),
    "summarization": ("document", "summary"),
    "qa": ("context", "question", "answer"),
    "preference": ("prompt", "chosen", "rejected"),
}

# Columns every corpus table carries besides the task fields: lineage back to the raw line.
RECORD_COLUMNS: tuple[str, ...] = ("id", "source", "file", "line", "split")


class Source(StrictModel):
    task: TaskName
    # Where the file is does not define the artifact: its content hash does (see tasks.corpus).
    path: str = runtime_field(..., min_length=1)
    fields: dict[str, str] = Field(default_factory=dict)
    id_field: str = "id"
    source_field: str = "source"

    @field_validator("path")
    @classmethod
    def jsonl_only(cls, v: str) -> str:
        if not (v.endswith(".jsonl") or v.endswith(".jsonl.gz")):
            raise ValueError(f"only JSONL sources are supported so far, got {v!r}")
        return v

    def field_path(self, field: str) -> str:
        return self.fields.get(field, field)


class CorpusConfig(StrictModel):
    sources: list[Source] = Field(min_length=1)
    validation_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    min_chars: int = Field(1, ge=1)
    max_chars: int = Field(100_000, ge=1)
    split_salt: str = "lmpipe"


def table_schema(task: str) -> pa.Schema:
    """Arrow schema of `<task>.parquet` in the corpus artifact."""
    meta = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
    ]
    return pa.schema(meta + [pa.field(f, pa.string(), nullable=False) for f in TASK_FIELDS[task]])
