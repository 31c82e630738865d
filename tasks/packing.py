"""Packing and bucketing: the pure arithmetic of laying examples out in sequences and batches.

Pretraining documents are packed best-fit-decreasing into rows of `seq_len` tokens. A row of
seq_len 12 holding documents A (5 tokens) and B (4 tokens), then padding:

    input_ids     A0 A1 A2 A3 A4 B0 B1 B2 B3 p  p  p
    position_ids   0  1  2  3  4  0  1  2  3 0  1  2     <- restart at every document
    labels         -  A1 A2 A3 A4 -  B1 B2 B3 -  -  -    <- "-" is -100: no loss on a
                                                            document's first token or padding
    doc_lens      [5, 4, 3]                               <- padding is its own segment
    attention (block-diagonal causal; x = may attend):
              A0 A1 A2 A3 A4 B0 B1 B2 B3
        A4     x  x  x  x  x
        B2                    x  x  x

The model derives the block-diagonal mask from the position ids (transformers detects packed
sequences when no attention mask is passed and the cache is off; tasks.attention builds it for
each attention kernel); tests/stages/test_pretrain.py proves that each document's logits equal those of
the document run alone.
"""

import array
import bisect
import random

import numpy as np

SORT_WINDOW = 50  # batches per length-sorted window in bucket_batches
BLOCK = 1 << 16  # items best_fit_decreasing turns into Python ints at a time


def split_long(lengths, seq_len: int) -> np.ndarray:
    """(doc index, start, length) rows: documents longer than seq_len become several chunks.

    >>> split_long([3, 7], 4).tolist()
    [[0, 0, 3], [1, 0, 4], [1, 4, 3]]
    """
    lengths = np.asarray(lengths, np.int64)
    counts = -(-lengths // seq_len)  # pieces per document (none for an empty one)
    doc = np.repeat(np.arange(len(lengths)), counts)
    start = (np.arange(len(doc)) - np.repeat(np.cumsum(counts) - counts, counts)) * seq_len
    return np.stack([doc, start, np.minimum(seq_len, lengths[doc] - start)], axis=1)


class Bins:
    """Bins of item numbers, stored flat: bin b is `members[starts[b]:starts[b + 1]]`, its items
    in the order they went in. 8 bytes an item and a bin, where lists of Python ints took ~100."""

    def __init__(self, members: np.ndarray, starts: np.ndarray):
        self.members, self.starts = members, starts

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, b):
        """One bin's members (an array), or a slice of the bins (a Bins)."""
        if isinstance(b, slice):
            lo, hi, _ = b.indices(len(self))
            hi = max(lo, hi)
            return Bins(
                self.members[self.starts[lo] : self.starts[hi]], self.starts[lo : hi + 1] - self.starts[lo]
            )
        return self.members[self.starts[b] : self.starts[b + 1]]

    def __iter__(self):
        return (self[b] for b in range(len(self)))

    def take(self, order) -> "Bins":
        """These bins, in this order."""
        order = np.asarray(order, np.int64)
        sizes = np.diff(self.starts)[order]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        at = np.repeat(self.starts[order] - starts[:-1], sizes) + np.arange(starts[-1])
        return Bins(self.members[at], starts)

    @classmethod
    def of(cls, lists: list[list[int]]) -> "Bins":
        """Bins holding these lists of item numbers."""
        sizes = [len(x) for x in lists]
        members = np.fromiter((i for x in lists for i in x), np.int64, sum(sizes))
        return cls(members, np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]))

    def tolist(self) -> list[list[int]]:
        return [members.tolist() for members in self]


def best_fit_decreasing(sizes, capacity: int) -> Bins:
    """Bins of item indices; each item goes to the fullest bin that still has room.

    Bins are indexed by their free room, and a bit mask of the rooms in use finds the
    tightest fit with one shift: 1M items pack in about a second.

    >>> best_fit_decreasing([5, 3, 4, 2, 6], 8).tolist()
    [[4, 3], [0, 1], [2]]
    """
    sizes = np.asarray(sizes, np.int64)
    order = np.argsort(-sizes, kind="stable")  # largest first; ties keep their order
    if len(order) and sizes[order[0]] > capacity:
        raise ValueError(f"item {order[0]} has size {sizes[order[0]]} > capacity {capacity}; split it first")
    bin_of = array.array("q")  # the bin of each item, in `order`
    by_room: list[list[int]] = [[] for _ in range(capacity + 1)]  # free room -> bins with it
    in_use, n_bins = 0, 0  # bit r of in_use set <=> some bin has exactly r free
    for block in range(0, len(order), BLOCK):  # Python ints for a block of items at a time
        for size in sizes[order[block : block + BLOCK]].tolist():
            fits = in_use >> size
            if fits:
                room = size + (fits & -fits).bit_length() - 1
                b = by_room[room].pop()
                if not by_room[room]:
                    in_use &= ~(1 << room)
            else:
                room, b, n_bins = capacity, n_bins, n_bins + 1
            bin_of.append(b)
            room -= size
            if room:
                by_room[room].append(b)
                in_use |= 1 << room
    in_order = np.asarray(bin_of, np.int64)
    starts = np.concatenate([[0], np.cumsum(np.bincount(in_order, minlength=n_bins))])
    return Bins(order[np.argsort(in_order, kind="stable")], starts)


