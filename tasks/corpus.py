"""Corpus stage: raw sources -> clean, deduplicated, decontaminated, split Parquet tables + rejects.

Every input record ends up in exactly one place: a row of `<task>.parquet`, or a line of
`rejects.jsonl` with a reason code (schemas.corpus.REASONS), its file, line and id:

    {"file": "data/raw/qa.jsonl", "line": 17, "id": "qa-42", "task": "qa", "reason": "empty_field",
     "detail": "field 'answer' has 0 chars after normalisation (min_chars 1)", "excerpt": "{\"id\": ..."}

The manifest's stats count records per file and per reason; validation fails the stage when
the share of bad records (reasons outside POLICY_REASONS) exceeds `max_reject_rate`.
"""

import heapq
import itertools
import json
import shutil
import tempfile
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from schemas.contracts import corpus_suite, preference_suite
from schemas.corpus import POLICY_REASONS, TASK_FIELDS, CorpusConfig, table_schema
from schemas.manifest import ContractResult
from tasks import corpus_chunks
from tasks.contracts import ContractError, require, run_suite
from tasks.corpus_chunks import reject_line
from tasks.corpus_clean import split_of
from tasks.corpus_dedup import Decontamination, Dedup, contamination_chunk, member, repeated, undropped
from tasks.corpus_read import Raw
from tasks.jobs import serial
from tasks.memory import arrow_batches, parquet, release

REJECTS = "rejects.jsonl"
HISTOGRAM = "lengths.png"
SPOOL = ".spool"  # pass-one tables, dedup keys and signatures, own rejects; removed before publishing
OWN_REJECTS = "own-rejects.txt"  # pass one's rejects (not duplicates), each after its input ordinal
BATCH = 1024  # rows per Arrow batch while streaming (pretraining documents run to ~5 KB each)
ROW_GROUP = 4096  # rows per Parquet row group of the output tables (and per validation batch)
GROUP_BYTES = 4 << 20  # and at most about this much data (4096 pretraining documents are ~10 MB)
VALIDATE_BYTES = 2 << 20  # about this much text per validation batch (GX holds several copies)
HITS = 128  # training rows whose n-grams are looked up at once (~1000 n-grams each for documents)
CONTAMINATION_BATCHES = 16  # spool batches per pass-two job (16k rows)


def build(cfg: CorpusConfig, inputs: dict[str, Path], out: Path, map_chunks: Callable = serial) -> dict:
    """Streaming passes; memory holds a batch of rows, validation n-grams and repeated keys.

    Pass one runs as jobs (`map_chunks(fn, jobs)` runs them: serially here, as Prefect tasks in
    flows/corpus.py): each reads a piece of a source, admits or rejects each record on its own
    and computes its dedup keys, signature and validation n-grams (tasks/corpus_chunks.py).
    The stage then takes the pieces in input order: it spools the admitted rows to
    `.spool/<task>.arrows`, their dedup keys and signatures beside them, and collects the
    validation n-grams (a record's split is known at once from its group). Dedup then replays
    the records over their repeated keys (tasks/corpus_dedup.py) and rejects.jsonl gets both
    kinds of rejects in input order. Pass two looks up the training rows' n-grams in the
    validation n-grams in jobs too (`contamination`), then streams the spool, less the
    duplicates and the contaminated rows, into `<task>.parquet`. The output does not depend on the jobs' sizes or
    where they ran, and equals that of the old all-in-memory stage.
    """
    work = out / SPOOL
    work.mkdir(exist_ok=True)
    spool = Spool(work)
    decontam = Decontamination(cfg.decontam_ngram, work) if cfg.decontam_ngram is not None else None
    dedup = Dedup(cfg, work)
    files: dict[str, Counter] = {}
    read_pass(cfg, spool, dedup, decontam, files, map_chunks)
    with open(out / REJECTS, "w", encoding="utf-8") as rejects:
        dropped = write_rejects(dedup, files, work, rejects)
        owners = {}
        if decontam is not None:
            decontam.freeze(dropped)
            owners = contamination(cfg, spool, dropped, decontam, map_chunks)
        summary = Summary(cfg, work)
        contaminated = write_pass(cfg, spool, dropped, decontam, owners, files, rejects, summary, out)
    dedup.close()
    lengths_png(summary.histograms(), out / HISTOGRAM)
    shutil.rmtree(work)
    memory = {"dedup_bytes": dedup.nbytes(), "decontam_bytes": decontam.nbytes() if decontam else 0}
    return {**stats(cfg, summary, files, contaminated), "memory": memory}


