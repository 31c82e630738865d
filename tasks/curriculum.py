"""Curriculum: order training examples easy -> hard by a per-record difficulty.

Difficulty of a record, by `curriculum.by`:
  length  its token count (short first)
  rarity  the mean surprisal of its tokens, -log p(token) under the unigram counts of the
          training split (common words first)
  column  a numeric column of the corpus table (e.g. a quality or reading-level score)

A packed pretraining row gets the token-weighted mean difficulty of its documents. The shards
stage stores the training split in that order (stable: ties keep corpus order) and records
the difficulty range in the manifest; reading the rows in stored order gives them back in it.

>>> order([3.0, 1.0, 2.0, 1.0])
[1, 3, 2, 0]
"""

import math

import numpy as np

from schemas.shards import Curriculum


def record_scores(cfg: Curriculum, token_lists: list[list[int]], examples: list[dict]) -> list[float]:
    """Difficulty of each record; for `by: column` each example carries its "score"."""
    if cfg.by == "length":
        return [float(len(t)) for t in token_lists]
    if cfg.by == "rarity":
        return rarity(token_lists)
    return [ex["score"] for ex in examples]


def row_scores(rows: list[dict], doc_scores: list[float]) -> list[float]:
    """Token-weighted mean difficulty of the documents packed in each row (`_docs`, `doc_lens`)."""
    out = []
    for row in rows:
        lens = row["doc_lens"][: len(row["_docs"])]  # the padding segment has no document
        out.append(sum(doc_scores[d] * n for d, n in zip(row["_docs"], lens, strict=True)) / sum(lens))
    return out


def column_value(record: dict, column: str) -> float:
    value = record.get(column)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ValueError(
            f"curriculum column {column!r}: record {record.get('id')} (file {record.get('file')}, line "
            f"{record.get('line')}) has {value!r}, not a number"
        )
    return float(value)


def rarity(token_lists: list[list[int]]) -> list[float]:
    """Mean -log p(token) per list under add-one-smoothed unigram counts of all the lists."""
    flat = np.fromiter((t for ids in token_lists for t in ids), dtype=np.int64)
    counts = np.bincount(flat) + 1.0 if flat.size else np.ones(1)
    surprisal = -np.log(counts / counts.sum())
    return [float(surprisal[ids].mean()) if ids else 0.0 for ids in token_lists]


def order(scores: list[float]) -> list[int]:
    """Indices from easiest to hardest; equal scores keep their order."""
    return sorted(range(len(scores)), key=scores.__getitem__)


def summary(ordered_scores: list[float]) -> dict:
    """What the manifest records about one split's order: the difficulty at its quartiles."""
    if not ordered_scores:
        return {"rows": 0}
    q = np.quantile(ordered_scores, [0, 0.25, 0.5, 0.75, 1])
    return {"rows": len(ordered_scores), "difficulty_quartiles": [round(float(x), 4) for x in q]}
