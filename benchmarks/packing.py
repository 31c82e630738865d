"""Packing and bucketing: fill rate, padding and speed against the usual baselines.

    python -m benchmarks.packing [--quick]

Pretraining rows at seq_len 512 (long documents split): best-fit-decreasing (ours) against
first-fit-decreasing, greedy next-fit in corpus order and concatenate-and-chunk, on the
embedded corpus and on a long-tailed synthetic length distribution; time to pack 1M lengths.
SFT batches of 16: one-bucket batches (ours) against random batches and fully length-sorted.
"""

import random
import sys

from benchmarks.common import raw_texts, summary, timed, write_results
from benchmarks.suite import measured
from schemas.tokenizer import TokenizerConfig
from tasks import packing, shards, tokenizer

SEQ_LEN = 512


def fill(sizes: list[int], bins: list[list[int]]) -> float:
    return sum(sizes) / (len(bins) * SEQ_LEN)


def compare_packers(name: str, doc_lengths: list[int]) -> list[dict]:
    sizes = packing.split_long(doc_lengths, SEQ_LEN)[:, 2].tolist()
    rows = []
    for packer in (packing.best_fit_decreasing, packing.first_fit_decreasing, packing.next_fit):
        times, bins = timed(lambda p=packer: p(sizes, SEQ_LEN), 3)
        placed = sum(sizes[i] for b in bins for i in b)
        rows.append(
            {
                "data": name,
                "method": packer.__name__,
                "fill": round(fill(sizes, bins), 5),
                "tokens_lost": sum(sizes) - placed,
                **summary(times),
            }
        )
    concat_rows = -(-sum(doc_lengths) // SEQ_LEN)
    rows.append(
        {
            "data": name,
            "method": "concat_and_chunk (splits documents)",
            "fill": round(sum(doc_lengths) / (concat_rows * SEQ_LEN), 5),
            "tokens_lost": 0,
            "median_s": 0,
            "min_s": 0,
            "max_s": 0,
        }
    )
    return rows


def padding_rows(lengths: list[int], boundaries: list[int]) -> list[dict]:
    buckets = [packing.bucket_of(n, boundaries) for n in lengths]
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    plans = {
        "random batches": packing.random_batches(len(lengths), 16, 0),
        "one-bucket batches (lmpipe)": packing.bucket_batches(buckets, 16, 0, lengths=lengths),
        "fully length-sorted": [order[k : k + 16] for k in range(0, len(order), 16)],
    }
    return [
        {"method": k, "padding": round(packing.padding_fraction(lengths, v), 4)} for k, v in plans.items()
    ]


def trl_packed(seqs: list[list[int]], seq_len: int, strategy: str = "bfd") -> list[int]:
    """Token counts of the rows TRL's `pack_dataset` makes (inside `datasets.map`)."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    packed = pack_dataset(Dataset.from_dict({"input_ids": seqs}), seq_len, strategy)
    return [sum(x) for x in packed["seq_lengths"]]


def suite(data, repeats: int) -> list[dict]:
    """Rows of `python -m benchmarks`: the shards stage's pretraining rows at seq_len 512."""
    docs = data.pretrain_docs()
    total = sum(map(len, docs))
    packed, _ = shards.pack_pretrain(docs, SEQ_LEN)
    ours_fill = sum(r["n_tokens"] for r in packed) / (len(packed) * SEQ_LEN)
    lost = total - sum(r["n_tokens"] for r in packed)
    sizes = packing.split_long(list(map(len, docs)), SEQ_LEN)[:, 2].tolist()
    trl = trl_packed(docs, SEQ_LEN)
    baselines = {
        "global best-fit-decreasing": fill(sizes, packing.best_fit_decreasing(sizes, SEQ_LEN)),
        "greedy next-fit": fill(sizes, packing.next_fit(sizes, SEQ_LEN)),
        "TRL pack_dataset bfd": sum(trl) / (len(trl) * SEQ_LEN),
    }
    trl_lost = (
        f"TRL bfd keeps {sum(trl):,} of {total:,} tokens ({1 - sum(trl) / total:.1%} lost by truncation)"
    )
    out = []
    for name, base in baselines.items():
        goal = name.startswith("global")
        out.append(
            measured(
                f"pretraining packing at seq_len {SEQ_LEN}, long documents split",
                "shards.pack_pretrain",
                name,
                "fill %",
                [100 * ours_fill],
                [100 * base],
                "fill ≥ BFD − 0.05 points, zero tokens lost" if goal else "",
                (lambda o, r, b=100 * base: o >= b - 0.05 and lost == 0) if goal else None,
                f"{len(docs):,} documents, {total:,} tokens, {lost} lost"
                + ("; " + trl_lost if name.startswith("TRL") else ""),
            )
        )
    return out


def main(quick: bool = False) -> None:
    limit = 200 if quick else None
    texts = raw_texts("pretrain", ("text",), limit)
    tok = tokenizer.train(
        iter(texts + raw_texts("sft", ("source_text", "target_text"), limit)),
        TokenizerConfig(vocab_size=4096),
    )
    doc_lengths = [len(e.ids) + 2 for e in tok.encode_batch_fast(texts, add_special_tokens=False)]
    rng = random.Random(0)
    long_tail = [max(2, int(rng.paretovariate(1.2) * 40)) for _ in range(2_000 if quick else 20_000)]
    table = compare_packers("embedded pretrain", doc_lengths) + compare_packers("pareto long tail", long_tail)

    million = [
        min(SEQ_LEN, max(1, int(rng.lognormvariate(4.5, 1.0)))) for _ in range(10_000 if quick else 1_000_000)
    ]
    times, _ = timed(lambda: packing.best_fit_decreasing(million, SEQ_LEN), 1)
    pairs = raw_texts("sft", ("source_text", "target_text"), limit)
    sft_lengths = [
        len(a.ids) + len(b.ids) + 3
        for a, b in zip(*(tok.encode_batch_fast(pairs[i::2]) for i in (0, 1)), strict=True)
    ]
    bounds = [16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 320, 384, 512]
    padding = padding_rows([min(n, 512) for n in sft_lengths], bounds)
    data = {
        "packing": table,
        "bfd_1m_lengths_s": round(times[0], 3),
        "n_lengths": len(million),
        "sft_padding": padding,
    }
    for row in table:
        print(row)
    write_results(
        "packing",
        data,
        table
        + [
            {
                "data": f"{len(million)} lengths",
                "method": "best_fit_decreasing time",
                "fill": "",
                "tokens_lost": "",
                **summary(times),
            }
        ],
    )
    write_results("padding", {"sft_padding": padding}, padding)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
