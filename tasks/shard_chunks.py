"""Tokenising the corpus for the shards stage, chunk by chunk: the part that runs in parallel.

Each (task, split) of the corpus is cut into chunks of `chunk_rows` records, and every chunk is
tokenised by its own job (a Prefect task on a thread pool or on Dask workers, see
flows/shards.py), which writes one Arrow file into the staging directory:

    out/.work/tok-sft-train-translation-000006000-000008000.arrow   records 6000..7999

A chunk file is written under a temporary name, fsynced and renamed, so its presence is its
completion marker: a rerun after a kill tokenises only the missing chunks. The stage then reads
the chunks back in plan order, so its shards depend neither on which worker ran which chunk nor
on the chunk size. Jobs are plain dicts of strings and numbers (they travel to other processes).
"""

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tokenizers import Tokenizer

from schemas.corpus import TASK_FIELDS
from schemas.instruct import InstructConfig
from schemas.shards import IGNORE_INDEX, TOKENIZED_SCHEMAS, ShardsConfig
from schemas.templates import PREFERENCE_COMPLETION, PREFERENCE_PROMPT, PRETRAIN
from schemas.tokens import token_id
from tasks import curriculum, instruct, memory, tokenizer_file
from tasks.artifacts import fsync_path
from tasks.faults import crash_point

SPLITS = ("train", "validation")
WORK = ".work"  # chunk files and shard markers; removed before the stage is published
SLICE = 256  # records tokenised (and held as Python lists) at a time inside a chunk job,
SLICE_BYTES = 1 << 17  # or fewer: about this much corpus data (~55 pretraining documents)


def encode_template(tok: Tokenizer, parts: tuple[str, ...], rows: list[dict]) -> list[list[int]]:
    """Token ids of `parts` for every row: fields encoded in one batch, specials by id.

    >>> encode_template(tok, ("<bos>", "{text}"), [{"text": "hi"}])
    [[1, 1234]]
    """
    encoded = {}
    for p in parts:
        if p.startswith("{"):
            texts = [row[p[1:-1]] for row in rows]
            encoded[p] = [e.ids for e in tok.encode_batch_fast(texts, add_special_tokens=False)]
    out = []
    for r in range(len(rows)):
        ids: list[int] = []
        for p in parts:
            ids += encoded[p][r] if p in encoded else [token_id(p)]
        out.append(ids)
    return out


def plan(cfg: ShardsConfig, inputs: dict[str, Path], out: Path) -> list[dict]:
    """The tokenising jobs: one per chunk of `chunk_rows` records of each task and split."""
    corpus = inputs["corpus"]
    kinds = [("pretrain", "pretrain")] + [("sft", t) for t in cfg.sft_tasks] + [("dpo", "preference")]
    jobs = []
    for split in SPLITS:
        for kind, task in kinds:
            n = split_size(corpus / f"{task}.parquet", split)
            for start in range(0, n, cfg.chunk_rows):
                stop = min(n, start + cfg.chunk_rows)
                jobs.append(
                    {
                        "kind": kind,
                        "task": task,
                        "split": split,
                        "start": start,
                        "stop": stop,
                        # the record range is in the name: a rerun with another chunk_rows
                        # (a runtime setting) never mistakes one chunk for another
                        "file": f"tok-{kind}-{split}-{task}-{start:09d}-{stop:09d}.arrow",
                        "corpus": str(corpus),
                        "tokenizer": str(inputs["tokenizer"]),
                        "work": str(out / WORK),
                        "column": cfg.curriculum.column if cfg.curriculum else None,
                        "instruct": cfg.instruct.model_dump(mode="json"),
                    }
                )
    return jobs


def split_size(path: Path, split: str) -> int:
    """Records of one split in a corpus table (0 when the task has no table)."""
    if not path.exists():
        return 0
    return pq.read_table(path, columns=["split"], filters=[("split", "=", split)]).num_rows


def tokenize_chunk(job: dict) -> str:
    """Tokenise one chunk into `<work>/<file>` unless a finished file is already there."""
    final = Path(job["work"]) / job["file"]
    if final.exists():
        return job["file"]
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}")
    schema = TOKENIZED_SCHEMAS[job["kind"]]
    where = (Path(job["corpus"]), job["task"], job["split"], job["start"], job["stop"])
    records = _record_slices(*where, _job_columns(job))
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for rows in records:  # a slice's records and token lists in Python at a time
            writer.write_table(pa.Table.from_pylist(_tokenize(job, rows), schema=schema))
    fsync_path(tmp)
    os.replace(tmp, final)
    memory.release()
    crash_point("shards", f"after_{job['file']}")
    return job["file"]


