"""Encoder heads: examples built from the corpus, label alignment, contracts, and a real fine-tune.

The stack (corpus, tokenizer, masked-LM encoder: conftest.encoder_stack) is built once per
session from the tiny slice of the real corpus, without Prefect; all four heads train a few steps.
"""

import json

import pyarrow as pa
import pytest
import torch

from schemas.heads import KINDS
from schemas.shards import IGNORE_INDEX
from schemas.tokens import BOS, EOS, SEP, token_id
from tasks import heads, heads_data, heads_model, tokenizer_file
from tasks.contracts import ContractError


def test_encoder_stage_publishes_a_masked_lm(encoder_stack):
    _, inputs = encoder_stack
    metrics = json.loads((inputs["encoder"] / "metrics.json").read_text())
    assert metrics["objective"] == "masked" and metrics["val_loss"] < metrics["val_loss_before"]
    config = json.loads((inputs["encoder"] / "config.json").read_text())
    assert config["architectures"] == ["ModernBertForMaskedLM"] and config["sep_token_id"] == token_id(SEP)


def test_pair_negatives_are_another_records_french():
    rows = [
        {"id": f"r{i}", "source_text": f"en {i}", "target_text": f"fr {i}", "source": "ab"[i % 2]}
        for i in range(40)
    ]
    pairs = heads_data.pair_records(rows)
    by_id = {r["id"]: r for r in rows}
    frenches = {r["target_text"] for r in rows}
    for p in pairs:
        own = by_id[p["id"]]["target_text"]
        assert (p["text_pair"] == own) == (p["label"] == "translation") and p["text_pair"] in frenches
    assert 10 < sum(p["label"] == "mismatch" for p in pairs) < 30
    assert len({p["text_pair"] for p in pairs if p["label"] == "mismatch"}) > 10  # not one French reused


def test_tags_label_the_first_sub_token_only(encoder_stack):
    _, inputs = encoder_stack
    tok = tokenizer_file.load(inputs["tokenizer"])
    record = {
        "id": "x",
        "tokens": ["Extraordinarily", "long", "mots", "français"],
        "tags": ["en", "en", "fr", "fr"],
    }
    row, why = heads_data.encode("token", tok, record, heads_data.TAG_LABELS)
    ids, labels = row["input_ids"], row["labels"]
    assert ids[0] == token_id(BOS) and ids[-1] == token_id(EOS) and len(labels) == len(ids)
    scored = [i for i, x in enumerate(labels) if x != IGNORE_INDEX]
    assert [labels[i] for i in scored] == [0, 0, 1, 1] and scored[0] == 1
    assert len(ids) > 6  # a word split into several sub-tokens: only its first one is labelled
    assert tok.decode(ids[scored[2] : scored[3]]).strip() == "mots"


def test_pairs_join_with_the_separator_and_spans_point_into_the_context(encoder_stack):
    _, inputs = encoder_stack
    tok = tokenizer_file.load(inputs["tokenizer"])
    ids = heads_data.encode_sequence(tok, "Save", "Enregistrer")
    assert ids.count(token_id(SEP)) == 1 and ids[0] == token_id(BOS) and ids[-1] == token_id(EOS)
    context = "Use pip. It installs packages from the index."
    record = {
        "id": "q",
        "question": "How?",
        "context": context,
        "answer": "It installs packages",
        "answer_start": 9,
    }
    row, _ = heads_data.encode("span", tok, record, ["start", "end"])
    s, e = row["labels"]
    assert row["input_ids"][row["context_start"] - 1] == token_id(SEP) and s >= row["context_start"]
    assert tok.decode(row["input_ids"][s : e + 1]).strip() == "It installs packages"
    missing, why = heads_data.encode("span", tok, {**record, "answer_start": -1}, ["start", "end"])
    assert missing is None and "not a span" in why


def test_every_head_trains_and_is_scored_against_its_baseline(trained_heads):
    hcfg, inputs, out, stats = trained_heads
    assert set(stats["heads"]) == {"domain", "pair", "tagging", "qa"}
    for head, m in stats["heads"].items():
        assert m["primary"] in m["val"] and m["primary"] in m["baseline"], head
        assert m["beats_baseline"] == (m["val"][m["primary"]] > m["baseline"][m["primary"]])
        assert json.loads((out / head / "head.json").read_text())["kind"] == KINDS[head]
    assert stats["heads"]["pair"]["baseline"]["accuracy"] >= 0.5  # the majority class of two
    assert stats["heads"]["qa"]["baseline"]["exact_match"] == 0.0
    contracts = heads.validate(hcfg, inputs, out, stats)
    assert all(c.success for c in contracts) and len(contracts) == 4 * 6
    assert not list(out.rglob("resume"))


