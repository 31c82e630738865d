"""Pass one of the corpus stage in jobs: the per-record work that needs nothing but the record.

Each source is cut into pieces (`corpus_read.parts`: a file, or a line range of about
`corpus.chunk_bytes` of an uncompressed JSONL file, or a run of row groups of a Parquet file), and each piece is one job (a Prefect task
on a thread pool or on Dask workers, see flows/corpus.py) that reads its records, admits or
rejects each one (`admit`: id, field mapping, normalisation, split) and computes what dedup
and decontamination need of it (keys, MinHash signature, validation n-grams). It writes one
Arrow file into the staging directory, a row per input record in input order:

    out/.spool/chunk-000003.arrow   rejects: file, line, reason, their rejects.jsonl line
                                    kept: the table row, excerpt, dedup keys, signature, n-grams

written under a temporary name, fsynced and renamed. The stage reads the chunks back in job
order and does only what depends on the order (ordinals, ranks, the dedup replay), so its
output depends neither on which worker ran which job nor on the piece size. Jobs are plain
dicts of strings and numbers, the config included (they travel to other processes).
"""

import json
import os
from pathlib import Path

import pyarrow as pa

from schemas.corpus import TASK_FIELDS, CorpusConfig, Source, table_schema
from tasks.artifacts import DiskFull, disk_full, fsync_path
from tasks.corpus_clean import Reject, fields, group_key, pieces, record_id, split_of
from tasks.corpus_dedup import Keys, validation_grams
from tasks.corpus_read import Raw, SourceError, parts, read_part

BATCH = 1024  # records per Arrow batch of a chunk file (what the stage holds of a chunk at once)


class ChunkError(RuntimeError):
    """A pass-one job failed; the message names the source, the file and the piece."""


def plan(cfg: CorpusConfig, work: Path) -> list[dict]:
    """The pass-one jobs, in input order: one per piece of every source."""
    config = cfg.model_dump(mode="json")
    jobs = []
    for i, src in enumerate(cfg.sources):
        for part in parts(src, cfg.chunk_bytes):
            jobs.append(
                {
                    **part,
                    "source": i,
                    "chunk": f"chunk-{len(jobs):06d}.arrow",
                    "work": str(work),
                    "config": config,
                }
            )
    return jobs


def chunk_schema(task: str) -> pa.Schema:
    """A chunk file's rows: the table's columns (null for rejects) and what the stage needs besides."""
    table = [f.with_nullable(True) for f in table_schema(task)]
    extra = [
        pa.field("reason", pa.string()),  # "" for a kept record
        # a reject's line of rejects.jsonl, and a kept record's excerpt: UTF-8 with lone
        # surrogates passed through (text read with surrogateescape), so binary
        pa.field("reject", pa.binary()),
        pa.field("excerpt", pa.binary()),
        pa.field("keys", pa.list_(pa.uint64())),  # corpus_dedup.Keys
        pa.field("sig", pa.binary()),  # MinHash signature, uint32 values
        pa.field("grams", pa.list_(pa.uint64())),  # validation records' n-grams (decontamination)
    ]
    return pa.schema(table + extra)


def read_chunk(job: dict) -> str:
    """Read, admit and key one piece into `<work>/<chunk>`; returns the chunk's file name."""
    cfg = CorpusConfig.model_validate(job["config"])
    src = cfg.sources[job["source"]]
    final = Path(job["work"]) / job["chunk"]
    tmp = final.with_name(f".{final.name}.{os.getpid()}")
    schema, record = chunk_schema(src.task), Record(cfg, src, job.get("key"))
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            rows = []
            for raw in read_part(src, job):
                rows += record(raw)
                if len(rows) >= BATCH:
                    writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
                    rows = []
            if rows:
                writer.write_batch(pa.RecordBatch.from_pylist(rows, schema=schema))
    except SourceError:
        raise  # names the source already
    except Exception as e:
        tmp.unlink(missing_ok=True)
        if disk_full(e):  # the spool's disk, not the source being read
            raise DiskFull(tmp.parent) from e
        raise ChunkError(f"corpus pass-one job {describe(job)} failed: {type(e).__name__}: {e}") from e
    fsync_path(tmp)
    os.replace(tmp, final)
    return final.name


