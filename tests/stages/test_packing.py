"""Packing and bucketing arithmetic."""

import random

import numpy as np
import pytest

from tasks import packing


def test_best_fit_decreasing_places_every_item_once_within_capacity():
    rng = random.Random(0)
    sizes = [rng.randint(1, 512) for _ in range(500)]
    bins = packing.best_fit_decreasing(sizes, 512)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(sizes[i] for i in b) <= 512 for b in bins)
    assert sum(sizes) / (len(bins) * 512) > 0.95


def reference_best_fit(sizes: list[int], capacity: int) -> list[list[int]]:
    """Best fit decreasing the plain way: the bin with the least room that fits, and among equal
    rooms the one changed last (what the room-indexed stacks of packing.best_fit_decreasing pick)."""
    bins, room, changed = [], [], []
    for step, i in enumerate(sorted(range(len(sizes)), key=lambda i: -sizes[i])):
        fits = [b for b in range(len(bins)) if 0 < room[b] and sizes[i] <= room[b]]
        if fits:
            b = min(fits, key=lambda b: (room[b], -changed[b]))
        else:
            b = len(bins)
            bins.append([])
            room.append(capacity)
            changed.append(step)
        bins[b].append(i)
        room[b] -= sizes[i]
        changed[b] = step
    return bins


@pytest.mark.parametrize("seed", range(4))
def test_best_fit_decreasing_equals_the_plain_algorithm_and_keeps_bins_in_arrays(seed):
    rng = random.Random(seed)
    capacity = rng.choice([16, 64, 512])
    sizes = [rng.choice([rng.randint(1, capacity), capacity, capacity // 2]) for _ in range(400)]
    bins = packing.best_fit_decreasing(sizes, capacity)
    assert bins.tolist() == reference_best_fit(sizes, capacity)
    assert bins.members.dtype == np.int64 and len(bins.members) == 400
    order = list(range(len(bins)))
    rng.shuffle(order)
    assert bins.take(order)[3:9].tolist() == [bins.tolist()[b] for b in order][3:9]


def test_split_long_cuts_each_document_in_order():
    lengths = [0, 3, 8, 9, 17]
    expected = [(d, s, min(4, n - s)) for d, n in enumerate(lengths) for s in range(0, n, 4)]
    assert [tuple(p) for p in packing.split_long(lengths, 4).tolist()] == expected


def test_best_fit_rejects_oversized_items():
    with pytest.raises(ValueError, match="split it first"):
        packing.best_fit_decreasing([10], 8)


def test_split_long_keeps_every_token():
    pieces = packing.split_long([3, 9, 4], 4)
    assert sum(n for _, _, n in pieces) == 16 and max(n for _, _, n in pieces) == 4


def test_bucket_batches_use_each_example_once_and_one_bucket_per_batch():
    buckets = [random.Random(i).randint(0, 3) for i in range(101)]
    batches = packing.bucket_batches(buckets, 8, seed=1)
    assert sorted(i for b in batches for i in b) == list(range(101))
    assert all(len({buckets[i] for i in b}) == 1 for b in batches)
    assert batches == packing.bucket_batches(buckets, 8, seed=1)
    assert batches != packing.bucket_batches(buckets, 8, seed=1, epoch=1)


def test_length_sorted_windows_pad_near_the_sorted_floor_and_still_reshuffle():
    rng = random.Random(0)
    lengths = [rng.randint(20, 200) for _ in range(4000)]
    buckets = [packing.bucket_of(n, [64, 128, 256]) for n in lengths]
    plain = packing.bucket_batches(buckets, 16, seed=1)
    windowed = packing.bucket_batches(buckets, 16, seed=1, lengths=lengths)
    assert sorted(i for b in windowed for i in b) == list(range(4000))
    order = sorted(range(4000), key=lengths.__getitem__)
    floor = packing.padding_fraction(lengths, [order[k : k + 16] for k in range(0, 4000, 16)])
    assert packing.padding_fraction(lengths, windowed) < min(
        2 * floor + 0.01, packing.padding_fraction(lengths, plain) / 3
    )
    again = packing.bucket_batches(buckets, 16, seed=1, epoch=1, lengths=lengths)
    assert {frozenset(b) for b in again} != {frozenset(b) for b in windowed}


def reference_bucket_batches(buckets, batch_size, seed, epoch=0, lengths=None):
    """packing.bucket_batches as it was written with Python lists (training drew these batches)."""
    rng = random.Random(f"{seed}:{epoch}")
    by_bucket: dict[int, list[int]] = {}
    for i, b in enumerate(buckets):
        by_bucket.setdefault(b, []).append(i)
    batches, window = [], batch_size * packing.SORT_WINDOW
    for b in sorted(by_bucket):
        members = by_bucket[b]
        rng.shuffle(members)
        if lengths is not None:
            members = [
                i
                for k in range(0, len(members), window)
                for i in sorted(members[k : k + window], key=lengths.__getitem__)
            ]
        batches += [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
    rng.shuffle(batches)
    return batches


def reference_padding(lengths, batches):
    slots = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / slots if slots else 0.0


@pytest.mark.parametrize("case", range(12))
def test_batches_in_arrays_equal_the_list_shuffles_and_their_padding_exactly(case):
    """The shards stage's padding statistics and training's batches come from numpy arrays
    shuffled in place: the same seeded draws must give the same batches as lists did."""
    rng = random.Random(case)
    n = rng.choice([0, 1, 7, 300, 2500])
    n_buckets, batch_size = rng.choice([1, 3, 9]), rng.choice([1, 4, 16])
    lengths = [rng.randint(1, rng.choice([3, 512])) for _ in range(n)]  # many ties for the stable sort
    buckets = [rng.choice([2, 5, 11, 40][:n_buckets] or [0]) for _ in range(n)]
    for lens in (None, lengths):
        expected = reference_bucket_batches(buckets, batch_size, case, case % 3, lens)
        assert packing.bucket_batches(buckets, batch_size, case, case % 3, lens) == expected
        # the shards stage's statistic: narrow arrays, the batches' order not drawn
        rng = packing.epoch_rng(case, case % 3)
        cuts = packing.bucket_cuts(np.array(buckets, np.int16), batch_size, rng, np.array(lengths))
        assert packing.padding_fraction(np.array(lengths), cuts) == reference_padding(
            lengths, reference_bucket_batches(buckets, batch_size, case, case % 3, lengths)
        )
    order = list(range(n))
    random.Random(case).shuffle(order)
    expected = [order[k : k + batch_size] for k in range(0, n, batch_size)]
    assert packing.random_batches(n, batch_size, case) == expected
    assert packing.padding_fraction(lengths, packing.random_plan(n, batch_size, case)) == reference_padding(
        lengths, expected
    )


def test_padding_fraction():
    assert packing.padding_fraction([2, 4], [[0, 1]]) == pytest.approx(0.25)
    assert packing.padding_fraction([3, 3], [[0], [1]]) == 0.0


def test_bucket_of():
    assert packing.bucket_of(64, [64, 128]) == 0 and packing.bucket_of(65, [64, 128]) == 1
    with pytest.raises(ValueError):
        packing.bucket_of(129, [64, 128])
