"""Corpus sources: one test per format and per field mapping users bring from public datasets."""

import csv
import gzip
import json
import time

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.config import PipelineConfig
from schemas.corpus import CorpusConfig
from tasks import corpus
from tasks.corpus_read import SourceError
from tasks.plan import raw_refs
from tests.conftest import write_jsonl


def build(tmp_path, *sources, **kw) -> tuple[dict, dict[str, pd.DataFrame], list[dict]]:
    cfg = CorpusConfig(sources=list(sources), near_dup_threshold=None, decontam_ngram=None, **kw)
    out = tmp_path / "out"
    out.mkdir()
    stats = corpus.build(cfg, {}, out)
    tables = {p.stem: pd.read_parquet(p) for p in out.glob("*.parquet")}
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert stats["read"] == stats["kept"] + len(rejects)
    return stats, tables, rejects


def test_jsonl_gz_with_nested_translation_fields(tmp_path):
    path = tmp_path / "wmt.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"key": 7, "translation": {"en": "Hi", "fr": "Salut"}}) + "\n")
    fields = {"source_text": "translation.en", "target_text": "translation.fr"}
    _, t, _ = build(tmp_path, {"task": "translation", "path": str(path), "id_field": "key", "fields": fields})
    row = t["translation"].iloc[0]
    assert (row["id"], row["source_text"], row["target_text"], row["line"]) == ("7", "Hi", "Salut", 1)


def test_parquet_squad_answers_list(tmp_path):
    rows = [
        {
            "id": "s1",
            "title": "Eiffel",
            "context": "Built in 1889.",
            "question": "When?",
            "answers": {"text": ["1889", "in 1889"], "answer_start": [9, 6]},
        },
        {
            "id": "s2",
            "title": "Eiffel",
            "context": "Paris.",
            "question": "Unanswerable?",
            "answers": {"text": [], "answer_start": []},
        },
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "squad.parquet")
    src = {
        "task": "qa",
        "path": str(tmp_path / "squad.parquet"),
        "fields": {"answer": "answers.text.0"},
        "group_field": "title",
    }
    _, t, rejects = build(tmp_path, src)
    assert t["qa"][["id", "answer", "group", "line"]].values.tolist() == [["s1", "1889", "Eiffel", 1]]
    assert (rejects[0]["line"], rejects[0]["reason"]) == (2, "missing_field")
    assert "'answers.text.0' is None" in rejects[0]["detail"]


def test_csv_and_tsv_summarization_article_highlights(tmp_path):
    with open(tmp_path / "cnn.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows(
            [
                ["id", "article", "highlights"],
                ["c1", "Line one.\nLine two.", "Two lines."],
                ["c2", "Only", "x", "extra"],
                ["c3", "Third article.", "Third."],
            ]
        )
    (tmp_path / "more.tsv").write_text("id\tarticle\thighlights\nt1\tA tab article.\tTab.\n")
    fields = {"document": "article", "summary": "highlights"}
    _, t, rejects = build(
        tmp_path,
        {"task": "summarization", "path": str(tmp_path / "cnn.csv"), "fields": fields},
        {"task": "summarization", "path": str(tmp_path / "more.tsv"), "fields": fields, "weight": 3.0},
    )
    df = t["summarization"]
    assert df[["id", "line"]].values.tolist() == [["c1", 2], ["c3", 5], ["t1", 2]]
    assert df.loc[0, "document"] == "Line one.\nLine two." and list(df["weight"]) == [1.0, 1.0, 3.0]
    assert [(r["line"], r["reason"]) for r in rejects] == [(4, "invalid_csv")]


def test_text_folder_per_file_and_per_paragraph(tmp_path):
    folder = tmp_path / "books"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("First para.\n\nSecond\npara.\n")
    (folder / "sub" / "b.txt").write_text("Only one.")
    _, t, _ = build(tmp_path, {"task": "pretrain", "path": str(folder), "text_unit": "paragraph"})
    df = t["pretrain"]
    assert df[["text", "line"]].values.tolist() == [
        ["First para.", 1],
        ["Second\npara.", 3],
        ["Only one.", 1],
    ]
    assert list(df["file"]) == [f"{folder}/a.txt"] * 2 + [f"{folder}/sub/b.txt"]
    assert df["id"].is_unique


def test_min_chars_applies_to_each_paragraph_document(tmp_path):
    """A book in paragraph mode made documents of 'by', '(1818)' and 'Chapter 1'."""
    book = tmp_path / "book.txt"
    book.write_text(
        "Frankenstein\n\nby\n\n(1818)\n\nChapter 1\n\nI am by birth a Genevese, and my family is one of the most distinguished.\n"
    )
    stats, t, rejects = build(
        tmp_path,
        {"task": "pretrain", "path": str(book), "text_unit": "paragraph"},
        min_chars=20,
        max_reject_rate=1.0,
    )
    assert t["pretrain"]["line"].tolist() == [9]
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (1, "empty_field"),
        (3, "empty_field"),
        (5, "empty_field"),
        (7, "empty_field"),
    ]


