"""Bad input never crashes the corpus stage and is never dropped silently.

For every class: read = accepted + rejected, each reject names its reason, file and line.
"""

import gzip
import json
import re
import tracemalloc
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.corpus import CorpusConfig
from tasks import corpus, corpus_clean, corpus_read
from tasks.contracts import ContractError
from tasks.corpus_clean import split_of

DIRTY = Path(__file__).parents[1] / "data" / "dirty_translation.jsonl"


def build(tmp_path, path: Path, task="translation", fmt="auto", **kw):
    cfg = CorpusConfig(sources=[{"task": task, "path": str(path), "format": fmt}], **kw)
    out = tmp_path / "out"
    out.mkdir()
    stats = corpus.build(cfg, {}, out)
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert stats["read"] == stats["kept"] + len(rejects)  # nothing lost
    assert all(r["file"] == str(path) and r["reason"] and r["detail"] for r in rejects)
    return cfg, out, stats, rejects


def test_deliberately_dirty_file(tmp_path):
    cfg, out, stats, rejects = build(tmp_path, DIRTY)
    by_id = {r["id"] or r["line"]: r["reason"] for r in rejects}
    assert stats["read"] == 25 and stats["kept"] == 5
    assert stats["reasons"] == {
        "blank_line": 1,  # counted, not silently skipped (and not bad data)
        "invalid_utf8": 3,  # latin-1 byte, overlong encoding, lone surrogate escape
        "invalid_json": 3,  # truncated line, two objects on one line, trailing comma
        "not_an_object": 1,
        "missing_field": 3,  # NaN literal, null, absent
        "empty_field": 2,  # "" and whitespace only
        "wrong_type": 3,  # number, list, dict
        "missing_id": 2,  # absent, boolean
        "duplicate_id": 1,
        "exact_duplicate": 1,  # same text under another id
    }
    assert by_id["surrogate"] == "invalid_utf8" and by_id[4] == "invalid_utf8"
    kept = pd.read_parquet(out / "translation.parquet")
    assert list(kept["id"]) == ["ok-1", "ok-2", "ok-3", "ctrl", "ok-4"]
    assert kept.loc[3, "source_text"] == "Bell and zero-width."
    with pytest.raises(ContractError, match=r"72.0% of 25 records are bad.*see rejects.jsonl"):
        corpus.validate(cfg, {}, out, stats)


def test_ten_megabyte_field_is_rejected_with_its_line(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:
        f.write(
            json.dumps({"id": "small", "source_text": "A small document.", "target_text": "Un petit."}) + "\n"
        )
        f.write(json.dumps({"id": "huge", "source_text": "word " * 2_000_000, "target_text": "Mot."}) + "\n")
    _, _, stats, rejects = build(tmp_path, path, max_reject_rate=1.0)
    assert (rejects[0]["id"], rejects[0]["line"], rejects[0]["reason"]) == ("huge", 2, "too_long")
    assert len(rejects[0]["excerpt"]) <= 200 and stats["kept"] == 1


def test_long_pretraining_document_is_cut_into_pieces_each_decontaminated(tmp_path):
    cfg = CorpusConfig(sources=[{"task": "pretrain", "path": "x.jsonl"}])
    doc = next(f"d{i}" for i in range(999) if split_of(f"d{i}", cfg) == "train")
    val = next(f"v{i}" for i in range(999) if split_of(f"v{i}", cfg) == "validation")
    paragraphs = [" ".join(f"w{p}x{j}" for j in range(60)) + "." for p in range(100)]  # ~430 chars each
    text = "\n\n".join(paragraphs)
    overlap = " ".join(paragraphs[37].split()[10:25])  # 15 words of one paragraph
    path = tmp_path / "long.jsonl"
    path.write_text(
        json.dumps({"id": doc, "text": text})
        + "\n"
        + json.dumps({"id": val, "text": f"Seen: {overlap}"})
        + "\n"
    )
    _, out, stats, rejects = build(tmp_path, path, task="pretrain", max_chars=2000)
    kept = pd.read_parquet(out / "pretrain.parquet")
    pieces = kept[kept["id"].str.startswith(f"{doc}#part")]
    # kept, not rejected: cut at paragraph ends into pieces of at most max_chars, each traceable
    # to its line; only the piece sharing 13 words with validation text is dropped
    assert [(r["id"].split("#")[0], r["line"], r["reason"]) for r in rejects] == [(doc, 1, "contaminated")]
    assert len(pieces) + 1 == stats["read"] - 1 >= 20
    assert (pieces["line"] == 1).all() and (pieces["split"] == "train").all()
    assert pieces["text"].str.len().max() <= 2000 and pieces["text"].str.endswith(".").all()
    whole = sorted([*pieces["text"], next(t for t in corpus_clean.pieces(text, 2000) if overlap in t)])
    assert sorted(corpus_clean.pieces(text, 2000)) == whole
    assert "\n\n".join(corpus_clean.pieces(text, 2000)) == text  # cut at paragraph breaks only


def test_corrupt_parquet_is_one_named_reject(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "a", "text": "Hello."}]), good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[:-20])  # footer cut off
    _, _, stats, rejects = build(tmp_path, bad, task="pretrain", max_reject_rate=1.0)
    assert [r["reason"] for r in rejects] == ["unreadable_file"] and "Parquet" in rejects[0]["detail"]
    assert stats["kept"] == 0