def test_bad_labels_and_a_head_below_baseline_block_publication(trained_heads):
    hcfg, inputs, out, stats = trained_heads
    span = pa.Table.from_pylist(
        [{"id": "bad-span", "input_ids": [1, 40, 11, 50, 51, 2], "labels": [2, 5], "context_start": 3}],
        schema=heads_data.EXAMPLE_SCHEMA,
    )
    _, bad = heads.example_problems("span", span, 2)
    assert bad and bad[0].startswith("id=bad-span")
    tags = span.set_column(2, "labels", pa.array([[IGNORE_INDEX] * 6], pa.list_(pa.int32())))
    assert heads.example_problems("token", tags, 2)[1]  # no labelled token
    worse = {**stats, "heads": {"pair": {**stats["heads"]["pair"], "beats_baseline": False}}}
    with pytest.raises(ContractError, match="heads/beat-baseline"):
        heads.validate(hcfg.model_copy(update={"require_baseline": True}), inputs, out, worse)


def test_span_decoding_stays_inside_the_context():
    start = torch.tensor([9.0, 0, 0, 1, 5, 0])
    end = torch.tensor([9.0, 0, 0, 4, 0, 2])
    assert heads_model.best_span(start, end, 3, 5) == (3, 3)  # never before the context, never end < start
    assert heads_model.best_span(start, end, 4, 6) == (4, 5)


def test_user_tagging_and_qa_files_train_heads_and_bad_records_are_rejected_by_line(encoder_stack, tmp_path):
    from conftest import write_jsonl

    from schemas.heads import HeadData

    _, inputs = encoder_stack
    words = [["Paris", "is", "big"], ["Anna", "lives", "in", "Rome"], ["the", "Loire", "flows"]]
    tags = [["LOC", "O", "O"], ["PER", "O", "O", "LOC"], ["O", "LOC", "O"]]
    conll = [
        {"id": f"s{i}", "words": w, "ner": t}
        for i, (w, t) in enumerate(zip(words * 4, tags * 4, strict=True))
    ]
    write_jsonl(tmp_path / "ner-train.jsonl", conll)
    write_jsonl(
        tmp_path / "ner-dev.jsonl",
        [
            conll[0],
            {"id": "short", "words": ["Anna", "sings"], "ner": ["PER"]},  # line 2: 1 tag, 2 tokens
            {"id": "new-tag", "words": ["Acme", "sells"], "ner": ["ORG", "O"]},  # line 3: unseen tag
        ],
    )
    context = "The tower was built in 1889 for the fair."
    squad = [
        {
            "id": f"q{i}",
            "context": context,
            "question": "When?",
            "answers": {"text": ["1889"], "answer_start": [23]},
        }
        for i in range(6)
    ]
    write_jsonl(tmp_path / "qa-train.jsonl", squad)
    moved = {**squad[0], "id": "moved", "answers": {"text": ["1889"], "answer_start": [4]}}
    write_jsonl(tmp_path / "qa-dev.jsonl", [squad[0], moved])  # line 2: answer not at its start
    data = [
        HeadData(
            name="ner",
            kind="token",
            train=str(tmp_path / "ner-train.jsonl"),
            validation=str(tmp_path / "ner-dev.jsonl"),
            fields={"tokens": "words", "tags": "ner"},
            max_reject_rate=1.0,
        ),
        HeadData(
            name="squad",
            kind="span",
            train=str(tmp_path / "qa-train.jsonl"),
            validation=str(tmp_path / "qa-dev.jsonl"),
            fields={"answer": "answers.text.0", "answer_start": "answers.answer_start.0"},
            max_reject_rate=1.0,
        ),
    ]
    cfg = encoder_stack[0].heads.model_copy(
        update={"heads": [], "data": data, "max_steps": 2, "batch_size": 4, "require_baseline": False}
    )
    out = tmp_path / "heads"
    out.mkdir()
    stats = heads.build(cfg, inputs, out)
    assert (
        stats["heads"]["ner"]["labels"] == ["LOC", "O", "PER"] and stats["heads"]["ner"]["val_examples"] == 1
    )
    assert stats["heads"]["squad"]["kind"] == "span" and stats["heads"]["squad"]["train_examples"] == 6
    rejects = {
        (r["head"], r["line"]): r for r in map(json.loads, (out / heads.REJECTS).read_text().splitlines())
    }
    assert set(rejects) == {("ner", 2), ("ner", 3), ("squad", 2)}
    assert (
        rejects["ner", 2]["file"].endswith("ner-dev.jsonl")
        and "1 tags for 2 tokens" in rejects["ner", 2]["reason"]
    )
    assert "unknown tag 'ORG'" in rejects["ner", 3]["reason"]
    assert (
        rejects["squad", 2]["id"] == "moved" and "not a span of the context" in rejects["squad", 2]["reason"]
    )
    assert all(c.success for c in heads.validate(cfg, inputs, out, stats))
    strict = cfg.model_copy(update={"data": [data[0].model_copy(update={"max_reject_rate": 0.05})]})
    (tmp_path / "strict").mkdir()
    with pytest.raises(ValueError, match=r"1 of 3 records of \S+ner-dev.jsonl are bad .*line 2: "):
        heads.build(strict, inputs, tmp_path / "strict")
    spec = json.loads((out / "ner" / heads_model.HEAD_FILE).read_text())
    assert spec == {"head": "ner", "kind": "token", "pair": False, "labels": ["LOC", "O", "PER"]}


