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
bucketing then see every record's length (not its tokens), and each shard's rows are gathered
from the chunk files as it is written, so memory is bounded by a shard, not by the corpus. A killed build resumes in its staging directory:
finished chunks are not tokenised again and shards whose completion marker matches their
bytes are not written again, so the rerun's files equal an uninterrupted run's byte for byte.
"""

import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer

from schemas.instruct import InstructConfig
from schemas.manifest import ContractResult
from schemas.shards import IGNORE_INDEX, SCHEMAS, Curriculum, ShardsConfig
from schemas.tokens import token_id
from tasks import curriculum, memory, packing, shard_checks, shard_chunks, shard_reading, tokenizer_file
from tasks.artifacts import fsync_path, sha256_file, write_json
from tasks.faults import crash_point
from tasks.jobs import serial
from tasks.shard_chunks import encode_template, read_split, weighted  # noqa: F401  (part of this stage's API)

SPLITS = shard_chunks.SPLITS
SLICE = shard_chunks.SLICE
REJECTS = "rejects.jsonl"
PLOT = "lengths.png"


def pack_pretrain(docs: list[list[int]], seq_len: int) -> tuple[list[dict], dict]:
    """Pack documents into rows (see tasks.packing for the layout); returns rows and stats."""
    lengths = [len(d) for d in docs]
    pieces, bins = plan_pretrain(lengths, seq_len)
    rows = pretrain_rows(pieces, bins, lambda need: {d: docs[d] for d in need}, seq_len)
    return rows, _pack_stats(lengths, len(pieces), len(rows), seq_len)


def plan_pretrain(lengths, seq_len: int) -> tuple[np.ndarray, packing.Bins]:
    """The (doc, start, length) pieces and the bins of piece numbers: packing needs lengths only."""
    pieces = packing.split_long(lengths, seq_len)
    return pieces, packing.best_fit_decreasing(pieces[:, 2], seq_len)


def pretrain_rows(pieces: np.ndarray, bins: packing.Bins, fetch: Callable, seq_len: int) -> list[dict]:
    """The rows of these bins; `fetch(doc numbers)` gives {doc: token ids} for the ones needed."""
    docs = fetch(np.unique(pieces[bins.members, 0]).tolist())
    rows = []
    for members in bins:
        chosen = pieces[members].tolist()
        chunks = [docs[doc][start : start + n] for doc, start, n in chosen]
        labels = [[IGNORE_INDEX] + chunk[1:] for chunk in chunks]
        rows.append({**_packed_row(chunks, labels, seq_len), "_docs": [doc for doc, _, _ in chosen]})
    return rows


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
    return rows, _pack_stats([len(d) for d in docs], len(docs), len(rows), seq_len)


def pack_sft(examples: list[dict], row_len: int) -> tuple[list[dict], dict]:
    """Whole SFT examples packed best-fit-decreasing into rows of row_len (never split).

    Each example keeps its own labels (-100 on its prompt, which starts with <bos>), so no
    token is scored for predicting the next example, and its positions restart at 0.
    """
    lengths = [len(ex["input_ids"]) for ex in examples]
    bins = packing.best_fit_decreasing(lengths, row_len)
    rows = sft_packed_rows(bins, lambda need: {k: examples[k] for k in need}, row_len)
    return rows, _sft_pack_stats(lengths, len(rows), row_len)


def _sft_pack_stats(lengths, rows: int, row_len: int) -> dict:
    stats = _pack_stats(lengths, len(lengths), rows, row_len)
    return {**stats, "padding": round(1 - stats["fill_rate"], 5)}


def sft_packed_rows(bins: packing.Bins, fetch: Callable, row_len: int) -> list[dict]:
    """The packed rows of these bins; `fetch(example numbers)` gives {number: example}."""
    examples = fetch(np.unique(bins.members).tolist())
    rows = []
    for members in map(np.ndarray.tolist, bins):
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
    return rows


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


def _pack_stats(lengths, pieces: int, rows: int, seq_len: int) -> dict:
    tokens = int(np.sum(lengths, dtype=np.int64))
    fill_rate = round(tokens / (rows * seq_len), 5) if rows else 0.0
    return {
        "documents": len(lengths),
        "pieces": pieces,
        "rows": rows,
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


def auto_boundaries(lengths, count: int, max_len: int) -> list[int]:
    """Bucket bounds at length quantiles, rounded up to a multiple of 8, ending at max_len.

    >>> auto_boundaries([5, 9, 30, 31, 200], 2, 512)
    [32, 512]
    """
    lengths = np.asarray(lengths, np.int64)
    ordered = np.sort(lengths[lengths <= max_len])
    if not len(ordered):
        return [max_len]
    picks = {
        min(max_len, -(-int(ordered[min(len(ordered) - 1, len(ordered) * k // count)]) // 8) * 8)
        for k in range(1, count)
    }
    return sorted(picks | {max_len})


def bucketed(
    lengths: np.ndarray, cfg: ShardsConfig, bounds: list[int], rejects, ids: Callable, difficulty=None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Drop examples over max_len (logged to rejects; `ids(numbers)` names them), give each a
    bucket, and order them by bucket (or by `difficulty` where a curriculum set it).
    Returns the kept example numbers in that order, their buckets, and the stats."""
    too_long = np.flatnonzero(lengths > cfg.max_len)
    for n, rid in zip(lengths[too_long].tolist(), ids(too_long), strict=True):
        rejects.write(
            json.dumps({"id": rid, "reason": f"too long: {n} tokens > max_len {cfg.max_len}"}) + "\n"
        )
    # narrow types: these arrays and their sorts are what the stage holds per example
    kept = np.flatnonzero(lengths <= cfg.max_len).astype(packing.index_type(len(lengths)))
    # packing.bucket_of, for all
    bucket = np.searchsorted(bounds, lengths[kept], side="left").astype(np.int16)
    # stable: keeps corpus order inside a bucket; a curriculum orders by difficulty instead
    key = bucket if difficulty is None else np.asarray(difficulty, np.float64)[kept]
    order = np.argsort(key, kind="stable")
    kept, buckets = kept[order], bucket[order]
    del order, key, bucket
    lens = lengths[kept]
    counts = np.bincount(buckets, minlength=len(bounds))
    stats = {
        "examples": len(kept),
        "rejected_too_long": len(too_long),
        "tokens": int(lens.sum()),
        "bucket_boundaries": bounds,
        "bucket_counts": {str(bounds[b]): int(counts[b]) for b in np.flatnonzero(counts)},
        **padding_stats(lens, buckets, cfg),
    }
    return kept, buckets, stats


