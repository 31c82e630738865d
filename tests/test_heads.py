"""Encoder heads: examples built from the corpus, label alignment, contracts, and a real fine-tune.

The stack (corpus, tokenizer, masked-LM encoder: conftest.encoder_stack) is built once per
session from the tiny slice of the real corpus, without Prefect; all four heads train a few steps.
"""

import json

import pyarrow as pa
import pytest
import torch

from schemas.shards import IGNORE_INDEX
from schemas.tokens import BOS, EOS, SEP, token_id
from tasks import heads, heads_data
from tasks import tokenizer as tokenizer_task
from tasks.contracts import ContractError


def test_encoder_stage_publishes_a_masked_lm(encoder_stack):
    _, inputs = encoder_stack
    metrics = json.loads((inputs["encoder"] / "metrics.json").read_text())
    assert metrics["objective"] == "masked" and metrics["val_loss"] < metrics["val_loss_before"]
    config = json.loads((inputs["encoder"] / "config.json").read_text())
    assert config["architectures"] == ["ModernBertForMaskedLM"] and config["sep_token_id"] == token_id(SEP)


def test_pair_negatives_come_from_the_same_source():
    rows = [
        {"id": f"r{i}", "source_text": f"en {i}", "target_text": f"fr {i}", "source": "ab"[i % 2]}
        for i in range(40)
    ]
    pairs = heads_data.pair_records(rows)
    source_of = {f"fr {i}": "ab"[i % 2] for i in range(40)}
    by_id = {r["id"]: r for r in rows}
    for p in pairs:
        own = by_id[p["id"]]["target_text"]
        assert (p["text_pair"] == own) == (p["label"] == "translation")
        assert source_of[p["text_pair"]] == by_id[p["id"]]["source"]
    assert 10 < sum(p["label"] == "mismatch" for p in pairs) < 30


def test_tags_label_the_first_sub_token_only(encoder_stack):
    _, inputs = encoder_stack
    tok = tokenizer_task.load(inputs["tokenizer"])
    record = {
        "id": "x",
        "tokens": ["Extraordinarily", "long", "mots", "français"],
        "tags": ["en", "en", "fr", "fr"],
    }
    row, why = heads_data.encode("tagging", tok, record, heads_data.TAG_LABELS)
    ids, labels = row["input_ids"], row["labels"]
    assert ids[0] == token_id(BOS) and ids[-1] == token_id(EOS) and len(labels) == len(ids)
    scored = [i for i, x in enumerate(labels) if x != IGNORE_INDEX]
    assert [labels[i] for i in scored] == [0, 0, 1, 1] and scored[0] == 1
    assert len(ids) > 6  # a word split into several sub-tokens: only its first one is labelled
    assert tok.decode(ids[scored[2] : scored[3]]).strip() == "mots"


def test_pairs_join_with_the_separator_and_spans_point_into_the_context(encoder_stack):
    _, inputs = encoder_stack
    tok = tokenizer_task.load(inputs["tokenizer"])
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
    row, _ = heads_data.encode("qa", tok, record, ["start", "end"])
    s, e = row["labels"]
    assert row["input_ids"][row["context_start"] - 1] == token_id(SEP) and s >= row["context_start"]
    assert tok.decode(row["input_ids"][s : e + 1]).strip() == "It installs packages"
    missing, why = heads_data.encode("qa", tok, {**record, "answer_start": -1}, ["start", "end"])
    assert missing is None and "not a span" in why


def test_every_head_trains_and_is_scored_against_its_baseline(trained_heads):
    hcfg, inputs, out, stats = trained_heads
    assert set(stats["heads"]) == {"domain", "pair", "tagging", "qa"}
    for head, m in stats["heads"].items():
        assert m["primary"] in m["val"] and m["primary"] in m["baseline"], head
        assert m["beats_baseline"] == (m["val"][m["primary"]] > m["baseline"][m["primary"]])
        assert json.loads((out / head / "head.json").read_text())["kind"] == heads_data.KINDS[head]
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
    assert heads.best_span(start, end, 3, 5) == (3, 3)  # never before the context, never end < start
    assert heads.best_span(start, end, 4, 6) == (4, 5)
