"""Labelled examples for the encoder heads, built from the corpus's own records, and their encoding.

Three head kinds read the same encoder: `sequence` (a label from the first token), `token` (a
label per word, CoNLL-style `tokens` + `tags`), `span` (answer start and end in a context).
The embedded default derives one real task per kind from its corpus (docs/encoders.md):

    domain   sequence  English UI string or verse -> which catalogue/Bible it comes from
    pair     sequence  (English, French) -> "translation" or "mismatch" (the French of another
                       record)
    tagging  token     a code-switched sentence (English words then French words, or the
                       reverse, cut from one translation pair) -> "en"/"fr" per word
    qa       span      (question, context) -> the answer's token span in the context

Layouts (control tokens by id, text never parsed for them); labels are -100 where not scored:

    sequence  <bos> text <eos>            or   <bos> text <sep> text_pair <eos>   labels [class]
    token     <bos> w1 w2a w2b <eos>      labels  -100 tag1 tag2 -100 -100  (first sub-token only)
    span      <bos> question <sep> context <eos>                            labels [start, end]
"""

import hashlib

import pyarrow as pa
from tokenizers import Tokenizer

from schemas.corpus import Source
from schemas.heads import HEAD_FIELDS, HeadData
from schemas.shards import IGNORE_INDEX
from schemas.tokens import BOS, EOS, SEP, token_id

CORPUS_TASK = {"domain": "translation", "pair": "translation", "tagging": "translation", "qa": "qa"}
PAIR_LABELS = ["mismatch", "translation"]
TAG_LABELS = ["en", "fr"]
SPAN_LABELS = ["start", "end"]

EXAMPLE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        # sequence: [class]; token: one per input id (-100 unscored); span: [start, end]
        pa.field("labels", pa.list_(pa.int32()), nullable=False),
        pa.field("context_start", pa.int32(), nullable=False),  # span: first context token
    ]
)


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def sample(records: list[dict], limit: int) -> list[dict]:
    """The first `limit` records in hashed-id order: a fixed, uniform sample."""
    return sorted(records, key=lambda r: _hash(r["id"]))[:limit]


def domain_records(rows: list[dict]) -> list[dict]:
    """`{"text": "Save", "label": "po/django-5.2.19"}`: the English side, labelled by its source."""
    return [{"id": r["id"], "text": r["source_text"], "label": r["source"]} for r in rows]


def pair_records(rows: list[dict]) -> list[dict]:
    """Half the records keep their French (label "translation"); the other half get the French
    of the next record in hashed-id order, from any source ("mismatch"). About a fifth of those
    come from the same source anyway. Negatives only from the same source left the default
    encoder (2 layers, 100 masked-LM steps) at the majority class after 100 steps, and at about
    0.58 accuracy (majority 0.53) after 600 in exploration; any source gives it the cues a reader
    also uses first (length, register, shared names): 0.675 in the default run (docs/encoders.md)."""
    ordered = sorted(rows, key=lambda r: _hash(r["id"]))
    out = []
    for i, r in enumerate(ordered):
        other = ordered[(i + 1) % len(ordered)]
        matched = _hash("pair:" + r["id"]) % 2 == 0 or other["target_text"] == r["target_text"]
        french = r["target_text"] if matched else other["target_text"]
        out.append(
            {"id": r["id"], "text": r["source_text"], "text_pair": french, "label": PAIR_LABELS[matched]}
        )
    return sorted(out, key=lambda r: r["id"])


def tagging_records(rows: list[dict]) -> list[dict]:
    """Code-switched sentences from pairs of at least 4 words a side: the first part of one
    language, then the rest of the other (which comes first and where it switches are drawn
    from the id's hash). `{"tokens": ["God", "saw", "sépara", "la", ...], "tags": ["en", "en", "fr", ...]}`"""
    out = []
    for r in rows:
        en, fr = r["source_text"].split(), r["target_text"].split()
        if len(en) < 4 or len(fr) < 4:
            continue
        h = _hash("tag:" + r["id"])
        first, second = (en, fr) if h % 2 else (fr, en)
        a = 1 + (h >> 1) % (len(first) - 1)
        b = 1 + (h >> 9) % (len(second) - 1)
        tags = ["en", "fr"] if first is en else ["fr", "en"]
        out.append(
            {
                "id": r["id"],
                "tokens": first[:a] + second[b:],
                "tags": [tags[0]] * a + [tags[1]] * (len(second) - b),
            }
        )
    return out


def qa_records(rows: list[dict]) -> list[dict]:
    """SQuAD-style: the answer's first occurrence in the context gives its character start."""
    return [
        {
            **{k: r[k] for k in ("id", "question", "context", "answer")},
            "answer_start": r["context"].find(r["answer"]),
        }
        for r in rows
    ]


