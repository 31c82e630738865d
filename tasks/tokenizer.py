"""Tokenizer stage: a byte-level BPE trained on a corpus sample, or an adopted tokenizer.json.

Either way the registry's special tokens take ids 0..N-1 in registry order (an adopted vocab
is shifted up by N), and the saved directory loads with `transformers.AutoTokenizer`. Text is
always encoded with special-token recognition off (`encode_special_tokens=True`; saved as
`split_special_tokens=True`), so user text like `<to-fr>` or `<|endoftext|>` stays ordinary
bytes; control tokens enter sequences only by id (see tasks.shards).
"""

import hashlib
import itertools
import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from schemas.corpus import TASK_FIELDS
from schemas.manifest import ContractResult
from schemas.tokenizer import TokenizerConfig
from schemas.tokens import BOS, EOS, MASK, PAD, SEP, SPECIAL_TOKENS, TASK_TOKENS, UNK, token_id
from tasks import memory, tokenizer_file
from tasks.artifacts import sha256_file
from tasks.contracts import require
from tasks.plan import inside_roots, raw_path
from tasks.tokenizer_file import TOKENIZER_FILE

# Control-token look-alikes of other tokenizers: they must stay text in ours too.
FOREIGN_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "[PAD]", "[CLS]")


def corpus_rows(corpus_dir: Path, split: str | None = "train") -> Iterator[tuple[str, str, dict]]:
    """(task, record key, row) for every row of a split, in a fixed order."""
    for task, fields in TASK_FIELDS.items():
        path = corpus_dir / f"{task}.parquet"
        if not path.exists():
            continue
        for row in pq.read_table(path, columns=["id", "source", "split", *fields]).to_pylist():
            if split is None or row["split"] == split:
                yield task, hashlib.sha256(f"{task}:{row['id']}".encode()).hexdigest(), row


ORDER_BATCH = 1 << 16  # rows of id, split and source read at a time


def hashed_order(corpus_dir: Path, split: str | None) -> Iterator[tuple[str, int, str]]:
    """(task, row number, source) of the rows of a split in the order of their hashed ids.

    Only the id, split and source columns are read, 65,536 rows at a time, and the order is kept
    as numpy arrays (8-byte hash prefixes: 21 bytes a row), so the texts stay on disk.
    """
    keys, tasks, rows, sources, names = [], [], [], [], {}
    for t, task in enumerate(TASK_FIELDS):
        path = corpus_dir / f"{task}.parquet"
        if not path.exists():
            continue
        start = 0  # row number of the batch's first row in the table
        for batch in memory.parquet(path).iter_batches(
            batch_size=ORDER_BATCH, columns=["id", "split", "source"]
        ):
            ids, splits, srcs = (batch.column(c).to_pylist() for c in ("id", "split", "source"))
            picked = [n for n, s in enumerate(splits) if split is None or s == split]
            keys.append(np.fromiter((_key(task, ids[n]) for n in picked), np.uint64, len(picked)))
            rows.append(np.array(picked, np.int64) + start)
            tasks.append(np.full(len(picked), t, np.int8))
            sources.append(np.array([names.setdefault(srcs[n], len(names)) for n in picked], np.int32))
            start += batch.num_rows
    if not keys:
        return
    order = np.argsort(np.concatenate(keys), kind="stable")
    task_names, source_names = list(TASK_FIELDS), list(names)
    columns = [np.concatenate(x)[order] for x in (tasks, rows, sources)]
    for at in range(0, len(order), 4096):
        for t, n, s in zip(*(c[at : at + 4096].tolist() for c in columns), strict=True):
            yield task_names[t], n, source_names[s]


def _key(task: str, rid: str) -> int:
    """The first 8 bytes of sha256("task:id"): the order of the full hex digest (ties: never seen)."""
    return int.from_bytes(hashlib.sha256(f"{task}:{rid}".encode()).digest()[:8], "big")


def read_rows(corpus_dir: Path, picks: list[tuple[str, int]]) -> dict[tuple[str, int], dict]:
    """The text fields of the picked rows, read one row group at a time."""
    wanted: dict[str, set[int]] = defaultdict(set)
    for task, n in picks:
        wanted[task].add(n)
    out = {}
    for task, rows in wanted.items():
        pf, start = memory.parquet(corpus_dir / f"{task}.parquet"), 0
        for g in range(pf.num_row_groups):
            size = pf.metadata.row_group(g).num_rows
            local = sorted(n - start for n in rows if start <= n < start + size)
            if local:
                part = pf.read_row_group(g, columns=list(TASK_FIELDS[task])).take(local).to_pylist()
                out.update({(task, start + i): row for i, row in zip(local, part, strict=True)})
            start += size
    return out


