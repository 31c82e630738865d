"""Tokenizer training time and encode throughput on the embedded corpus, against baselines.

    python -m benchmarks.tokenizer            # the embedded corpus (data/raw), 3 repeats
    python -m benchmarks.tokenizer --limit 50 # the first 50 lines of each file

Training: our stage (`tasks.tokenizer.build`: sampling, training, saving, fertility) against a
bare `tokenizers` BpeTrainer with the same settings on the same texts, which must learn the
same merges. Encoding: our safe encode (special-token
recognition off) against the library default and against `AutoTokenizer` on the saved folder.
Writes benchmarks/results/tokenizer.json and .md.
"""

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS, alternate, save_results, timing_markdown
from benchmarks.corpus import sources, timed
from benchmarks.suite import measured
from schemas.tokenizer import TokenizerConfig
from schemas.tokens import SPECIAL_TOKENS
from tasks import corpus, shards, tokenizer, tokenizer_file


def bare_bpe(texts: list[str], cfg: TokenizerConfig):
    """The library alone: `train_from_iterator` with the settings our stage uses."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def same_merges(a, b) -> bool:
    """Both tokenizers learned the same merges, in the same order, and the same vocabulary."""
    ma, mb = (json.loads(t.to_str())["model"] for t in (a, b))
    return ma["merges"] == mb["merges"] and ma["vocab"] == mb["vocab"]


def suite(data, repeats: int) -> list[dict]:
    """Rows of `python -m benchmarks`: tokenizer training and encoding all text, CPU time."""
    cfg = data.cfg
    texts = list(tokenizer.training_texts(data.corpus, cfg.max_train_chars))
    times, results = alternate(
        {
            # ours reads its sample from the corpus stage's Parquet files; the baseline gets it in memory
            "ours": lambda: tokenizer.train(tokenizer.training_texts(data.corpus, cfg.max_train_chars), cfg),
            "base": lambda: bare_bpe(texts, cfg),
        },
        repeats,
    )
    same = same_merges(results["ours"][-1], results["base"][-1])
    train = measured(
        f"tokenizer training (byte-level BPE, {cfg.vocab_size // 1024}k)",
        "tokenizer.train on the stage's sample",
        "tokenizers train_from_iterator",
        "CPU s",
        times["ours"]["cpu"],
        times["base"]["cpu"],
        "≤ 1.10× CPU time, identical merges",
        lambda o, ratio: ratio <= 1.10 and same,
        f"{sum(map(len, texts)):,} chars; identical merges: {'yes' if same else 'NO'}",
    )
    return [train, encoding(data, repeats)]


def encoding(data, repeats: int) -> dict:
    """All text through the shards stage's encoder vs the library's batch encoder, CPU time."""
    from tokenizers import Tokenizer

    texts = data.all_texts()
    rows = [{"text": t} for t in texts]
    default = Tokenizer.from_str(data.tok.to_str())
    default.encode_special_tokens = False  # the library default
    times, results = alternate(
        {
            "ours": lambda: shards.encode_template(data.tok, ("{text}",), rows),
            "base": lambda: [e.ids for e in default.encode_batch_fast(texts)],
        },
        repeats,
    )
    same = results["ours"][-1] == results["base"][-1]
    n = sum(map(len, results["base"][-1]))
    ours, base = times["ours"]["cpu"], times["base"]["cpu"]
    return measured(
        "encoding all text",
        "shards.encode_template (special tokens as text)",
        "encode_batch_fast",
        "CPU s",
        ours,
        base,
        "≤ 1.10× CPU time, identical ids",
        lambda o, ratio: ratio <= 1.10 and same,
        f"{len(texts):,} texts, {n:,} tokens; {n / min(ours) / 1e6:.2f} M vs {n / min(base) / 1e6:.2f} M "
        f"tokens per CPU-s (best run); identical ids: {'yes' if same else 'NO'}",
    )


def measure(corpus_dir: Path, work: Path, repeats: int, vocab_size: int) -> dict:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    cfg = TokenizerConfig(vocab_size=vocab_size)
    texts = list(tokenizer.training_texts(corpus_dir, cfg.max_train_chars))

    out = work / "tok"
    out.mkdir()
    stage = timed(lambda: tokenizer.build(cfg, {"corpus": corpus_dir}, out), repeats)
    safe = tokenizer_file.load(out)
    default = Tokenizer.from_file(str(out / tokenizer_file.TOKENIZER_FILE))
    hf = AutoTokenizer.from_pretrained(out)
    tokens = sum(len(e.ids) for e in safe.encode_batch(texts))
    seconds = {
        "bare_bpe_train": timed(lambda: bare_bpe(texts, cfg), repeats),
        "stage_build": stage,
        "encode_default": timed(lambda: default.encode_batch(texts), repeats),
        "encode_safe": timed(lambda: safe.encode_batch(texts), repeats),
        "encode_auto_tokenizer": timed(lambda: hf(texts, add_special_tokens=False), repeats),
    }
    chars = sum(map(len, texts))
    same = same_merges(tokenizer_file.load(out), bare_bpe(texts, cfg))
    return {
        "texts": len(texts),
        "chars": chars,
        "tokens": tokens,
        "repeats": repeats,
        "identical_merges": same,
        "median_s": seconds,
    }


def report(r: dict) -> tuple[dict, str]:
    s = r["median_s"]
    r["ratios"] = {
        "stage build / bare BPE training": round(s["stage_build"] / s["bare_bpe_train"], 3),
        "safe encode / default encode (time)": round(s["encode_safe"] / s["encode_default"], 3),
        "AutoTokenizer / safe encode (time)": round(s["encode_auto_tokenizer"] / s["encode_safe"], 3),
    }
    r["tokens_per_s"] = {k: round(r["tokens"] / v) for k, v in s.items() if k.startswith("encode")}
    intro = (
        f"{r['texts']} texts, {r['chars']} chars, {r['tokens']} tokens; identical merges to the bare "
        f"trainer: {'yes' if r['identical_merges'] else 'NO'}; "
        f"median of {r['repeats']} runs, one machine, one run."
    )
    md = timing_markdown("tokenizer benchmark", intro, s, "tokens/s", r["tokens_per_s"], r["ratios"])
    return r, md


def main(limit: int | None = None, repeats: int = 3, out: Path = RESULTS, vocab_size: int = 4096) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus_dir = work / "corpus"
        corpus_dir.mkdir()
        corpus.build(sources(work, limit), {}, corpus_dir)
        result, md = report(measure(corpus_dir, work, repeats, vocab_size))
    save_results("tokenizer", result, md, out)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="lines per file (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(args.limit, args.repeats)
