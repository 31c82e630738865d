"""Reading published shards: every stage that trains on them, and the benchmarks, read this way.

table = load(shards_dir, "pretrain", "train")      # all shards of a kind and split, memory-mapped
batch = take_rows(table, [7, 3], ["input_ids"])    # {"input_ids": [[...], [...]]}, no whole-split copy
"""

import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from schemas.shards import SCHEMAS
from tasks import memory


def read_shard(path: Path) -> pa.Table:
    """One shard, memory-mapped (nothing is copied until used)."""
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def load(directory: Path, kind: str, split: str) -> pa.Table:
    """All shards of one kind and split, memory-mapped (nothing is copied until used)."""
    tables = list(shard_tables(directory, kind, split))
    return pa.concat_tables(tables) if tables else SCHEMAS[kind].empty_table()


def take_rows(table: pa.Table, rows: list[int], columns: list[str] | None = None) -> dict[str, list]:
    """`table.take(rows).to_pydict()` without its copy: on a table of several shards pyarrow's
    take first concatenates each column's chunks, so every training batch copied the whole
    split out of the memory-mapped shards (10x corpus: +91 MiB a batch, 100x: +700). The shard
    pages it read leave this process after it (`memory.drop_pages`)."""
    lookup = _lookup(table)
    picked, touched = [], set()
    for r in rows:
        if not 0 <= r < lookup.starts[-1]:
            raise IndexError(f"row {r} of {lookup.starts[-1]}")
        k = int(np.searchsorted(lookup.starts, r, "right")) - 1
        picked.append(lookup.batches[k].slice(r - int(lookup.starts[k]), 1))
        touched.add(k)
    out = pa.Table.from_batches(picked, schema=table.schema)
    out = (out.select(columns) if columns else out).to_pydict()
    memory.drop_pages(page for k in touched for page in lookup.pages[k])
    return out


class _Lookup(NamedTuple):
    batches: list[pa.RecordBatch]
    starts: np.ndarray  # first row of each batch, then the row count
    pages: list[list[tuple[int, int]]]  # each batch's file-mapped pages (memory.file_pages)


_LOOKUPS: dict[int, _Lookup] = {}  # by id(table), dropped when the table is freed


def _lookup(table: pa.Table) -> _Lookup:
    """Where each row of `table` is, worked out once per table (training asks every step)."""
    if id(table) not in _LOOKUPS:
        batches = table.to_batches()
        starts = np.cumsum([0, *(b.num_rows for b in batches)])
        pages = [memory.file_pages(buf for col in b.columns for buf in col.buffers() if buf) for b in batches]
        _LOOKUPS[id(table)] = _Lookup(batches, starts, pages)
        weakref.finalize(table, _LOOKUPS.pop, id(table), None)
    return _LOOKUPS[id(table)]


def shard_tables(directory: Path, kind: str, split: str) -> Iterator[pa.Table]:
    """The shards of one kind and split, one memory-mapped table each, in file order."""
    return map(read_shard, shard_files(directory, kind, split))


def shard_files(directory: Path, kind: str, split: str) -> list[Path]:
    return sorted(directory.glob(f"{kind}-{split}-*.arrow"))
