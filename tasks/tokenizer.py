"""Tokenizer stage: a byte-level BPE trained on the corpus, special tokens from the registry.

The saved directory loads with `transformers.AutoTokenizer.from_pretrained(dir)`. Special
tokens take ids 0..N-1 in registry order. Text is always encoded with special-token
recognition off (`encode_special_tokens=True`), so user text that looks like `<to-fr>` stays
ordinary bytes; control tokens enter sequences only by id (see tasks.shards).
"""

from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from schemas.corpus import TASK_FIELDS
from schemas.manifest import ContractResult
from schemas.tokenizer import TokenizerConfig
from schemas.tokens import BOS, EOS, MASK, PAD, SPECIAL_TOKENS, TASK_TOKENS, UNK, token_id
from tasks.contracts import require

TOKENIZER_FILE = "tokenizer.json"


def training_texts(corpus_dir: Path, max_chars: int) -> Iterator[str]:
    """Train-split texts of every task, in a fixed order, up to `max_chars` characters."""
    budget = max_chars
    for task, fields in TASK_FIELDS.items():
        path = corpus_dir / f"{task}.parquet"
        if not path.exists():
            continue
        table = pq.read_table(path, columns=["split", *fields]).to_pylist()
        for row in table:
            if row["split"] != "train":
                continue
            for f in fields:
                budget -= len(row[f])
                if budget < 0:
                    return
                yield row[f]


def train(texts: Iterator[str], cfg: TokenizerConfig) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.encode_special_tokens = True
    return tok


def load(directory: Path) -> Tokenizer:
    """The raw tokenizer of an artifact, with special-token recognition off."""
    tok = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    tok.encode_special_tokens = True
    return tok


def save(tok: Tokenizer, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        mask_token=MASK,
        extra_special_tokens=list(TASK_TOKENS),
        split_special_tokens=True,  # user text never becomes a control token
        model_max_length=1_000_000,
    )
    fast.save_pretrained(out)


def build(cfg: TokenizerConfig, inputs: dict[str, Path], out: Path) -> dict:
    tok = train(training_texts(inputs["corpus"], cfg.max_train_chars), cfg)
    save(tok, out)
    return {"vocab_size": tok.get_vocab_size(), "special_tokens": len(SPECIAL_TOKENS)}


def validate(cfg: TokenizerConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    from transformers import AutoTokenizer

    tok = load(out)
    bad = [
        f"{t}: id {tok.token_to_id(t)}, expected {token_id(t)}"
        for t in SPECIAL_TOKENS
        if tok.token_to_id(t) != token_id(t)
    ]
    results = [
        require("tokenizer/special-ids", bad, len(SPECIAL_TOKENS), "each special token has its reserved id")
    ]
    samples = list(training_texts(inputs["corpus"], 200_000))[:200] + [f"a{t}b {t}" for t in SPECIAL_TOKENS]
    n_special = len(SPECIAL_TOKENS)
    bad = []
    for i, text in enumerate(samples):
        ids = tok.encode(text).ids
        if any(x < n_special for x in ids):
            bad.append(f"sample {i} {text[:40]!r}: control id in {ids[:12]}")
        elif tok.decode(ids, skip_special_tokens=False) != text:
            bad.append(f"sample {i} {text[:40]!r}: decode(encode(x)) != x")
    results.append(
        require("tokenizer/round-trip", bad, len(samples), "decode(encode(x)) == x, no control ids from text")
    )
    hf = AutoTokenizer.from_pretrained(out)
    bad = (
        []
        if hf.pad_token_id == token_id(PAD) != hf.eos_token_id
        else [f"pad {hf.pad_token_id}, eos {hf.eos_token_id}"]
    )
    results.append(require("tokenizer/auto-load", bad, 1, "AutoTokenizer loads it; pad is its own token"))
    return results