def test_folder_content_enters_the_fingerprint(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text("Hello.")

    def fp(path):
        return raw_refs(
            PipelineConfig(name="t", corpus={"sources": [{"task": "pretrain", "path": str(path)}]})
        )[0].fingerprint

    before = fp(folder)
    (folder / "a.txt").rename(folder / "b.txt")
    renamed = fp(folder)
    (folder / "b.txt").write_text("Hello!")
    edited = fp(folder)
    assert len({before, renamed, edited}) == 3
    folder.rename(tmp_path / "moved")
    assert fp(tmp_path / "moved") == edited  # moving the folder changes nothing


def test_save_to_disk_dataset_dict_with_split(tmp_path):
    rows = [{"id": i, "text": f"Document number {i}."} for i in range(3)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "ds"))
    _, t, _ = build(tmp_path, {"task": "pretrain", "path": str(tmp_path / "ds"), "split": "train"})
    assert t["pretrain"][["id", "line"]].values.tolist() == [["0", 1], ["1", 2], ["2", 3]]


def test_save_to_disk_without_split_names_the_choices(tmp_path):
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "x"}])}).save_to_disk(
        str(tmp_path / "ds")
    )
    with pytest.raises(SourceError, match=r"set `split` to one of \['train'\]"):
        build(tmp_path, {"task": "pretrain", "path": str(tmp_path / "ds"), "id_field": None})


def test_hub_dataset_offline_fails_at_once(tmp_path):
    started = time.perf_counter()
    with pytest.raises(SourceError, match="cannot be loaded offline.*save_to_disk"):
        build(
            tmp_path,
            {
                "task": "qa",
                "path": "rajpurkar/squad",
                "format": "hub",
                "revision": "abc123",
                "split": "train",
            },
        )
    assert time.perf_counter() - started < 5


def test_preference_chat_messages_take_the_prompt_from_shared_user_turns(tmp_path):
    def msg(role, content):
        return {"role": role, "content": content}

    rows = [
        {
            "id": "u1",
            "chosen": [msg("user", "Capital of France?"), msg("assistant", "Paris.")],
            "rejected": [msg("user", "Capital of France?"), msg("assistant", "Lyon.")],
        },
        {
            "id": "u2",
            "prompt": "Say hi",
            "chosen": [msg("user", "Say hi"), msg("assistant", "Hi!")],
            "rejected": [msg("user", "Say hi"), msg("assistant", "No.")],
        },
        {"id": "u3", "prompt": "Plain", "chosen": "Good answer", "rejected": "Bad answer"},
        {
            "id": "u4",
            "chosen": [msg("user", "Q?"), msg("assistant", "A")],
            "rejected": [msg("user", "Q?"), {"role": "bot"}],
        },
        {"id": "u5", "chosen": [msg("user", "Q?")], "rejected": [msg("user", "Q?"), msg("assistant", "A")]},
    ]
    _, t, rejects = build(
        tmp_path, {"task": "preference", "path": str(write_jsonl(tmp_path / "uf.jsonl", rows))}
    )
    got = t["preference"][["id", "prompt", "chosen", "rejected"]].values.tolist()
    assert got == [
        ["u1", "Capital of France?", "Paris.", "Lyon."],
        ["u2", "Say hi", "Hi!", "No."],
        ["u3", "Plain", "Good answer", "Bad answer"],
    ]
    assert [(r["id"], r["reason"]) for r in rejects] == [("u4", "bad_chat"), ("u5", "bad_chat")]


def test_several_sources_per_task_keep_their_lineage_and_mix(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"id": f"a{i}", "text": f"Alpha text {i}."} for i in range(6)])
    b = write_jsonl(
        tmp_path / "b.jsonl",
        [{"uid": f"b{i}", "body": f"Beta text {i}.", "source": "wiki"} for i in range(2)],
    )
    stats, t, _ = build(
        tmp_path,
        {"task": "pretrain", "path": str(a)},
        {"task": "pretrain", "path": str(b), "id_field": "uid", "fields": {"text": "body"}, "weight": 3.0},
        validation_fraction=0.0,
    )
    df = t["pretrain"]
    assert set(zip(df["source"], df["file"], strict=True)) == {(str(a), str(a)), ("wiki", str(b))}
    assert stats["mix"]["pretrain"] == {str(a): 0.5, str(b): 0.5}


def test_a_file_whose_columns_differ_is_rejected_whole(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([{"id": "x1", "text": "Good one."}]), folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist([{"id": "y1", "content": "Renamed."}] * 2), folder / "part-1.parquet")
    stats, t, rejects = build(tmp_path, {"task": "pretrain", "path": str(folder)})
    assert list(t["pretrain"]["id"]) == ["x1"] and stats["reasons"] == {"schema_mismatch": 2}
    assert rejects[0]["file"].endswith("part-1.parquet") and [r["line"] for r in rejects] == [1, 2]
    assert "missing ['text'], extra ['content']" in rejects[0]["detail"]


@pytest.mark.parametrize("source", [{"id_field": None}, {"format": "text", "text_unit": "paragraph"}])
def test_generated_ids_and_split_do_not_depend_on_the_path(source, tmp_path):
    pairs = [{"prompt": f"Question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."} for i in range(60)]
    paragraphs = "".join(f"Paragraph number {i} of the book.\n\n" for i in range(60))
    runs = []
    for where in ("a/prefs.jsonl", "b/elsewhere/copy.jsonl"):
        path = tmp_path / where
        path.parent.mkdir(parents=True)
        if "format" in source:
            path.write_text(paragraphs)
        else:
            write_jsonl(path, pairs)
        task = "pretrain" if "format" in source else "preference"
        (tmp_path / f"run-{len(runs)}").mkdir()
        _, tables, _ = build(
            tmp_path / f"run-{len(runs)}",
            {"task": task, "path": str(path), **source},
            validation_fraction=0.2,
        )
        runs.append(tables[task][["id", "split"]].values.tolist())
    assert runs[0] == runs[1] and str(tmp_path) not in runs[0][0][0]