def read_pass(
    cfg: CorpusConfig, spool: "Spool", dedup: Dedup, decontam, files: dict[str, Counter], map_chunks: Callable
) -> None:
    """Run pass one's jobs, then take their chunks in input order; duplicates are found after it."""
    jobs = corpus_chunks.plan(cfg, spool.work)
    ordinal = 0  # input order, across sources
    ended = set()  # Parquet files whose rows stopped being readable in a piece: they end there
    with open(spool.work / OWN_REJECTS, "w", encoding="utf-8") as own:
        for job, name in zip(jobs, map_chunks(corpus_chunks.read_chunk, jobs), strict=True):
            chunk, task, last = spool.work / name, cfg.sources[job["source"]].task, (None, None)
            if job["path"] in ended:  # as a read of the whole file stops at its first bad row group
                chunk.unlink()
                continue
            for batch in arrow_batches(chunk):
                take_chunk(batch, task, ordinal, spool, dedup, decontam, files, own)
                ordinal += batch.num_rows
                if batch.num_rows:
                    last = (batch.column("line")[-1].as_py(), batch.column("reason")[-1].as_py())
            if "rows" in job and corpus_chunks.cut_short(job, *last):
                ended.add(job["path"])
            chunk.unlink()
    spool.close()


def take_chunk(
    batch: pa.RecordBatch, task: str, ordinal: int, spool: "Spool", dedup: Dedup, decontam, files, own
) -> None:
    """The order-dependent part of pass one for a batch of a chunk whose first record follows
    input record `ordinal`: counts, own rejects, spool ranks, dedup and validation records."""
    reasons = batch.column("reason").to_pylist()
    rejected = batch.column("reject").to_pylist()
    for i, (file, reason) in enumerate(zip(batch.column("file").to_pylist(), reasons, strict=True)):
        counts = files.setdefault(file, Counter())
        counts["in"] += 1
        counts[reason or "kept"] += 1
        if reason:
            own.write(f"{ordinal + 1 + i}\t{corpus_chunks.decode(rejected[i])}")
    kept = [i for i, reason in enumerate(reasons) if not reason]
    if not kept:
        return
    rows, schema = batch.take(kept), table_schema(task)
    ranks = spool.extend(
        task, pa.RecordBatch.from_arrays([rows.column(n) for n in schema.names], schema=schema)
    )
    meta = {n: rows.column(n).to_pylist() for n in ("file", "line", "id", "excerpt", "split", "grams")}
    records = [
        [ordinal + 1 + i, file, line, rid, task, corpus_chunks.decode(excerpt)]
        for i, file, line, rid, excerpt in zip(
            kept, meta["file"], meta["line"], meta["id"], meta["excerpt"], strict=True
        )
    ]
    keys = rows.column("keys").flatten().to_numpy()
    dedup.extend(ranks, keys, b"".join(rows.column("sig").to_pylist()) if dedup.near else b"", records)
    if decontam is not None:
        for rid, rank, split, grams in zip(
            meta["id"], ranks.tolist(), meta["split"], meta["grams"], strict=True
        ):
            if split == "validation":
                decontam.add_validation(rid, rank, grams)


def write_rejects(dedup: Dedup, files: dict[str, Counter], work: Path, rejects) -> np.ndarray:
    """rejects.jsonl in input order: pass one's rejects merged with the duplicates; returns the
    duplicates' ranks (sorted), which pass two leaves out."""
    dropped = array("Q")

    def duplicates() -> Iterator[tuple[int, str]]:
        for ordinal, rank, raw, task, rid, reason, detail in dedup.decide():
            files[raw.file].update({"kept": -1, reason: 1})
            dropped.append(rank)
            yield ordinal, reject_line(raw, task, rid, reason, detail)

    with open(work / OWN_REJECTS, encoding="utf-8") as f:
        own = ((int(ordinal), line) for ordinal, line in (text.split("\t", 1) for text in f))
        rejects.writelines(line for _, line in heapq.merge(own, duplicates()))
    return np.sort(np.array(dropped, np.uint64))


