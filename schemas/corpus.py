"""Corpus stage: source config, the canonical fields of each task, reason codes, the table schema.

Every task has a fixed set of canonical text fields. A source maps them from its own record
layout with dotted paths; a numeric part indexes a list, e.g. SQuAD's first answer:

    {"task": "qa", "path": "squad.parquet", "fields": {"answer": "answers.text.0"}}

Sources are JSONL (also .gz), Parquet, CSV/TSV, plain text files or folders, a `datasets`
dataset saved with `save_to_disk`, or a hub dataset name (`format: hub`, pinned `revision`).
"""

from pathlib import PurePath
from typing import Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from schemas.base import StrictModel, runtime_field

TaskName = Literal["pretrain", "translation", "summarization", "qa", "preference"]
Format = Literal["auto", "jsonl", "parquet", "csv", "tsv", "text", "disk", "hub"]

SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "text",
    ".md": "text",
}
# Source keys that mean something for some formats only; set for another format, they would be
# silently ignored (`split` on a .txt file), so they are refused.
FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "split": ("disk", "hub"),
    "subset": ("hub",),
    "revision": ("hub",),
    "text_unit": ("text",),
}


def suffix_format(path: str | PurePath) -> str | None:
    """The format a file name implies: `qa.jsonl.gz` -> "jsonl"; None for no known suffix."""
    name = PurePath(path).name
    name = name[:-3] if name.endswith(".gz") else name
    return SUFFIXES.get(PurePath(name).suffix)


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
    "too_long": "a field is longer than max_chars (pretraining text is cut instead), or a line, row or file past the reading bounds",
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
    task: TaskName = Field(
        description="What the records are for; it fixes their canonical fields (pretrain: text; "
        "translation: source_text, target_text; summarization: document, summary; qa: context, "
        "question, answer; preference: prompt, chosen, rejected)."
    )
    # Where the data is does not define the artifact: its content hash does (tasks.plan.raw_refs).
    path: str = runtime_field(
        ...,
        min_length=1,
        description="A file, a folder of files of one format, a `save_to_disk` folder, or (with "
        "`format: hub`) a hub dataset name. Local paths must lie inside the project or a folder "
        "of `LMPIPE_DATA_ROOTS`.",
    )
    format: Format = Field(
        "auto",
        description="How to read `path`. `auto` goes by the suffix (`.jsonl`/`.ndjson`, `.parquet`, "
        "`.csv`, `.tsv`, `.txt`/`.md`, each also `.gz`) or recognises a `save_to_disk` folder; "
        "`hub` loads a hub dataset.",
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Canonical field -> dotted path in the source record (a number indexes a "
        "list: `answers.text.0`). Fields left out are read under their own name.",
    )
    id_field: str | None = Field(
        "id",
        description="Dotted path of each record's unique id. null: ids are generated as "
        "`<file content hash>:<line>`.",
    )
    source_field: str = Field(
        "source",
        description="Top-level record key naming the record's origin, stored in the `source` column; "
        "records without it get the source's `path`.",
    )
    group_field: str | None = Field(
        None,
        description="Records sharing this field's value land in the same split (e.g. all "
        "questions about one article). null: each record is its own group (its id).",
    )
    weight: float = Field(
        1.0,
        gt=0,
        description="Mixing weight of the source's training records: 2.5 keeps each record twice "
        "and a third time for half of them, 0.5 keeps half (chosen by hashed id). Validation is "
        "not weighted.",
    )
    text_unit: Literal["file", "paragraph"] = Field(
        "file",
        description="For text sources: each file is one document, or each blank-line-separated "
        "paragraph is one.",
    )
    split: str | None = Field(
        None, description="Which split of a `save_to_disk` DatasetDict or hub dataset to read (e.g. `train`)."
    )
    subset: str | None = Field(None, description="The hub dataset's config (subset) name, if it has several.")
    revision: str | None = Field(
        None,
        description="The hub dataset's commit sha, so the data cannot change under the "
        "fingerprint; required with `format: hub`.",
    )

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
        fmt = self.format if self.format != "auto" else suffix_format(self.path)
        if fmt:  # a folder's format is known once it is listed (tasks.corpus_read.resolve_format)
            self.check_keys(fmt)
        return self

    def check_keys(self, fmt: str) -> None:
        """ValueError naming a key set for a format it does not apply to.

        >>> Source(task="pretrain", path="a.txt", split="train")
        ValueError: key `split` does not apply to a.txt (format text); only to formats disk, hub
        """
        for key in sorted(FORMAT_KEYS):  # set to anything but its default (a dumped config holds all)
            if getattr(self, key) != type(self).model_fields[key].default and fmt not in FORMAT_KEYS[key]:
                raise ValueError(
                    f"key `{key}` does not apply to {self.path} (format {fmt}); "
                    f"only to formats {', '.join(FORMAT_KEYS[key])}"
                )

    def field_path(self, field: str) -> str:
        return self.fields.get(field, field)


class CorpusConfig(StrictModel):
    sources: list[Source] = Field(
        min_length=1, description="The raw data: one entry per file, folder or dataset; at least one."
    )
    validation_fraction: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Share of groups put in the validation split, decided by a hash of the group "
        "key, so adding records never moves others between splits.",
    )
    min_chars: int = Field(
        1,
        ge=1,
        description="Every task field must have at least this many characters after normalisation, "
        "else the record is rejected (`empty_field`).",
    )
    max_chars: int = Field(
        100_000,
        ge=1,
        description="Every task field may have at most this many characters; longer records are "
        "rejected (`too_long`), except pretraining documents: those are cut into pieces of at most "
        "this many characters at paragraph or sentence ends (ids `<id>#part<k>`, each deduplicated "
        "and decontaminated on its own).",
    )
    split_salt: str = Field(
        "lmpipe",
        description="Mixed into the split hash: change it to draw a different train/validation split.",
    )
    near_dup_threshold: float | None = Field(
        0.85,
        gt=0.0,
        le=1.0,
        description="A record whose MinHash estimate of Jaccard similarity (over word n-grams of its "
        "task fields) with an earlier record of its task reaches this is rejected as a "
        "near-duplicate. null turns near-duplicate removal off.",
    )
    minhash_perm: int = Field(
        64,
        ge=16,
        le=512,
        description="Hash functions in each MinHash signature: more estimate similarity more "
        "precisely and cost more time and memory.",
    )
    shingle_words: int = Field(
        3, ge=1, le=20, description="Words per n-gram (shingle) compared by near-duplicate detection."
    )
    decontam_ngram: int | None = Field(
        13,
        ge=4,
        le=64,
        description="A training record that shares a word n-gram of this length with validation "
        "text is rejected (`contaminated`). null turns decontamination off.",
    )
    # The reject limits decide whether an artifact is published, not what it contains: not
    # fingerprinted.
    max_reject_rate: float = runtime_field(
        0.05,
        ge=0.0,
        le=1.0,
        description="The stage fails when more than this share of records is bad (reasons other "
        "than duplicates, contamination and blank lines).",
    )
    max_file_reject_rate: float = runtime_field(
        0.5,
        ge=0.0,
        le=1.0,
        description="The same limit per file (files of only a few records are judged with the rest): "
        "a half-garbage file fails the stage, named, even when good sources dilute it below "
        "`max_reject_rate`.",
    )
    # How pass one runs: none of it changes a byte of the output.
    chunk_bytes: int = runtime_field(
        1 << 20,
        ge=1,
        description="Size of one reading job in bytes: an uncompressed JSONL or a Parquet file is "
        "split into jobs of about this much; other files are one job each.",
    )
    runner: Literal["threads", "dask"] = runtime_field(
        "threads",
        description="Where the reading jobs run: Prefect's thread pool, or a Dask cluster "
        "(local with `workers` processes, or the one at `dask_address`).",
    )
    workers: int = runtime_field(
        2, ge=1, description="Processes of the local Dask cluster (with `runner: dask`)."
    )
    dask_address: str | None = runtime_field(
        None,
        description="An existing Dask scheduler (`tcp://host:8786`) to use instead of a local "
        "cluster. Its workers must see the sources and the staging folder at the same paths.",
    )

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


def key_figures(s: dict) -> str:
    """The few numbers a person looks at first: `9660 records kept, 12 rejected (3 bad, ...)`."""
    rejected = s["rejected"]
    dup, contaminated = s["reasons"].get("exact_duplicate", 0), s["contaminated"]
    bad = rejected - dup - s["near_duplicates"] - contaminated
    return (
        f"{s['kept']} records kept, {rejected} rejected ({bad} bad, {dup} duplicates, "
        f"{s['near_duplicates']} near-duplicates, {contaminated} contaminated)"
    )
