"""Giving freed memory back to the OS, so a stage's RSS follows what it holds, not what it held.

glibc keeps the pages that Python lists, pandas frames and Arrow buffers freed in the arena of
the thread that used them (Arrow allocates from malloc: flows/__init__ sets
ARROW_DEFAULT_MEMORY_POOL=system). Without a trim the shards stage's RSS grew with the number of
chunks it tokenised, and the corpus stage's with the number of batches great-expectations
validated (~4 MB a 4 MB batch of pretraining text), though none of them stayed alive.
"""

import contextlib
import ctypes
import gc
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq

_LIBC = ctypes.CDLL(None)
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)  # the C library's, where it has one
_MALLOPT = getattr(_LIBC, "mallopt", None)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def release(collect: bool = False) -> None:
    """Trim the heap (glibc only; a no-op elsewhere). `collect` first frees reference cycles,
    such as the ones a great-expectations validation leaves holding its batch's data."""
    if collect:
        gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def parquet(path: Path) -> pq.ParquetFile:
    """A Parquet file to stream: pyarrow pre-buffers by default, and a reader's pre-buffer keeps
    the bytes of every row group it has read until the reader is gone (apache/arrow#39808), so
    reading a file batch by batch held its whole compressed size by the end."""
    return pq.ParquetFile(path, pre_buffer=False)


@contextlib.contextmanager
def large_blocks_mapped(threshold: int = 1 << 17, after: int = 1 << 25) -> Iterator[None]:
    """Inside, every allocation of `threshold` bytes or more gets its own mapping, which goes
    back to the OS when freed. glibc starts at 128 KiB but raises its threshold to the size of
    the largest mapped block freed (up to 32 MiB): after that, the shards stage's Arrow slices
    and shard tables came from the heap and left holes that no trim gives back (10x corpus:
    peak 437 MiB, 395 with this). `after` is the threshold left set on the way out: glibc's
    largest, where a long-running process's threshold ends up anyway."""
    if _MALLOPT is None:
        yield
        return
    _MALLOPT(M_MMAP_THRESHOLD, threshold)
    try:
        yield
    finally:
        _MALLOPT(M_MMAP_THRESHOLD, after)