def training_texts(corpus_dir: Path, max_chars: int) -> Iterator[str]:
    """A uniform sample of train-split texts of every task, up to `max_chars` characters.

    Records are taken in the order of their hashed ids, so each source contributes in
    proportion to its size, and the same corpus always gives the same sample. Only the
    sample's rows are read, a batch of rows at a time, so memory holds the sample, not the corpus.
    """
    order = hashed_order(corpus_dir, "train")
    budget = max_chars
    while picks := [(task, n) for task, n, _ in itertools.islice(order, 4096)]:
        rows = read_rows(corpus_dir, picks)
        for task, n in picks:
            for f in TASK_FIELDS[task]:
                budget -= len(rows[task, n][f])
                if budget < 0:
                    return
                yield rows[task, n][f]


def samples_per_source(corpus_dir: Path, n: int) -> dict[str, list[str]]:
    """Up to `n` records' texts per `task:source`, chosen by hashed id (both splits)."""
    picks: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for task, row, source in hashed_order(corpus_dir, None):
        key = f"{task}:{source}"
        if len(picks[key]) < n:
            picks[key].append((task, row))
    rows = read_rows(corpus_dir, [p for ps in picks.values() for p in ps])
    out = {key: ["\n".join(rows[p][f] for f in TASK_FIELDS[p[0]]) for p in ps] for key, ps in picks.items()}
    return dict(sorted(out.items()))


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
    memory.release()  # the trainer's word and pair counts, freed but kept by malloc
    tok.encode_special_tokens = True
    return tok


def adopt(path: str, sha256: str) -> Tokenizer:
    """An existing BPE `tokenizer.json`, its ids shifted so the registry's tokens come first.

    >>> adopt("gpt2/tokenizer.json", "<its sha256>").token_to_id("<|endoftext|>")  # was 50256
    50267
    """
    file = raw_path(path)
    file = inside_roots(file / TOKENIZER_FILE, f"tokenizer.adopt {path!r}") if file.is_dir() else file
    if not file.is_file():
        raise FileNotFoundError(f"tokenizer.adopt: no {TOKENIZER_FILE} at {file}")
    actual = sha256_file(file)
    if actual != sha256:
        raise ValueError(f"tokenizer.adopt: {file} has sha256 {actual}, the config pins {sha256}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        data["model"]["type"], data["model"]["vocab"].items  # noqa: B018 (the fields read below)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(
            f"tokenizer.adopt: {file} is not a valid tokenizer.json ({type(e).__name__}: {str(e)[:200]})"
        ) from None
    if data["model"]["type"] != "BPE":
        raise ValueError(
            f"tokenizer.adopt: {file} is a {data['model']['type']} model; only BPE can be adopted"
        )
    shift = len(SPECIAL_TOKENS)
    vocab = data["model"]["vocab"]
    # Added tokens only keep their ids when the model vocab holds them (as the trainer does).
    data["model"]["vocab"] = {t: token_id(t) for t in SPECIAL_TOKENS} | {
        t: i + shift for t, i in vocab.items() if t not in SPECIAL_TOKENS
    }
    own = [
        {**a, "id": a["id"] + shift}
        for a in data.get("added_tokens", [])
        if a["content"] not in SPECIAL_TOKENS
    ]
    data["added_tokens"] = _registry_added_tokens() + own
    processor = data.get("post_processor")
    if processor and processor.get("type") != "ByteLevel":  # templates add control tokens by id
        data["post_processor"] = None
    data["truncation"] = data["padding"] = None
    tok = Tokenizer.from_str(json.dumps(data))
    tok.encode_special_tokens = True
    return tok


def _registry_added_tokens() -> list[dict]:
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    return [{"id": token_id(t), "content": t, **flags} for t in SPECIAL_TOKENS]


def save(tok: Tokenizer, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        mask_token=MASK,
        sep_token=SEP,
        extra_special_tokens=list(TASK_TOKENS),
        split_special_tokens=True,  # user text never becomes a control token
        model_max_length=1_000_000,
    )
    fast.save_pretrained(out)


def fertility(tok: Tokenizer, samples: dict[str, list[str]]) -> dict[str, float]:
    """Tokens per whitespace-separated word, per source: `{"pretrain:austen": 1.31, ...}`."""
    out = {}
    for source, texts in samples.items():
        words = sum(len(t.split()) for t in texts)
        tokens = sum(len(e.ids) for e in encoded(tok, texts))
        out[source] = round(tokens / max(words, 1), 3)
    return out


