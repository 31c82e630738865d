"""Tokenizer training time and encode throughput on the embedded corpus, against baselines.

    python -m benchmarks.tokenizer            # the embedded corpus (data/raw), 3 repeats
    python -m benchmarks.tokenizer --limit 50 # the first 50 lines of each file

Training: our stage (`tasks.tokenizer.build`: sampling, training, saving, fertility) against a
bare `tokenizers` BpeTrainer on the same texts. Encoding: our safe encode (special-token
recognition off) against the library default and against `AutoTokenizer` on the saved folder.
Writes benchmarks/results/tokenizer.json and .md.
"""

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import RESULTS, save_results, timing_markdown
from benchmarks.corpus import sources, timed
from schemas.tokenizer import TokenizerConfig
from tasks import corpus, tokenizer


def measure(corpus_dir: Path, work: Path, repeats: int, vocab_size: int) -> dict:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer

    cfg = TokenizerConfig(vocab_size=vocab_size)
    texts = list(tokenizer.training_texts(corpus_dir, cfg.max_train_chars))

    def bare_train():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)

    out = work / "tok"
    out.mkdir()
    stage = timed(lambda: tokenizer.build(cfg, {"corpus": corpus_dir}, out), repeats)
    safe = tokenizer.load(out)
    default = Tokenizer.from_file(str(out / tokenizer.TOKENIZER_FILE))
    hf = AutoTokenizer.from_pretrained(out)
    tokens = sum(len(e.ids) for e in safe.encode_batch(texts))
    seconds = {
        "bare_bpe_train": timed(bare_train, repeats),
        "stage_build": stage,
        "encode_default": timed(lambda: default.encode_batch(texts), repeats),
        "encode_safe": timed(lambda: safe.encode_batch(texts), repeats),
        "encode_auto_tokenizer": timed(lambda: hf(texts, add_special_tokens=False), repeats),
    }
    chars = sum(map(len, texts))
    return {"texts": len(texts), "chars": chars, "tokens": tokens, "repeats": repeats, "median_s": seconds}


def report(r: dict) -> tuple[dict, str]:
    s = r["median_s"]
    r["ratios"] = {
        "stage build / bare BPE training": round(s["stage_build"] / s["bare_bpe_train"], 3),
        "safe encode / default encode (time)": round(s["encode_safe"] / s["encode_default"], 3),
        "AutoTokenizer / safe encode (time)": round(s["encode_auto_tokenizer"] / s["encode_safe"], 3),
    }
    r["tokens_per_s"] = {k: round(r["tokens"] / v) for k, v in s.items() if k.startswith("encode")}
    intro = (
        f"{r['texts']} texts, {r['chars']} chars, {r['tokens']} tokens; "
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