def user_records(data: HeadData, split: str) -> tuple[list[dict], list[dict]]:
    """(records, rejects) of a user's `train` or `validation` file: records carry the head's
    canonical fields (HEAD_FIELDS) plus id, file and line; a reject says which file, line and
    why (unreadable line, missing or mistyped field, tags not one per token, answer not at
    answer_start). Labels are checked against the head's label names in `encode`."""
    from tasks.corpus_clean import Reject, get_path, record_id
    from tasks.corpus_read import read_source

    path = getattr(data, split)
    src = Source(task="pretrain", path=path, format=data.format, id_field=data.id_field)
    records, rejects = [], []
    for raw in read_source(src):
        where = {"file": raw.file, "line": raw.line}
        if raw.record is None:
            rejects.append({"id": None, **where, "reason": f"{raw.reason}: {raw.detail}"})
            continue
        try:
            rid = record_id(src, raw.record, raw.file, raw.line)
        except Reject as e:
            rejects.append({"id": None, **where, "reason": e.detail})
            continue
        values = {f: get_path(raw.record, data.field_path(f)) for f in HEAD_FIELDS[data.kind]}
        why = USER_CHECKS[data.kind](values, data)
        if why:
            rejects.append({"id": rid, **where, "reason": why})
        else:
            records.append({"id": rid, **where, **values})
    return records, rejects


def check_reject_rate(data: HeadData, split: str, kept: int, rejected: list[dict]) -> None:
    """Fail, naming the file and its first bad lines, when too many of its records are bad."""
    total = kept + len(rejected)
    if total and len(rejected) / total > data.max_reject_rate:
        first = "; ".join(f"line {r['line']}: {r['reason']}" for r in rejected[:3])
        raise ValueError(
            f"head {data.name!r}: {len(rejected)} of {total} records of {getattr(data, split)} are bad "
            f"({len(rejected) / total:.1%} > max_reject_rate {data.max_reject_rate:.1%}): {first}"
        )


def _texts(values: dict, data: HeadData, names: tuple[str, ...]) -> str:
    """Why the named fields are not non-empty text, or ''."""
    for name in names:
        if not isinstance(values[name], str) or not values[name].strip():
            return (
                f"field {name!r} (path {data.field_path(name)!r}) is not non-empty text: {values[name]!r:.60}"
            )
    return ""


def _label(value: object, data: HeadData) -> str | None:
    """A label as its name: text as is; an integer indexes `data.labels` (in a CSV cell, digits
    that are not themselves a label name)."""
    if isinstance(value, str) and value.isdigit() and data.labels and value not in data.labels:
        value = int(value)
    if isinstance(value, str):
        return value
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and data.labels
        and 0 <= value < len(data.labels)
    ):
        return data.labels[value]
    return None


def _check_sequence(values: dict, data: HeadData) -> str:
    pair = ("text_pair",) if values["text_pair"] is not None or "text_pair" in data.fields else ()
    why = _texts(values, data, ("text", *pair))
    name = _label(values["label"], data)
    if not why and name is None:
        why = f"unknown label {values['label']!r}: not a name, nor an index into `labels`"
    values["label"] = name
    return why


def _check_token(values: dict, data: HeadData) -> str:
    tokens, tags = values["tokens"], values["tags"]
    # CSV cells hold lists as whitespace-separated text
    tokens = tokens.split() if isinstance(tokens, str) else tokens
    tags = tags.split() if isinstance(tags, str) else tags
    if (
        not isinstance(tokens, list)
        or not tokens
        or not all(isinstance(t, str) and t.strip() for t in tokens)
    ):
        return f"field 'tokens' (path {data.field_path('tokens')!r}) is not a non-empty list of words"
    if not isinstance(tags, list):
        return f"field 'tags' (path {data.field_path('tags')!r}) is not a list"
    if len(tags) != len(tokens):
        return f"{len(tags)} tags for {len(tokens)} tokens"
    names = [_label(t, data) for t in tags]
    if None in names:
        return f"unknown tag {tags[names.index(None)]!r}: not a name, nor an index into `labels`"
    values["tokens"], values["tags"] = tokens, names
    return ""