def build(cfg: TokenizerConfig, inputs: dict[str, Path], out: Path) -> dict:
    if cfg.adopt:
        tok = adopt(cfg.adopt, cfg.adopt_sha256)
        adopted = f"adopted {Path(cfg.adopt).name} sha256 {cfg.adopt_sha256[:12]}"
        train_chars = 0
    else:
        chars = [0]

        def counted(texts: Iterator[str]) -> Iterator[str]:
            for t in texts:
                chars[0] += len(t)
                yield t

        tok = train(counted(training_texts(inputs["corpus"], cfg.max_train_chars)), cfg)
        adopted, train_chars = "", chars[0]
    save(tok, out)
    return {
        "vocab_size": tok.get_vocab_size(),
        "special_tokens": {t: tok.token_to_id(t) for t in SPECIAL_TOKENS},
        "adopted": adopted,
        "train_chars": train_chars,
        "fertility": fertility(tok, samples_per_source(inputs["corpus"], cfg.sample_per_source)),
    }


def injection_texts() -> list[str]:
    """User text that looks like control tokens: every registry token, foreign ones, near misses."""
    out = []
    for t in (*SPECIAL_TOKENS, *FOREIGN_TOKENS):
        out += [t, f"a{t}b", f"x {t} y{t}{t}", t.upper(), t.replace("<", "< ").replace(">", " >")]
    return out


def validate(cfg: TokenizerConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    tok = tokenizer_file.load(out)
    results = [special_ids(tok, out)]
    samples = samples_per_source(inputs["corpus"], cfg.sample_per_source)
    texts = [t for ts in samples.values() for t in ts]
    results.append(round_trip(tok, texts, "tokenizer/round-trip", f"{len(samples)} sources"))
    results.append(round_trip(tok, injection_texts(), "tokenizer/injection", "special-token look-alikes"))
    results.append(auto_tokenizer(out))
    return results


def special_ids(tok: Tokenizer, out: Path) -> ContractResult:
    """Each registry token is exactly its reserved id, and no learned token spells one."""
    raw = Tokenizer.from_file(str(out / TOKENIZER_FILE))  # recognition on: how templates see them
    bad = [
        f"{t}: encodes to {raw.encode(t).ids}, expected [{token_id(t)}]"
        for t in SPECIAL_TOKENS
        if raw.encode(t).ids != [token_id(t)]
    ]
    learned = tok.get_vocab(with_added_tokens=False)
    bad += [
        f"{t}: also a learned token (id {learned[t]})"
        for t in SPECIAL_TOKENS
        if learned.get(t, token_id(t)) != token_id(t)
    ]
    return require("tokenizer/special-ids", bad, len(SPECIAL_TOKENS), "each special token is one reserved id")


def round_trip(tok: Tokenizer, texts: list[str], name: str, what: str) -> ContractResult:
    """decode(encode(x)) == x, and text never yields a control id or `<unk>` (byte fallback).

    Control ids are the registry's and any special token an adopted tokenizer brings along.
    """
    controls = control_ids(tok)
    unk = getattr(tok.model, "unk_token", None)
    bad = []
    for i, (text, enc) in enumerate(zip(texts, encoded(tok, texts), strict=True)):
        control = [x for x in enc.ids if x in controls]
        if unk is not None and unk in enc.tokens:
            bad.append(f"text {i} {text[:40]!r}: unknown token {unk} (no byte fallback)")
        elif control:
            bad.append(f"text {i} {text[:40]!r}: control ids {control}")
        elif tok.decode(enc.ids, skip_special_tokens=False) != text:
            bad.append(f"text {i} {text[:40]!r}: decode(encode(x)) != x")
    return require(name, bad, len(texts), f"round trip, no control or unknown ids ({what})")


ENCODE_BATCH = 256  # texts encoded at a time: an Encoding holds ~50 bytes per token


def encoded(tok: Tokenizer, texts: list[str]) -> Iterator:
    """The encodings of `texts`, a batch at a time, so memory holds one batch's, not the sample's
    (the trim gives each batch's pages back: the Rust allocations are malloc's too)."""
    for at in range(0, len(texts), ENCODE_BATCH):
        yield from tok.encode_batch(texts[at : at + ENCODE_BATCH])
        memory.release()


def control_ids(tok: Tokenizer) -> set[int]:
    """Ids of every special added token: `{0, 1, ..., 10}` for a trained tokenizer."""
    return {i for i, t in tok.get_added_tokens_decoder().items() if t.special}


def auto_tokenizer(out: Path) -> ContractResult:
    """What downstream users get: AutoTokenizer keeps look-alikes as text and pad != eos."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(out)
    controls = control_ids(tokenizer_file.load(out))
    bad = (
        []
        if hf.pad_token_id == token_id(PAD) != hf.eos_token_id
        else [f"pad {hf.pad_token_id}, eos {hf.eos_token_id}"]
    )
    for text in injection_texts():
        ids = hf(text, add_special_tokens=False)["input_ids"]
        if controls & set(ids) or hf.decode(ids) != text:
            bad.append(f"{text!r}: AutoTokenizer gives {ids[:8]} -> {hf.decode(ids)!r}")
    return require(
        "tokenizer/auto-load", bad, 1 + len(injection_texts()), "AutoTokenizer: safe, pad is its own token"
    )
