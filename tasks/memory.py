"""Giving freed memory back to the OS, so a stage's RSS follows what it holds, not what it held.

glibc keeps the pages that Python lists, pandas frames and Arrow buffers freed in the arena of
the thread that used them (Arrow allocates from malloc: flows/__init__ sets
ARROW_DEFAULT_MEMORY_POOL=system). Without a trim the shards stage's RSS grew with the number of
chunks it tokenised, and the corpus stage's with the number of batches great-expectations
validated (~4 MB a 4 MB batch of pretraining text), though none of them stayed alive.
"""

import bisect
import contextlib
import ctypes
import gc
import mmap
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_LIBC = ctypes.CDLL(None)
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)  # the C library's, where it has one
_MALLOPT = getattr(_LIBC, "mallopt", None)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
_MADVISE = getattr(_LIBC, "madvise", None)
MADV_DONTNEED = 4  # Linux


def release(collect: bool = False) -> None:
    """Trim the heap (glibc only; a no-op elsewhere). `collect` first frees reference cycles,
    such as the ones a great-expectations validation leaves holding its batch's data."""
    if collect:
        gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def arrow_batches(path: Path, first: int = 0, end: int | None = None) -> Iterator[pa.RecordBatch]:
    """Record batches `first` to `end` (default: all) of an Arrow IPC file, in order; read,
    not memory-mapped, so their pages leave memory with them."""
    with pa.OSFile(str(path)) as f:
        reader = pa.ipc.open_file(f)
        for i in range(first, reader.num_record_batches if end is None else end):
            yield reader.get_batch(i)


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


def file_pages(buffers: Iterable[pa.Buffer]) -> list[tuple[int, int]]:
    """The whole pages of these buffers that lie in read-only mappings of files, as (start,
    end) addresses: the pages `drop_pages` may drop. Valid while the buffers are alive.

    A training step reads a few rows of every shard, and the kernel maps ~64 KB around each
    page it faults in; those pages stayed mapped, so a run's RSS grew with the corpus it had
    sampled (100x the embedded corpus, 20 steps: +165 MiB of shard pages). Dropping them loses
    nothing: the file holds them and the page cache keeps them for the next read. Only ranges
    inside a read-only file mapping qualify (Linux: /proc/self/maps), because MADV_DONTNEED
    on ordinary memory would zero it.
    """
    maps = _read_only_file_maps() if _MADVISE is not None else []
    starts = [lo for lo, _ in maps]
    out = []
    for buf in buffers:
        lo = -(-buf.address // mmap.PAGESIZE) * mmap.PAGESIZE
        hi = (buf.address + buf.size) // mmap.PAGESIZE * mmap.PAGESIZE
        k = bisect.bisect_right(starts, lo) - 1
        if lo < hi and k >= 0 and hi <= maps[k][1]:
            out.append((lo, hi))
    return out


def drop_pages(ranges: Iterable[tuple[int, int]]) -> None:
    """Take these pages (from `file_pages`) out of this process; the next read maps them again."""
    for lo, hi in ranges:
        _MADVISE(ctypes.c_void_p(lo), ctypes.c_size_t(hi - lo), MADV_DONTNEED)


def _read_only_file_maps() -> list[tuple[int, int]]:
    """(start, end) of this process's mappings of files that are not writable, by address."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:  # not Linux
        return []
    out = []
    for line in lines:
        fields = line.split(maxsplit=5)  # address perms offset dev inode path
        if len(fields) == 6 and fields[1][1] == "-" and fields[5].startswith("/"):
            lo, hi = fields[0].split("-")
            out.append((int(lo, 16), int(hi, 16)))
    return out


def available_bytes(device) -> int:
    """Memory a new allocation can take on `device` (a torch.device): free GPU memory on CUDA;
    on the host the kernel's MemAvailable, lowered to what this cgroup's memory.max leaves."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(OSError, ValueError):
        meminfo = Path("/proc/meminfo").read_text()
        free = int(next(x for x in meminfo.splitlines() if x.startswith("MemAvailable:")).split()[1]) << 10
    with contextlib.suppress(OSError, ValueError):
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            free = min(free, int(limit) - int((cgroup / "memory.current").read_text()))
    return free