class Spool:
    """Kept rows of each task, appended in batches of BATCH rows to an Arrow stream file (pass one)."""

    def __init__(self, work: Path):
        self.work = work
        # rows not yet written, per task; tasks in the order of their first kept row
        self.rows: dict[str, list[pa.RecordBatch]] = {}
        self.writers: dict[str, pa.ipc.RecordBatchStreamWriter] = {}
        self.count: Counter = Counter()

    def extend(self, task: str, rows: pa.RecordBatch) -> np.ndarray:
        """Spool rows (of `table_schema(task)`); returns their ranks: the task's order, then the
        row's (old `rows` order)."""
        if task not in self.rows:
            self.rows[task] = []
            self.writers[task] = pa.ipc.new_file(str(self.path(task)), table_schema(task))
        start = self.count[task]
        self.count[task] += rows.num_rows
        self.rows[task].append(rows)
        while sum(b.num_rows for b in self.rows[task]) >= BATCH:
            self._flush(task, BATCH)
        return np.arange(start, self.count[task], dtype=np.uint64) | np.uint64(self.rank(task, 0))

    def _flush(self, task: str, n: int) -> None:
        """Write the first `n` pending rows as one batch (pass two's row groups follow the batches)."""
        pending = pa.Table.from_batches(self.rows[task])
        self.writers[task].write_batch(pending.slice(0, n).combine_chunks().to_batches()[0])
        rest = pending.slice(n).combine_chunks()
        self.rows[task] = rest.to_batches() if rest.num_rows else []
        release()  # texts freed among live objects: malloc would keep their pages

    def close(self) -> None:
        for task, writer in self.writers.items():
            if self.rows[task]:
                self._flush(task, sum(b.num_rows for b in self.rows[task]))
            writer.close()

    def rank(self, task: str, n: int) -> int:
        return list(self.rows).index(task) << 40 | n

    def path(self, task: str) -> Path:
        return self.work / f"{task}.arrows"

    def batches(self, task: str) -> int:
        return -(-self.count[task] // BATCH)  # each of BATCH rows but the last

    def read(self, task: str, dropped: np.ndarray) -> Iterator[pa.RecordBatch]:
        """The task's rows, less those whose rank is in `dropped` (sorted)."""
        rank = self.rank(task, 0)
        for batch in arrow_batches(self.path(task)):
            yield undropped(batch, rank, dropped)
            rank += batch.num_rows


class Summary:
    """What the manifest and the histogram need of the written rows: counts, weights, lengths
    (in a file per task and source: the histogram's range is known only at the end)."""

    def __init__(self, cfg: CorpusConfig, work: Path):
        self.cfg, self.work = cfg, work
        self.records: dict[str, Counter] = {}
        self.mass: dict[str, Counter] = {}
        self.lengths: dict[tuple[str, str], array] = defaultdict(lambda: array("q"))
        self.files: dict[tuple[str, str], Path] = {}

    def add(self, task: str, batch: pa.RecordBatch) -> None:
        records, mass = self.records.setdefault(task, Counter()), self.mass.setdefault(task, Counter())
        paths = {s.path for s in self.cfg.sources if s.task == task}
        cols = {name: batch.column(name).to_pylist() for name in ("file", "split", "weight")}
        texts = [batch.column(f).to_pylist() for f in TASK_FIELDS[task]]
        for i, (file, split, weight) in enumerate(zip(*cols.values(), strict=True)):
            records[split] += 1
            source = _source_path(file, paths)
            if split == "train":
                mass[source] += weight
            self.lengths[task, source].append(sum(len(t[i]) for t in texts))
        for name, lengths in self.lengths.items():
            path = self.files.setdefault(name, self.work / f"lengths-{len(self.files)}.bin")
            with open(path, "ab") as f:
                lengths.tofile(f)
        self.lengths.clear()

    def histograms(self) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """(counts, edges) of record length, 40 bins from shortest to longest, per task and source."""
        out = {}
        for name, path in self.files.items():
            lo, hi = np.inf, -np.inf
            for chunk in _chunks(path):
                lo, hi = min(lo, chunk.min()), max(hi, chunk.max())
            counts = sum(np.histogram(chunk, 40, (lo, hi))[0] for chunk in _chunks(path))
            out[name] = counts, np.histogram_bin_edges([], 40, (lo, hi))
        return out


def _chunks(path: Path) -> Iterator[np.ndarray]:
    with open(path, "rb") as f:
        while len(chunk := np.fromfile(f, np.int64, 1 << 16)):
            yield chunk


def contamination(cfg: CorpusConfig, spool: Spool, dropped: np.ndarray, decontam, map_chunks) -> dict:
    """Pass two's n-gram lookups as jobs of CONTAMINATION_BATCHES spool batches (run by
    `map_chunks`, as pass one's): per task, the jobs' files in spool order, each holding for
    every row that is not a duplicate the validation record it shares an n-gram with (or -1)."""
    grams, owners = decontam.save(spool.work)
    np.save(spool.work / "dropped.npy", dropped)
    common = {"grams": grams, "owners": owners, "dropped": str(spool.work / "dropped.npy")}
    common |= {"n": cfg.decontam_ngram, "hits": HITS, "work": str(spool.work)}
    jobs = []
    for task in spool.rows:
        for first in range(0, spool.batches(task), CONTAMINATION_BATCHES):
            end = min(spool.batches(task), first + CONTAMINATION_BATCHES)
            jobs.append(
                {
                    **common,
                    "task": task,
                    "spool": str(spool.path(task)),
                    "fields": list(TASK_FIELDS[task]),
                    "first": first,
                    "end": end,
                    "rank": spool.rank(task, first * BATCH),
                    "chunk": f"owners-{task}-{first:06d}.arrow",
                }
            )
    out: dict[str, list[Path]] = {}
    for job, name in zip(jobs, map_chunks(contamination_chunk, jobs), strict=True):
        out.setdefault(job["task"], []).append(spool.work / name)
    return out


def write_pass(
    cfg: CorpusConfig,
    spool: Spool,
    dropped: np.ndarray,
    decontam,
    owners: dict[str, list[Path]],
    files: dict[str, Counter],
    rejects,
    summary: Summary,
    out: Path,
) -> int:
    """Stream each task's spool through decontamination into `<task>.parquet`; returns the
    number of training records rejected for sharing a `decontam_ngram`-word sequence with
    validation text (of any task: a translation validation sentence quoted in a pretraining
    document is contamination too). `owners`: `contamination`'s files, per task."""
    removed = 0
    for task in spool.rows:
        with pq.ParquetWriter(out / f"{task}.parquet", table_schema(task)) as writer:
            pending: list[pa.RecordBatch] = []
            found = itertools.chain.from_iterable(arrow_batches(p) for p in owners.get(task, ()))
            for batch in spool.read(task, dropped):
                hits = next(found).column(0).to_pylist() if decontam is not None else []
                keep = _decontaminate(cfg, task, batch, hits, decontam, files, rejects)
                removed += len(keep) - sum(keep)
                batch = batch.filter(pa.array(keep, pa.bool_()))
                summary.add(task, batch)
                pending.append(batch)
                if (
                    sum(b.num_rows for b in pending) >= ROW_GROUP
                    or sum(b.nbytes for b in pending) >= GROUP_BYTES
                ):
                    writer.write_table(pa.Table.from_batches(pending), row_group_size=ROW_GROUP)
                    pending = []
                    release()
            if pending:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=ROW_GROUP)
    return removed