def _job_columns(job: dict) -> list[str]:
    """What a job reads of its records: each becomes a Python dict (under the GIL), and the
    columns no template uses (source, group, ...) cost a quarter of that (5x corpus, one core:
    reading every job's records 0.95 -> 0.74 CPU s)."""
    columns = ["id", "weight", *TASK_FIELDS[job["task"]]]
    if job["column"]:  # a curriculum score; file and line name a bad one
        columns += [job["column"], "file", "line"]
    return list(dict.fromkeys(columns))


def _tokenize(job: dict, records: list[dict]) -> list[dict]:
    tok = _tokenizer(job["tokenizer"])
    if job["kind"] == "sft":
        cfg = InstructConfig.model_validate(job["instruct"])
        return sft_examples(tok, job["task"], records, job["column"], job["split"], cfg)
    return {"pretrain": pretrain_docs, "dpo": dpo_examples}[job["kind"]](
        tok, job["task"], records, job["column"]
    )


def read_chunks(jobs: list[dict], kind: str, split: str) -> list[dict]:
    """The tokenised records of one kind and split, in plan order ("score" only where set)."""
    chunks = Chunks(jobs, kind, split)
    return chunks.take(range(len(chunks)))


class Chunks:
    """The tokenised records of one kind and split, left in their chunk files (plan order):
    lengths come from the list offsets alone, rows are read when a shard needs them, each file
    memory-mapped only while it is read, so memory holds one shard's rows, not the corpus."""

    def __init__(self, jobs: list[dict], kind: str, split: str):
        self.paths = [Path(j["work"]) / j["file"] for j in jobs if (j["kind"], j["split"]) == (kind, split)]
        counts = []
        for path in self.paths:
            with pa.memory_map(str(path)) as src:
                counts.append(pa.ipc.open_file(src).read_all().num_rows)  # mapped: nothing is copied
        self.starts = np.cumsum([0, *counts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def lengths(self) -> np.ndarray:
        """Each record's length as the stage counts it: its input_ids, or a DPO pair's prompt
        plus its longer completion (what a batch pads to)."""
        out = [np.empty(0, np.int64)]
        for path in self.paths:
            with pa.memory_map(str(path)) as src:
                table = pa.ipc.open_file(src).read_all()
                n = {
                    c: pc.list_value_length(table.column(c)).to_numpy()
                    for c in table.column_names
                    if c.endswith("_ids")
                }
                out.append(
                    n["input_ids"]
                    if "input_ids" in n
                    else n["prompt_ids"] + np.maximum(n["chosen_ids"], n["rejected_ids"])
                )
        return np.concatenate(out).astype(np.int64)

    def take(self, indices, columns: list[str] | None = None) -> list[dict]:
        """The records at these plan-order positions, as dicts ("score" only where set), with
        all their columns or these."""
        idx = np.asarray(indices, np.int64)
        file_of = np.searchsorted(self.starts, idx, "right") - 1
        out: list[dict] = [{}] * len(idx)
        for f in np.unique(file_of).tolist():
            where = np.flatnonzero(file_of == f)
            with pa.memory_map(str(self.paths[f])) as src:
                table = pa.ipc.open_file(src).read_all()
                table = table.select(columns) if columns else table
                rows = table.take(pa.array(idx[where] - self.starts[f])).to_pylist()
            for w, r in zip(where.tolist(), rows, strict=True):
                out[w] = {k: v for k, v in r.items() if not (k == "score" and v is None)}
        return out


@functools.lru_cache(maxsize=4)
def _tokenizer(directory: str) -> Tokenizer:
    return tokenizer_file.load(Path(directory))


def _record_slices(
    corpus: Path, task: str, split: str, start: int, stop: int, columns: list[str] | None = None
) -> Iterator[list[dict]]:
    """Records start..stop-1 of one split, a slice at a time (training records with their
    mixing weights applied), reading only the row groups that hold them, a batch at a time: a
    chunk job holds a slice of records, not its chunk. `columns`: only those (default: all)."""
    path = corpus / f"{task}.parquet"
    stat = path.stat()
    counts = _split_counts(str(path), split, stat.st_mtime_ns, stat.st_size)
    pf, seen = memory.parquet(path), 0  # seen: records of the split before the current batch
    if columns:  # a column the table lacks reads as None (a missing curriculum score is named)
        columns = [c for c in columns if c in pf.schema_arrow.names]
    for group, n in enumerate(counts):
        if seen < stop and start < seen + n:
            for batch in pf.iter_batches(
                batch_size=_slice_rows(pf.metadata.row_group(group)),
                row_groups=[group],
                columns=columns and ["split", *columns],
            ):
                batch = batch.filter(pc.equal(batch.column("split"), split))
                batch = batch.select(columns) if columns else batch
                lo, hi = max(start, seen), min(stop, seen + batch.num_rows)
                if lo < hi:
                    rows = batch.slice(lo - seen, hi - lo).to_pylist()
                    yield weighted(rows) if split == "train" else rows
                seen += batch.num_rows
        else:
            seen += n


def _slice_rows(group: pq.RowGroupMetaData) -> int:
    """Records of a row group to tokenise at a time: SLICE, or fewer of long records (a slice
    of 256 pretraining documents held ~60 MB while tokenised, two jobs at once twice that)."""
    return max(1, min(SLICE, SLICE_BYTES * group.num_rows // max(group.total_byte_size, 1)))


@functools.lru_cache(maxsize=8)
def _split_counts(path: str, split: str, mtime_ns: int, size: int) -> tuple[int, ...]:
    """Records of one split in each row group of a corpus table (mtime and size key the cache)."""
    pf = memory.parquet(path)
    return tuple(
        pc.sum(pc.equal(pf.read_row_group(g, columns=["split"]).column("split"), split)).as_py() or 0
        for g in range(pf.num_row_groups)
    )


def read_split(corpus: Path, task: str, split: str) -> list[dict]:
    """Every record of one split (training records with their mixing weights applied)."""
    path = corpus / f"{task}.parquet"
    if not path.exists():
        return []
    return [r for rows in _record_slices(corpus, task, split, 0, split_size(path, split)) for r in rows]


def weighted(rows: list[dict]) -> list[dict]:
    """Apply each source's mixing weight to training records (validation stays as it is).

    Weight 2.5 keeps every record twice and a third time for half of them, 0.5 keeps half;
    which ones is decided by a hash of the id, so it is deterministic (and the same whether
    applied to a whole split or chunk by chunk). Copies get `#k` ids.

    >>> [r["id"] for r in weighted([{"id": "a", "weight": 2.0}, {"id": "b", "weight": 1.0}])]
    ['a', 'a#2', 'b']
    """
    out = []
    for r in rows:
        w = r.get("weight", 1.0)
        fraction = instruct.hash_unit(r["id"])
        copies = int(w) + (fraction < w - int(w))
        out += [r if k == 0 else {**r, "id": f"{r['id']}#{k + 1}"} for k in range(copies)]
    return out


def pretrain_docs(tok: Tokenizer, task: str, rows: list[dict], column: str | None) -> list[dict]:
    docs = encode_template(tok, PRETRAIN.prompt + PRETRAIN.answer, rows)
    return [_scored({"id": r["id"], "input_ids": d}, r, column) for r, d in zip(rows, docs, strict=True)]


def sft_examples(
    tok: Tokenizer, task: str, rows: list[dict], column: str | None, split: str, cfg: InstructConfig
) -> list[dict]:
    """Prompt + answer ids, labels -100 on the prompt, in the task-token and instruct formats
    (which records get which: tasks.instruct.formats); with `column`, that corpus value as "score"."""
    variants = instruct.formats(rows, task, split, cfg)
    out: list[dict] = [{}] * len(variants)
    for fmt in instruct.FORMATS:  # encoded in one batch per format, kept in record order
        where = [i for i, (f, _) in enumerate(variants) if f == fmt]
        records = [variants[i][1] for i in where]
        template = instruct.template(task, fmt)
        prompts = encode_template(tok, template.prompt, records)
        answers = encode_template(tok, template.answer, records)
        for i, r, p, a in zip(where, records, prompts, answers, strict=True):
            example = {"id": r["id"], "task": task, "format": fmt, "input_ids": p + a}
            out[i] = _scored({**example, "labels": [IGNORE_INDEX] * len(p) + a}, r, column)
    return out


def dpo_examples(tok: Tokenizer, task: str, rows: list[dict], column: str | None) -> list[dict]:
    """The prompt tokenised once, shared by both completions (no merge across the boundary)."""
    prompts = encode_template(tok, PREFERENCE_PROMPT, rows)
    chosen = encode_template(tok, PREFERENCE_COMPLETION, [{"completion": r["chosen"]} for r in rows])
    rejected = encode_template(tok, PREFERENCE_COMPLETION, [{"completion": r["rejected"]} for r in rows])
    return [
        _scored({"id": r["id"], "prompt_ids": p, "chosen_ids": c, "rejected_ids": j}, r, column)
        for r, p, c, j in zip(rows, prompts, chosen, rejected, strict=True)
    ]


def _scored(example: dict, record: dict, column: str | None) -> dict:
    return {**example, "score": curriculum.column_value(record, column)} if column else example
