"""Corpus stage: raw sources -> clean, deduplicated, decontaminated, split Parquet tables + rejects.

Every input record ends up in exactly one place: a row of `<task>.parquet`, or a line of
`rejects.jsonl` with a reason code (schemas.corpus.REASONS), its file, line and id:

    {"file": "data/raw/qa.jsonl", "line": 17, "id": "qa-42", "task": "qa", "reason": "empty_field",
     "detail": "field 'answer' has 0 chars after normalisation (min_chars 1)", "excerpt": "{\"id\": ..."}

The manifest's stats count records per file and per reason; validation fails the stage when
the share of bad records (reasons outside POLICY_REASONS) exceeds `max_reject_rate`.
"""

import json
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.contracts import corpus_suite, preference_suite
from schemas.corpus import POLICY_REASONS, TASK_FIELDS, CorpusConfig, Source, table_schema
from schemas.manifest import ContractResult
from tasks.contracts import ContractError, require, run_suite
from tasks.corpus_clean import Dedup, Reject, fields, group_key, ngrams, record_id, split_of
from tasks.corpus_read import Raw, read_source

REJECTS = "rejects.jsonl"
HISTOGRAM = "lengths.png"


def build(cfg: CorpusConfig, inputs: dict[str, Path], out: Path) -> dict:
    rows: dict[str, list[dict]] = defaultdict(list)
    dedup = {task: Dedup(cfg) for task in {s.task for s in cfg.sources}}
    files: dict[str, Counter] = {}
    with open(out / REJECTS, "w", encoding="utf-8") as rejects:
        for src in cfg.sources:
            for raw in read_source(src):
                counts = files.setdefault(raw.file, Counter())
                counts["in"] += 1
                rid, row, reason, detail = admit(src, raw, cfg, dedup[src.task])
                if reason:
                    counts[reason] += 1
                    rejects.write(reject_line(raw, src.task, rid, reason, detail))
                else:
                    counts["kept"] += 1
                    rows[src.task].append(row)
        contaminated = decontaminate(rows, cfg, rejects, files)
    for task, task_rows in rows.items():
        pq.write_table(pa.Table.from_pylist(task_rows, schema=table_schema(task)), out / f"{task}.parquet")
    lengths_png(cfg, rows, out / HISTOGRAM)
    return stats(cfg, rows, files, contaminated)


def admit(src: Source, raw: Raw, cfg: CorpusConfig, dedup: Dedup) -> tuple[str, dict | None, str, str]:
    """(id, table row, reason, detail): the row is None and the reason set for a reject."""
    if raw.record is None:
        return "", None, raw.reason, raw.detail
    rid = ""
    try:
        rid = record_id(src, raw.record, raw.file, raw.line)
        values = fields(raw.record, src, cfg)
        group = group_key(raw.record, src, rid)
        dedup.admit(rid, f"{raw.file}:{raw.line}", list(values.values()))
    except Reject as r:
        return rid, None, r.reason, r.detail
    source = raw.record.get(src.source_field)
    row = {
        "id": rid,
        "source": source if isinstance(source, str) and source.strip() else src.path,
        "file": raw.file,
        "line": raw.line,
        "split": split_of(group, cfg),
        "group": group,
        "weight": src.weight,
        **values,
    }
    return rid, row, "", ""


def decontaminate(rows: dict[str, list[dict]], cfg: CorpusConfig, rejects, files: dict[str, Counter]) -> int:
    """Reject training records sharing a `decontam_ngram`-word sequence with any validation text.

    Validation text of every task counts: a translation validation sentence quoted in a
    pretraining document is contamination too. Returns the number of records rejected.
    """
    if cfg.decontam_ngram is None:
        return 0
    seen: dict[int, str] = {}
    for task, task_rows in rows.items():
        for r in task_rows:
            if r["split"] == "validation":
                for f in TASK_FIELDS[task]:
                    for g in ngrams(r[f], cfg.decontam_ngram):
                        seen.setdefault(g, r["id"])
    removed = 0
    for task, task_rows in rows.items():
        kept = []
        for r in task_rows:
            hit = (
                _first_hit(r, TASK_FIELDS[task], seen, cfg.decontam_ngram) if r["split"] == "train" else None
            )
            if hit is None:
                kept.append(r)
                continue
            removed += 1
            files[r["file"]].update({"kept": -1, "contaminated": 1})
            detail = f"shares a {cfg.decontam_ngram}-word sequence with validation record {hit!r}"
            raw = Raw(r["file"], r["line"], None, excerpt=r[TASK_FIELDS[task][0]][:200])
            rejects.write(reject_line(raw, task, r["id"], "contaminated", detail))
        rows[task] = kept
    return removed


def _first_hit(row: dict, names: tuple[str, ...], seen: dict[int, str], n: int) -> str | None:
    for f in names:
        for g in ngrams(row[f], n):
            if g in seen:
                return seen[g]
    return None