def first_fit_decreasing(sizes: list[int], capacity: int) -> list[list[int]]:
    """Baseline: each item goes to the first bin with room (benchmarks only; O(n * bins))."""
    bins: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(sizes)), key=sizes.__getitem__, reverse=True):
        b = next((k for k, room in enumerate(free) if room >= sizes[i]), None)
        if b is None:
            bins.append([])
            free.append(capacity)
            b = len(bins) - 1
        bins[b].append(i)
        free[b] -= sizes[i]
    return bins


def next_fit(sizes: list[int], capacity: int) -> list[list[int]]:
    """Baseline: greedy in corpus order, a new bin whenever the next item does not fit."""
    bins: list[list[int]] = [[]]
    room = capacity
    for i, size in enumerate(sizes):
        if size > room:
            bins.append([])
            room = capacity
        bins[-1].append(i)
        room -= size
    return bins if bins[0] else []


def bucket_of(length: int, boundaries: list[int]) -> int:
    """Index of the first boundary >= length: `bucket_of(70, [64, 128]) == 1`."""
    k = bisect.bisect_left(boundaries, length)
    if k == len(boundaries):
        raise ValueError(f"length {length} exceeds the last bucket boundary {boundaries[-1]}")
    return k


def bucket_batches(
    buckets: list[int], batch_size: int, seed: int, epoch: int = 0, lengths: list[int] | None = None
) -> list[list[int]]:
    """Batches of example indices, each drawn from one bucket, in a seeded random order.

    Every index appears exactly once per epoch. Given `lengths`, each bucket's shuffled members
    are sorted by length within windows of SORT_WINDOW batches before cutting (as
    transformers' LengthGroupedSampler does with megabatches): neighbours in a batch then have
    nearly equal lengths, so padding falls towards the fully sorted floor, while which examples
    share a batch still changes every epoch. `bucket_plan` gives the same batches as a Bins.
    """
    return bucket_plan(buckets, batch_size, seed, epoch, lengths).tolist()


def bucket_plan(buckets, batch_size: int, seed: int, epoch: int = 0, lengths=None) -> Bins:
    """The batches of `bucket_batches`, flat in numpy (4 bytes an example where lists of Python
    ints took ~110): the same seeded draws, so the same batches in the same order."""
    rng = epoch_rng(seed, epoch)
    batches = bucket_cuts(buckets, batch_size, rng, lengths)
    return batches.take(shuffled(len(batches), rng))


def epoch_rng(seed: int, epoch: int = 0) -> random.Random:
    """The generator of one epoch's bucket batches."""
    return random.Random(f"{seed}:{epoch}")


def bucket_cuts(buckets, batch_size: int, rng: random.Random, lengths=None) -> Bins:
    """The batches of `bucket_plan` before their order is drawn (bucket by bucket): what their
    padding depends on. `rng` makes the shuffles of the buckets' members."""
    buckets = np.asarray(buckets)
    members = np.argsort(buckets, kind="stable").astype(index_type(len(buckets)))  # index order in a bucket
    ordered = buckets[members]
    bounds = [0, *(np.flatnonzero(ordered[1:] != ordered[:-1]) + 1).tolist(), len(members)]
    del ordered
    lengths = None if lengths is None else np.asarray(lengths)
    window = batch_size * SORT_WINDOW
    starts = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):  # buckets in ascending order
        rng.shuffle(memoryview(members)[a:b])  # in place: the draws and swaps of a list's shuffle
        if lengths is not None:  # a stable sort by length inside each window, as `sorted` does
            window_of = np.arange(b - a) // window
            members[a:b] = members[a:b][np.lexsort((lengths[members[a:b]], window_of))]
        starts.append(np.arange(a, b, batch_size))
    starts.append([len(members)])
    return Bins(members, np.concatenate(starts).astype(np.int64))


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """The baseline: shuffled examples cut into batches regardless of length."""
    return random_plan(n, batch_size, seed).tolist()


def random_plan(n: int, batch_size: int, seed: int) -> Bins:
    """The batches of `random_batches` as a Bins."""
    return Bins(shuffled(n, random.Random(seed)), np.append(np.arange(0, n, batch_size), n))


def shuffled(n: int, rng: random.Random) -> np.ndarray:
    """range(n) in the order `rng.shuffle(list(range(n)))` leaves it (the same draws, made on a
    numpy array in place: 4 bytes an item instead of a list's ~36)."""
    order = np.arange(n, dtype=index_type(n))
    rng.shuffle(memoryview(order))
    return order


def index_type(n: int) -> type:
    """The narrowest of int32 and int64 that numbers n items."""
    return np.int32 if n < 2**31 else np.int64


def padding_fraction(lengths, batches) -> float:
    """Share of padded slots when each batch is padded to its longest example (`batches`: a
    Bins or lists of indices)."""
    if not isinstance(batches, Bins):
        batches = Bins.of(batches)
    if not len(batches):
        return 0.0
    lens = np.asarray(lengths, np.int64)[batches.members]
    slots = int(np.dot(np.maximum.reduceat(lens, batches.starts[:-1]), np.diff(batches.starts)))
    return 1 - int(lens.sum()) / slots if slots else 0.0
