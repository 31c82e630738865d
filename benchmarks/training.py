"""Pretraining throughput: our stage loop against a bare PyTorch loop, packed against padded.

    python -m benchmarks.training [--quick]

1. The same Llama-style model and the same packed batches, trained by `tasks.training.fit`
   (Stream reading the Arrow table, LR schedule, clipping, history, checkpoint bookkeeping)
   and by a bare loop over batches already in memory (forward, backward, AdamW step).
   Ratio = our tokens/s / bare tokens/s (goal >= 0.9).
2. Real-data tokens per second: packed rows (documents best-fit into seq_len, positions
   restart per document) against one document per row padded to the batch's longest.

Each measurement is repeated, alternating the two sides, and the best run counts (the machine
is shared). Results: benchmarks/results/training.{json,md}.
"""

import logging
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import torch

from benchmarks.common import raw_texts, write_results
from schemas.pretrain import PretrainConfig
from schemas.shards import IGNORE_INDEX, PRETRAIN_SCHEMA
from schemas.templates import PRETRAIN
from schemas.tokenizer import TokenizerConfig
from schemas.training import ModelConfig
from tasks import packing, pretraining, shards, tokenizer, training

SEQ_LEN, BATCH = 256, 8
MODEL = ModelConfig(hidden_size=128, num_layers=2, num_heads=4, intermediate_size=384)


def documents(n_docs: int) -> tuple[list[list[int]], int]:
    """Token ids of the first embedded pretraining texts (with <bos> ... <eos>), vocab size."""
    texts = raw_texts("pretrain", ("text",), n_docs)
    tok = tokenizer.train(iter(texts), TokenizerConfig(vocab_size=2048))
    docs = shards.encode_template(tok, PRETRAIN.prompt + PRETRAIN.answer, [{"text": t} for t in texts])
    return docs, tok.get_vocab_size()


def model(vocab: int):
    torch.manual_seed(0)
    return training.new_decoder(MODEL, vocab, SEQ_LEN)


def ours(table: pa.Table, vocab: int, steps: int) -> float:
    """Tokens/s of the stage loop (`fit`) on the packed table."""
    cfg = PretrainConfig(model=MODEL, max_steps=steps, batch_size=BATCH, warmup_steps=1, log_every=10**6)
    stream = training.Stream(
        pretraining.epoch_plan(table.num_rows, BATCH, 0),
        lambda rows, k: pretraining.packed_batch(table, rows),
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        history = training.fit(
            model(vocab), stream, cfg, training.runtime_on(torch.device("cpu")), Path(out), {}, "bench"
        )
        return sum(h["tokens"] for h in history) / (time.perf_counter() - start)


def bare(batches: list[training.Batch], vocab: int) -> float:
    """Tokens/s of the plainest loop over the same batches, already in memory."""
    m = model(vocab).train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    start, tokens = time.perf_counter(), 0
    for batch in batches:
        m(**batch, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int((batch["labels"] != IGNORE_INDEX).sum())
    return tokens / (time.perf_counter() - start)


def padded_batches(docs: list[list[int]], steps: int) -> list[training.Batch]:
    """One document (piece) per row, right-padded to the batch's longest; same seeded order."""
    pieces = [docs[d][s : s + n] for d, s, n in packing.split_long([len(x) for x in docs], SEQ_LEN).tolist()]
    order = packing.random_batches(len(pieces), BATCH, 0)[:steps]
    out = []
    for rows in order:
        width = max(len(pieces[i]) for i in rows)
        ids = [pieces[i] + [0] * (width - len(pieces[i])) for i in rows]
        labels = [[IGNORE_INDEX] + pieces[i][1:] + [IGNORE_INDEX] * (width - len(pieces[i])) for i in rows]
        mask = [[1] * len(pieces[i]) + [0] * (width - len(pieces[i])) for i in rows]
        out.append(
            {
                "input_ids": torch.tensor(ids),
                "labels": torch.tensor(labels),
                "attention_mask": torch.tensor(mask),
            }
        )
    return out


def main(quick: bool = False) -> dict:
    logging.getLogger("tasks.training").setLevel(logging.WARNING)
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    steps, repeats = (3, 1) if quick else (30, 3)
    docs, vocab = documents(60 if quick else 600)
    rows, _ = shards.pack_pretrain(docs, SEQ_LEN)
    table = pa.Table.from_pylist(rows, schema=PRETRAIN_SCHEMA)
    packed = [
        pretraining.packed_batch(table, r) for r in pretraining.epoch_plan(table.num_rows, BATCH, 0)(0)
    ][:steps]
    padded = padded_batches(docs, steps)
    results = {"ours": [], "bare": [], "packed": [], "padded": []}
    for _ in range(repeats):
        results["ours"].append(ours(table, vocab, min(steps, len(packed))))
        results["bare"].append(bare(packed, vocab))
        results["padded"].append(bare(padded, vocab))
    results["packed"] = results["bare"]  # bare loop on packed rows = packed throughput
    best = {k: max(v) for k, v in results.items()}
    table_rows = [
        {
            "comparison": "stage loop vs bare loop (packed)",
            "ours tok/s": round(best["ours"]),
            "baseline tok/s": round(best["bare"]),
            "ratio": round(best["ours"] / best["bare"], 3),
        },
        {
            "comparison": "packed vs padded (real tokens/s)",
            "ours tok/s": round(best["packed"]),
            "baseline tok/s": round(best["padded"]),
            "ratio": round(best["packed"] / best["padded"], 3),
        },
    ]
    data = {
        "setup": {
            "seq_len": SEQ_LEN,
            "batch": BATCH,
            "steps": steps,
            "repeats": repeats,
            "model": MODEL.model_dump(),
            "threads": torch.get_num_threads(),
            "device": "cpu",
        },
        "runs_tok_s": {k: [round(x) for x in v] for k, v in results.items()},
        "comparisons": table_rows,
    }
    write_results("training-quick" if quick else "training", data, table_rows)
    return data


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
