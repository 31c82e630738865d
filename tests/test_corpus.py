"""Corpus stage: normalisation, loud rejects, nothing lost, deterministic splits, contracts."""

import json

import pandas as pd
import pytest

from schemas.corpus import CorpusConfig
from tasks import corpus
from tasks.contracts import ContractError
from tests.conftest import write_jsonl


def test_normalize():
    assert corpus.normalize("Cafe\u0301\u00a0ok  \r\n\x07end ") == "Café ok\nend"
    assert corpus.normalize("  \n  ") == ""


def build(tmp_path, lines: list[str], task="translation", **kw):
    src = tmp_path / "raw.jsonl"
    src.write_bytes(b"\n".join(x.encode() if isinstance(x, str) else x for x in lines) + b"\n")
    cfg = CorpusConfig(sources=[{"task": task, "path": str(src)}], **kw)
    out = tmp_path / "out"
    out.mkdir()
    stats = corpus.build(cfg, {}, out)
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    return cfg, out, stats, rejects


def tr(rid, s="Hello there", t="Bonjour"):
    return json.dumps({"id": rid, "source_text": s, "target_text": t})


def test_every_record_is_kept_or_rejected_with_reason(tmp_path):
    lines = [
        tr("a"),
        tr("b", t="   "),  # empty after normalisation
        '{"id": "c", "source_text": "x"',  # truncated JSON
        tr("a", s="other"),  # duplicate id
        tr("d"),  # exact duplicate of a
        json.dumps({"id": "e", "source_text": 5, "target_text": "x"}),  # wrong type
        b'{"id": "f", "source_text": "\xff", "target_text": "x"}',  # invalid UTF-8
        json.dumps({"id": "g", "source_text": "Good", "target_text": "Bien"}),
    ]
    cfg, out, stats, rejects = build(tmp_path, lines)
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert reasons == {
        2: "empty field 'target_text'",
        3: reasons[3],
        4: "duplicate id: first seen at " + str(tmp_path / "raw.jsonl") + ":1",
        5: "exact duplicate: same content as id a",
        6: "wrong type: field 'source_text' is int, expected a string",
        7: "invalid UTF-8 at byte 28",
    }
    assert reasons[3].startswith("invalid JSON")
    assert all(r["file"] == str(tmp_path / "raw.jsonl") for r in rejects)
    kept = pd.read_parquet(out / "translation.parquet")
    assert list(kept["id"]) == ["a", "g"] and list(kept["line"]) == [1, 8]
    counts = stats["files"][str(tmp_path / "raw.jsonl")]
    assert counts["in"] == 8 == counts["kept"] + len(rejects)
    assert [c.name for c in corpus.validate(cfg, {}, out, stats)][0] == "corpus/accounting"


def test_preference_pair_with_equal_sides_is_rejected(tmp_path):
    rec = {"id": "p", "prompt": "Say hi", "chosen": "Hi", "rejected": "Hi"}
    _, _, _, rejects = build(tmp_path, [json.dumps(rec)], task="preference")
    assert rejects[0]["reason"] == "chosen equals rejected" and rejects[0]["id"] == "p"


def test_nested_field_mapping(tmp_path):
    src = write_jsonl(tmp_path / "n.jsonl", [{"key": 7, "translation": {"en": "Hi", "fr": "Salut"}}])
    cfg = CorpusConfig(
        sources=[
            {
                "task": "translation",
                "path": str(src),
                "id_field": "key",
                "fields": {"source_text": "translation.en", "target_text": "translation.fr"},
            }
        ]
    )
    out = tmp_path / "o"
    out.mkdir()
    corpus.build(cfg, {}, out)
    row = pd.read_parquet(out / "translation.parquet").iloc[0]
    assert (row["id"], row["source_text"], row["target_text"]) == ("7", "Hi", "Salut")


def test_split_is_stable_when_records_are_added():
    cfg = CorpusConfig(sources=[{"task": "qa", "path": "x.jsonl"}], validation_fraction=0.3)
    before = {f"id-{i}": corpus.split_of(f"id-{i}", cfg) for i in range(200)}
    after = {f"id-{i}": corpus.split_of(f"id-{i}", cfg) for i in range(400)}
    assert all(after[k] == v for k, v in before.items())
    share = sum(v == "validation" for v in after.values()) / len(after)
    assert 0.2 < share < 0.4


def test_contract_names_the_offending_record(tmp_path):
    """A table with an empty target (corrupted after the build) is stopped, naming the id."""
    cfg, out, stats, _ = build(tmp_path, [tr("ok-1"), tr("bad-2", s="Other text")])
    df = pd.read_parquet(out / "translation.parquet")
    df.loc[df["id"] == "bad-2", "target_text"] = ""
    df.to_parquet(out / "translation.parquet")
    with pytest.raises(
        ContractError, match=r"expect_column_value_lengths_to_be_between\(column=target_text.*id=bad-2"
    ):
        corpus.validate(cfg, {}, out, stats)


def test_contract_fails_on_empty_and_null(tmp_path):
    cfg, out, stats, _ = build(tmp_path, [tr("x")])
    df = pd.read_parquet(out / "translation.parquet")
    df.iloc[:0].to_parquet(out / "translation.parquet")
    stats["files"] = {}
    with pytest.raises(ContractError, match="row_count"):
        corpus.validate(cfg, {}, out, {"files": {}})
    df["source_text"] = None
    df.to_parquet(out / "translation.parquet")
    with pytest.raises(ContractError, match="not_be_null.*id=x"):
        corpus.validate(cfg, {}, out, {"files": {}})
