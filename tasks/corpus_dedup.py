"""Corpus dedup and decontamination memory: only what can decide something stays in RAM.

Exact and near-duplicate removal compares each record with every earlier record kept. A key
(64-bit hash of the id, of the content, of one MinHash band) that occurs once in the whole
corpus can never make a record a duplicate, so the in-memory index holds repeated keys only:

- pass one's jobs compute each record's keys and MinHash signature (`Keys`: it needs the
  record alone), and `Dedup.extend` writes them with the reject details to files in the
  staging directory, in input order;
- `repeated` finds the keys that occur more than once, a hash partition of a few MB at a time;
- `Dedup.decide` replays the records in input order over an index of repeated keys
  (`HashIndex`, 12 bytes an entry) and yields the duplicates, with the same decisions and
  messages as an index of every key. Ids, file:line and signatures of earlier records are read
  back from disk for the messages and the rare candidates.

Decontamination spools the validation n-grams to a file while the corpus is read, then keeps
them sorted in memory, 12 bytes each, and in a file that pass two's jobs memory-map while they
check the training records (`contamination_chunk`; docs/scale.md has the sizes).

    >>> d = Dedup(cfg, work)
    >>> d.add(Raw("x.jsonl", 1, {}), 1, "pretrain", 0, "a", ["The cat sat on the mat"])
    >>> d.add(Raw("x.jsonl", 2, {}), 2, "pretrain", 1, "b", ["The cat sat on the mat"])
    >>> [(o, reason, detail) for o, _, _, _, _, reason, detail in d.decide()]
    [(2, 'exact_duplicate', "same content as id 'a'")]
"""

import functools
import json
import math
import os
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import xxhash
from datasketch import MinHash, MinHashLSH

from schemas.corpus import CorpusConfig
from tasks.artifacts import fsync_path
from tasks.corpus_clean import ngrams, shingles
from tasks.corpus_read import Raw
from tasks.memory import arrow_batches, release

MERGE_AT = 1 << 15  # recent entries kept in a dict (about 3 MB) before they join the arrays
PART_KEYS = 1 << 19  # keys per partition (4 MB) when looking for repeated keys
CHUNK = 1 << 16  # records whose keys are read at once in the replay
PART_GRAMS = 1 << 18  # validation n-grams sorted at once (3 MB) when decontamination freezes
GRAM = np.dtype([("gram", "<u8"), ("owner", "<u4")])  # a validation n-gram and its record, on disk


class HashIndex:
    """uint64 key -> int values (several per key, in insertion order)."""

    def __init__(self):
        self.keys = np.empty(0, np.uint64)
        self.values = np.empty(0, np.uint32)
        self.recent: dict[int, list[int]] = {}
        self.n_recent = 0

    def get(self, keys: list[int]) -> list[list[int]]:
        """The values of each key, oldest first."""
        found: list[list[int]] = [[] for _ in keys]
        if len(self.keys):
            query = np.array(keys, np.uint64)
            lo, hi = np.searchsorted(self.keys, query, "left"), np.searchsorted(self.keys, query, "right")
            for i in np.flatnonzero(hi > lo):
                found[i] = self.values[lo[i] : hi[i]].tolist()
        for i, k in enumerate(keys):
            found[i] += self.recent.get(k, ())
        return found

    def add(self, keys: list[int], value: int) -> None:
        for k in keys:
            self.recent.setdefault(k, []).append(value)
        self.n_recent += len(keys)
        if self.n_recent >= MERGE_AT:  # the dict costs ~100 bytes an entry: keep it small
            self._merge()

    def _merge(self) -> None:
        """Insert the recent entries into the sorted arrays: one pass over them (a memory copy)."""
        pairs = [(k, v) for k, vs in self.recent.items() for v in vs]
        keys, values = np.array([k for k, _ in pairs], np.uint64), np.array([v for _, v in pairs], np.uint32)
        order = np.argsort(keys, kind="stable")  # stable, and inserted after equal keys: oldest first
        at = np.searchsorted(self.keys, keys[order], "right")
        self.keys, self.values = (
            np.insert(self.keys, at, keys[order]),
            np.insert(self.values, at, values[order]),
        )
        self.recent, self.n_recent = {}, 0

    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes


def key(tag: str, text: str) -> int:
    return xxhash.xxh3_64_intdigest(f"{tag}\x1e{text}".encode("utf-8", "surrogatepass"))


