"""Corpus cleaning: map a raw record to clean task fields; the shingles and n-grams of dedup.

Each check says why it refuses a record by raising `Reject(reason, detail)` with a code from
`schemas.corpus.REASONS`; the corpus stage writes it to `rejects.jsonl` with file and line.

    >>> fields({"translation": {"en": "Hi\\u00a0there", "fr": "Salut"}}, src, cfg)
    {'source_text': 'Hi there', 'target_text': 'Salut'}
"""

import hashlib
import math
import re
import unicodedata

import xxhash

from schemas.corpus import TASK_FIELDS, CorpusConfig, Source

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[\u00a0\u202f\u2007]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_WORD = re.compile(r"\w+")
ROLES = ("system", "user", "assistant")


class Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def normalize(text: str) -> str:
    """NFC, LF line ends, no control characters, no trailing spaces.

    >>> normalize("Cafe\\u0301\\u00a0 ok  \\r\\n\\x07end ")
    'Café  ok\\nend'
    """
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _SPACES.sub(" ", _CONTROL.sub("", text))
    return "\n".join(line.rstrip() for line in text.split("\n")).strip()


def get_path(record: object, dotted: str) -> object:
    """A nested value; numeric parts index lists (None if absent).

    >>> get_path({"answers": {"text": ["1889", "in 1889"]}}, "answers.text.0")
    '1889'
    """
    node = record
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and re.fullmatch(r"-?\d+", part) and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def record_id(src: Source, record: dict, file_key: str, line: int) -> str:
    """The record's own id (`id_field`), or `<file_key>:<line>` when the source has none (the
    key is the file's content hash, so the id does not depend on where the file lies)."""
    if src.id_field is None:
        return f"{file_key}:{line}"
    rid = get_path(record, src.id_field)
    if isinstance(rid, bool) or not isinstance(rid, str | int) or str(rid).strip() == "":
        raise Reject("missing_id", f"no usable id in field {src.id_field!r} (got {_show(rid)})")
    if _SURROGATE.search(str(rid)):
        raise Reject("invalid_utf8", f"id field {src.id_field!r} is not valid UTF-8")
    return str(rid).strip()


def fields(record: dict, src: Source, cfg: CorpusConfig) -> dict[str, str]:
    """The task's canonical fields, mapped, type-checked, normalised and length-checked; a
    pretraining text may be longer than max_chars (`pieces` cuts it: long text is still text)."""
    values = {name: get_path(record, src.field_path(name)) for name in TASK_FIELDS[src.task]}
    if src.task == "preference" and any(isinstance(values[k], list) for k in ("chosen", "rejected")):
        values = chat_pair(values["prompt"], values["chosen"], values["rejected"])
    limit = None if src.task == "pretrain" else cfg.max_chars
    out = {name: clean_text(name, src.field_path(name), v, cfg, limit) for name, v in values.items()}
    if src.task == "preference" and out["chosen"] == out["rejected"]:
        raise Reject("chosen_equals_rejected", "chosen and rejected are the same text")
    return out


def group_key(record: dict, src: Source, rid: str) -> str:
    """The value that decides the split: `group_field` when the source names one, else the id."""
    if src.group_field is None:
        return rid
    value = get_path(record, src.group_field)
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise Reject("missing_field", f"group field {src.group_field!r} is {_show(value)}")
    return str(value)