def _check_span(values: dict, data: HeadData) -> str:
    why = _texts(values, data, ("context", "question", "answer"))
    if why:
        return why
    start, answer, context = values["answer_start"], values["answer"], values["context"]
    if isinstance(start, str) and start.strip().isdigit():  # CSV cells are text
        start = values["answer_start"] = int(start)
    if not isinstance(start, int) or isinstance(start, bool):
        return f"field 'answer_start' (path {data.field_path('answer_start')!r}) is not an integer: {start!r}"
    if context[start : start + len(answer)] != answer:
        return (
            f"answer {answer!r:.60} is not a span of the context at answer_start {start} "
            f"(the context has {context[max(start, 0) : max(start, 0) + len(answer)]!r:.60} there)"
        )
    return ""


USER_CHECKS = {"sequence": _check_sequence, "token": _check_token, "span": _check_span}


RECORDS = {"domain": domain_records, "pair": pair_records, "tagging": tagging_records, "qa": qa_records}


def _ids(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False).ids


def encode_sequence(tok: Tokenizer, text: str, text_pair: str | None = None) -> list[int]:
    """`<bos> text <eos>`, or `<bos> text <sep> text_pair <eos>` for a pair."""
    ids = [token_id(BOS), *_ids(tok, text)]
    if text_pair is not None:
        ids += [token_id(SEP), *_ids(tok, text_pair)]
    return ids + [token_id(EOS)]


def encode_words(tok: Tokenizer, words: list[str]) -> tuple[list[int], list[int]]:
    """(`<bos> sub-tokens <eos>`, index of each word's first sub-token). Words after the first
    are encoded with their leading space, as they would be inside the sentence."""
    ids, firsts = [token_id(BOS)], []
    for i, word in enumerate(words):
        firsts.append(len(ids))
        ids += _ids(tok, word if i == 0 else " " + word)
    return ids + [token_id(EOS)], firsts


def encode_question(
    tok: Tokenizer, question: str, context: str
) -> tuple[list[int], int, list[tuple[int, int]]]:
    """(`<bos> question <sep> context <eos>`, first context position, char offsets of context tokens)."""
    enc = tok.encode(context, add_special_tokens=False)
    head = [token_id(BOS), *_ids(tok, question), token_id(SEP)]
    return head + enc.ids + [token_id(EOS)], len(head), enc.offsets


def char_span_to_tokens(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """Token indices (inclusive) covering characters [start, end) of the context, or None.

    >>> char_span_to_tokens([(0, 3), (3, 7), (7, 12)], 3, 9)
    (1, 2)
    """
    first = next((i for i, (_, e) in enumerate(offsets) if e > start), None)
    last = next((i for i in range(len(offsets) - 1, -1, -1) if offsets[i][0] < end), None)
    if first is None or last is None or last < first:
        return None
    return first, last


def encode(kind: str, tok: Tokenizer, record: dict, labels: list[str]) -> tuple[dict | None, str]:
    """One record of a head of this kind as an example row, or (None, why it cannot be one)."""
    if kind == "sequence":
        if record["label"] not in labels:
            return None, f"unknown label {record['label']!r}: not one of {labels}"
        ids = encode_sequence(tok, record["text"], record.get("text_pair"))
        return {
            "id": record["id"],
            "input_ids": ids,
            "labels": [labels.index(record["label"])],
            "context_start": 0,
        }, ""
    if kind == "token":
        ids, firsts = encode_words(tok, record["tokens"])
        tagged = [IGNORE_INDEX] * len(ids)
        for pos, tag in zip(firsts, record["tags"], strict=True):
            if tag not in labels:
                return None, f"unknown tag {tag!r}: not one of {labels}"
            tagged[pos] = labels.index(tag)
        return {"id": record["id"], "input_ids": ids, "labels": tagged, "context_start": 0}, ""
    if record["answer_start"] < 0:
        return None, "the answer is not a span of the context"
    ids, ctx, offsets = encode_question(tok, record["question"], record["context"])
    span = char_span_to_tokens(
        offsets, record["answer_start"], record["answer_start"] + len(record["answer"])
    )
    if span is None:
        return None, "the answer covers no context token"
    return {
        "id": record["id"],
        "input_ids": ids,
        "labels": [ctx + span[0], ctx + span[1]],
        "context_start": ctx,
    }, ""


def label_names(head: str, train_records: list[dict], data: HeadData | None = None) -> list[str]:
    """Class names in id order: a fixed list (built-in pair, tagging, any span head), the
    user's `labels`, else the sorted labels (or tags) of the training records."""
    fixed = {"pair": PAIR_LABELS, "tagging": TAG_LABELS, "qa": SPAN_LABELS}
    if head in fixed or (data and data.kind == "span"):
        return fixed.get(head, SPAN_LABELS)
    if data and data.labels:
        return list(data.labels)
    if data and data.kind == "token":
        return sorted({t for r in train_records for t in r["tags"]})
    return sorted({r["label"] for r in train_records})
