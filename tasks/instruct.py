"""Instruct format: which records become natural-language instructions, and how they read.

Training records take one format each, by a hash of their id: `fraction` of them the instruct
template with one of the training phrasings (also picked by hash), the rest the task-token
template. Validation records are written in all three formats, so the SFT stage can measure
each on its own:

    format    id (validation)  prompt
    task      tr-1             <bos> Hello <to-fr>
    instruct  tr-1@instruct    <bos> <prompt> Traduis en français :\\nHello <answer>
    heldout   tr-1@heldout     <bos> <prompt> Render this English text in French:\\nHello <answer>

In training each record appears once, under its corpus id.

`heldout` phrasings never appear in training: a model that only memorised the training strings
scores lower on them than on `instruct`.
"""

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from schemas.instruct import PLACEHOLDER, InstructConfig
from schemas.templates import INSTRUCT_TEMPLATES, SFT_TEMPLATES, Template

FORMATS = ("task", "instruct", "heldout")
METRIC_KEYS = {"task": "generation", "instruct": "generation_instruct", "heldout": "generation_heldout"}


def hash_unit(key: str) -> float:
    """A number in [0, 1) fixed by `key`: `hash_unit("a") == hash_unit("a")`."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8


def render(phrase: str, row: dict) -> str:
    """Fill the phrase's placeholders in one pass (field text is never rescanned for braces).

    >>> render("Traduis :\\n{source_text}", {"source_text": "a {b}"})
    'Traduis :\\na {b}'
    """
    return PLACEHOLDER.sub(lambda m: row[m.group(1)], phrase)


def pick(phrasings: list[str], record_id: str) -> str:
    return phrasings[int(hash_unit(f"phrase:{record_id}") * len(phrasings))]


def formats(rows: list[dict], task: str, split: str, cfg: InstructConfig) -> list[tuple[str, dict]]:
    """(format, record to encode with that format's template), in record order (see the module
    docstring), so the shards do not depend on how the records were cut into chunks."""
    train_phr, heldout_phr = cfg.instructions.get(task), cfg.heldout.get(task)
    out: list[tuple[str, dict]] = []

    def instruct(row: dict, phrasings: list[str], suffix: str = "") -> dict:
        return {**row, "id": row["id"] + suffix, "prompt": render(pick(phrasings, row["id"]), row)}

    for row in rows:
        if split == "train":  # one format per record: ids stay the corpus ids
            if train_phr and hash_unit(f"format:{row['id']}") < cfg.fraction:
                out.append(("instruct", instruct(row, train_phr)))
            else:
                out.append(("task", row))
            continue
        out.append(("task", row))
        if train_phr:
            out.append(("instruct", instruct(row, train_phr, "@instruct")))
        if heldout_phr:
            out.append(("heldout", instruct(row, heldout_phr, "@heldout")))
    return out


def template(task: str, fmt: str) -> Template:
    return SFT_TEMPLATES[task] if fmt == "task" else INSTRUCT_TEMPLATES[task]


def of_format(table: pa.Table, fmt: str) -> pa.Table:
    """Rows of one format (shards written before formats existed hold only `task`)."""
    if "format" not in table.column_names:
        return table if fmt == "task" else table.slice(0, 0)
    return table.filter(pc.equal(table["format"], fmt))


def generation_by_format(
    model, tokenizer_dir: Path, val: pa.Table, per_task: int, max_new: int, device
) -> dict:
    """Generation metrics per format present: {"generation": ..., "generation_heldout": ...}."""
    from tasks import evaluation  # torch: not needed by the shards stage, which imports this module

    out = {}
    for fmt in FORMATS:
        rows = of_format(val, fmt)
        if rows.num_rows:
            out[METRIC_KEYS[fmt]] = evaluation.generation_metrics(
                model, tokenizer_dir, rows, per_task, max_new, device
            )
    return out
