"""The shard dataset: memory-mapped rows, seeded epochs, and resume at an exact sample."""

import os

import numpy as np
import pyarrow as pa
import pytest

from schemas.shards import IGNORE_INDEX
from tasks import shard_reading, shards
from tasks.dataset import ShardDataset


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """Pretrain rows in 4 shards and SFT rows of unequal lengths."""
    out = tmp_path_factory.mktemp("ds")
    rng = np.random.default_rng(0)
    docs = [[1, *rng.integers(11, 99, int(rng.integers(3, 40))).tolist(), 2] for _ in range(120)]
    rows, _ = shards.pack_pretrain(docs, 32)
    shards.write_shards(rows, "pretrain", "train", out, rows_per_shard=30)
    sft = [
        {"id": f"e{i}", "task": "qa", "input_ids": [1] * (3 + i % 5), "labels": [IGNORE_INDEX] * (3 + i % 5)}
        for i in range(10)
    ]
    sft = [{**r, "length": len(r["input_ids"]), "n_loss": 0, "bucket": 0} for r in sft]
    shards.write_shards(sft, "sft", "train", out, rows_per_shard=4)
    return out


def ids(samples: list[dict]) -> list[list[int]]:
    return [s["input_ids"].tolist() for s in samples]


def test_rows_are_the_stored_rows(shard_dir):
    table = shard_reading.load(shard_dir, "pretrain", "train")
    ds = ShardDataset(shard_dir, "pretrain", "train")
    assert len(ds) == table.num_rows and len(ds.files) == 4
    for i in (0, len(ds) // 2, len(ds) - 1):
        want = table.slice(i, 1).to_pylist()[0]
        got = ds.row(i)
        assert {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in got.items()} == want


def test_each_epoch_is_a_seeded_permutation(shard_dir):
    ds = ShardDataset(shard_dir, "pretrain", "train", seed=3)
    n = len(ds)
    first = ds.take(n)
    assert sorted(map(tuple, ids(first))) == sorted(map(tuple, ids([ds.row(i) for i in range(n)])))
    assert ids(first) != ids(ds.take(n))  # epoch 1 has its own order
    assert ids(first) == ids(ShardDataset(shard_dir, "pretrain", "train", seed=3).take(n))
    assert ids(first) != ids(ShardDataset(shard_dir, "pretrain", "train", seed=4).take(n))
    stored = ShardDataset(shard_dir, "pretrain", "train", shuffle=False).take(n)
    assert ids(stored) == ids([ds.row(i) for i in range(n)])


@pytest.mark.parametrize("k", [0, 5, 29])
def test_resume_at_a_saved_position_continues_the_same_stream(shard_dir, k):
    n = len(ShardDataset(shard_dir, "pretrain", "train"))
    total = 2 * n + 3  # crosses two epoch boundaries
    uninterrupted = ShardDataset(shard_dir, "pretrain", "train", seed=7).take(total)
    first = ShardDataset(shard_dir, "pretrain", "train", seed=7)
    head = first.take(k)
    state = first.state_dict()
    resumed = ShardDataset(shard_dir, "pretrain", "train", seed=7)
    resumed.load_state_dict(state)
    assert ids(head + resumed.take(total - k)) == ids(uninterrupted)


def test_a_state_from_other_shards_or_seed_is_refused(shard_dir):
    state = ShardDataset(shard_dir, "pretrain", "train", seed=1).state_dict()
    with pytest.raises(ValueError, match="seed 1 != 2"):
        ShardDataset(shard_dir, "pretrain", "train", seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="rows"):
        ShardDataset(shard_dir, "sft", "train", seed=1).load_state_dict(state)
    with pytest.raises(FileNotFoundError, match="dpo-train"):
        ShardDataset(shard_dir, "dpo", "train")


def test_batches_pad_unequal_rows(shard_dir):
    ds = ShardDataset(shard_dir, "sft", "train")
    batch = ds.batch([0, 4])  # lengths 3 and 7
    assert batch["input_ids"].shape == (2, 7)
    assert batch["labels"][0, 3:].tolist() == [IGNORE_INDEX] * 4
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0], [1] * 7]
    packed = ShardDataset(shard_dir, "pretrain", "train").batch([0, 1])
    assert packed["input_ids"].shape == (2, 32) and "attention_mask" not in packed


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
