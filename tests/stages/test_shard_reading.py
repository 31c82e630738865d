"""Reading shards as training does: rows taken shard by shard, their pages dropped after."""

import os

import numpy as np
import pyarrow as pa
import pytest

from tasks import shard_reading, shards


def test_load_reads_every_shard_of_one_kind_and_split_in_file_order(tmp_path):
    rng = np.random.default_rng(0)
    docs = [[1, *rng.integers(11, 99, int(rng.integers(3, 40))).tolist(), 2] for _ in range(120)]
    rows, _ = shards.pack_pretrain(docs, 32)
    shards.write_shards(rows, "pretrain", "train", tmp_path, rows_per_shard=30)
    shards.write_shards(rows[:5], "pretrain", "validation", tmp_path, rows_per_shard=30)
    assert len(shard_reading.shard_files(tmp_path, "pretrain", "train")) == -(-len(rows) // 30) > 1
    table = shard_reading.load(tmp_path, "pretrain", "train")
    assert table["input_ids"].to_pylist() == [r["input_ids"] for r in rows]
    assert shard_reading.load(tmp_path, "dpo", "train").num_rows == 0  # no shards: an empty table


def test_take_rows_across_shards_equals_arrow_take_without_concatenating():
    """Training batches come from tables of many memory-mapped shards: rows are taken per shard
    (pyarrow's take would first copy every chunk of the split), in the order asked."""
    parts = [
        pa.table({"input_ids": [[i, i + 1] for i in range(k, k + 3)], "n": list(range(k, k + 3))})
        for k in (0, 3, 6)
    ]
    table = pa.concat_tables(parts)
    rows = [7, 0, 4, 4, 2, 8]
    assert shard_reading.take_rows(table, rows) == table.take(rows).to_pydict()
    assert shard_reading.take_rows(table, rows, ["n"]) == {"n": rows}
    with pytest.raises(IndexError, match="row 9 of 9"):
        shard_reading.take_rows(table, [9])


def rss_file_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux: /proc/self/status, madvise")
def test_rows_taken_leave_their_shard_pages_and_ordinary_memory_alone(tmp_path):
    """A long run touches every shard page; the pages a batch read must leave the process after
    it (RSS bounded by a batch, not by the corpus), without touching memory that is not a
    read-only file mapping (MADV_DONTNEED would zero it)."""
    width, n = 1024, 8192  # 4 KB rows, a 32 MiB shard
    values = pa.array(np.arange(width * n, dtype=np.int32) % 997)
    ids = pa.ListArray.from_arrays(pa.array(np.arange(0, width * n + 1, width, dtype=np.int32)), values)
    with pa.OSFile(str(tmp_path / "pretrain-train-00000.arrow"), "wb") as sink:
        with pa.ipc.new_file(sink, pa.schema([("input_ids", ids.type)])) as writer:
            writer.write_table(pa.table({"input_ids": ids}))
    table = shard_reading.load(tmp_path, "pretrain", "train")
    before = rss_file_mib()
    for start in range(0, n, 512):  # every 8th row, 64 rows a batch: faults map the whole file
        rows = list(range(start, start + 512, 8))
        got = shard_reading.take_rows(table, rows)["input_ids"]
        assert [g[0] for g in got] == [(r * width) % 997 for r in rows]
    assert rss_file_mib() - before < 8
    in_memory = pa.table({"input_ids": [[7] * 4096] * 64})  # heap buffers: never dropped
    assert shard_reading.take_rows(in_memory, [0, 63])["input_ids"] == [[7] * 4096] * 2
    assert in_memory["input_ids"][5].as_py() == [7] * 4096
