"""Shards stage: corpus tables + tokenizer -> Arrow IPC shards for pretraining, SFT and DPO.

Each record is formatted by its task template (schemas.templates): field text is encoded with
special-token recognition off and control tokens are inserted by id. Example, translation:

    {"source_text": "Hello", "target_text": "Bonjour"}
    input_ids  <bos> Hel lo <to-fr> Bon jour <eos>
    labels      -    -   -    -     Bon jour <eos>      (-100 on the prompt)

Files: `{pretrain,sft,dpo}-{train,validation}-NNNNN.arrow` (schemas in schemas.shards;
`sft_packed-*` with `sft_packing`) and `rejects.jsonl` for examples longer than `max_len`
(never split, never silently cut).

Tokenising runs in chunk jobs (tasks.shard_chunks), in parallel under the flow; packing and
bucketing then see every record at once. A killed build resumes in its staging directory:
finished chunks are not tokenised again and shards whose completion marker matches their
bytes are not written again, so the rerun's files equal an uninterrupted run's byte for byte.
"""

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from tokenizers import Tokenizer

from schemas.instruct import InstructConfig
from schemas.manifest import ContractResult
from schemas.shards import IGNORE_INDEX, SCHEMAS, Curriculum, ShardsConfig
from schemas.tokens import token_id
from tasks import curriculum, packing, shard_checks, shard_chunks
from tasks import tokenizer as tokenizer_task
from tasks.artifacts import fsync_path, sha256_file, write_json
from tasks.faults import crash_point
from tasks.shard_chunks import encode_template, read_split, weighted  # noqa: F401  (part of this stage's API)

SPLITS = shard_chunks.SPLITS
REJECTS = "rejects.jsonl"
PLOT = "lengths.png"


def pack_pretrain(docs: list[list[int]], seq_len: int) -> tuple[list[dict], dict]:
    """Pack documents into rows (see tasks.packing for the layout); returns rows and stats."""
    pieces = packing.split_long([len(d) for d in docs], seq_len)
    bins = packing.best_fit_decreasing([n for _, _, n in pieces], seq_len)
    rows = []
    for members in bins:
        chunks = [docs[doc][start : start + n] for doc, start, n in (pieces[k] for k in members)]
        labels = [[IGNORE_INDEX] + chunk[1:] for chunk in chunks]
        rows.append({**_packed_row(chunks, labels, seq_len), "_docs": [pieces[k][0] for k in members]})
    return rows, _pack_stats(docs, len(pieces), rows, seq_len)


def pack_concat(docs: list[list[int]], seq_len: int) -> tuple[list[dict], dict]:
    """The concatenate-and-chunk baseline: documents end to end, cut every seq_len tokens.

    Positions still restart at each document piece, but a document may continue in the next
    row (its second part starts without context), so it is kept for comparison only.
    """
    flat = [(d, k) for d, doc in enumerate(docs) for k in range(len(doc))]
    rows = []
    for start in range(0, len(flat), seq_len):
        groups = [list(g) for _, g in itertools.groupby(flat[start : start + seq_len], key=lambda x: x[0])]
        chunks = [[docs[d][k] for d, k in g] for g in groups]
        labels = [[IGNORE_INDEX] + chunk[1:] for chunk in chunks]  # a piece's first token has no context here
        rows.append({**_packed_row(chunks, labels, seq_len), "_docs": [g[0][0] for g in groups]})
    return rows, _pack_stats(docs, len(docs), rows, seq_len)


def pack_sft(examples: list[dict], row_len: int) -> tuple[list[dict], dict]:
    """Whole SFT examples packed best-fit-decreasing into rows of row_len (never split).

    Each example keeps its own labels (-100 on its prompt, which starts with <bos>), so no
    token is scored for predicting the next example, and its positions restart at 0.
    """
    bins = packing.best_fit_decreasing([len(ex["input_ids"]) for ex in examples], row_len)
    rows = []
    for members in bins:
        chosen = [examples[k] for k in members]
        row = _packed_row([ex["input_ids"] for ex in chosen], [ex["labels"] for ex in chosen], row_len)
        rows.append(
            {
                **row,
                "ids": [ex["id"] for ex in chosen],
                "tasks": [ex["task"] for ex in chosen],
                "_docs": members,
            }
        )
    stats = _pack_stats([ex["input_ids"] for ex in examples], len(examples), rows, row_len)
    return rows, {**stats, "padding": round(1 - stats["fill_rate"], 5)}


