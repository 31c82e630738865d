"""Shards: tokenise + pack throughput and shard reading, against the raw libraries.

    python -m benchmarks.shards [--quick] [--repeats N]

On the embedded pretraining texts, with a 4096-token BPE trained on them:
- tokenise + pack: the stage's chunk job (`shard_chunks.tokenize_chunk`: read the corpus table,
  templates, control tokens by id, write the chunk file), reading the chunks back and
  best-fit-decreasing packing at seq_len 512, against raw `tokenizers` `encode_batch_fast` of
  the same texts (ids extracted) on the same cores. Goal: >= 0.8 of raw throughput.
- reading: every row of the written shards through the reader training uses
  (`shard_reading.take_rows`, 8 rows a call as training takes a batch; stored and shuffled
  order), against a plain loop over pyarrow's memory-mapped IPC record batches that slices
  numpy views per row (in the same orders). Goal: >= 0.8x raw throughput.
- one random batch of 8 rows as tensors (`pretraining.packed_batch`, the pretraining stage's
  batch; goal <= 1 ms), next to pyarrow's `take` + `to_pydict` on the same table.

Sides alternate A B A B ... `--repeats` times; medians. Writes benchmarks/results/shards.{json,md}.
"""

import argparse
import bisect
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.common import RESULTS, alternate, raw_texts, save_results, timing_markdown
from schemas.shards import ShardsConfig
from schemas.tokenizer import TokenizerConfig
from tasks import pretraining, shard_chunks, shard_reading, shards, tokenizer, tokenizer_file
from tasks.jobs import serial

SEQ_LEN = 512
BATCH = 8
RAW_ENCODE, OURS_ENCODE = "raw encode_batch_fast", "tokenise + pack (stage)"
RAW_READ, OURS_READ = "raw pyarrow read, stored order", "shard_reading.take_rows, stored order"
RAW_SHUFFLED, OURS_SHUFFLED = "raw pyarrow read, shuffled", "shard_reading.take_rows, shuffled"
OURS_BATCH, RAW_BATCH = "pretraining.packed_batch", "pyarrow take + to_pydict"