def _decontaminate(
    cfg: CorpusConfig, task: str, batch: pa.RecordBatch, owners: list[int], decontam, files, rejects
) -> list[bool]:
    """Which rows of the batch stay; each contaminated training row (its validation record in
    `owners`, else -1) is rejected with its file and line."""
    keep = [True] * batch.num_rows
    if decontam is None or all(o < 0 for o in owners):
        return keep
    texts = [batch.column(f).to_pylist() for f in TASK_FIELDS[task]]
    meta = {name: batch.column(name).to_pylist() for name in ("id", "file", "line")}
    for i, owner in enumerate(owners):
        if owner < 0:
            continue
        keep[i] = False
        file, rid, hit = meta["file"][i], meta["id"][i], decontam.ids[owner]
        files[file].update({"kept": -1, "contaminated": 1})
        detail = f"shares a {cfg.decontam_ngram}-word sequence with validation record {hit!r}"
        raw = Raw(file, meta["line"][i], None, excerpt=texts[0][i][:200])
        rejects.write(reject_line(raw, task, rid, "contaminated", detail))
    return keep


def stats(cfg: CorpusConfig, summary: Summary, files: dict[str, Counter], contaminated: int) -> dict:
    reasons: Counter = Counter()
    for counts in files.values():
        reasons.update({k: v for k, v in counts.items() if k not in ("in", "kept")})
    read = sum(c["in"] for c in files.values())
    kept = sum(c["kept"] for c in files.values())
    bad = sum(v for k, v in reasons.items() if k not in POLICY_REASONS)
    return {
        "files": {k: {n: v for n, v in c.items() if v} for k, c in files.items()},
        "reasons": dict(sorted(reasons.items())),
        "records": {t: dict(sorted(c.items())) for t, c in sorted(summary.records.items())},
        "read": read,
        "kept": kept,
        "rejected": read - kept,
        "bad_rate": round(bad / read, 6) if read else 0.0,
        "near_duplicates": reasons.get("near_duplicate", 0),
        "contaminated": contaminated,
        "mix": mix(summary.mass),
    }


