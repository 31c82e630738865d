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
sequences when no attention mask is passed and the cache is off); tests/test_shards.py proves
that each document's logits equal those of the document run alone.
"""

import bisect
import random


def split_long(lengths: list[int], seq_len: int) -> list[tuple[int, int, int]]:
    """(doc index, start, length) pieces: documents longer than seq_len become several chunks.

    >>> split_long([3, 7], 4)
    [(0, 0, 3), (1, 0, 4), (1, 4, 3)]
    """
    pieces = []
    for i, n in enumerate(lengths):
        for start in range(0, n, seq_len):
            pieces.append((i, start, min(seq_len, n - start)))
    return pieces


def best_fit_decreasing(sizes: list[int], capacity: int) -> list[list[int]]:
    """Bins of item indices; each item goes to the fullest bin that still has room.

    >>> best_fit_decreasing([5, 3, 4, 2, 6], 8)
    [[4, 3], [0, 1], [2]]
    """
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, bin index), sorted
    for i in order:
        if sizes[i] > capacity:
            raise ValueError(f"item {i} has size {sizes[i]} > capacity {capacity}; split it first")
        k = bisect.bisect_left(free, (sizes[i], -1))
        if k == len(free):
            bins.append([i])
            remaining, b = capacity - sizes[i], len(bins) - 1
        else:
            remaining, b = free.pop(k)
            bins[b].append(i)
            remaining -= sizes[i]
        if remaining > 0:
            bisect.insort(free, (remaining, b))
    return bins


def bucket_of(length: int, boundaries: list[int]) -> int:
    """Index of the first boundary >= length: `bucket_of(70, [64, 128]) == 1`."""
    k = bisect.bisect_left(boundaries, length)
    if k == len(boundaries):
        raise ValueError(f"length {length} exceeds the last bucket boundary {boundaries[-1]}")
    return k


def bucket_batches(buckets: list[int], batch_size: int, seed: int, epoch: int = 0) -> list[list[int]]:
    """Batches of example indices, each drawn from one bucket, in a seeded random order.

    Every index appears exactly once per epoch.
    """
    rng = random.Random(f"{seed}:{epoch}")
    by_bucket: dict[int, list[int]] = {}
    for i, b in enumerate(buckets):
        by_bucket.setdefault(b, []).append(i)
    batches = []
    for b in sorted(by_bucket):
        members = by_bucket[b]
        rng.shuffle(members)
        batches += [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
    rng.shuffle(batches)
    return batches


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """The baseline: shuffled examples cut into batches regardless of length."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [order[k : k + batch_size] for k in range(0, n, batch_size)]


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of padded slots when each batch is padded to its longest example."""
    slots = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / slots if slots else 0.0
