"""Corpus stage: normalisation, loud rejects by reason, nothing lost, dedup, splits, contracts."""

import json

import pandas as pd
import pytest

from schemas.corpus import REASONS, CorpusConfig
from tasks import corpus
from tasks.contracts import ContractError
from tasks.corpus_clean import normalize, split_of
from tests.conftest import write_jsonl


def test_normalize():
    assert normalize("Cafe\u0301\u00a0ok  \r\n\x07end ") == "Café ok\nend"
    assert normalize("  \n  ") == ""


def run(tmp_path, lines: list, task="translation", name="raw.jsonl", **kw):
    """Build a corpus from one JSONL file of `lines` (str, bytes or dict each)."""
    src = tmp_path / name
    data = [
        x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode() for x in lines
    ]
    src.write_bytes(b"\n".join(data) + b"\n")
    cfg = CorpusConfig(sources=[{"task": task, "path": str(src)}], **kw)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    stats = corpus.build(cfg, {}, out)
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    return cfg, out, stats, rejects


def tr(rid, s="Hello there", t="Bonjour"):
    return {"id": rid, "source_text": s, "target_text": t}


def test_every_record_is_kept_or_rejected_with_reason_file_and_line(tmp_path):
    lines = [
        tr("a"),
        tr("b", t="   "),
        '{"id": "c", "source_text": "x"',
        tr("a", s="other"),
        tr("d"),
        {"id": "e", "source_text": 5, "target_text": "x"},
        b'{"id": "f", "source_text": "\xff", "target_text": "x"}',
        tr("g", s="Good", t="Bien"),
    ]
    cfg, out, stats, rejects = run(tmp_path, lines)
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert reasons == {
        2: "empty_field",
        3: "invalid_json",
        4: "duplicate_id",
        5: "exact_duplicate",
        6: "wrong_type",
        7: "invalid_utf8",
    }
    assert set(reasons.values()) <= set(REASONS)
    assert all(r["file"] == str(tmp_path / "raw.jsonl") and r["detail"] for r in rejects)
    assert rejects[2]["detail"] == f"id 'a' first seen at {tmp_path / 'raw.jsonl'}:1"
    kept = pd.read_parquet(out / "translation.parquet")
    assert list(kept["id"]) == ["a", "g"] and list(kept["line"]) == [1, 8]
    assert stats["read"] == 8 == stats["kept"] + len(rejects)
    assert stats["reasons"] == {r: 1 for r in reasons.values()}
    assert stats["files"][str(tmp_path / "raw.jsonl")]["invalid_json"] == 1
    with pytest.raises(ContractError, match=r"reject-rate failed: 62.5% of 8 records are bad"):
        corpus.validate(cfg, {}, out, stats)


def test_reject_rate_under_the_ceiling_passes(tmp_path):
    lines = [tr(f"r{i}", s=f"Sentence number {i} here") for i in range(9)] + ["{oops"]
    cfg, out, stats, _ = run(tmp_path, lines, max_reject_rate=0.2)
    names = [c.name for c in corpus.validate(cfg, {}, out, stats)]
    assert names[:2] == ["corpus/accounting", "corpus/reject-rate"] and stats["bad_rate"] == 0.1


def test_duplicates_do_not_count_as_bad_data(tmp_path):
    lines = [tr("a"), tr("b"), tr("c", s="Hello  THERE!")]  # exact, then near duplicate of a
    cfg, out, stats, rejects = run(tmp_path, lines, max_reject_rate=0.0)
    assert [r["reason"] for r in rejects] == ["exact_duplicate", "near_duplicate"]
    assert "with id 'a'" in rejects[1]["detail"] and stats["bad_rate"] == 0.0
    corpus.validate(cfg, {}, out, stats)


def test_near_duplicate_threshold_is_configurable(tmp_path):
    base = "the quick brown fox jumps over the lazy dog near the river bank today"
    lines = [tr("a", s=base), tr("b", s=base + " again")]
    assert run(tmp_path, lines, near_dup_threshold=0.6)[3][0]["reason"] == "near_duplicate"
    assert run(tmp_path, lines, near_dup_threshold=None)[3] == []