def _packed_row(chunks: list[list[int]], labels: list[list[int]], seq_len: int) -> dict:
    """One fixed-length row: the chunks, then padding as its own segment (no loss).

    Keys starting with "_" (such as the source documents, `_docs`) are not written to shards.
    """
    doc_lens = [len(c) for c in chunks]
    real = sum(doc_lens)
    fill = seq_len - real
    ids = [x for c in chunks for x in c] + [token_id("<pad>")] * fill
    flat_labels = [x for lab in labels for x in lab] + [IGNORE_INDEX] * fill
    if fill:
        doc_lens.append(fill)
    positions = [p for n in doc_lens for p in range(n)]
    return {
        "input_ids": ids,
        "labels": flat_labels,
        "position_ids": positions,
        "doc_lens": doc_lens,
        "n_tokens": real,
    }


def _pack_stats(docs: list[list[int]], pieces: int, rows: list[dict], seq_len: int) -> dict:
    tokens = sum(len(d) for d in docs)
    fill_rate = round(tokens / (len(rows) * seq_len), 5) if rows else 0.0
    return {
        "documents": len(docs),
        "pieces": pieces,
        "rows": len(rows),
        "tokens": tokens,
        "fill_rate": fill_rate,
    }


def sft_examples(
    tok: Tokenizer, corpus: Path, tasks: list[str], split: str, formats: InstructConfig | None = None
) -> list[dict]:
    """Every SFT example of one split, tokenised here in one go (the stage does it in chunks)."""
    cfg = formats or InstructConfig()
    return [
        ex
        for t in tasks
        for ex in shard_chunks.sft_examples(tok, t, read_split(corpus, t, split), None, split, cfg)
    ]


def dpo_examples(tok: Tokenizer, corpus: Path, split: str) -> list[dict]:
    """Every preference pair of one split, tokenised here in one go (the stage does it in chunks)."""
    return shard_chunks.dpo_examples(tok, "preference", read_split(corpus, "preference", split), None)