def stats(
    cfg: CorpusConfig, rows: dict[str, list[dict]], files: dict[str, Counter], contaminated: int
) -> dict:
    reasons: Counter = Counter()
    for counts in files.values():
        reasons.update({k: v for k, v in counts.items() if k not in ("in", "kept")})
    read = sum(c["in"] for c in files.values())
    kept = sum(c["kept"] for c in files.values())
    bad = sum(v for k, v in reasons.items() if k not in POLICY_REASONS)
    return {
        "files": {k: {n: v for n, v in c.items() if v} for k, c in files.items()},
        "reasons": dict(sorted(reasons.items())),
        "records": {
            t: dict(sorted(Counter(r["split"] for r in rs).items())) for t, rs in sorted(rows.items())
        },
        "read": read,
        "kept": kept,
        "rejected": read - kept,
        "bad_rate": round(bad / read, 6) if read else 0.0,
        "near_duplicates": reasons.get("near_duplicate", 0),
        "contaminated": contaminated,
        "mix": mix(cfg, rows),
    }


def mix(cfg: CorpusConfig, rows: dict[str, list[dict]]) -> dict:
    """Per task, each source's share of the weighted training records.

    >>> mix(cfg, rows)  # 300 records at weight 1.0 and 100 at weight 2.0
    {'pretrain': {'a.jsonl': 0.6, 'b.txt': 0.4}}
    """
    out = {}
    for task, task_rows in sorted(rows.items()):
        mass: Counter = Counter()
        paths = {s.path for s in cfg.sources if s.task == task}
        for r in task_rows:
            if r["split"] == "train":
                mass[_source_path(r["file"], paths)] += r["weight"]
        total = sum(mass.values()) or 1.0
        out[task] = {k: round(v / total, 4) for k, v in sorted(mass.items())}
    return out


def _source_path(file: str, paths: set[str]) -> str:
    return file if file in paths else next((p for p in paths if file.startswith(p.rstrip("/") + "/")), file)


def validate(cfg: CorpusConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    results = [accounting(out, stats), reject_rate(cfg, stats)]
    for task in sorted({s.task for s in cfg.sources}):
        path = out / f"{task}.parquet"
        df = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=table_schema(task).names)
        df = df[["id", "source", "file", "split", "group", *TASK_FIELDS[task]]]
        results.append(run_suite(f"corpus/{task}", df, corpus_suite(task, cfg.max_chars)))
        straddling = df.groupby("group")["split"].nunique()
        bad = [f"group={g!r} is in train and validation" for g in straddling[straddling > 1].index]
        results.append(
            require(f"corpus/{task}-groups", bad, len(straddling), "each group lives in one split")
        )
        if task == "preference":
            pairs = pd.DataFrame({"id": df["id"], "chosen_equals_rejected": df["chosen"] == df["rejected"]})
            results.append(run_suite("corpus/preference-pairs", pairs, preference_suite()))
    return results


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


def reject_rate(cfg: CorpusConfig, stats: dict) -> ContractResult:
    """Fail when too much of the input is bad data, naming the reasons and the worst file."""
    rate, name = stats["bad_rate"], "corpus/reject-rate"
    if stats["read"] == 0:
        raise ContractError(f"contract {name} failed: the sources hold no records")
    if rate > cfg.max_reject_rate:
        top = ", ".join(f"{k} {v}" for k, v in stats["reasons"].items() if k not in POLICY_REASONS)
        worst = max(stats["files"].items(), key=lambda kv: kv[1]["in"] - kv[1].get("kept", 0))[0]
        raise ContractError(
            f"contract {name} failed: {rate:.1%} of {stats['read']} records are bad "
            f"(max_reject_rate {cfg.max_reject_rate:.1%}): {top}; most rejects in {worst}; see {REJECTS}"
        )
    return ContractResult(
        name=name, success=True, checked=stats["read"], details=f"bad-record rate {rate:.2%}"
    )


def reject_line(raw: Raw, task: str, rid: str, reason: str, detail: str) -> str:
    record = {
        "file": raw.file,
        "line": raw.line,
        "id": rid,
        "task": task,
        "reason": reason,
        "detail": detail,
        "excerpt": raw.excerpt[:200],
    }
    return json.dumps(record, ensure_ascii=False) + "\n"


def lengths_png(cfg: CorpusConfig, rows: dict[str, list[dict]], path: Path) -> None:
    """One histogram of record length (characters, log counts) per configured source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths: dict[tuple[str, str], list[int]] = defaultdict(list)
    for task, task_rows in rows.items():
        paths = {s.path for s in cfg.sources if s.task == task}
        for r in task_rows:
            lengths[task, _source_path(r["file"], paths)].append(sum(len(r[f]) for f in TASK_FIELDS[task]))
    if not lengths:
        return
    fig, axes = plt.subplots(len(lengths), 1, figsize=(7, 1.6 * len(lengths)), squeeze=False)
    for ax, ((task, source), n) in zip(axes[:, 0], sorted(lengths.items()), strict=True):
        ax.hist(n, bins=40, log=True)
        ax.set_title(f"{task} / {source}: {len(n)} records, chars per record", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
