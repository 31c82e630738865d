"""Tokenizer stage: reserved special ids, injection safety, round trips, sampling, adoption."""

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer

from schemas.corpus import CorpusConfig
from schemas.tokenizer import TokenizerConfig
from schemas.tokens import SPECIAL_TOKENS, TASK_TOKENS, token_id
from tasks import corpus, tokenizer, tokenizer_file
from tasks.artifacts import sha256_file
from tasks.contracts import ContractError
from tests.conftest import head, write_jsonl

TEXTS = [r["text"] for r in head("pretrain.jsonl", 30)] + [
    r["target_text"] for r in head("translation_en_fr.jsonl", 200)
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    tok = tokenizer.train(iter(TEXTS), TokenizerConfig(vocab_size=500))
    tokenizer.save(tok, out)
    return out


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    a = write_jsonl(
        root / "a.jsonl", [{"id": f"a{i}", "text": t, "source": "books"} for i, t in enumerate(TEXTS[:30])]
    )
    b = write_jsonl(
        root / "b.jsonl",
        [{"id": f"b{i}", "source_text": f"Line {i}.", "target_text": t} for i, t in enumerate(TEXTS[30:])],
    )
    cfg = CorpusConfig(
        sources=[{"task": "pretrain", "path": str(a)}, {"task": "translation", "path": str(b)}]
    )
    out = root / "out"
    out.mkdir()
    corpus.build(cfg, {}, out)
    return out


def test_special_tokens_have_reserved_single_ids(trained):
    tok = tokenizer_file.load(trained)
    for t in SPECIAL_TOKENS:
        assert tok.token_to_id(t) == token_id(t)
    assert token_id("<pad>") != token_id("<eos>")


@pytest.mark.parametrize("text", tokenizer.injection_texts())
def test_special_token_text_never_becomes_a_control_id(trained, text):
    tok = tokenizer_file.load(trained)
    ids = tok.encode(text).ids
    assert min(ids) >= len(SPECIAL_TOKENS)
    assert tok.decode(ids) == text


def test_round_trip_on_corpus_text(trained):
    tok = tokenizer_file.load(trained)
    for text in TEXTS[:50]:
        assert tok.decode(tok.encode(text).ids) == text


def test_auto_tokenizer_loads_and_splits_special_text(trained):
    hf = AutoTokenizer.from_pretrained(trained)
    assert hf.pad_token == "<pad>" and hf.eos_token == "<eos>" and hf.pad_token_id != hf.eos_token_id
    assert set(TASK_TOKENS) <= set(hf.all_special_tokens)
    ids = hf("hello <summarize> world <|endoftext|>")["input_ids"]
    assert min(ids) >= len(SPECIAL_TOKENS) and hf.decode(ids) == "hello <summarize> world <|endoftext|>"


def test_training_is_deterministic():
    a = tokenizer.train(iter(TEXTS), TokenizerConfig(vocab_size=500)).to_str()
    b = tokenizer.train(iter(TEXTS), TokenizerConfig(vocab_size=500)).to_str()
    assert a == b


def test_training_sample_is_bounded_and_drawn_from_every_task(small_corpus):
    sample = list(tokenizer.training_texts(small_corpus, 20_000))
    assert sum(map(len, sample)) <= 20_000 < sum(map(len, tokenizer.training_texts(small_corpus, 10**9)))
    assert any(t in TEXTS[:30] for t in sample) and any(t in TEXTS[30:] for t in sample)


def test_sample_order_does_not_depend_on_how_many_rows_are_read_at_a_time(small_corpus, monkeypatch):
    whole = list(tokenizer.hashed_order(small_corpus, None))
    monkeypatch.setattr(tokenizer, "ORDER_BATCH", 7)  # many batches a table: row numbers carry over
    assert list(tokenizer.hashed_order(small_corpus, None)) == whole
    assert sorted(n for t, n, _ in whole if t == "pretrain")[-1] > 7


def test_build_reports_fertility_per_source_and_passes_its_contracts(small_corpus, tmp_path):
    cfg = TokenizerConfig(vocab_size=400, sample_per_source=20)
    stats = tokenizer.build(cfg, {"corpus": small_corpus}, tmp_path)
    assert set(stats["fertility"]) == {"pretrain:books", f"translation:{small_corpus.parent / 'b.jsonl'}"}
    assert all(1.0 < f < 5.0 for f in stats["fertility"].values())
    names = [c.name for c in tokenizer.validate(cfg, {"corpus": small_corpus}, tmp_path, stats)]
    assert names == [
        "tokenizer/special-ids",
        "tokenizer/round-trip",
        "tokenizer/injection",
        "tokenizer/auto-load",
    ]


def existing_tokenizer(path, byte_level=True):
    """A GPT-2-like tokenizer.json of someone else's, with `<|endoftext|>` as its special token."""
    tok = Tokenizer(models.BPE(unk_token=None if byte_level else "[UNK]"))
    if byte_level:
        tok.pre_tokenizer, tok.decoder = (
            pre_tokenizers.ByteLevel(add_prefix_space=False),
            decoders.ByteLevel(),
        )
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer, alphabet = pre_tokenizers.Whitespace(), []
    specials = ["<|endoftext|>"] + ([] if byte_level else ["[UNK]"])
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(TEXTS, trainer=trainer)
    tok.save(str(path))
    return tok


def test_adopted_tokenizer_keeps_its_merges_and_gets_the_registry(small_corpus, tmp_path):
    theirs = existing_tokenizer(tmp_path / "theirs.json")
    cfg = TokenizerConfig(
        adopt=str(tmp_path / "theirs.json"), adopt_sha256=sha256_file(tmp_path / "theirs.json")
    )
    out = tmp_path / "out"
    out.mkdir()
    stats = tokenizer.build(cfg, {"corpus": small_corpus}, out)
    tok = tokenizer_file.load(out)
    shift = len(SPECIAL_TOKENS)
    assert stats["special_tokens"] == {t: token_id(t) for t in SPECIAL_TOKENS}
    assert tok.token_to_id("<|endoftext|>") == theirs.token_to_id("<|endoftext|>") + shift
    text = TEXTS[3][:300]
    assert tok.encode(text).ids == [i + shift for i in theirs.encode(text).ids]
    assert tok.encode("a <|endoftext|> b").ids != tok.encode("a b").ids  # stays text, not dropped
    assert tok.token_to_id("<|endoftext|>") not in tok.encode("x<|endoftext|>y").ids
    tokenizer.validate(cfg, {"corpus": small_corpus}, out, stats)


def test_adopt_refuses_a_changed_file(tmp_path):
    existing_tokenizer(tmp_path / "theirs.json")
    cfg = TokenizerConfig(adopt=str(tmp_path / "theirs.json"), adopt_sha256="0" * 64)
    with pytest.raises(ValueError, match="the config pins 0000"):
        tokenizer.build(cfg, {"corpus": tmp_path}, tmp_path)


@pytest.mark.parametrize("text", ['{"model": {"type": "BPE"', '{"version": "1.0"}', "[]"])
def test_adopting_an_invalid_tokenizer_json_names_the_file(text, tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text(text)
    cfg = TokenizerConfig(adopt=str(bad), adopt_sha256=sha256_file(bad))
    with pytest.raises(ValueError, match=rf"{bad} is not a valid tokenizer.json"):
        tokenizer.build(cfg, {"corpus": tmp_path}, tmp_path)


def test_a_tokenizer_without_byte_fallback_fails_the_round_trip(small_corpus, tmp_path):
    existing_tokenizer(tmp_path / "ws.json", byte_level=False)
    cfg = TokenizerConfig(adopt=str(tmp_path / "ws.json"), adopt_sha256=sha256_file(tmp_path / "ws.json"))
    out = tmp_path / "out"
    out.mkdir()
    stats = tokenizer.build(cfg, {"corpus": small_corpus}, out)
    with pytest.raises(ContractError, match=r"(?s)tokenizer/round-trip failed.*decode\(encode\(x\)\) != x"):
        tokenizer.validate(cfg, {"corpus": small_corpus}, out, stats)
    with pytest.raises(ContractError, match=r"unknown token \[UNK\] \(no byte fallback\)"):
        tokenizer.round_trip(tokenizer_file.load(out), ["snowman \u2603"], "t", "unseen character")
    assert json.loads((out / "tokenizer_config.json").read_text())["split_special_tokens"] is True


def test_round_trip_in_batches_names_the_text_past_the_first_batch(small_corpus, tmp_path, monkeypatch):
    existing_tokenizer(tmp_path / "ws.json", byte_level=False)
    cfg = TokenizerConfig(adopt=str(tmp_path / "ws.json"), adopt_sha256=sha256_file(tmp_path / "ws.json"))
    out = tmp_path / "out"
    out.mkdir()
    tokenizer.build(cfg, {"corpus": small_corpus}, out)
    monkeypatch.setattr(tokenizer, "ENCODE_BATCH", 2)  # texts are encoded a batch at a time
    texts = ["a"] * 5 + ["snowman \u2603"]  # one-letter texts round-trip here
    with pytest.raises(
        ContractError, match=r"(?s)Not met by 1 of 6 checked.*text 5 'snowman .': unknown token"
    ):
        tokenizer.round_trip(tokenizer_file.load(out), texts, "t", "batches")