def auto_boundaries(lengths: list[int], count: int, max_len: int) -> list[int]:
    """Bucket bounds at length quantiles, rounded up to a multiple of 8, ending at max_len.

    >>> auto_boundaries([5, 9, 30, 31, 200], 2, 512)
    [32, 512]
    """
    ordered = sorted(n for n in lengths if n <= max_len)
    if not ordered:
        return [max_len]
    picks = {
        min(max_len, -(-ordered[min(len(ordered) - 1, len(ordered) * k // count)] // 8) * 8)
        for k in range(1, count)
    }
    return sorted(picks | {max_len})


def bucketed(
    examples: list[dict], lengths: list[int], cfg: ShardsConfig, bounds: list[int], rejects
) -> tuple[list[dict], dict]:
    """Drop examples over max_len (logged to rejects), add length/bucket, sort by bucket
    (or by "difficulty" where a curriculum set it)."""
    kept = []
    for ex, n in zip(examples, lengths, strict=True):
        if n > cfg.max_len:
            rejects.write(
                json.dumps({"id": ex["id"], "reason": f"too long: {n} tokens > max_len {cfg.max_len}"}) + "\n"
            )
            continue
        kept.append({**ex, "length": n, "bucket": packing.bucket_of(n, bounds)})
    # stable: keeps corpus order inside a bucket; a curriculum orders by difficulty instead
    kept.sort(key=lambda ex: ex.get("difficulty", ex["bucket"]))
    lens = [ex["length"] for ex in kept]
    buckets = [ex["bucket"] for ex in kept]
    bs = cfg.stats_batch_size
    stats = {
        "examples": len(kept),
        "rejected_too_long": len(examples) - len(kept),
        "tokens": sum(lens),
        "bucket_boundaries": bounds,
        "bucket_counts": {str(bounds[b]): buckets.count(b) for b in sorted(set(buckets))},
        f"padding_bucketed@{bs}": round(
            packing.padding_fraction(lens, packing.bucket_batches(buckets, bs, cfg.seed, lengths=lens)), 5
        ),
        f"padding_random@{bs}": round(
            packing.padding_fraction(lens, packing.random_batches(len(lens), bs, cfg.seed)), 5
        ),
    }
    return kept, stats


def write_shards(
    rows: list[dict], kind: str, split: str, out: Path, rows_per_shard: int, markers: Path | None = None
) -> dict[str, tuple[int, int]]:
    """Arrow IPC files of at most rows_per_shard rows; returns {file name: (rows, tokens)}.

    With `markers`, each finished shard gets `<markers>/<name>.json` (sha256, rows, tokens)
    after it is fsynced, and a shard whose marker matches the file on disk is not written again.
    """
    schema = SCHEMAS[kind]
    written = {}
    for n, start in enumerate(range(0, max(len(rows), 1), rows_per_shard)):
        name = f"{kind}-{split}-{n:05d}.arrow"
        chunk = rows[start : start + rows_per_shard]
        written[name] = (len(chunk), sum(_tokens(kind, r) for r in chunk))
        if markers and _marked(out / name, markers):
            continue
        with pa.OSFile(str(out / name), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
        if markers:
            fsync_path(out / name)
            markers.mkdir(parents=True, exist_ok=True)
            marker = {"sha256": sha256_file(out / name), "rows": written[name][0], "tokens": written[name][1]}
            write_json(markers / f"{name}.json", marker)
        crash_point("shards", f"after_{name}")
    return written


def _marked(shard: Path, markers: Path) -> bool:
    """A completion marker exists for the shard and matches its bytes."""
    marker = markers / f"{shard.name}.json"
    if not (marker.is_file() and shard.is_file()):
        return False
    return json.loads(marker.read_text())["sha256"] == sha256_file(shard)


def _tokens(kind: str, row: dict) -> int:
    if kind in ("pretrain", "sft_packed"):
        return row["n_tokens"]
    return (
        row["length"]
        if kind == "sft"
        else len(row["prompt_ids"]) + len(row["chosen_ids"]) + len(row["rejected_ids"])
    )


def load(directory: Path, kind: str, split: str) -> pa.Table:
    """All shards of one kind and split, memory-mapped (nothing is copied until used)."""
    files = sorted(directory.glob(f"{kind}-{split}-*.arrow"))
    tables = [pa.ipc.open_file(pa.memory_map(str(f))).read_all() for f in files]
    return pa.concat_tables(tables) if tables else SCHEMAS[kind].empty_table()


def build(
    cfg: ShardsConfig, inputs: dict[str, Path], out: Path, map_chunks: Callable = shard_chunks.serial
) -> dict:
    """Tokenise in chunk jobs (`map_chunks(fn, jobs)` runs them: serially here, as Prefect tasks
    in the flow), then pack, bucket and write the shards. Chunks and shards already finished
    by a killed run in `out` are reused, so a rerun only builds what is missing."""
    jobs = shard_chunks.plan(cfg, inputs, out)
    map_chunks(shard_chunks.tokenize_chunk, jobs)
    tokenized = {
        (k, s): shard_chunks.read_chunks(jobs, k, s) for k in ("pretrain", "sft", "dpo") for s in SPLITS
    }
    stats: dict = {"rows": {}, "tokens": {}}

    def write(rows: list[dict], kind: str, split: str) -> None:
        markers = out / shard_chunks.WORK / "done"
        for name, (n_rows, n_tokens) in write_shards(
            rows, kind, split, out, cfg.rows_per_shard, markers
        ).items():
            stats["rows"][name], stats["tokens"][name] = n_rows, n_tokens

    for split in SPLITS:
        docs = tokenized["pretrain", split]
        pack = pack_pretrain if cfg.packing == "bfd" else pack_concat
        rows, stats[f"pretrain_{split}"] = pack([d["input_ids"] for d in docs], cfg.seq_len)
        if cfg.curriculum and split == "train":
            scores = curriculum.record_scores(cfg.curriculum, [d["input_ids"] for d in docs], docs)
            stats["curriculum"] = {"by": cfg.curriculum.by}
            rows, stats["curriculum"]["pretrain_train"] = _by_difficulty(rows, scores)
        write(rows, "pretrain", split)
    if cfg.curriculum:
        for kind in ("sft", "dpo"):
            _set_difficulty(cfg.curriculum, tokenized[kind, "train"])
    with open(out / REJECTS, "w", encoding="utf-8") as rejects:
        for kind in ("sft", "dpo"):
            lengths = {s: [_example_length(ex) for ex in tokenized[kind, s]] for s in SPLITS}
            bounds = cfg.bucket_boundaries
            if bounds == "auto":
                bounds = auto_boundaries(lengths["train"], cfg.auto_buckets, cfg.max_len)
            for split in SPLITS:
                rows, stats[f"{kind}_{split}"] = bucketed(
                    tokenized[kind, split], lengths[split], cfg, bounds, rejects
                )
                if cfg.curriculum and split == "train":
                    stats["curriculum"][f"{kind}_train"] = curriculum.summary([r["difficulty"] for r in rows])
                write(rows, kind, split)
                if kind == "sft" and cfg.sft_packing:
                    packed, stats[f"sft_packed_{split}"] = pack_sft(rows, cfg.max_len)
                    if cfg.curriculum and split == "train":
                        packed, stats["curriculum"]["sft_packed_train"] = _by_difficulty(
                            packed, [r["difficulty"] for r in rows]
                        )
                    write(packed, "sft_packed", split)
    stats["vocab_size"] = tokenizer_task.load(inputs["tokenizer"]).get_vocab_size()
    stats.update(headline(stats))
    lengths_png(
        cfg,
        {k: [_example_length(ex) for ex in tokenized[k, "train"]] for k in ("pretrain", "sft", "dpo")},
        out / PLOT,
    )
    shutil.rmtree(out / shard_chunks.WORK)  # markers and chunks are not part of the artifact
    return stats


def headline(stats: dict) -> dict:
    """The figures the stage's Prefect artifact shows first: fill, padding, what was cut or dropped.

    Nothing is truncated: long documents are split into pieces (`split_documents` more pieces
    than documents), SFT/DPO examples over max_len are rejected (`rejected_too_long`).
    """
    p = stats["pretrain_train"]
    pad = next(k for k in stats["sft_train"] if k.startswith("padding_bucketed"))
    return {
        "fill_rate": p["fill_rate"],
        "padding_fraction_sft": stats["sft_train"][pad],
        "padding_fraction_dpo": stats["dpo_train"][pad],
        "split_documents": sum(
            stats[f"pretrain_{s}"]["pieces"] - stats[f"pretrain_{s}"]["documents"] for s in SPLITS
        ),
        "rejected_too_long": sum(
            stats[f"{k}_{s}"]["rejected_too_long"] for k in ("sft", "dpo") for s in SPLITS
        ),
    }


def lengths_png(cfg: ShardsConfig, lengths: dict[str, list[int]], path: Path) -> None:
    """Token-length histograms of the training split (log counts), with the row length and
    bucket bounds drawn in. Written without metadata, so the bytes depend only on the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(lengths), 1, figsize=(7, 1.8 * len(lengths)))
    for ax, (kind, n) in zip(axes, lengths.items(), strict=True):
        ax.hist(n or [0], bins=50, log=True)
        limit = cfg.seq_len if kind == "pretrain" else cfg.max_len
        ax.axvline(limit, color="red", linewidth=1)
        if kind != "pretrain" and cfg.bucket_boundaries != "auto":
            for b in cfg.bucket_boundaries[:-1]:
                ax.axvline(b, color="grey", linewidth=0.5)
        ax.set_title(
            f"{kind} train: {len(n)} {'documents' if kind == 'pretrain' else 'examples'}, tokens", fontsize=8
        )
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def _example_length(ex: dict) -> int:
    """SFT: prompt + answer; DPO: prompt + the longer completion (what a batch pads to)."""
    if "input_ids" in ex:  # also a pretraining document
        return len(ex["input_ids"])
    return len(ex["prompt_ids"]) + max(len(ex["chosen_ids"]), len(ex["rejected_ids"]))


def _by_difficulty(rows: list[dict], doc_scores: list[float]) -> tuple[list[dict], dict]:
    """Packed rows easy -> hard by their documents' token-weighted difficulty, and its summary."""
    difficulty = curriculum.row_scores(rows, doc_scores)
    order = curriculum.order(difficulty)
    return [rows[i] for i in order], curriculum.summary([difficulty[i] for i in order])


def _set_difficulty(cfg: Curriculum, examples: list[dict]) -> None:
    """Give each example its curriculum "difficulty" (all of a DPO pair's tokens count)."""
    tokens = [
        ex["input_ids"] if "input_ids" in ex else ex["prompt_ids"] + ex["chosen_ids"] + ex["rejected_ids"]
        for ex in examples
    ]
    for ex, score in zip(examples, curriculum.record_scores(cfg, tokens, examples), strict=True):
        ex["difficulty"] = score


def validate(cfg: ShardsConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    """The contracts of tasks.shard_checks on the training split of every shard kind."""
    kinds = ("pretrain", "sft", "dpo") + (("sft_packed",) if cfg.sft_packing else ())
    return shard_checks.check(cfg, {kind: load(out, kind, "train") for kind in kinds}, stats["vocab_size"])