def clocks(sides: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and process-CPU seconds per side, alternated A B A B ... (`common.alternate`)."""
    return alternate(sides, repeats)[0]


def corpus_dir(work: Path, texts: list[str]) -> Path:
    """A corpus artifact's pretrain table (all records in the training split)."""
    out = work / "corpus"
    out.mkdir()
    n = len(texts)
    table = pa.table(
        {"id": [f"d{i}" for i in range(n)], "text": texts, "split": ["train"] * n, "weight": [1.0] * n}
    )
    pq.write_table(table, out / "pretrain.parquet")
    return out


def tokenise_and_pack(cfg: ShardsConfig, inputs: dict[str, Path], out: Path) -> list[dict]:
    """The stage's path from corpus table to packed rows (chunk files rewritten every time)."""
    jobs = shard_chunks.plan(cfg, inputs, out)
    for job in jobs:
        (Path(job["work"]) / job["file"]).unlink(missing_ok=True)
    serial(shard_chunks.tokenize_chunk, jobs)
    docs = shard_chunks.read_chunks(jobs, "pretrain", "train")
    return shards.pack_pretrain([d["input_ids"] for d in docs], SEQ_LEN)[0]


def raw_rows(files: list[Path], orders: list[list[int]] | None, epochs: int) -> int:
    """Baseline reader: pyarrow memory-mapped IPC batches, numpy views sliced per row, every row
    `epochs` times (in the given per-epoch orders, else stored order)."""
    segments, starts, n = [], [], 0
    for f in files:
        reader = pa.ipc.open_file(pa.memory_map(str(f)))
        for b in range(reader.num_record_batches):
            batch = reader.get_batch(b)
            cols = {}
            for name, col in zip(batch.schema.names, batch.columns, strict=True):
                is_list = pa.types.is_list(col.type)
                cols[name] = (col.values.to_numpy(), col.offsets.to_numpy()) if is_list else col.to_numpy()
            segments.append(cols)
            starts.append(n)
            n += batch.num_rows
    tokens = 0
    for i in (i for e in range(epochs) for i in (orders[e] if orders else range(n))):
        s = bisect.bisect_right(starts, i) - 1
        k = i - starts[s]
        row = {}
        for name, col in segments[s].items():
            row[name] = col[0][col[1][k] : col[1][k + 1]] if isinstance(col, tuple) else col[k]
        tokens += len(row["input_ids"])
    return tokens


def reader_rows(table: pa.Table, orders: list[list[int]] | None, epochs: int) -> int:
    """Every row `epochs` times through the training reader, BATCH rows a call (in the given
    per-epoch orders, else stored order)."""
    tokens = 0
    for e in range(epochs):
        order = orders[e] if orders else list(range(table.num_rows))
        for k in range(0, len(order), BATCH):
            tokens += sum(map(len, shard_reading.take_rows(table, order[k : k + BATCH])["input_ids"]))
    return tokens


def measure(inputs: dict[str, Path], repeats: int) -> dict:
    """Every timing of this module on one corpus artifact's pretraining records (training split)."""
    texts = [r["text"] for r in shards.read_split(inputs["corpus"], "pretrain", "train")]
    safe = tokenizer_file.load(inputs["tokenizer"])
    cfg = ShardsConfig(seq_len=SEQ_LEN, chunk_rows=max(1, len(texts) // 4))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = tokenise_and_pack(cfg, inputs, work / "out")
        shard_dir = work / "shards"
        shard_dir.mkdir()
        shards.write_shards(rows, "pretrain", "train", shard_dir, 128)
        files = sorted(shard_dir.glob("pretrain-train-*.arrow"))
        table = shard_reading.load(shard_dir, "pretrain", "train")
        epochs = max(1, 5000 // table.num_rows)  # enough rows per timing to rise above timer noise
        orders = [np.random.default_rng([0, e]).permutation(table.num_rows).tolist() for e in range(epochs)]
        seconds = clocks(
            {
                RAW_ENCODE: lambda: [e.ids for e in safe.encode_batch_fast(texts, add_special_tokens=False)],
                OURS_ENCODE: lambda: tokenise_and_pack(cfg, inputs, work / "out"),
            },
            repeats,
        )
        seconds |= clocks(
            {
                RAW_READ: lambda: raw_rows(files, None, epochs),
                OURS_READ: lambda: reader_rows(table, None, epochs),
                RAW_SHUFFLED: lambda: raw_rows(files, orders, epochs),
                OURS_SHUFFLED: lambda: reader_rows(table, orders, epochs),
            },
            repeats,
        )
        batch_ms = random_batch_ms(shard_dir, repeats)
    return {
        "texts": len(texts),
        "tokens": sum(r["n_tokens"] for r in rows),
        "rows": len(rows),
        "read_epochs": epochs,
        "repeats": repeats,
        "seconds": seconds,
        "batch_ms": batch_ms,
    }


def random_batch_ms(shard_dir: Path, repeats: int) -> dict[str, list[float]]:
    """CPU milliseconds per batch of BATCH random rows (mean of 100 draws), once per round."""
    table = shard_reading.load(shard_dir, "pretrain", "train")
    rng = random.Random(0)
    draws = [rng.sample(range(table.num_rows), min(BATCH, table.num_rows)) for _ in range(100)]

    def per_batch(fn) -> float:  # CPU time: one thread, steadier than wall on a shared machine
        start = time.process_time()
        for rows in draws:
            fn(rows)
        return (time.process_time() - start) / len(draws) * 1000

    out: dict[str, list[float]] = {OURS_BATCH: [], RAW_BATCH: []}
    for _ in range(repeats):
        out[OURS_BATCH].append(per_batch(lambda rows: pretraining.packed_batch(table, rows)))
        out[RAW_BATCH].append(per_batch(lambda rows: take_batch(table, rows)))
    return out


def take_batch(table: pa.Table, rows: list[int]) -> dict[str, torch.Tensor]:
    """The baseline batch: pyarrow's take on the (multi-shard) table, then tensors."""
    cols = table.take(rows).select(["input_ids", "labels", "position_ids"]).to_pydict()
    return {k: torch.tensor(v, dtype=torch.long) for k, v in cols.items()}


# Which clock judges each comparison: tokenising runs on every core (wall time on the same
# cores); reading is one thread, where process CPU time is what a busy neighbour disturbs least.
PAIRS = {
    "tokenise + pack throughput / raw encode_batch_fast": (OURS_ENCODE, RAW_ENCODE, "wall"),
    "training reader / raw pyarrow read throughput, stored order": (OURS_READ, RAW_READ, "cpu"),
    "training reader / raw pyarrow read throughput, shuffled": (OURS_SHUFFLED, RAW_SHUFFLED, "cpu"),
}


WORK = dict(
    zip(
        PAIRS,
        (
            f"tokenise + pack pretraining text at seq_len {SEQ_LEN} (wall time, same cores)",
            f"reading every pretraining shard row, {BATCH} rows a call, stored order (CPU time)",
            f"reading every pretraining shard row, {BATCH} rows a call, shuffled (CPU time)",
        ),
        strict=True,
    )
)


def report(r: dict) -> tuple[dict, str]:
    med = {k: {c: statistics.median(v[c]) for c in ("wall", "cpu")} for k, v in r["seconds"].items()}
    batch = {k: statistics.median(v) for k, v in r["batch_ms"].items()}
    r["median_s"], r["median_batch_ms"] = med, batch
    r["ratios"] = {
        f"{name} ({clock}, goal >= 0.8)": round(med[raw][clock] / med[ours][clock], 3)
        for name, (ours, raw, clock) in PAIRS.items()
    }
    r["ratios"] |= {
        f"{name} (other clock)": round(med[raw][c] / med[ours][c], 3)
        for name, (ours, raw, clock) in PAIRS.items()
        for c in ({"wall", "cpu"} - {clock})
    }
    r["ratios"][f"one random batch of {BATCH} rows, {OURS_BATCH} (CPU ms, goal <= 1)"] = round(
        batch[OURS_BATCH], 4
    )
    r["ratios"][f"one random batch of {BATCH} rows, {RAW_BATCH} (CPU ms)"] = round(batch[RAW_BATCH], 4)
    tokens = {k: r["tokens"] * (1 if "encode" in k or "tokenise" in k else r["read_epochs"]) for k in med}
    rates = {
        k: f"{tokens[k] / v['wall']:,.0f} tokens/s wall, {tokens[k] / v['cpu']:,.0f} per CPU s"
        for k, v in med.items()
    }
    intro = (
        f"{r['texts']} pretraining texts, {r['tokens']:,} tokens, {r['rows']} rows of {SEQ_LEN} "
        f"(read {r['read_epochs']}x per timing); sides alternated {r['repeats']}x, medians (wall). "
        "Throughput ratios are ours / raw (higher is better)."
    )
    walls = {k: v["wall"] for k, v in med.items()}
    return r, timing_markdown(
        "Shards: tokenise + pack, and reading", intro, walls, "throughput", rates, r["ratios"]
    )


def suite(data, repeats: int) -> list[dict]:
    """Rows of `python -m benchmarks` (data: benchmarks.embedded.Embedded)."""
    from benchmarks.suite import measured

    r = measure({"corpus": data.corpus, "tokenizer": data.tokenizer_dir}, repeats)
    note = f"{r['texts']:,} texts, {r['tokens']:,} tokens, {r['rows']} rows"
    rows = [
        measured(
            WORK[name],
            ours,
            raw,
            f"{clock} s",
            r["seconds"][ours][clock],
            r["seconds"][raw][clock],
            "≤ 1.25× time (≥ 0.8 of raw throughput)",
            lambda o, ratio: ratio <= 1.25,
            note,
        )
        for name, (ours, raw, clock) in PAIRS.items()
    ]
    b = r["batch_ms"]
    rows.append(
        measured(
            f"one random batch of {BATCH} rows x {SEQ_LEN}",
            OURS_BATCH,
            RAW_BATCH,
            "CPU ms",
            b[OURS_BATCH],
            b[RAW_BATCH],
            "≤ 1 ms",
            lambda o, ratio: o <= 1.0,
            note,
        )
    )
    return rows


def main(quick: bool = False, repeats: int = 3, out: Path = RESULTS) -> dict:
    texts = raw_texts("pretrain", ("text",), 20 if quick else None)
    tok = tokenizer.train(iter(texts), TokenizerConfig(vocab_size=4096))
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp) / "tokenizer"
        tok_dir.mkdir()
        tok.save(str(tok_dir / tokenizer_file.TOKENIZER_FILE))  # all the stage reads of a tokenizer artifact
        inputs = {"corpus": corpus_dir(Path(tmp), texts), "tokenizer": tok_dir}
        result, md = report(measure(inputs, 1 if quick else repeats))
    save_results("shards", result, md, out)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 texts, one round (smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    main(args.quick, args.repeats)
