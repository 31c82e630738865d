"""Packing and bucketing arithmetic."""

import random

import pytest

from tasks import packing


def test_best_fit_decreasing_places_every_item_once_within_capacity():
    rng = random.Random(0)
    sizes = [rng.randint(1, 512) for _ in range(500)]
    bins = packing.best_fit_decreasing(sizes, 512)
    assert sorted(i for b in bins for i in b) == list(range(500))
    assert all(sum(sizes[i] for i in b) <= 512 for b in bins)
    assert sum(sizes) / (len(bins) * 512) > 0.95


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


def test_padding_fraction():
    assert packing.padding_fraction([2, 4], [[0, 1]]) == pytest.approx(0.25)
    assert packing.padding_fraction([3, 3], [[0], [1]]) == 0.0


def test_bucket_of():
    assert packing.bucket_of(64, [64, 128]) == 0 and packing.bucket_of(65, [64, 128]) == 1
    with pytest.raises(ValueError):
        packing.bucket_of(129, [64, 128])