def padding_stats(lens: np.ndarray, buckets: np.ndarray, cfg: ShardsConfig) -> dict:
    """Padding of bucketed and of random batches of stats_batch_size: the seeded plans of
    tasks.packing, as training draws them, held in numpy (a few bytes an example). The order
    of the bucketed batches changes no batch's padding, so it is not drawn."""
    bs = cfg.stats_batch_size
    return {
        f"padding_bucketed@{bs}": round(
            packing.padding_fraction(
                lens, packing.bucket_cuts(buckets, bs, packing.epoch_rng(cfg.seed), lens)
            ),
            5,
        ),
        f"padding_random@{bs}": round(
            packing.padding_fraction(lens, packing.random_plan(len(lens), bs, cfg.seed)), 5
        ),
    }


class LazyRows:
    """Rows built a slice at a time: `write_shards` takes one shard's slice, so only that many
    rows (and their token ids) are ever in memory."""

    def __init__(self, n: int, make: Callable[[int, int], list[dict]]):
        self.n, self.make = n, make

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, part: slice) -> list[dict]:
        start, stop, _ = part.indices(self.n)
        return self.make(start, stop)


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
        table = _shard_table(rows, start, min(len(rows), start + rows_per_shard), schema)
        written[name] = (table.num_rows, _tokens(kind, table))
        if markers and _marked(out / name, markers):
            continue
        with pa.OSFile(str(out / name), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            writer.write_table(table)
        if markers:
            fsync_path(out / name)
            markers.mkdir(parents=True, exist_ok=True)
            marker = {"sha256": sha256_file(out / name), "rows": written[name][0], "tokens": written[name][1]}
            write_json(markers / f"{name}.json", marker)
        del table
        memory.release()
        crash_point("shards", f"after_{name}")
    return written


def _shard_table(rows, start: int, stop: int, schema: pa.Schema) -> pa.Table:
    """One shard's rows as one Arrow record batch, built SLICE rows at a time (Python lists of
    token ids cost ~10x their Arrow size, so only a slice of them exists at once)."""
    parts = [
        pa.Table.from_pylist(rows[a : min(stop, a + SLICE)], schema=schema) for a in range(start, stop, SLICE)
    ]
    return pa.concat_tables(parts).combine_chunks() if parts else schema.empty_table()


def _marked(shard: Path, markers: Path) -> bool:
    """A completion marker exists for the shard and matches its bytes."""
    marker = markers / f"{shard.name}.json"
    if not (marker.is_file() and shard.is_file()):
        return False
    return json.loads(marker.read_text())["sha256"] == sha256_file(shard)


def _tokens(kind: str, table: pa.Table) -> int:
    """Tokens of a shard: real tokens of packed rows, SFT lengths, all three lists of DPO pairs."""
    if kind in ("pretrain", "sft_packed"):
        return pc.sum(table["n_tokens"]).as_py() or 0
    if kind == "sft":
        return pc.sum(table["length"]).as_py() or 0
    return sum(
        pc.sum(pc.list_value_length(table[c])).as_py() or 0
        for c in ("prompt_ids", "chosen_ids", "rejected_ids")
    )


def build(cfg: ShardsConfig, inputs: dict[str, Path], out: Path, map_chunks: Callable = serial) -> dict:
    """Tokenise in chunk jobs (`map_chunks(fn, jobs)` runs them: serially here, as Prefect tasks
    in the flow), then pack, bucket and write the shards. Packing and bucketing see only the
    lengths; each shard's rows are then gathered from the chunk files (shard_chunks.Chunks), so
    memory holds one shard, not the corpus. Chunks and shards already finished by a killed run
    in `out` are reused, so a rerun only builds what is missing."""
    with memory.large_blocks_mapped():
        return _build(cfg, inputs, out, map_chunks)


def _build(cfg: ShardsConfig, inputs: dict[str, Path], out: Path, map_chunks: Callable) -> dict:
    jobs = shard_chunks.plan(cfg, inputs, out)
    map_chunks(shard_chunks.tokenize_chunk, jobs)
    stats: dict = {"rows": {}, "tokens": {}}

    def write(rows, kind: str, split: str) -> None:
        markers = out / shard_chunks.WORK / "done"
        for name, (n_rows, n_tokens) in write_shards(
            rows, kind, split, out, cfg.rows_per_shard, markers
        ).items():
            stats["rows"][name], stats["tokens"][name] = n_rows, n_tokens

    train_lengths = {}
    for split in SPLITS:
        chunks = shard_chunks.Chunks(jobs, "pretrain", split)
        rows, stats[f"pretrain_{split}"], lengths = pretrain_split(cfg, chunks, split, stats)
        train_lengths.setdefault("pretrain", lengths)
        write(rows, "pretrain", split)
    with open(out / REJECTS, "w", encoding="utf-8") as rejects:
        for kind in ("sft", "dpo"):
            chunks = {s: shard_chunks.Chunks(jobs, kind, s) for s in SPLITS}
            lengths = {s: chunks[s].lengths() for s in SPLITS}
            train_lengths[kind] = lengths["train"]
            bounds = cfg.bucket_boundaries
            if bounds == "auto":
                bounds = auto_boundaries(lengths["train"], cfg.auto_buckets, cfg.max_len)
            for split in SPLITS:
                example_split(cfg, kind, split, chunks[split], lengths[split], bounds, rejects, stats, write)
    stats["vocab_size"] = tokenizer_file.load(inputs["tokenizer"]).get_vocab_size()
    stats.update(headline(stats))
    lengths_png(cfg, train_lengths, out / PLOT)
    shutil.rmtree(out / shard_chunks.WORK)  # markers and chunks are not part of the artifact
    return stats


def pretrain_split(cfg: ShardsConfig, chunks: shard_chunks.Chunks, split: str, stats: dict):
    """The packed rows of one split (built a shard at a time for BFD), their stats, and the
    document lengths."""
    lengths = chunks.lengths()
    scored = bool(cfg.curriculum) and split == "train"
    # the concat baseline and curriculum scores need every document's tokens: not streamed
    docs = chunks.take(range(len(chunks))) if cfg.packing != "bfd" or scored else []
    if cfg.packing != "bfd":
        rows, pack_stats = pack_concat([d["input_ids"] for d in docs], cfg.seq_len)
        return (
            [rows[i] for i in _pretrain_order(cfg, docs, rows, stats)] if scored else rows,
            pack_stats,
            lengths,
        )
    pieces, bins = plan_pretrain(lengths, cfg.seq_len)
    if scored:  # what row_scores reads of a row, without its tokens
        light = [{"_docs": pieces[m, 0].tolist(), "doc_lens": pieces[m, 2].tolist()} for m in bins]
        bins = bins.take(_pretrain_order(cfg, docs, light, stats))

    def fetch(need: list[int]) -> dict[int, list[int]]:
        return dict(zip(need, (d["input_ids"] for d in chunks.take(need)), strict=True))

    rows = LazyRows(len(bins), lambda a, b: pretrain_rows(pieces, bins[a:b], fetch, cfg.seq_len))
    return rows, _pack_stats(lengths, len(pieces), len(bins), cfg.seq_len), lengths


def _pretrain_order(cfg: ShardsConfig, docs: list[dict], rows: list[dict], stats: dict) -> list[int]:
    """The curriculum's row order (easy -> hard), its summary put in stats."""
    scores = curriculum.record_scores(cfg.curriculum, [d["input_ids"] for d in docs], docs)
    stats["curriculum"] = {"by": cfg.curriculum.by}
    order, stats["curriculum"]["pretrain_train"] = _by_difficulty(rows, scores)
    return order


def example_split(cfg, kind, split, chunks, lengths, bounds, rejects, stats, write) -> None:
    """Bucket and write one split of SFT or DPO examples (and the packed SFT rows)."""
    difficulty = None
    if cfg.curriculum and split == "train":  # scores need every example's tokens
        examples = chunks.take(range(len(chunks)))
        _set_difficulty(cfg.curriculum, examples)
        difficulty = [ex["difficulty"] for ex in examples]
        del examples
    kept, buckets, stats[f"{kind}_{split}"] = bucketed(
        lengths, cfg, bounds, rejects, lambda idx: [ex["id"] for ex in chunks.take(idx, ["id"])], difficulty
    )
    if cfg.curriculum and split == "train":
        stats["curriculum"][f"{kind}_train"] = curriculum.summary([difficulty[i] for i in kept])

    def examples_at(positions: list[int]) -> list[dict]:
        """The kept examples at these positions of the bucketed order, as the shards hold them."""
        numbers = kept[positions]
        rows = chunks.take(numbers)
        for row, k, n, b in zip(
            rows, numbers.tolist(), lengths[numbers].tolist(), buckets[positions].tolist(), strict=True
        ):
            row |= {"length": n, "bucket": b}
            if difficulty is not None:
                row["difficulty"] = difficulty[k]
        return rows

    write(LazyRows(len(kept), lambda a, b: examples_at(list(range(a, b)))), kind, split)
    if kind == "sft" and cfg.sft_packing:
        kept_lengths = lengths[kept]
        bins = packing.best_fit_decreasing(kept_lengths, cfg.max_len)
        stats[f"sft_packed_{split}"] = _sft_pack_stats(kept_lengths, len(bins), cfg.max_len)
        if difficulty is not None:
            light = [{"_docs": m.tolist(), "doc_lens": kept_lengths[m].tolist()} for m in bins]
            order, stats["curriculum"]["sft_packed_train"] = _by_difficulty(
                light, [difficulty[i] for i in kept]
            )
            bins = bins.take(order)

        def fetch(need: list[int]) -> dict[int, dict]:
            return dict(zip(need, examples_at(need), strict=True))

        write(
            LazyRows(len(bins), lambda a, b: sft_packed_rows(bins[a:b], fetch, cfg.max_len)),
            "sft_packed",
            split,
        )


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


def lengths_png(cfg: ShardsConfig, lengths: dict[str, np.ndarray], path: Path) -> None:
    """Token-length histograms of the training split (log counts), with the row length and
    bucket bounds drawn in. Written without metadata, so the bytes depend only on the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(lengths), 1, figsize=(7, 1.8 * len(lengths)))
    for ax, (kind, n) in zip(axes, lengths.items(), strict=True):
        ax.hist(n if len(n) else [0], bins=50, log=True)
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


def _by_difficulty(rows: list[dict], doc_scores: list[float]) -> tuple[list[int], dict]:
    """The order of packed rows easy -> hard by their documents' token-weighted difficulty
    (`_docs`, `doc_lens` are all it reads), and its summary."""
    difficulty = curriculum.row_scores(rows, doc_scores)
    order = curriculum.order(difficulty)
    return order, curriculum.summary([difficulty[i] for i in order])


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
    files = {kind: shard_reading.shard_files(out, kind, "train") for kind in kinds}
    # the id check's partition files go to the chunks' folder: a killed run's are removed by
    # the rerun's build
    work = out / shard_chunks.WORK
    try:
        with memory.large_blocks_mapped():
            return shard_checks.check(cfg, files, stats["vocab_size"], work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
