"""Streaming corpus stage: batch sizes do not change the corpus, and the compact dedup decides
as the full-signature MinHash LSH of datasketch does."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from datasketch import MinHash, MinHashLSH

from schemas.corpus import CorpusConfig
from tasks import corpus, corpus_dedup
from tasks.corpus_clean import shingles
from tasks.corpus_dedup import Dedup
from tasks.corpus_read import Raw
from tests.conftest import head, write_jsonl

FILES = {"translation": "translation_en_fr.jsonl", "summarization": "summarization.jsonl", "qa": "qa.jsonl"}


def sources(tmp_path) -> list[dict]:
    """Slices of the embedded corpus, with repeated ids and contents and a blank field thrown in."""
    out = []
    for task, name in FILES.items():
        records = head(name, 200)
        field = {"translation": "source_text", "summarization": "document", "qa": "context"}[task]
        variants = [
            {**r, "id": f"v-{n}", field: one_word_less(r[field], n)} for n, r in enumerate(records[:40])
        ]
        records += [records[3], {**records[7], "id": "blank", field: " "}, {**records[5], "id": "copy-5"}]
        records += variants
        out.append({"task": task, "path": str(write_jsonl(tmp_path / "raw" / name, records))})
    return out


def one_word_less(text: str, n: int) -> str:
    words = text.split()
    return " ".join(words[: n % len(words)] + words[n % len(words) + 1 :])


def build(tmp_path, name: str, cfg: CorpusConfig):
    out = tmp_path / name
    out.mkdir()
    stats = corpus.build(cfg, {}, out)
    stats.pop("memory")
    tables = {t: pq.read_table(out / f"{t}.parquet") for t in FILES}
    return stats, (out / "rejects.jsonl").read_bytes(), tables, (out / "lengths.png").read_bytes()


def test_batch_sizes_do_not_change_the_corpus(tmp_path, monkeypatch):
    cfg = CorpusConfig(sources=sources(tmp_path), validation_fraction=0.2, decontam_ngram=8)
    stats, rejects, tables, png = build(tmp_path, "big", cfg)
    assert stats["near_duplicates"] and stats["contaminated"]  # the slices exercise every path
    found = [json.loads(x) for x in rejects.splitlines()]
    assert {"duplicate_id", "exact_duplicate", "empty_field"} <= {r["reason"] for r in found}
    in_order = [(list(FILES).index(r["task"]), r["line"]) for r in found if r["reason"] != "contaminated"]
    assert in_order == sorted(in_order)  # the records' own faults and duplicates, in input order
    monkeypatch.setattr(corpus, "BATCH", 7)
    monkeypatch.setattr(corpus, "ROW_GROUP", 5)
    monkeypatch.setattr(corpus, "HITS", 3)
    monkeypatch.setattr(corpus_dedup, "MERGE_AT", 4)
    monkeypatch.setattr(corpus_dedup, "PART_KEYS", 64)  # repeated keys found partition by partition
    monkeypatch.setattr(corpus_dedup, "CHUNK", 9)
    monkeypatch.setattr(corpus_dedup, "PART_GRAMS", 1000)  # validation n-grams sorted partition by partition
    small = build(tmp_path, "small", cfg)
    assert small[:2] == (stats, rejects) and small[3] == png
    assert all(small[2][t].equals(tables[t]) for t in FILES)
    assert pq.ParquetFile(tmp_path / "small" / "translation.parquet").num_row_groups > 10


def test_near_duplicates_match_datasketch_lsh(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_dedup, "MERGE_AT", 16)
    monkeypatch.setattr(corpus_dedup, "PART_KEYS", 256)
    cfg = CorpusConfig(sources=[{"task": "translation", "path": "x"}], near_dup_threshold=0.6)
    records = []
    for n, r in enumerate(head(FILES["translation"], 300)):
        records += [
            [r["source_text"], r["target_text"]],
            [one_word_less(r["source_text"], n), r["target_text"]],
        ]
    ours = Dedup(cfg, tmp_path)
    lsh, sigs, order, theirs = MinHashLSH(0.6, 64), {}, {}, []
    for n, values in enumerate(records):
        rid = f"r{n}"
        ours.add(Raw("x", n, None), n, "translation", n, rid, values)
        sig = MinHash(64, seed=1, hashfunc=xxhash.xxh32_intdigest)
        sig.update_batch([s.encode() for s in shingles(values, cfg.shingle_words)])
        hits = [k for k in lsh.query(sig) if sig.jaccard(sigs[k]) >= 0.6]
        if hits:
            first = min(hits, key=order.__getitem__)
            theirs.append((rid, f"estimated Jaccard {sig.jaccard(sigs[first]):.2f} with id {first!r}"))
            continue
        lsh.insert(rid, sig)
        sigs[rid], order[rid] = sig, n
    mine = [(rid, detail) for *_, rid, _, detail in ours.decide()]
    ours.close()
    assert len(theirs) > 50 and mine == theirs


def test_repeated_ids_are_found_partition_by_partition(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_dedup, "PART_KEYS", 8)  # 1000 ids: 128 partitions
    ids = [f"id-{n}" for n in range(1000)] + ["id-7", "id-500", "id-7"]
    pq.write_table(pa.table({"id": ids}), tmp_path / "t.parquet")
    assert corpus._repeated_ids(tmp_path / "t.parquet") == [
        "id='id-7' occurs 3 times",
        "id='id-500' occurs 2 times",
    ]
    pq.write_table(pa.table({"id": ids[:1000]}), tmp_path / "t.parquet")
    assert corpus._repeated_ids(tmp_path / "t.parquet") == []
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # the partitions are gone


def test_validation_batches_hold_a_row_group_not_the_file(tmp_path, monkeypatch):
    """pyarrow's default pre-buffering kept every row group read until the reader closed
    (apache/arrow#39808): the validation's memory grew with the table (~1 MB a batch)."""
    monkeypatch.setattr(corpus, "VALIDATE_BYTES", 100_000)  # batches of ~16 rows
    texts = [os.urandom(3000).hex() for _ in range(600)]  # random hex: Snappy barely shrinks it
    columns = ["id", "source", "file", "split", "group", "text"]
    table = pa.table({c: [f"{c}-{n}" for n in range(600)] for c in columns[:-1]} | {"text": texts})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=30)  # 20 row groups of ~180 KB
    del table
    before, most, rows = pa.total_allocated_bytes(), 0, 0
    for batch in corpus._validation_batches(tmp_path / "t.parquet", columns):
        most, rows = max(most, pa.total_allocated_bytes()), rows + batch.num_rows
        del batch
    assert rows == 600 and most - before < (tmp_path / "t.parquet").stat().st_size / 3
