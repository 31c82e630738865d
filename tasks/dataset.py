"""A PyTorch dataset over published shards: memory-mapped, shuffled by seed, resumable exactly.

    ds = ShardDataset(shards_dir, "pretrain", "train", seed=0)
    for sample in ds:               # {"input_ids": int32 array (a view into the mapped file), ...}
        ...
    state = ds.state_dict()         # {"position": 1234, "seed": 0, "rows": 952, ...}
    again = ShardDataset(shards_dir, "pretrain", "train", seed=0)
    again.load_state_dict(state)    # the next sample is sample 1234 of the same stream

The stream is an endless sequence of epochs; epoch e visits every row once in a permutation
seeded by (seed, e), so sample k is row `order(k // rows)[k % rows]` and the one integer
`position` is the whole data state. `shuffle=False` keeps the stored order (a curriculum's
easy -> hard order, see tasks.shards). Nothing is copied from the shards until a sample's
arrays are used: list columns are numpy views of the memory-mapped Arrow buffers.
"""

import bisect
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from schemas.shards import IGNORE_INDEX
from schemas.tokens import PAD, token_id

# Padding value per column when a batch of unequal lengths is stacked.
PAD_VALUES = {"labels": IGNORE_INDEX, "position_ids": 0}


class _Segment:
    """One record batch of one shard: list columns as (values, offsets), others as arrays."""

    def __init__(self, batch: pa.RecordBatch):
        self.lists, self.numbers, self.strings = [], [], []
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            if pa.types.is_list(col.type):
                self.lists.append((name, col.values.to_numpy(), col.offsets.to_numpy()))
            elif pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
                self.numbers.append((name, col.to_numpy()))
            else:
                self.strings.append((name, col))  # converted one value at a time

    def row(self, i: int) -> dict:
        out = {name: values[offsets[i] : offsets[i + 1]] for name, values, offsets in self.lists}
        for name, col in self.numbers:
            out[name] = col[i]
        for name, col in self.strings:
            out[name] = col[i].as_py()
        return out


class ShardDataset(torch.utils.data.IterableDataset):
    """The samples of one kind and split of a shards artifact (see the module docstring)."""

    def __init__(self, directory: Path, kind: str, split: str, seed: int = 0, shuffle: bool = True):
        self.files = sorted(Path(directory).glob(f"{kind}-{split}-*.arrow"))
        if not self.files:
            raise FileNotFoundError(f"{directory}: no {kind}-{split}-*.arrow shards")
        self.seed, self.shuffle, self.position = seed, shuffle, 0
        self._segments: list[_Segment] = []
        self._starts: list[int] = []
        rows = 0
        for f in self.files:
            reader = pa.ipc.open_file(pa.memory_map(str(f)))
            for b in range(reader.num_record_batches):
                batch = reader.get_batch(b)
                self._starts.append(rows)
                self._segments.append(_Segment(batch))
                rows += batch.num_rows
        self.rows = rows
        self._epoch, self._order = -1, np.arange(0)

    def __len__(self) -> int:
        return self.rows

    def row(self, i: int) -> dict:
        """Row i in stored order."""
        if not 0 <= i < self.rows:
            raise IndexError(f"row {i} of {self.rows}")
        s = bisect.bisect_right(self._starts, i) - 1
        return self._segments[s].row(i - self._starts[s])

    def order(self, epoch: int) -> np.ndarray:
        """Row indices of one epoch: a permutation seeded by (seed, epoch), or stored order."""
        if epoch != self._epoch:
            self._epoch = epoch
            if self.shuffle:
                self._order = np.random.default_rng([self.seed, epoch]).permutation(self.rows)
            else:
                self._order = np.arange(self.rows)
        return self._order

    def sample(self, k: int) -> dict:
        """Sample k of the stream (any k >= 0; does not move the position)."""
        epoch, i = divmod(k, self.rows)
        return self.row(int(self.order(epoch)[i]))

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            raise ValueError(
                "ShardDataset keeps its position in the iterating process: use DataLoader(num_workers=0) "
                "(reads are memory-mapped and cost microseconds)"
            )
        starts, segments = self._starts, self._segments
        while True:
            epoch, start = divmod(self.position, self.rows)
            for i in self.order(epoch)[start:].tolist():
                s = bisect.bisect_right(starts, i) - 1
                sample = segments[s].row(i - starts[s])
                self.position += 1  # counted before yielding: a saved state resumes after this sample
                yield sample

    def take(self, n: int) -> list[dict]:
        """The next n samples (moves the position)."""
        it = iter(self)
        return [next(it) for _ in range(n)]

    def batch(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """Rows stacked into long tensors; shorter rows padded (<pad>, labels -100, positions 0)."""
        return collate([self.row(i) for i in rows])

    def state_dict(self) -> dict:
        return {
            "position": self.position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "rows": self.rows,
            "files": [f.name for f in self.files],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue at `state["position"]`; refuses a state saved over other shards or another seed."""
        mine = self.state_dict()
        differ = [k for k in ("seed", "shuffle", "rows", "files") if state.get(k) != mine[k]]
        if differ:
            raise ValueError(
                "data state does not belong to these shards: "
                + ", ".join(f"{k} {state.get(k)!r} != {mine[k]!r}" for k in differ)
            )
        self.position = int(state["position"])


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """List columns of the samples as (batch, longest) long tensors, right-padded.

    Unpacked rows (no position_ids) also get an attention_mask: 1 on tokens, 0 on padding.
    Packed rows need none: the model derives the block-diagonal mask from the position ids.
    """
    out = {}
    for name, first in samples[0].items():
        if not isinstance(first, np.ndarray):
            continue
        rows = [s[name] for s in samples]
        width = max(len(r) for r in rows)
        if all(len(r) == width for r in rows):  # packed rows: one copy, no padding
            out[name] = torch.from_numpy(np.stack(rows).astype(np.int64))
            continue
        block = np.full((len(rows), width), PAD_VALUES.get(name, token_id(PAD)), dtype=np.int64)
        for r, row in enumerate(rows):
            block[r, : len(row)] = row
        out[name] = torch.from_numpy(block)
    if "input_ids" in out and "position_ids" not in out:
        lengths = torch.tensor([len(s["input_ids"]) for s in samples])
        out["attention_mask"] = (torch.arange(out["input_ids"].shape[1])[None] < lengths[:, None]).long()
    return out
