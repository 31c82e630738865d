"""Tokenizer stage: reserved special ids, safe encoding, round trips, AutoTokenizer loading."""

import pytest
from transformers import AutoTokenizer

from schemas.tokenizer import TokenizerConfig
from schemas.tokens import SPECIAL_TOKENS, TASK_TOKENS, token_id
from tasks import tokenizer
from tests.conftest import head

TEXTS = [r["text"] for r in head("pretrain.jsonl", 30)] + [
    r["target_text"] for r in head("translation_en_fr.jsonl", 200)
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    tok = tokenizer.train(iter(TEXTS), TokenizerConfig(vocab_size=500))
    tokenizer.save(tok, out)
    return out


def test_special_tokens_have_reserved_single_ids(trained):
    tok = tokenizer.load(trained)
    for t in SPECIAL_TOKENS:
        assert tok.token_to_id(t) == token_id(t)
    assert token_id("<pad>") != token_id("<eos>")


@pytest.mark.parametrize("text", ["a <to-fr> b", "x<summarize>y", "<pad><eos>", "< to-fr >", "<TO-FR>"])
def test_special_token_text_never_becomes_a_control_id(trained, text):
    tok = tokenizer.load(trained)
    ids = tok.encode(text).ids
    assert min(ids) >= len(SPECIAL_TOKENS)
    assert tok.decode(ids) == text


def test_round_trip_on_corpus_text(trained):
    tok = tokenizer.load(trained)
    for text in TEXTS[:50]:
        assert tok.decode(tok.encode(text).ids) == text


def test_auto_tokenizer_loads_and_splits_special_text(trained):
    hf = AutoTokenizer.from_pretrained(trained)
    assert hf.pad_token == "<pad>" and hf.eos_token == "<eos>" and hf.pad_token_id != hf.eos_token_id
    assert set(TASK_TOKENS) <= set(hf.all_special_tokens)
    assert min(hf("hello <summarize> world")["input_ids"]) >= len(SPECIAL_TOKENS)


def test_training_is_deterministic():
    a = tokenizer.train(iter(TEXTS), TokenizerConfig(vocab_size=500)).to_str()
    b = tokenizer.train(iter(TEXTS), TokenizerConfig(vocab_size=500)).to_str()
    assert a == b