def test_user_csv_files_give_sequence_token_and_span_records_and_name_bad_lines(tmp_path):
    """CSV cells are text: integer labels index `labels`, tokens and tags are whitespace-separated,
    answer_start is a number in text; every bad row is named by file and line."""
    from schemas.heads import HeadData
    from tasks import heads_data

    def csv(name: str, text: str) -> str:
        (tmp_path / name).write_text(text, encoding="utf-8")
        return str(tmp_path / name)

    sentiment = csv(
        "sent.csv",
        "id,text,text_pair,label\n"
        "a,good film,loved it,1\n"
        "b,bad film,hated it,negative\n"
        "c,odd film,,0\n"  # line 4: an empty text_pair
        "d,some film,meh,7\n",  # line 5: no 8th label
    )
    seq = HeadData(
        name="sent", kind="sequence", train=sentiment, validation=sentiment,
        fields={"text_pair": "text_pair"}, labels=["negative", "positive"],
    )  # fmt: skip
    records, rejects = heads_data.user_records(seq, "train")
    assert [(r["id"], r["label"], r["text_pair"]) for r in records] == [
        ("a", "positive", "loved it"),
        ("b", "negative", "hated it"),
    ]
    assert [(r["id"], r["line"]) for r in rejects] == [("c", 4), ("d", 5)]
    assert "'text_pair'" in rejects[0]["reason"] and "unknown label '7'" in rejects[1]["reason"]
    assert all(r["file"].endswith("sent.csv") for r in rejects)

    ner = csv("ner.csv", "id,tokens,tags\ns1,Anna lives in Rome,PER O O LOC\ns2,Paris is big,LOC O\n")
    tok = HeadData(name="ner", kind="token", train=ner, validation=ner)
    records, rejects = heads_data.user_records(tok, "train")
    assert records[0]["tokens"] == ["Anna", "lives", "in", "Rome"]
    assert records[0]["tags"] == ["PER", "O", "O", "LOC"]
    assert rejects == [{"id": "s2", "file": rejects[0]["file"], "line": 3, "reason": "2 tags for 3 tokens"}]

    qa = csv(
        "qa.csv",
        'id,question,context,answer,answer_start\nq1,When?,"Built in 1889, it stands.",1889,9\n'
        'q2,When?,"Built in 1889, it stands.",1889,3\n',
    )
    span = HeadData(name="qa", kind="span", train=qa, validation=qa)
    records, rejects = heads_data.user_records(span, "train")
    assert [(r["id"], r["answer_start"]) for r in records] == [("q1", 9)]
    assert rejects[0]["line"] == 3 and "not a span of the context at answer_start 3" in rejects[0]["reason"]
    with pytest.raises(ValueError, match=r"1 of 2 records of .*qa.csv are bad .* line 3: answer"):
        heads_data.check_reject_rate(span, "train", len(records), rejects)
