"""Corpus dedup and decontamination memory, compact: a few dozen bytes per record, not kilobytes.

The corpus stage streams its records, but exact and near-duplicate removal must remember every
record kept so far, and decontamination every validation n-gram. Both stay O(records); this
module keeps the per-record part small (docs/scale.md has the measured sizes):

- `HashIndex`: 64-bit key -> record ordinals, sorted numpy arrays (12 bytes an entry) plus a
  small dict of recent inserts merged in now and then;
- `Strings`: the kept ids, one bytes buffer plus offsets (id length + 8 bytes);
- MinHash signatures go to a file in the staging directory (they are read back only for the
  rare candidates an LSH band finds), the index holds one 64-bit key per band.

    >>> d = Dedup(cfg, work)
    >>> d.admit("a", "x.jsonl", 1, ["The cat sat on the mat"])
    >>> d.admit("b", "x.jsonl", 2, ["The cat sat on the mat"])
    Reject: exact_duplicate: same content as id 'a'
"""

import os
from array import array
from pathlib import Path

import numpy as np
import xxhash
from datasketch import MinHash, MinHashLSH

from schemas.corpus import CorpusConfig
from tasks.corpus_clean import Reject, ngrams, shingles

MERGE_AT = 1 << 15  # recent entries kept in a dict (about 3 MB) before they join the arrays
SIG_FLUSH = 1 << 20  # bytes of signatures buffered before a write


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


def key(tag: str, text: str) -> int:
    return xxhash.xxh3_64_intdigest(f"{tag}\x1e{text}".encode("utf-8", "surrogatepass"))


class Dedup:
    """Exact (id, content hash) and near-duplicate (MinHash LSH) memory of one task.

    Decisions equal a `datasketch.MinHashLSH` over full signatures: the bands are the same
    (`MinHashLSH(threshold, perm).hashranges`), a band's 64-bit hash stands for its bytes, and
    a candidate's signature is read back from `sig_file` for the Jaccard estimate.
    """

    def __init__(self, cfg: CorpusConfig, sig_file: Path):
        self.cfg = cfg
        self.index = HashIndex()
        self.ids = Strings()
        self.where = array("q")  # file number << 40 | line of each kept record
        self.files: dict[str, int] = {}
        self.near = cfg.near_dup_threshold is not None
        if self.near:
            self.ranges = MinHashLSH(cfg.near_dup_threshold, cfg.minhash_perm).hashranges
            self._perm = MinHash(cfg.minhash_perm, seed=1, hashfunc=xxhash.xxh32_intdigest)
            self.sigs = SignatureFile(sig_file, cfg.minhash_perm)

    def admit(self, rid: str, file: str, line: int, values: list[str]) -> None:
        """Remember the record, or raise `Reject` naming the record it duplicates."""
        id_key, content_key = key("id", rid), key("content", "\x1f".join(values))
        same_id, same_content = self.index.get([id_key, content_key])
        for o in same_id:
            if self.ids[o] == rid:  # the key is a hash: compare the ids themselves
                raise Reject("duplicate_id", f"id {rid!r} first seen at {self._where(o)}")
        if same_content:
            raise Reject("exact_duplicate", f"same content as id {self.ids[same_content[0]]!r}")
        bands: list[int] = []
        if self.near:
            sig = self._signature(values)
            bands = [key(f"band{i}", sig[a:b].tobytes().hex()) for i, (a, b) in enumerate(self.ranges)]
            self._near_duplicate(sig, bands)
            self.sigs.append(sig)
        n = self.ids.append(rid)
        self.where.append(self.files.setdefault(file, len(self.files)) << 40 | line)
        self.index.add([id_key, content_key, *bands], n)

    def _near_duplicate(self, sig: np.ndarray, bands: list[int]) -> None:
        threshold = self.cfg.near_dup_threshold
        candidates = sorted({o for found in self.index.get(bands) for o in found})
        for o in candidates:  # oldest first: the first hit is the record it duplicates
            share = float(np.count_nonzero(sig == self.sigs[o])) / len(sig)
            if share >= threshold:
                raise Reject("near_duplicate", f"estimated Jaccard {share:.2f} with id {self.ids[o]!r}")

    def _signature(self, values: list[str]) -> np.ndarray:
        p = self._perm
        sig = MinHash(p.num_perm, seed=1, hashfunc=p.hashfunc, permutations=p.permutations, scheme=p.scheme)
        sig.update_batch([s.encode() for s in shingles(values, self.cfg.shingle_words)])
        return sig.hashvalues.astype(np.uint32)  # values are < 2**32 (datasketch's _max_hash)

    def _where(self, o: int) -> str:
        names = list(self.files)
        return f"{names[self.where[o] >> 40]}:{self.where[o] & ((1 << 40) - 1)}"

    def close(self) -> None:
        if self.near:
            self.sigs.close()

    def nbytes(self) -> int:
        """Bytes held in memory for the records so far (the signatures are on disk)."""
        return self.index.nbytes() + self.ids.nbytes() + 8 * len(self.where)