def test_preference_pair_with_equal_sides_is_rejected(tmp_path):
    rec = {"id": "p", "prompt": "Say hi", "chosen": "Hi", "rejected": "Hi"}
    _, _, _, rejects = run(tmp_path, [rec], task="preference")
    assert rejects[0]["reason"] == "chosen_equals_rejected" and rejects[0]["id"] == "p"


def test_split_is_stable_when_records_are_added():
    cfg = CorpusConfig(sources=[{"task": "qa", "path": "x.jsonl"}], validation_fraction=0.3)
    before = {f"id-{i}": split_of(f"id-{i}", cfg) for i in range(200)}
    after = {f"id-{i}": split_of(f"id-{i}", cfg) for i in range(400)}
    assert all(after[k] == v for k, v in before.items())
    share = sum(v == "validation" for v in after.values()) / len(after)
    assert 0.2 < share < 0.4


def test_grouping_key_keeps_related_records_in_one_split(tmp_path):
    ctx = [f"Context number {g} about topic {g * 7} with some words." for g in range(12)]
    recs = [
        {
            "id": f"q{g}-{k}",
            "title": f"t{g}",
            "context": ctx[g],
            "question": f"Q{k} on {g}?",
            "answer": f"A{k}",
        }
        for g in range(12)
        for k in range(4)
    ]
    src = write_jsonl(tmp_path / "qa.jsonl", recs)
    cfg = CorpusConfig(
        sources=[{"task": "qa", "path": str(src), "group_field": "title"}],
        validation_fraction=0.4,
        near_dup_threshold=None,
        decontam_ngram=None,
    )
    out = tmp_path / "o"
    out.mkdir()
    stats = corpus.build(cfg, {}, out)
    df = pd.read_parquet(out / "qa.parquet")
    assert len(df) == 48 and df.groupby("group")["split"].nunique().max() == 1
    assert set(df["split"]) == {"train", "validation"}
    assert any(c.name == "corpus/qa-groups" for c in corpus.validate(cfg, {}, out, stats))


def test_training_text_overlapping_validation_is_removed_and_counted(tmp_path):
    shared = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    docs = [{"id": f"d{i}", "text": f"Document {i} says: {shared}"} for i in range(40)]
    _, out, stats, rejects = run(
        tmp_path, docs, task="pretrain", validation_fraction=0.2, near_dup_threshold=None
    )
    df = pd.read_parquet(out / "pretrain.parquet")
    assert set(df["split"]) == {"validation"} and stats["contaminated"] == 40 - len(df) > 0
    assert {r["reason"] for r in rejects} == {"contaminated"}
    assert "13-word sequence with validation record" in rejects[0]["detail"]


def test_contract_names_the_offending_record(tmp_path):
    """A table with an empty target (corrupted after the build) is stopped, naming the id."""
    cfg, out, stats, _ = run(tmp_path, [tr("ok-1"), tr("bad-2", s="Other text")])
    df = pd.read_parquet(out / "translation.parquet")
    df.loc[df["id"] == "bad-2", "target_text"] = ""
    df.to_parquet(out / "translation.parquet")
    with pytest.raises(
        ContractError, match=r"expect_column_value_lengths_to_be_between\(column=target_text.*id=bad-2"
    ):
        corpus.validate(cfg, {}, out, stats)


def test_contract_fails_on_empty_and_null(tmp_path):
    cfg, out, stats, _ = run(tmp_path, [tr("x")])
    df = pd.read_parquet(out / "translation.parquet")
    df.iloc[:0].to_parquet(out / "translation.parquet")
    with pytest.raises(ContractError, match="row_count"):
        corpus.validate(cfg, {}, out, stats)
    df["source_text"] = None
    df.to_parquet(out / "translation.parquet")
    with pytest.raises(ContractError, match="not_be_null.*id=x"):
        corpus.validate(cfg, {}, out, stats)