def clean_text(name: str, path: str, value: object, cfg: CorpusConfig, limit: int | None) -> str:
    """The normalised text of a field; `limit` (max_chars, or None: no limit) bounds its length."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise Reject("missing_field", f"field {name!r}: {path!r} is {_show(value)}")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        raise Reject(
            "wrong_type", f"field {name!r}: {path!r} is a list; map '{path}.0' to take its first item"
        )
    if not isinstance(value, str):
        raise Reject("wrong_type", f"field {name!r}: {path!r} is {type(value).__name__}, expected text")
    if limit is not None and len(value) > 2 * limit + 1000:  # cheap early exit for 10 MB documents
        raise Reject("too_long", f"field {name!r} has {len(value)} chars (max_chars {limit})")
    if _SURROGATE.search(value):
        raise Reject("invalid_utf8", f"field {name!r} holds bytes that are not UTF-8 (or a lone surrogate)")
    text = normalize(value)
    if len(text) < cfg.min_chars:
        raise Reject(
            "empty_field",
            f"field {name!r} has {len(text)} chars after normalisation (min_chars {cfg.min_chars})",
        )
    if limit is not None and len(text) > limit:
        raise Reject("too_long", f"field {name!r} has {len(text)} chars (max_chars {limit})")
    return text


_SENTENCE_END = re.compile(r"[.!?\u3002][\"'\u201d\u2019)\]]*\s")


def pieces(text: str, limit: int) -> list[str]:
    """A document cut into pieces of at most `limit` characters: each cut at the last paragraph
    break of the second half of the window, else its last sentence end, else its last space,
    else at `limit`.

    >>> pieces("One. Two three.\n\nFour five six.", 16)
    ['One. Two three.', 'Four five six.']
    """
    out = []
    while len(text) > limit:
        cut = _cut(text[: limit + 1], limit // 2)
        out.append(text[:cut].strip())
        text = text[cut:].strip()
    return [p for p in [*out, text] if p]


def _cut(window: str, least: int) -> int:
    """Where to cut `window` (one character past the limit): after its last paragraph break,
    sentence end or space that leaves a piece of at least `least` characters."""
    for found in (
        window.rfind("\n\n", least, len(window) - 1) + 1,
        max((m.end() - 1 for m in _SENTENCE_END.finditer(window, least)), default=0),
        window.rfind(" ", least, len(window) - 1) + 1,
    ):
        if found > least:
            return found
    return len(window) - 1


def chat_pair(prompt: object, chosen: object, rejected: object) -> dict[str, object]:
    """Chat-message preference rows -> prompt and completion texts.

    The prompt is the given string, or else the user turns the two sides share; each side's
    completion is what follows the shared turns (assistant turns only):

    >>> u, a, b = ({"role": r, "content": c} for r, c in [("user", "Hi?"), ("assistant", "Hello!"), ("assistant", "No.")])
    >>> chat_pair(None, [u, a], [u, b])
    {'prompt': 'Hi?', 'chosen': 'Hello!', 'rejected': 'No.'}
    """
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise Reject("wrong_type", "chosen and rejected must both be text or both be chat message lists")
    for side in (chosen, rejected):
        _check_messages(side)
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    out: dict[str, object] = {}
    for name, side in (("chosen", chosen), ("rejected", rejected)):
        tail = side[shared:]
        if not tail or any(m["role"] != "assistant" for m in tail):
            raise Reject("bad_chat", f"{name}: expected assistant turns after the {shared} shared turns")
        out[name] = "\n\n".join(m["content"] for m in tail)
    if isinstance(prompt, list):
        _check_messages(prompt)
        prompt = "\n\n".join(m["content"] for m in prompt if m["role"] == "user") or None
    elif prompt is None:
        prompt = "\n\n".join(m["content"] for m in chosen[:shared] if m["role"] == "user") or None
    return {"prompt": prompt, **out}


def _check_messages(messages: list) -> None:
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)):
            raise Reject(
                "bad_chat", f"message {i} is {_show(m)}: expected {{'role': one of {ROLES}, 'content': text}}"
            )


def shingles(values: list[str], n: int) -> set[str]:
    """Lower-cased word n-grams of each value, tagged by value (a short value is one shingle).

    >>> sorted(shingles(["The cat sat down", "Yes"], 3))
    ['0:cat sat down', '0:the cat sat', '1:yes']
    """
    out = set()
    for i, value in enumerate(values):
        words = _WORD.findall(value.lower())
        out.update(f"{i}:{' '.join(words[j : j + n])}" for j in range(max(1, len(words) - n + 1)))
    return out


def ngrams(text: str, n: int) -> set[int]:
    """Hashes of the lower-cased word n-grams of a text (none when it has fewer than n words)."""
    words = _WORD.findall(text.lower())
    return {xxhash.xxh64_intdigest(" ".join(words[j : j + n]).encode()) for j in range(len(words) - n + 1)}


def split_of(key: str, cfg: CorpusConfig) -> str:
    """Deterministic split from the grouping key alone: adding records never moves others.

    >>> split_of("doc-17", cfg)  # the same answer in every run, whatever else is in the corpus
    'train'
    """
    h = int.from_bytes(hashlib.sha256(f"{cfg.split_salt}:{key}".encode()).digest()[:8], "big")
    return "validation" if h / 2**64 < cfg.validation_fraction else "train"


def _show(value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return repr(value)[:60]