class SignatureFile:
    """MinHash signatures (uint32 each value) appended to a file, read back by record number."""

    def __init__(self, path: Path, perm: int):
        self.path, self.width = path, 4 * perm
        self.pending = bytearray()
        self.flushed = 0  # signatures on disk
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def append(self, sig: np.ndarray) -> None:
        self.pending += sig.tobytes()
        if len(self.pending) >= SIG_FLUSH:
            os.pwrite(self.fd, bytes(self.pending), self.flushed * self.width)
            self.flushed += len(self.pending) // self.width
            self.pending = bytearray()

    def __getitem__(self, i: int) -> np.ndarray:
        if i >= self.flushed:
            start = (i - self.flushed) * self.width
            raw = bytes(self.pending[start : start + self.width])
        else:
            raw = os.pread(self.fd, self.width, i * self.width)
        return np.frombuffer(raw, np.uint32)

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


class Decontamination:
    """The word n-grams of all validation text, and who said each first.

    Validation records are added as the corpus is read (in any order, each with its rank: the
    order of the old in-memory stage, task by task), then `freeze` sorts the n-gram hashes so
    training records can be checked a batch at a time:

    >>> d.add_validation("val-1", rank=0, texts=["a b c d"])   # n = 4
    >>> d.freeze(); d.first_hits([["x a b c d"]])
    ['val-1']
    """

    def __init__(self, n: int):
        self.n = n
        self.ids = Strings()
        self.ranks = array("q")
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.pending: list[int] = []
        self.owners: list[int] = []

    def add_validation(self, rid: str, rank: int, texts: list[str]) -> None:
        grams = set().union(*(ngrams(t, self.n) for t in texts))
        if not grams:
            return
        owner = self.ids.append(rid)
        self.ranks.append(rank)
        self.pending += grams
        self.owners += [owner] * len(grams)
        if len(self.pending) >= 1 << 16:
            self._flush()

    def _flush(self) -> None:
        self.parts.append((np.array(self.pending, np.uint64), np.array(self.owners, np.uint32)))
        self.pending, self.owners = [], []

    def freeze(self) -> None:
        """Sort the n-grams; keep for each the validation record of lowest rank."""
        self._flush()
        grams = np.concatenate([g for g, _ in self.parts])
        owners = np.concatenate([o for _, o in self.parts])
        self.parts = []
        order = np.lexsort((np.frombuffer(self.ranks, np.int64)[owners], grams))
        grams, owners = grams[order], owners[order]
        first = np.ones(len(grams), bool)
        first[1:] = grams[1:] != grams[:-1]
        self.grams, self.owner_of = grams[first], owners[first]

    def first_hits(self, records: list[list[str]]) -> list[str | None]:
        """For each record (its fields' texts): the validation id of its first shared n-gram,
        looking at fields in order and each field's n-grams in set order (as the old stage did)."""
        grams: list[int] = []
        row_of: list[int] = []
        for r, texts in enumerate(records):
            for t in texts:
                g = ngrams(t, self.n)
                grams += g
                row_of += [r] * len(g)
        out: list[str | None] = [None] * len(records)
        if not grams or not len(self.grams):
            return out
        query = np.array(grams, np.uint64)
        at = np.minimum(np.searchsorted(self.grams, query), len(self.grams) - 1)
        hit = np.flatnonzero(self.grams[at] == query)
        rows = np.array(row_of)[hit]
        rows, first = np.unique(rows, return_index=True)
        for r, h in zip(rows.tolist(), hit[first].tolist(), strict=True):
            out[r] = self.ids[int(self.owner_of[at[h]])]
        return out

    def nbytes(self) -> int:
        return self.grams.nbytes + self.owner_of.nbytes + self.ids.nbytes() + 8 * len(self.ranks)