def member(sorted_keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Which of `query` are in the sorted uint64 array `sorted_keys`."""
    if not len(sorted_keys):
        return np.zeros(query.shape, bool)
    at = np.minimum(np.searchsorted(sorted_keys, query), len(sorted_keys) - 1)
    return sorted_keys[at] == query


def repeated(chunks: Iterator[np.ndarray], n: int, work: Path) -> np.ndarray:
    """The uint64 values that occur more than once among `n` values given in chunks, sorted.

    Memory: a chunk, a partition (values sharing their top bits, about PART_KEYS of them) and
    the answer. The partitions go to files in `work` and are removed."""
    bits = max(0, math.ceil(math.log2(max(n, 1) / PART_KEYS)))
    paths = [work / f"part-{p}.bin" for p in range(1 << bits)]
    files = [open(p, "wb") for p in paths]
    for values in chunks:
        part = (values >> np.uint64(64 - bits)).astype(np.int64) if bits else np.zeros(len(values), np.int64)
        order = np.argsort(part, kind="stable")
        bounds = np.searchsorted(part[order], np.arange(len(files) + 1))
        for p, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            files[p].write(values[order[a:b]].tobytes())
    found = []
    for f, path in zip(files, paths, strict=True):
        f.close()
        values = np.sort(np.fromfile(path, np.uint64))
        path.unlink()
        found.append(np.unique(values[1:][values[1:] == values[:-1]]))
    return np.concatenate(found)  # partitions in order of their top bits: sorted


class Records:
    """JSON rows appended to a file, read back by number (end offsets in a second file)."""

    def __init__(self, path: Path):
        self.path, self.ends_path = path, path.with_suffix(".ends")
        self.data, self.ends = open(path, "wb"), open(self.ends_path, "wb")
        self.size = self.count = 0

    def append(self, row: list) -> None:
        line = json.dumps(row).encode()  # ASCII: lone surrogates of an excerpt survive
        self.data.write(line)
        self.size += len(line)
        self.ends.write(self.size.to_bytes(8, "little"))
        self.count += 1

    def finish(self) -> None:
        self.data.close(), self.ends.close()
        self.data_fd, self.ends_fd = os.open(self.path, os.O_RDONLY), os.open(self.ends_path, os.O_RDONLY)

    def __getitem__(self, i: int) -> list:
        ends = os.pread(self.ends_fd, 16, 8 * (i - 1)) if i else b"\0" * 8 + os.pread(self.ends_fd, 8, 0)
        start, end = int.from_bytes(ends[:8], "little"), int.from_bytes(ends[8:], "little")
        return json.loads(os.pread(self.data_fd, end - start, start))

    def close(self) -> None:
        for fd in (self.data_fd, self.ends_fd):
            os.close(fd)


class Strings:
    """An append-only list of strings in one bytes buffer (length + 8 bytes each)."""

    def __init__(self):
        self.data = bytearray()
        self.ends = array("Q")

    def append(self, s: str) -> int:
        self.data += s.encode("utf-8", "surrogatepass")
        self.ends.append(len(self.data))
        return len(self.ends) - 1

    def __getitem__(self, i: int) -> str:
        start = self.ends[i - 1] if i else 0
        return self.data[start : self.ends[i]].decode("utf-8", "surrogatepass")

    def nbytes(self) -> int:
        return len(self.data) + 8 * len(self.ends)


@functools.cache
def _minhash(threshold: float, perm: int) -> tuple[list[tuple[int, int]], MinHash]:
    """The LSH bands and the permutations (6 ms to set up: once per process, not per job)."""
    ranges = MinHashLSH(threshold, perm).hashranges
    return ranges, MinHash(perm, seed=1, hashfunc=xxhash.xxh32_intdigest)


class Keys:
    """A record's dedup keys (64-bit hashes of its id, its content and each MinHash band) and
    its MinHash signature: what dedup needs of a record that depends on nothing else, so pass
    one's jobs compute it anywhere (tasks/corpus_chunks.py)."""

    def __init__(self, cfg: CorpusConfig):
        self.cfg, self.near = cfg, cfg.near_dup_threshold is not None
        self.width = 2  # id and content keys, then one per band
        if self.near:
            self.ranges, self._perm = _minhash(cfg.near_dup_threshold, cfg.minhash_perm)
            self.width += len(self.ranges)

    def __call__(self, rid: str, values: list[str]) -> tuple[list[int], np.ndarray | None]:
        keys = [key("id", rid), key("content", "\x1f".join(values))]
        if not self.near:
            return keys, None
        sig = self.signature(values)
        return keys + [key(f"band{i}", sig[a:b].tobytes().hex()) for i, (a, b) in enumerate(self.ranges)], sig

    def signature(self, values: list[str]) -> np.ndarray:
        p = self._perm
        sig = MinHash(p.num_perm, seed=1, hashfunc=p.hashfunc, permutations=p.permutations, scheme=p.scheme)
        sig.update_batch([s.encode() for s in shingles(values, self.cfg.shingle_words)])
        return sig.hashvalues.astype(np.uint32)  # values are < 2**32 (datasketch's _max_hash)


class Dedup:
    """Exact (id, content hash) and near-duplicate (MinHash LSH) removal, each task apart.

    Decisions equal a `datasketch.MinHashLSH` over full signatures: the bands are the same
    (`MinHashLSH(threshold, perm).hashranges`), a band's 64-bit hash stands for its bytes, and
    a candidate's signature is read back from disk for the Jaccard estimate.
    """

    def __init__(self, cfg: CorpusConfig, work: Path):
        self.cfg, self.work = cfg, work
        self.keys_of = Keys(cfg)
        self.near, self.width = self.keys_of.near, 1 + self.keys_of.width
        self.keys = open(work / "keys.bin", "wb")  # per record: rank, id key, content key, band keys
        self.records = Records(work / "records.jsonl")  # per record: ordinal, file, line, id, task, excerpt
        self.index_bytes = 0
        if self.near:
            self.sigs = open(work / "minhash.bin", "wb")

    def add(self, raw: Raw, ordinal: int, task: str, rank: int, rid: str, values: list[str]) -> None:
        """Pass one: record a record that passed every other check (`rank` orders it in its task)."""
        keys, sig = self.keys_of(rid, values)
        record = [ordinal, raw.file, raw.line, rid, task, raw.excerpt[:200]]
        self.extend(
            np.array([rank], np.uint64),
            np.array([keys], np.uint64),
            sig.tobytes() if self.near else b"",
            [record],
        )

    def extend(self, ranks: np.ndarray, keys: np.ndarray, sigs: bytes, records: list[list]) -> None:
        """Pass one, records in input order: their ranks, `Keys` rows, signatures (uint32 bytes,
        one after another) and [ordinal, file, line, id, task, excerpt] for the messages."""
        rows = np.empty((len(ranks), self.width), np.uint64)
        rows[:, 0], rows[:, 1:] = ranks, keys.reshape(len(ranks), self.width - 1)
        self.keys.write(rows.tobytes())
        if self.near:
            self.sigs.write(sigs)
        for record in records:
            self.records.append(record)

    def decide(self) -> Iterator[tuple[int, int, Raw, str, str, str, str]]:
        """The duplicates in input order: (ordinal, rank, raw, task, id, reason, detail)."""
        self.keys.close()
        self.records.finish()
        if self.near:
            self.sigs.close()
            self.sig_fd = os.open(self.work / "minhash.bin", os.O_RDONLY)
        n = self.records.count
        self.repeated = repeated(
            (rows[:, 1:].ravel() for _, rows in self._rows()), n * (self.width - 1), self.work
        )
        indexes: dict[int, HashIndex] = {}  # one per task (the rank's top bits)
        for start, rows in self._rows():
            hits = member(self.repeated, rows[:, 1:])
            for i in np.flatnonzero(hits.any(axis=1)):
                rank, g = int(rows[i, 0]), start + int(i)
                index = indexes.setdefault(rank >> 40, HashIndex())
                ordinal, file, line, rid, task, excerpt = self.records[g]
                reason, detail = self._check(index, g, rid, rows[i, 1:].tolist())
                if reason:
                    yield ordinal, rank, Raw(file, line, None, excerpt=excerpt), task, rid, reason, detail
                else:
                    index.add(rows[i, 1:][hits[i]].tolist(), g)
        self.index_bytes = sum(i.nbytes() for i in indexes.values()) + self.repeated.nbytes

    def _rows(self) -> Iterator[tuple[int, np.ndarray]]:
        with open(self.work / "keys.bin", "rb") as f:
            for start in range(0, self.records.count, CHUNK):
                yield start, np.fromfile(f, np.uint64, CHUNK * self.width).reshape(-1, self.width)

    def _check(self, index: HashIndex, g: int, rid: str, keys: list[int]) -> tuple[str, str]:
        """(reason, detail) when record `g` duplicates an earlier one kept, else ("", "")."""
        same_id, same_content, *bands = index.get(keys)
        for o in same_id:
            _, file, line, other, *_ = self.records[o]
            if other == rid:  # the key is a hash: compare the ids themselves
                return "duplicate_id", f"id {rid!r} first seen at {file}:{line}"
        if same_content:
            return "exact_duplicate", f"same content as id {self.records[same_content[0]][3]!r}"
        if self.near:
            sig = self._signature_of(g)
            for o in sorted({o for found in bands for o in found}):  # oldest first: the first hit
                share = float(np.count_nonzero(sig == self._signature_of(o))) / len(sig)
                if share >= self.cfg.near_dup_threshold:
                    return "near_duplicate", f"estimated Jaccard {share:.2f} with id {self.records[o][3]!r}"
        return "", ""

    def _signature_of(self, g: int) -> np.ndarray:
        width = 4 * self.cfg.minhash_perm
        return np.frombuffer(os.pread(self.sig_fd, width, g * width), np.uint32)

    def close(self) -> None:
        self.records.close()
        if self.near:
            os.close(self.sig_fd)

    def nbytes(self) -> int:
        """Bytes the in-memory index held at the end (repeated keys and their records)."""
        return self.index_bytes


def validation_grams(texts: list[str], n: int) -> list[int]:
    """The distinct word n-gram hashes of a validation record's texts."""
    return list(set().union(*(ngrams(t, n) for t in texts)))


class Decontamination:
    """The word n-grams of all validation text, and who said each first.

    Validation records are added as the corpus is read (in any order, each with its rank: the
    order of the old in-memory stage, task by task); their n-grams go to a file in `work`. Then
    `freeze` drops those of records found to be duplicates and sorts the n-gram hashes, a hash
    partition at a time, so training records can be checked a batch at a time:

    >>> d = Decontamination(4, work)
    >>> d.add_validation("val-1", rank=0, grams=validation_grams(["a b c d"], 4))
    >>> d.freeze(dropped=np.array([], np.uint64)); first_owners(d.grams, d.owner_of, 4, [["x a b c d"]])
    [0]   # d.ids[0] == 'val-1'

    """

    def __init__(self, n: int, work: Path):
        self.n = n
        self.ids = Strings()
        self.ranks = array("q")
        self.path = work / "validation-ngrams.bin"
        self.file = open(self.path, "wb")
        self.count = 0
        self.pending: list[int] = []
        self.owners: list[int] = []

    def add_validation(self, rid: str, rank: int, grams: list[int]) -> None:
        """A validation record's n-grams (`validation_grams` of its texts)."""
        if not grams:
            return
        owner = self.ids.append(rid)
        self.ranks.append(rank)
        self.pending += grams
        self.owners += [owner] * len(grams)
        if len(self.pending) >= 1 << 16:
            self._flush()

    def _flush(self) -> None:
        rows = np.empty(len(self.pending), GRAM)
        rows["gram"], rows["owner"] = self.pending, self.owners
        self.file.write(rows.tobytes())
        self.count += len(rows)
        self.pending, self.owners = [], []

    def freeze(self, dropped: np.ndarray) -> None:
        """Sort the n-grams of records whose rank is not in `dropped` (sorted uint64); keep for
        each n-gram the validation record of lowest rank. Memory: the answer and a partition
        (the n-grams sharing their top bits, about PART_GRAMS of them)."""
        self._flush()
        self.file.close()
        ranks = np.frombuffer(self.ranks, np.int64)
        gone = member(dropped, ranks.astype(np.uint64))  # per validation record
        bits = max(0, math.ceil(math.log2(max(self.count, 1) / PART_GRAMS)))
        self.grams, self.owner_of = np.empty(self.count, np.uint64), np.empty(self.count, np.uint32)
        n = 0
        for p in range(1 << bits):
            grams, owners = self._partition(p, bits, gone, ranks)
            self.grams[n : n + len(grams)], self.owner_of[n : n + len(grams)] = grams, owners
            n += len(grams)  # partitions in order of their top bits: sorted
            release()  # the partition's arrays: else malloc keeps their pages
        self.grams.resize(n, refcheck=False)  # in place: no second copy
        self.owner_of.resize(n, refcheck=False)
        self.path.unlink()

    def _partition(
        self, p: int, bits: int, gone: np.ndarray, ranks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The distinct n-grams whose top `bits` bits are `p`, sorted, of records not `gone`,
        each with its record of lowest rank."""
        grams, owners = [np.empty(0, np.uint64)], [np.empty(0, np.uint32)]
        with open(self.path, "rb") as f:
            while len(rows := np.fromfile(f, GRAM, CHUNK)):
                pick = ~gone[rows["owner"]]
                if bits:
                    pick &= rows["gram"] >> np.uint64(64 - bits) == p
                grams.append(rows["gram"][pick])
                owners.append(rows["owner"][pick])
        grams, owners = np.concatenate(grams), np.concatenate(owners)
        order = np.lexsort((ranks[owners], grams))
        grams, owners = grams[order], owners[order]
        first = np.ones(len(grams), bool)
        first[1:] = grams[1:] != grams[:-1]
        return grams[first], owners[first]

    def save(self, work: Path) -> tuple[str, str]:
        """The frozen n-grams and their owners as .npy files, for pass two's jobs (memory-mapped)."""
        paths = (work / "validation-grams.npy", work / "validation-owners.npy")
        np.save(paths[0], self.grams)
        np.save(paths[1], self.owner_of)
        return str(paths[0]), str(paths[1])

    def nbytes(self) -> int:
        return self.grams.nbytes + self.owner_of.nbytes + self.ids.nbytes() + 8 * len(self.ranks)


def first_owners(grams: np.ndarray, owner_of: np.ndarray, n: int, records: list[list[str]]) -> list[int]:
    """For each record (its fields' texts): the validation record (`owner_of` index) of its
    first n-gram found in the sorted `grams`, looking at fields in order and each field's
    n-grams in set order (as the old stage did); -1 for none."""
    found: list[int] = []
    row_of: list[int] = []
    for r, texts in enumerate(records):
        for t in texts:
            g = ngrams(t, n)
            found += g
            row_of += [r] * len(g)
    out = [-1] * len(records)
    if not found or not len(grams):
        return out
    query = np.array(found, np.uint64)
    at = np.minimum(np.searchsorted(grams, query), len(grams) - 1)
    hit = np.flatnonzero(grams[at] == query)
    rows, first = np.unique(np.array(row_of)[hit], return_index=True)
    for r, h in zip(rows.tolist(), hit[first].tolist(), strict=True):
        out[r] = int(owner_of[at[h]])
    return out


def undropped(batch: pa.RecordBatch, rank: int, dropped: np.ndarray) -> pa.RecordBatch:
    """A spool batch whose first row has rank `rank`, less the rows whose rank is in `dropped`."""
    ranks = np.arange(rank, rank + batch.num_rows, dtype=np.uint64)
    return batch.filter(pa.array(~member(dropped, ranks)))


def contamination_chunk(job: dict) -> str:
    """Pass two's costly part, for spool batches `first` to `end` of a task (a job, see
    tasks/corpus.py `contamination`): for each row that is not a duplicate, the validation
    record whose n-gram its text shares first (-1: none, or not a training row). Writes an
    Arrow file, one batch per spool batch, under a temporary name, fsynced and renamed."""
    grams, owner_of = np.load(job["grams"], mmap_mode="r"), np.load(job["owners"], mmap_mode="r")
    dropped, rank = np.load(job["dropped"]), job["rank"]
    final = Path(job["work"]) / job["chunk"]
    tmp = final.with_name(f".{final.name}.{os.getpid()}")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, OWNERS) as writer:
        for batch in arrow_batches(Path(job["spool"]), job["first"], job["end"]):
            kept, rank = undropped(batch, rank, dropped), rank + batch.num_rows
            owners = np.full(kept.num_rows, -1, np.int64)
            train = [k for k, s in enumerate(kept.column("split").to_pylist()) if s == "train"]
            texts = [kept.column(name).to_pylist() for name in job["fields"]]
            for at in range(0, len(train), job["hits"]):
                rows = train[at : at + job["hits"]]
                owners[rows] = first_owners(grams, owner_of, job["n"], [[t[k] for t in texts] for k in rows])
            writer.write_batch(pa.record_batch([pa.array(owners)], schema=OWNERS))
    fsync_path(tmp)
    os.replace(tmp, final)
    return final.name


OWNERS = pa.schema([pa.field("owner", pa.int64())])  # contamination_chunk's rows
