"""Corpus stage: raw JSONL sources -> clean, deduplicated, split Parquet tables + rejects.

Every input line ends up in exactly one place: a row of `<task>.parquet`, or a line of
`rejects.jsonl` with the file, line, id and reason. Example reject:

    {"file": "data/raw/qa.jsonl", "line": 17, "id": "qa-42", "reason": "empty field 'answer'",
     "excerpt": "{\"id\": \"qa-42\", \"context\": ..."}
"""

import gzip
import hashlib
import json
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.contracts import corpus_suite, preference_suite
from schemas.corpus import TASK_FIELDS, CorpusConfig, Source, table_schema
from schemas.manifest import ContractResult
from tasks.contracts import require, run_suite
from tasks.plan import raw_path

REJECTS = "rejects.jsonl"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[\u00a0\u202f\u2007]")


def normalize(text: str) -> str:
    """NFC, LF line ends, no control characters, no trailing spaces.

    >>> normalize("Cafe\\u0301\\u00a0 ok  \\r\\n\\x07end ")
    'Café  ok\\nend'
    """
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _SPACES.sub(" ", _CONTROL.sub("", text))
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def read_lines(path: Path) -> Iterator[tuple[int, str | None, str]]:
    """(line number, decoded text or None, error) for every non-blank line of a JSONL file."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield number, raw.decode("utf-8"), ""
            except UnicodeDecodeError as e:
                yield number, None, f"invalid UTF-8 at byte {e.start}"


def get_path(record: dict, dotted: str) -> object:
    """`get_path({"translation": {"en": "hi"}}, "translation.en") == "hi"` (None if absent)."""
    node: object = record
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def parse_record(src: Source, line: str, cfg: CorpusConfig) -> tuple[dict | None, str, str]:
    """(fields, id, reject reason): fields is None when the record is rejected."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        return None, "", f"invalid JSON: {e.msg} at column {e.colno}"
    if not isinstance(record, dict):
        return None, "", f"expected a JSON object, got {type(record).__name__}"
    rid = record.get(src.id_field)
    if not isinstance(rid, str | int) or isinstance(rid, bool) or str(rid).strip() == "":
        return None, "", f"missing or invalid id field {src.id_field!r}"
    rid = str(rid)
    fields = {}
    for name in TASK_FIELDS[src.task]:
        value = get_path(record, src.field_path(name))
        if not isinstance(value, str):
            if value is None:
                return None, rid, f"missing field {name!r}: no {src.field_path(name)!r} in the record"
            return None, rid, f"wrong type: field {name!r} is {type(value).__name__}, expected a string"
        value = normalize(value)
        if len(value) < cfg.min_chars:
            return None, rid, f"empty field {name!r}"
        if len(value) > cfg.max_chars:
            return None, rid, f"too long: field {name!r} has {len(value)} chars (max_chars {cfg.max_chars})"
        fields[name] = value
    if src.task == "preference" and fields["chosen"] == fields["rejected"]:
        return None, rid, "chosen equals rejected"
    source = record.get(src.source_field)
    fields["source"] = source if isinstance(source, str) and source else src.path
    return fields, rid, ""


def split_of(record_id: str, cfg: CorpusConfig) -> str:
    """Deterministic split from the id alone: adding records never moves existing ones."""
    h = int.from_bytes(hashlib.sha256(f"{cfg.split_salt}:{record_id}".encode()).digest()[:8], "big")
    return "validation" if h / 2**64 < cfg.validation_fraction else "train"


def build(cfg: CorpusConfig, inputs: dict[str, Path], out: Path) -> dict:
    rows: dict[str, list[dict]] = defaultdict(list)
    seen_ids: dict[str, dict[str, str]] = defaultdict(dict)
    seen_content: dict[str, dict[str, str]] = defaultdict(dict)
    per_file: dict[str, Counter] = {}
    with open(out / REJECTS, "w", encoding="utf-8") as rejects:
        for src in cfg.sources:
            counts = per_file.setdefault(src.path, Counter())
            for number, line, error in read_lines(raw_path(src.path)):
                counts["in"] += 1
                fields, rid = None, ""
                if line is not None:
                    fields, rid, error = parse_record(src, line, cfg)
                if fields is not None:
                    key = _content_key(src.task, fields)
                    if rid in seen_ids[src.task]:
                        error = f"duplicate id: first seen at {seen_ids[src.task][rid]}"
                    elif key in seen_content[src.task]:
                        error = f"exact duplicate: same content as id {seen_content[src.task][key]}"
                if error:
                    counts[error.split(":")[0]] += 1
                    rejects.write(_reject_line(src.path, number, rid, error, line))
                    continue
                seen_ids[src.task][rid] = f"{src.path}:{number}"
                seen_content[src.task][key] = rid
                counts["kept"] += 1
                rows[src.task].append(
                    {"id": rid, "file": src.path, "line": number, "split": split_of(rid, cfg), **fields}
                )
    for task, task_rows in rows.items():
        table = pa.Table.from_pylist(task_rows, schema=table_schema(task))
        pq.write_table(table, out / f"{task}.parquet")
    splits = {t: dict(Counter(r["split"] for r in rs)) for t, rs in rows.items()}
    return {"files": {k: dict(v) for k, v in per_file.items()}, "records": splits}


def validate(cfg: CorpusConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    results = []
    n_in = sum(c["in"] for c in stats["files"].values())
    n_kept = sum(c.get("kept", 0) for c in stats["files"].values())
    n_rejected = sum(1 for _ in open(out / REJECTS, encoding="utf-8"))
    lost = [] if n_in == n_kept + n_rejected else [f"{n_in} read, {n_kept} kept, {n_rejected} rejected"]
    results.append(require("corpus/accounting", lost, n_in, "every input record is kept or rejected"))
    for task in sorted({s.task for s in cfg.sources}):
        path = out / f"{task}.parquet"
        df = pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=table_schema(task).names)
        df = df[["id", "split", *TASK_FIELDS[task]]]
        results.append(run_suite(f"corpus/{task}", df, corpus_suite(task, cfg.max_chars)))
        if task == "preference":
            pairs = pd.DataFrame({"id": df["id"], "chosen_equals_rejected": df["chosen"] == df["rejected"]})
            results.append(run_suite("corpus/preference-pairs", pairs, preference_suite()))
    return results


def _content_key(task: str, fields: dict) -> str:
    text = "\x1f".join(fields[f] for f in TASK_FIELDS[task])
    return hashlib.sha256(text.encode()).hexdigest()


def _reject_line(file: str, line: int, rid: str, reason: str, text: str | None) -> str:
    excerpt = (text or "")[:200]
    return (
        json.dumps(
            {"file": file, "line": line, "id": rid, "reason": reason, "excerpt": excerpt}, ensure_ascii=False
        )
        + "\n"
    )
