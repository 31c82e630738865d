"""Batches drawn from one length bucket each, for the stages that train on unpacked rows.

sampler = BucketBatchSampler(buckets=[0, 1, 0, 1], batch_size=2, seed=0)
list(sampler), list(sampler)   # [[1, 3], [2, 0]], [[3, 1], [2, 0]]: one bucket per batch,
                               # a new seeded order each pass (epoch)
"""

import pyarrow as pa

from tasks import packing


class BucketBatchSampler:
    """Batches drawn from one length bucket each; a new seeded order every epoch.

    Each pass uses the epoch it is set to and moves to the next, so a resumed run that sets the
    epoch it stopped in (`resume_at`) draws the same batches. Given `lengths` (tokens per row)
    it counts the tokens it hands out, for the tokens/s progress line, and sorts by them within
    windows (packing.bucket_batches) to cut padding.
    """

    def __init__(self, buckets: list[int], batch_size: int, seed: int, lengths: list[int] | None = None):
        self.buckets, self.batch_size, self.seed, self.lengths = buckets, batch_size, seed, lengths
        self.epoch, self.tokens = 0, 0

    def resume_at(self, step: int, grad_accum: int) -> None:
        """Draw from the epoch that optimizer step `step` falls in (the trainer skips the batches
        of that epoch it has already seen)."""
        self.epoch = step // max(1, len(self) // grad_accum)

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        for rows in packing.bucket_batches(self.buckets, self.batch_size, self.seed, epoch, self.lengths):
            self.tokens += sum(self.lengths[i] for i in rows) if self.lengths else 0
            yield rows

    def __len__(self) -> int:
        return len(packing.bucket_batches(self.buckets, self.batch_size, self.seed, lengths=self.lengths))


def padding_of(table: pa.Table, batch_size: int, seed: int) -> float:
    """Share of padding in one epoch of bucketed batches of a shard table (`bucket`, `length`)."""
    lengths = table["length"].to_pylist()
    plan = packing.bucket_batches(table["bucket"].to_pylist(), batch_size, seed, lengths=lengths)
    return round(packing.padding_fraction(lengths, plan), 4)