def describe(job: dict) -> str:
    """The job's source and piece: `translation source data/raw/t.jsonl, bytes 0-1048576 (from line 1)`."""
    task = job["config"]["sources"][job["source"]]["task"]
    where = f"{task} source {job['label']}"
    if "start" in job:
        stop = "end" if job["stop"] is None else job["stop"]
        where += f", bytes {job['start']}-{stop} (from line {job['line']})"
    return where


def cut_short(job: dict, last_line: int | None, last_reason: str | None) -> bool:
    """Whether a piece of Parquet row groups stopped before its planned rows (its last chunk
    row is not of its last row; a long document's pieces share their row): a read error ends
    it with an `unreadable_file` reject, in place of the rows it could not read."""
    return last_line != job["line"] + job["rows"] - 1 or last_reason == "unreadable_file"


class Record:
    """One raw record -> its chunk row: admitted with its derived data, or rejected with its line."""

    def __init__(self, cfg: CorpusConfig, src: Source, file_key: str | None = None):
        self.cfg, self.src, self.keys, self.file_key = cfg, src, Keys(cfg), file_key

    def __call__(self, raw: Raw) -> list[dict]:
        """The raw record's chunk rows: one, or a pretraining document longer than max_chars
        cut into pieces (`<id>#part<k>`, each with the document's file, line and split), so
        that dedup and decontamination judge each piece, not the whole document."""
        rid, row, reason, detail = admit(self.src, raw, self.cfg, self.file_key)
        if reason:
            line = reject_line(raw, self.src.task, rid, reason, detail)
            return [{"file": raw.file, "line": raw.line, "reason": reason, "reject": encode(line)}]
        if self.src.task == "pretrain" and len(row["text"]) > self.cfg.max_chars:
            parts = pieces(row["text"], self.cfg.max_chars)
            return [
                self.kept({**row, "id": f"{rid}#part{k}", "text": text}, text[:200])
                for k, text in enumerate(parts, start=1)
            ]
        return [self.kept(row, raw.excerpt[:200])]

    def kept(self, row: dict, excerpt: str) -> dict:
        texts = [row[f] for f in TASK_FIELDS[self.src.task]]
        keys, sig = self.keys(row["id"], texts)
        n = self.cfg.decontam_ngram
        grams = validation_grams(texts, n) if n is not None and row["split"] == "validation" else None
        extra = {"reason": "", "excerpt": encode(excerpt), "keys": keys, "grams": grams}
        return {**row, **extra, "sig": None if sig is None else sig.tobytes()}


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def admit(
    src: Source, raw: Raw, cfg: CorpusConfig, file_key: str | None = None
) -> tuple[str, dict | None, str, str]:
    """(id, table row, reason, detail): the row is None and the reason set for a reject.
    Duplicates are found later, over all records (`Dedup.decide`). Generated ids are made of
    `file_key` (the file's content hash; a hub dataset: its name)."""
    if raw.record is None:
        return "", None, raw.reason, raw.detail
    rid = ""
    try:
        rid = record_id(src, raw.record, file_key or raw.file, raw.line)
        values = fields(raw.record, src, cfg)
        group = group_key(raw.record, src, rid)
    except Reject as r:
        return rid, None, r.reason, r.detail
    source = raw.record.get(src.source_field)
    row = {
        "id": rid,
        "source": source if isinstance(source, str) and source.strip() else src.path,
        "file": raw.file,
        "line": raw.line,
        "split": split_of(group, cfg),
        "group": group,
        "weight": src.weight,
        **values,
    }
    return rid, row, "", ""


def reject_line(raw: Raw, task: str, rid: str, reason: str, detail: str) -> str:
    record = {
        "file": raw.file,
        "line": raw.line,
        "id": rid,
        "task": task,
        "reason": reason,
        "detail": detail,
        "excerpt": raw.excerpt[:200],
    }
    return json.dumps(record, ensure_ascii=False) + "\n"
