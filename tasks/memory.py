"""Giving freed memory back to the OS, so a stage's RSS follows what it holds, not what it held.

glibc keeps the pages that Python lists, pandas frames and Arrow buffers freed in the arena of
the thread that used them (Arrow allocates from malloc: flows/__init__ sets
ARROW_DEFAULT_MEMORY_POOL=system). Without a trim the shards stage's RSS grew with the number of
chunks it tokenised, and the corpus stage's with the number of batches great-expectations
validated (~4 MB a 4 MB batch of pretraining text), though none of them stayed alive.
"""

import ctypes
import gc
from pathlib import Path

import pyarrow.parquet as pq

_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the C library's, where it has one


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