def mix(mass: dict[str, Counter]) -> dict:
    """Per task, each source's share of the weighted training records.

    >>> mix({"pretrain": Counter({"a.jsonl": 300.0, "b.txt": 200.0})})  # 300 at 1.0, 100 at 2.0
    {'pretrain': {'a.jsonl': 0.6, 'b.txt': 0.4}}
    """
    out = {}
    for task, task_mass in sorted(mass.items()):
        total = sum(task_mass.values()) or 1.0
        out[task] = {k: round(v / total, 4) for k, v in sorted(task_mass.items())}
    return out


def _source_path(file: str, paths: set[str]) -> str:
    return file if file in paths else next((p for p in paths if file.startswith(p.rstrip("/") + "/")), file)


def validate(cfg: CorpusConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    results = [accounting(out, stats), reject_rate(cfg, stats, out), source_yield(cfg, stats)]
    for task in sorted({s.task for s in cfg.sources}):
        results += validate_table(cfg, task, out / f"{task}.parquet")
    return results


def validate_table(cfg: CorpusConfig, task: str, path: Path) -> list[ContractResult]:
    """The task's suite batch by batch, and the checks that span batches: unique ids, and each
    group in the one split its key gives (so no group is in train and validation)."""
    columns = ["id", "source", "file", "split", "group", *TASK_FIELDS[task]]
    batches = _validation_batches(path, columns)
    checked, pairs_checked, misplaced = 0, 0, []
    for batch in batches:
        df = batch.to_pandas()
        checked += run_suite(f"corpus/{task}", df, corpus_suite(task, cfg.max_chars)).checked
        if task == "preference":
            pairs = pd.DataFrame({"id": df["id"], "chosen_equals_rejected": df["chosen"] == df["rejected"]})
            pairs_checked += run_suite("corpus/preference-pairs", pairs, preference_suite()).checked
        misplaced += [
            f"group={g!r} (id={i!r}) is in {s}, its key puts it in {split_of(g, cfg)}"
            for i, g, s in zip(df["id"], df["group"], df["split"], strict=True)
            if s != split_of(g, cfg)
        ]
    if not checked:  # no rows: the suite's row-count guard names the empty table
        run_suite(f"corpus/{task}", pd.DataFrame(columns=columns), corpus_suite(task, cfg.max_chars))
    results = [ContractResult(name=f"corpus/{task}", success=True, checked=checked)]
    results.append(require(f"corpus/{task}-groups", misplaced, checked, "each group lives in one split"))
    results.append(require(f"corpus/{task}-ids", _repeated_ids(path), checked, "ids are unique"))
    if task == "preference":
        results.append(ContractResult(name="corpus/preference-pairs", success=True, checked=pairs_checked))
    return results


def _validation_batches(path: Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The table in batches of at most ROW_GROUP rows and about VALIDATE_BYTES of data: 4096
    pretraining documents would hold ~20 MB of text, several times over inside GX."""
    if not path.exists():
        return iter(())
    f = parquet(path)
    size = sum(f.metadata.row_group(i).total_byte_size for i in range(f.num_row_groups))
    rows = f.metadata.num_rows * VALIDATE_BYTES // max(size, 1)
    return f.iter_batches(batch_size=max(1, min(ROW_GROUP, rows)), columns=columns)


def _repeated_ids(path: Path) -> list[str]:
    """Ids that occur more than once: their 64-bit hashes first, a partition at a time
    (corpus_dedup.repeated), then the ids whose hash repeats, counted."""
    if not path.exists():
        return []
    table = parquet(path)

    def ids_and_hashes() -> Iterator[tuple[list[str], np.ndarray]]:
        for batch in table.iter_batches(batch_size=ROW_GROUP, columns=["id"]):
            ids = batch.column(0).to_pylist()
            yield ids, np.fromiter((xxhash.xxh3_64_intdigest(i.encode()) for i in ids), np.uint64, len(ids))

    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        hashes = repeated((h for _, h in ids_and_hashes()), table.metadata.num_rows, Path(tmp))
    if not len(hashes):
        return []
    counts = Counter(
        i for ids, h in ids_and_hashes() for i, hit in zip(ids, member(hashes, h), strict=True) if hit
    )
    return [f"id={i!r} occurs {n} times" for i, n in counts.items() if n > 1]


def accounting(out: Path, stats: dict) -> ContractResult:
    """Read = kept + rejected, and the rejects file holds exactly the counted reasons."""
    with open(out / REJECTS, encoding="utf-8") as f:
        in_file = Counter(json.loads(line)["reason"] for line in f)
    bad = (
        []
        if stats["read"] == stats["kept"] + in_file.total()
        else [f"{stats['read']} read, {stats['kept']} kept, {in_file.total()} in {REJECTS}"]
    )
    if dict(in_file) != stats["reasons"]:
        bad.append(f"{REJECTS} counts {dict(in_file)}, stats count {stats['reasons']}")
    return require("corpus/accounting", bad, stats["read"], "every input record is kept or rejected")


FILE_MIN_RECORDS = 20  # files this small are judged only with the rest (one bad line is 5%)
HINTS = {
    "too_long": "whole books or long documents: `text_unit: paragraph` (text files) or a larger `max_chars`",
    "missing_id": "rows without ids: `id_field: null` makes ids from the file and line",
    "missing_field": "other field names: map them with the source's `fields`",
    "invalid_json": "a JSONL file must hold one JSON object per line",
}


def reject_rate(cfg: CorpusConfig, stats: dict, out: Path | None = None) -> ContractResult:
    """Fail when too much of the input is bad data, overall or in one file, naming the reasons,
    the file, its first bad lines (from `out`'s rejects) and a likely fix."""
    rate, name = stats["bad_rate"], "corpus/reject-rate"
    if stats["read"] == 0:
        raise ContractError(f"contract {name} failed: the sources hold no records")
    worst, worst_rate = None, 0.0
    for file, counts in stats["files"].items():
        bad = sum(v for k, v in counts.items() if k not in ("in", "kept", *POLICY_REASONS))
        if counts.get("in", 0) >= FILE_MIN_RECORDS and bad / counts["in"] > worst_rate:
            worst, worst_rate = file, bad / counts["in"]
    if rate > cfg.max_reject_rate or worst_rate > cfg.max_file_reject_rate:
        if rate <= cfg.max_reject_rate:
            limit = (
                f"{worst_rate:.1%} of {worst} is bad (max_file_reject_rate {cfg.max_file_reject_rate:.1%})"
            )
        else:
            limit = (
                f"{rate:.1%} of {stats['read']} records are bad (max_reject_rate {cfg.max_reject_rate:.1%})"
            )
            worst = max(stats["files"].items(), key=lambda kv: kv[1]["in"] - kv[1].get("kept", 0))[0]
        raise ContractError(f"contract {name} failed: {limit}: " + _diagnosis(stats, worst, out))
    return ContractResult(
        name=name, success=True, checked=stats["read"], details=f"bad-record rate {rate:.2%}"
    )


def _diagnosis(stats: dict, file: str, out: Path | None) -> str:
    """The reasons, the file with the most rejects, its first bad lines and a likely fix."""
    bad = {k: v for k, v in stats["reasons"].items() if k not in POLICY_REASONS}
    first = []
    if out is not None and (out / REJECTS).is_file():
        with open(out / REJECTS, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                if r["file"] == file and r["reason"] not in POLICY_REASONS:
                    first.append(f"line {r['line']}: {r['reason']} ({r['detail'][:100]})")
                    if len(first) == 3:
                        break
    top = max(bad, key=bad.get) if bad else ""
    return (
        ", ".join(f"{k} {v}" for k, v in bad.items())
        + f"; most rejects in {file}"
        + (f": {'; '.join(first)}" if first else "")
        + (f". Likely fix for {top}: {HINTS[top]}" if top in HINTS else "")
        + f"; see {REJECTS}"
    )


def source_yield(cfg: CorpusConfig, stats: dict) -> ContractResult:
    """Fail when a configured source gives no record at all (an empty file, or every record
    rejected) or, of FILE_MIN_RECORDS or more, is all duplicates of one record, naming it: otherwise its task's table is
    empty or thin and a later stage fails far from the cause (a tokenizer below its vocabulary
    size, shards with nothing to concatenate).

    >>> source_yield(cfg, stats)  # data/raw/qa.jsonl is a zero-byte file
    ContractError: contract corpus/sources failed: source 'data/raw/qa.jsonl' (qa) gave no records: it holds none (an empty file?)
    """
    name, checked = "corpus/sources", 0
    for src in cfg.sources:
        folder = src.path.rstrip("/") + "/"
        counts = [c for f, c in stats["files"].items() if f == src.path or f.startswith(folder)]
        read, kept = sum(c.get("in", 0) for c in counts), sum(c.get("kept", 0) for c in counts)
        checked += read
        reasons = Counter()
        for c in counts:
            reasons.update({k: v for k, v in c.items() if k not in ("in", "kept")})
        duplicates = reasons["exact_duplicate"] + reasons["near_duplicate"]
        if kept == 1 and duplicates and read >= FILE_MIN_RECORDS:  # as the per-file ceiling
            raise ContractError(
                f"contract {name} failed: source {src.path!r} ({src.task}) is all duplicates: {read} records "
                f"read, {duplicates} of them duplicates of its one kept record (the same record under "
                f"other ids?); see {REJECTS}"
            )
        if kept:
            continue
        why = (
            f"all {read} rejected ({', '.join(f'{k} {v}' for k, v in reasons.most_common(3))}; see {REJECTS})"
        )
        raise ContractError(
            f"contract {name} failed: source {src.path!r} ({src.task}) gave no records: "
            + (why if read else "it holds none (an empty file?)")
        )
    return ContractResult(name=name, success=True, checked=checked, details="every source gave records")


def lengths_png(histograms: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """One histogram of record length (characters, log counts) per configured source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not histograms:
        return
    fig, axes = plt.subplots(len(histograms), 1, figsize=(7, 1.6 * len(histograms)), squeeze=False)
    for ax, ((task, source), (counts, edges)) in zip(axes[:, 0], sorted(histograms.items()), strict=True):
        ax.hist(edges[:-1], bins=edges, weights=counts, log=True)  # as ax.hist(lengths, bins=40)
        ax.set_title(f"{task} / {source}: {counts.sum()} records, chars per record", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