def test_parquet_nulls_nan_and_wrong_types(tmp_path):
    rows = [
        {"id": "a", "text": "Fine.", "score": 1.0},
        {"id": "b", "text": None, "score": float("nan")},
        {"id": None, "text": "No id.", "score": 0.0},
    ]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    _, _, _, rejects = build(tmp_path, path, task="pretrain", max_reject_rate=1.0)
    assert [(r["line"], r["reason"]) for r in rejects] == [(2, "missing_field"), (3, "missing_id")]


def test_csv_with_bad_bytes_and_ragged_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'id,text\nr1,Fine text\nr2,bad \xff byte\nr3,too,many\nr4,"unclosed\n')
    _, _, stats, rejects = build(tmp_path, path, task="pretrain", max_reject_rate=1.0)
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (3, "invalid_utf8"),
        (4, "invalid_csv"),
        (5, "invalid_csv"),
    ]
    assert stats["kept"] == 1


def test_empty_sources_fail_the_stage(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    cfg, out, stats, _ = build(tmp_path, path, task="pretrain")
    with pytest.raises(ContractError, match="the sources hold no records"):
        corpus.validate(cfg, {}, out, stats)
    path.write_text("\n \n")  # two blank lines: read, counted, and named as the reason
    (tmp_path / "again").mkdir()
    cfg, out, stats, rejects = build(tmp_path / "again", path, task="pretrain")
    assert stats["reasons"] == {"blank_line": 2} and [r["line"] for r in rejects] == [1, 2]
    with pytest.raises(ContractError, match=r"gave no records: all 2 rejected \(blank_line 2"):
        corpus.validate(cfg, {}, out, stats)


def test_unclosed_quote_rejects_every_line_it_swallows(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('id,text\nr1,Fine text\nr2,"oops, never closed\nr3,swallowed\nr4,swallowed too\n')
    _, _, stats, rejects = build(tmp_path, path, task="pretrain", max_reject_rate=1.0)
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (3, "invalid_csv"),
        (4, "invalid_csv"),
        (5, "invalid_csv"),
    ]
    assert all("quoted field opened at line 3" in r["detail"] for r in rejects)
    assert stats["kept"] == 1 and stats["read"] == 4


def gzip_with_a_long_line(path: Path, mib: int, before: bytes, after: bytes) -> None:
    """A small .gz (about 1 MB per 256 MiB) whose second line expands to `mib` MiB."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(before)
        for _ in range(mib):
            f.write(b"a" * (1 << 20))
        f.write(after)


def test_line_that_decompresses_to_256_mib_is_a_reject_not_memory(tmp_path):
    path = tmp_path / "bomb.jsonl.gz"
    gzip_with_a_long_line(path, 256, b'{"id": "a", "text": "Fine."}\n{"id": "b", "text": "', b'"}\n')
    tracemalloc.start()
    try:
        _, _, stats, rejects = build(tmp_path, path, task="pretrain")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(r["line"], r["reason"]) for r in rejects] == [(2, "too_long")]
    assert "line longer than" in rejects[0]["detail"] and stats["kept"] == 1
    assert peak < 100 << 20  # bounded reads (32 MiB) at a time, never the 256 MiB line


@pytest.mark.parametrize(("name", "line", "kept"), [("bomb.txt.gz", 1, 0), ("bomb.csv.gz", 3, 1)])
def test_overlong_csv_row_or_text_document_is_a_reject(name, line, kept, tmp_path):
    path = tmp_path / name
    gzip_with_a_long_line(path, 40, b"Fine.\n\n" if "txt" in name else b"id,text\na,Fine.\n", b"\n")
    _, _, stats, rejects = build(tmp_path, path, task="pretrain", max_reject_rate=1.0)
    assert [(r["line"], r["reason"]) for r in rejects] == [(line, "too_long")]  # a text file is one document
    assert "not read" in rejects[0]["detail"] and stats["kept"] == kept


def test_file_past_the_decompressed_size_cap_stops_with_a_named_reject(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_read, "FILE_BYTES", 1000)  # 64 GiB by default
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": f"Words {i}."}) + "\n" for i in range(100)))
    _, _, stats, rejects = build(tmp_path, path, task="pretrain", max_reject_rate=1.0)
    assert [(r["reason"], r["line"]) for r in rejects] == [("too_long", stats["kept"] + 1)]
    assert 0 < stats["kept"] < 100 and "holds more than 1000 bytes" in rejects[0]["detail"]


def test_huge_parquet_or_arrow_cells_are_rejects_not_memory(tmp_path, monkeypatch):
    # bounds lowered from 32 MiB a row and 256 MiB a Parquet column chunk (as FILE_BYTES above)
    monkeypatch.setattr(corpus_read, "LINE_BYTES", 10_000)
    monkeypatch.setattr(corpus_read, "COLUMN_BYTES", 40_000)
    rows = [{"id": f"r{i}", "text": f"Row {i}."} for i in range(6)]
    rows[1]["text"] = "x" * 20_000  # in a small enough row group: read, but never made a Python str
    rows[4]["text"] = "y" * 50_000  # its row group's column past COLUMN_BYTES: not even read
    path = tmp_path / "cells.parquet"
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("text", pa.string())])) as w:
        for group in (rows[:3], rows[3:]):
            w.write_table(pa.Table.from_pylist(group), row_group_size=3)
    _, _, stats, rejects = build(tmp_path, path, task="pretrain", max_reject_rate=1.0, max_chars=100_000)
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "too_long"),
        (4, "too_long"),
        (5, "too_long"),
        (6, "too_long"),
    ]
    assert "row holds" in rejects[0]["detail"] and "more than 10000" in rejects[0]["detail"]
    assert (
        "row group 1 column 'text' holds" in rejects[1]["detail"]
        and "smaller row groups" in rejects[1]["detail"]
    )
    assert stats["kept"] == 2

    import datasets

    datasets.Dataset.from_list(rows[:3]).save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "d").mkdir()
    _, _, stats, rejects = build(tmp_path / "d", tmp_path / "ds", task="pretrain", max_reject_rate=1.0)
    assert [(r["line"], r["reason"]) for r in rejects] == [(2, "too_long")] and stats["kept"] == 2


@pytest.mark.parametrize("content", ["", '{"id": "a", "text": ""}\n{"id": "b", "text": " "}\n'])
def test_source_that_gives_no_record_fails_the_contract_naming_it(content, tmp_path):
    good, empty = tmp_path / "good.jsonl", tmp_path / "empty.jsonl"
    good.write_text("".join(json.dumps({"id": f"g{i}", "text": f"Good text {i}."}) + "\n" for i in range(20)))
    empty.write_text(content)
    cfg = CorpusConfig(
        sources=[{"task": "pretrain", "path": str(p)} for p in (good, empty)], max_reject_rate=0.5
    )
    out = tmp_path / "out"
    out.mkdir()
    stats = corpus.build(cfg, {}, out)
    why = "it holds none" if not content else r"all 2 rejected \(empty_field 2"
    with pytest.raises(
        ContractError, match=rf"corpus/sources failed: source '{empty}' \(pretrain\) gave no records: {why}"
    ):
        corpus.validate(cfg, {}, out, stats)


def test_half_garbage_file_fails_even_when_good_sources_dilute_it(tmp_path):
    good, half = tmp_path / "good.jsonl", tmp_path / "half.jsonl"
    good.write_text(
        "".join(json.dumps({"id": f"g{i}", "text": f"Good text {i}."}) + "\n" for i in range(400))
    )
    rows = [
        {"id": f"h{i}", "text": f"Half text {i}."} if i % 2 else {"text": f"No id {i}."} for i in range(40)
    ]
    half.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = CorpusConfig(sources=[{"task": "pretrain", "path": str(p)} for p in (good, half)])
    out = tmp_path / "out"
    out.mkdir()
    stats = corpus.build(cfg, {}, out)
    assert stats["bad_rate"] < cfg.max_reject_rate  # 20 of 440: the global ceiling alone passes it
    with pytest.raises(ContractError, match=rf"50.0% of {half} is bad \(max_file_reject_rate 40.0%\)") as err:
        corpus.validate(cfg.model_copy(update={"max_file_reject_rate": 0.4}), {}, out, stats)
    assert "line 1: missing_id" in str(err.value) and "`id_field: null`" in str(err.value)
    assert corpus.validate(cfg, {}, out, stats)  # at the default 50% it passes


def test_failed_corpus_keeps_its_rejects_for_diagnosis(tmp_path):
    from tasks.artifacts import Home, staging

    home = Home.resolve(tmp_path / "home")
    cfg = CorpusConfig(sources=[{"task": "translation", "path": str(DIRTY)}])
    with pytest.raises(ContractError, match=r"see rejects.jsonl \(kept at (\S+)\)") as err:
        with staging(home, "corpus", "t", "a" * 64) as tmp:
            corpus.validate(cfg, {}, tmp, corpus.build(cfg, {}, tmp))
    kept = Path(re.search(r"kept at (\S+)\)", str(err.value)).group(1))
    assert kept == tmp_path / "home" / "artifacts" / "failed" / "corpus-t-aaaaaaaaaaaa" / "rejects.jsonl"
    assert len(kept.read_text().splitlines()) == 20 and not tmp.exists()


def test_all_duplicate_source_fails_naming_it(tmp_path):
    """All duplicates left one preference record: the tokenizer trained a vocabulary below its
    size and the shards stage crashed with `No objects to concatenate`."""
    good, dup = tmp_path / "good.jsonl", tmp_path / "dup.jsonl"
    good.write_text(
        "".join(json.dumps({"id": f"g{i}", "text": f"Good text number {i}."}) + "\n" for i in range(40))
    )
    dup.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": "The same words again."}) + "\n" for i in range(30))
    )
    cfg = CorpusConfig(
        sources=[{"task": "pretrain", "path": str(p)} for p in (good, dup)], validation_fraction=0.2
    )
    (out := tmp_path / "out").mkdir()
    stats = corpus.build(cfg, {}, out)
    with pytest.raises(
        ContractError, match=rf"source '{dup}' \(pretrain\) is all duplicates: 30 records read, 29"
    ):
        corpus.validate(cfg, {}, out, stats)
