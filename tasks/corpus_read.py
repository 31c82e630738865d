"""Corpus readers: every source format -> one stream of `Raw` records, errors included.

A reader never raises on bad data: a line that does not decode or parse comes out as a `Raw`
with a reason code, so the corpus stage can reject it with its file and line. Only a source
that cannot be reached at all (a hub dataset while offline) raises `SourceError`.

    >>> next(read_source(Source(task="qa", path="qa.jsonl")))
    Raw(file='qa.jsonl', line=1, record={'id': 'q1', ...}, reason='', detail='')
"""

import codecs
import csv
import functools
import gzip
import hashlib
import io
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from schemas.corpus import SUFFIXES, Source, suffix_format
from tasks.artifacts import source_hash
from tasks.plan import raw_files, raw_path

BATCH = 1024
# Bounds on what one source may make this process hold or read, whatever its compression: a
# 1 MB .jsonl.gz can expand to a 1 GiB line. Both are far above any useful record (max_chars is
# 100k by default) and read in bounded pieces; what exceeds them is rejected as `too_long`.
LINE_BYTES = 32 << 20  # per line (JSONL, CSV, text), text document, or row (Parquet, Arrow)
FILE_BYTES = 64 << 30  # per file, after decompression
# Per column of a Parquet row group, decompressed. A page holds whole cells, so a 1 GiB cell
# is a 1 GiB page that no batch size avoids decompressing: a column chunk past this bound may
# hold one, and its rows are rejected unread (a 33 kB zstd Parquet file can hold a 1 GiB cell).
COLUMN_BYTES = 256 << 20


class SourceError(RuntimeError):
    """A whole source cannot be read (not found, offline hub, unknown format)."""


@dataclass
class Raw:
    file: str  # the file as the user names it: the source path, plus the file inside a folder
    line: int  # 1-based line (JSONL, CSV, text paragraph start) or row (Parquet, datasets)
    record: dict | None  # None when the record could not be read
    reason: str = ""  # a code of schemas.corpus.REASONS when record is None
    detail: str = ""
    excerpt: str = ""


def read_source(src: Source) -> Iterator[Raw]:
    """All records of a source, in a fixed order (folders: files sorted by relative path)."""
    for part in parts(src):
        yield from read_part(src, part)


def parts(src: Source, chunk_bytes: int | None = None) -> list[dict]:
    """The source cut into pieces that can be read apart, in input order: one per file, and
    uncompressed JSONL files in line ranges and Parquet files in runs of row groups of about
    `chunk_bytes` (None: whole files).

    A piece is a plain dict (it travels to other processes): the file's path and label, the
    columns every file of a folder must have (those of its first file with a header row), and
    for JSONL the byte range with the number of its first line, for Parquet the row groups
    with the number of their first row and their row count."""
    fmt = resolve_format(src)
    if fmt == "hub":
        return [{"format": fmt, "path": None, "label": src.path, "columns": None}]
    files = source_files(src)
    columns = _first_columns(fmt, files)
    out = []
    for path, label in files:
        # The plan's hash of the file (remembered while the file is unchanged). "key": what
        # generated ids are made of (`<key>:<line>`, `<key>#<line>`): the file's content,
        # never its path, so a copied or moved file gives the same records and split.
        sha = source_hash(path)
        part = {"format": fmt, "path": str(path), "label": label, "columns": columns, "key": sha[:16]}
        if fmt == "jsonl" and chunk_bytes and not path.name.endswith(".gz"):
            # "sha256": what the bytes read must hash to (`Hashed`): each range's, from one read
            # whose whole-file hash must be the plan's
            ranges, sums, whole = line_ranges(path, chunk_bytes)
            if whole != sha:
                raise SourceChanged(
                    f"corpus source file {label} changed while it was listed (sha256 {sha[:12]}, then "
                    f"{whole[:12]}); rerun once it stops changing"
                )
            out += [
                {**part, "start": a, "stop": b, "line": n, "sha256": h}
                for (a, b, n), h in zip(ranges, sums, strict=True)
            ]
        elif fmt in STREAMED:
            out.append({**part, "sha256": sha})
        elif fmt == "parquet" and chunk_bytes:
            out += [{**part, **piece} for piece in row_group_ranges(path, chunk_bytes)]
        else:
            out.append(part)
    return out


def read_part(src: Source, part: dict) -> Iterator[Raw]:
    """The records of one piece of `parts(src)`; a file whose header differs from the
    source's first file is rejected record by record (`schema_mismatch`).

    JSONL, CSV/TSV and text are hashed as they are read: bytes that differ from those the
    piece was listed with (a file appended to or rewritten meanwhile) raise `SourceChanged`
    after its last record, so no record of other bytes than the fingerprinted ones is kept."""
    fmt, label = part["format"], part["label"]
    if fmt == "hub":
        yield from _read_dataset(_load_hub(src), src.path)
        return
    path = Path(part["path"])
    if fmt in STREAMED:
        f = Hashed(path, part.get("start", 0), part.get("stop"))
        yield from _read_streamed(src, part, f)
        read = f.digest()
        if read != part["sha256"]:
            where = f"bytes {part['start']}-{part['stop'] or 'end'}" if "start" in part else "the file"
            raise SourceChanged(
                f"corpus source file {label} changed while the corpus stage read it: {where} hashed "
                f"{part['sha256'][:12]} when listed and {read[:12]} when read; nothing is published: "
                "rerun once it stops changing"
            )
        return
    if fmt == "disk":
        yield from _read_disk(path, label, src.split)
        return
    reader = read_parquet
    if "groups" in part:
        reader = functools.partial(read_parquet, groups=part["groups"], row=part["line"] - 1)
    yield from _checked_header(reader(path, label), part["columns"])


def _read_streamed(src: Source, part: dict, f: "Hashed") -> Iterator[Raw]:
    fmt, label = part["format"], part["label"]
    if fmt == "text":
        yield from read_text(f, label, src.text_unit, part["key"])
    elif fmt == "jsonl":
        yield from read_jsonl(f, label, part.get("start", 0), part.get("stop"), part.get("line", 1))
    else:
        yield from _checked_header(read_csv(f, label), part["columns"])


def _checked_header(raws: Iterator[Raw], columns: list | None) -> Iterator[Raw]:
    """The records after a CSV/Parquet file's header row; all rejected when its columns differ
    from the source's first file's."""
    for raw in raws:
        if _is_header(raw):
            mismatch = _column_mismatch((columns[0], set(columns[1])), set(raw.record))
            if mismatch:
                yield from _reject_file(raws, "schema_mismatch", mismatch)
                break
            continue
        yield raw


def _first_columns(fmt: str, files: list[tuple[Path, str]]) -> list | None:
    """[label, column names] of the first file of a CSV/TSV/Parquet source with a header row."""
    reader = {"parquet": read_parquet, "csv": read_csv, "tsv": read_csv}.get(fmt)
    for path, label in files if reader else []:
        first = next(iter(reader(path, label)), None)
        if first is not None and _is_header(first):
            return [label, sorted(first.record)]
    return None


def _is_header(raw: Raw) -> bool:
    return raw.line == 0 and raw.reason == "" and raw.record is not None


def line_ranges(path: Path, chunk_bytes: int) -> tuple[list[tuple[int, int | None, int]], list[str], str]:
    """(start byte, stop byte, first line number) of pieces of about `chunk_bytes`, each cut
    after a newline, the last one running to the end (stop None); the sha256
    of each piece's bytes; and the whole file's sha256. Reads the file once.

    >>> line_ranges(Path("t.jsonl"), 1 << 20)  # a 1.5 MiB file
    ([(0, 1048601, 1), (1048601, None, 9310)], ['5d1c...', '0b7e...'], 'a3f0...')
    """
    size = path.stat().st_size
    out, sums, whole, start, line = [], [], hashlib.sha256(), 0, 1
    with open(path, "rb") as f:
        while True:
            stop = None
            if start + chunk_bytes < size:
                f.seek(start + chunk_bytes)
                f.readline()  # on to the end of the line the cut falls in
                stop = f.tell() if f.tell() < size else None
            f.seek(start)
            piece, lines = hashlib.sha256(), 0
            for block in _blocks(f, (size if stop is None else stop) - start):
                piece.update(block)
                whole.update(block)
                lines += block.count(b"\n")
            out.append((start, stop, line))
            sums.append(piece.hexdigest())
            if stop is None:
                return out, sums, whole.hexdigest()
            start, line = stop, line + lines


def row_group_ranges(path: Path, chunk_bytes: int) -> list[dict]:
    """Runs of row groups of about `chunk_bytes` (uncompressed) of a Parquet file: their
    "groups" [first, end), first "line" (row) and "rows". One piece, the whole file, when it
    has a single row group or its footer cannot be read (its reader then rejects it)."""
    from tasks.memory import parquet

    try:
        meta = parquet(path).metadata
    except Exception:
        return [{}]
    if meta.num_row_groups < 2:
        return [{}]
    out, first, size, line = [], 0, 0, 1
    for g in range(meta.num_row_groups):
        size += meta.row_group(g).total_byte_size
        if size >= chunk_bytes or g == meta.num_row_groups - 1:
            rows = sum(meta.row_group(i).num_rows for i in range(first, g + 1))
            out.append({"groups": [first, g + 1], "line": line, "rows": rows})
            first, size, line = g + 1, 0, line + rows
    return out


def _blocks(f, n: int) -> Iterator[bytes]:
    while n > 0:
        block = f.read(min(n, 1 << 20))
        if not block:  # the file is shorter now: its hash tells
            return
        n -= len(block)
        yield block


class SourceChanged(SourceError):
    """A source file whose bytes changed between listing and reading (`Hashed`)."""


STREAMED = ("jsonl", "csv", "tsv", "text")  # formats read front to back, hashed as they are read


class Hashed:
    """Bytes `start` to `stop` (None: the end) of a file, read forward through sha256: a reader
    gets them (gzip decompresses them), `digest()` reads on to `stop` first, so the hash covers
    exactly that range, whatever the reader skipped or left unread.

    >>> f = Hashed(Path("qa.jsonl")); f.readline(); f.digest() == sha256_file(Path("qa.jsonl"))
    True
    """

    def __init__(self, path: Path, start: int = 0, stop: int | None = None):
        self.name, self.at, self.stop, self.sha = path.name, start, stop, hashlib.sha256()
        self.f = open(path, "rb")  # closed by digest()
        self.f.seek(start)

    def read(self, n: int = -1) -> bytes:
        return self._took(self.f.read(n))

    def readline(self, n: int = -1) -> bytes:
        return self._took(self.f.readline(n))

    def _took(self, data: bytes) -> bytes:
        self.sha.update(data)
        self.at += len(data)
        return data

    def seek(self, pos: int, whence: int = 0) -> int:
        if (pos, whence) != (self.at, 0):  # hashed bytes come in order, once
            raise io.UnsupportedOperation(f"a hashed read goes forward only (at {self.at}, asked {pos})")
        return self.at

    def tell(self) -> int:
        return self.at

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:  # to where it is: gzip asks before a seek(0) at the start
        return True

    def __enter__(self) -> "Hashed":
        return self

    def __exit__(self, *exc) -> None:  # the reader is done; digest() reads the rest and closes
        pass

    def digest(self) -> str:
        while self.stop is None or self.at < self.stop:
            if not self.read(1 << 20 if self.stop is None else min(1 << 20, self.stop - self.at)):
                break
        self.f.close()
        return self.sha.hexdigest()


def resolve_format(src: Source) -> str:
    """The configured format, or the one the path implies: `qa.jsonl.gz` -> "jsonl". A key
    that does not apply to it (`split` for a folder of text files) is a SourceError."""
    fmt = src.format if src.format != "auto" else _implied_format(src)
    try:
        src.check_keys(fmt)
    except ValueError as e:
        raise SourceError(f"corpus source {src.path!r}: {e}") from None
    return fmt


def _implied_format(src: Source) -> str:
    p = raw_path(src.path)
    if p.is_dir():
        if (p / "state.json").is_file() or (p / "dataset_dict.json").is_file():
            return "disk"
        found = {suffix_format(f) for f in p.rglob("*") if f.is_file()} - {None}
        if len(found) != 1:
            raise SourceError(f"corpus source {src.path!r}: set `format`; the folder holds {sorted(found)}")
        return found.pop()
    fmt = suffix_format(p)
    if fmt is None:
        raise SourceError(
            f"corpus source {src.path!r}: unknown format; set `format` to one of {sorted(set(SUFFIXES.values()))}"
        )
    return fmt


def source_files(src: Source) -> list[tuple[Path, str]]:
    """(path, label) of every file of a file or folder source, sorted by label."""
    p = raw_path(src.path)
    if not p.exists():
        raise SourceError(f"corpus source {src.path!r} ({src.task}): not found at {p}")
    if p.is_file():
        return [(p, src.path)]
    fmt = resolve_format(src)
    everything = raw_files(p, f"corpus source {src.path!r} ({src.task})")  # links out refused
    if fmt == "disk":
        return [(p, src.path)]
    files = [f for f in everything if suffix_format(f) == fmt]
    return sorted(
        ((f, f"{src.path.rstrip('/')}/{f.relative_to(p).as_posix()}") for f in files), key=lambda x: x[1]
    )


def read_jsonl(
    path: Path, label: str, start: int = 0, stop: int | None = None, first: int = 1
) -> Iterator[Raw]:
    """One `Raw` per line (of bytes `start` to `stop`, the first of which is line `first`);
    blank lines, bad bytes or JSON become reasons, never exceptions."""
    with _open(path) as f:
        for number, line in enumerate(bounded_lines(f, start, stop), start=first):
            if isinstance(line, Oversize):
                yield line.reject(label, number)
                if line.whole_file:
                    return
                continue
            if not line.strip():  # counted, so that read = kept + rejected holds line by line
                yield Raw(label, number, None, "blank_line", "an empty line")
                continue
            excerpt = line[:200].decode("utf-8", "replace")
            try:
                text = line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield Raw(label, number, None, "invalid_utf8", f"invalid UTF-8 at byte {e.start}", excerpt)
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as e:
                yield Raw(label, number, None, "invalid_json", f"{e.msg} at column {e.colno}", excerpt)
                continue
            if not isinstance(record, dict):
                yield Raw(label, number, None, "not_an_object", f"a JSON {type(record).__name__}", excerpt)
                continue
            yield Raw(label, number, record, excerpt=excerpt)


@dataclass
class Oversize:
    """A line over LINE_BYTES (skipped to its end in bounded reads), or the point where a file
    passed FILE_BYTES (nothing after it is read)."""

    head: bytes
    whole_file: bool = False

    def reject(self, label: str, line: int) -> Raw:
        excerpt = self.head[:200].decode("utf-8", "replace")
        if self.whole_file:
            detail = f"the file holds more than {FILE_BYTES} bytes (decompressed); lines from {line} on are not read"
        else:
            detail = f"line longer than {LINE_BYTES} bytes; not read"
        return Raw(label, line, None, "too_long", detail, excerpt)


def bounded_lines(f, start: int = 0, stop: int | None = None) -> Iterator[bytes | Oversize]:
    """The lines of binary file `f` from byte `start` to the line that reaches `stop`, each at
    most LINE_BYTES long: a longer line comes out as an `Oversize`, so memory stays bounded
    however long a (decompressed) line is. After FILE_BYTES, one `Oversize(whole_file=True)`.

    A file `a`, 40 MiB of `b`, `c` (one per line) -> b"a\\n", Oversize(head=b"bbb..."), b"c".
    """
    f.seek(start)
    at = start
    while stop is None or at < stop:
        if at - start > FILE_BYTES:
            yield Oversize(b"", whole_file=True)
            return
        line = f.readline(LINE_BYTES + 1)
        if not line:
            return
        at += len(line)
        if len(line) > LINE_BYTES and not line.endswith(b"\n"):
            at += _skip_line(f)
            line = Oversize(line[:200])
        yield line


def _skip_line(f) -> int:
    """Read on to the end of the current line in bounded pieces; the number of bytes read."""
    n = 0
    while True:
        piece = f.readline(1 << 20)
        n += len(piece)
        if not piece or piece.endswith(b"\n"):
            return n


def read_csv(path: Path, label: str) -> Iterator[Raw]:
    """Header row first (as line 0, the column names), then one `Raw` per row.

    Bad bytes are kept as surrogate escapes and rejected as invalid UTF-8 by the field check.
    """
    delimiter = "\t" if ".tsv" in path.name else ","
    # Long cells are rejected by max_chars, with their line; a cell past LINE_BYTES (an unclosed
    # quote swallowing the file) by the csv module, so neither is held whole.
    csv.field_size_limit(LINE_BYTES)
    with _open(path) as f:
        lines = codecs.iterdecode(_refuse_oversize(bounded_lines(f)), "utf-8", errors="surrogateescape")
        reader = csv.reader(lines, delimiter=delimiter, strict=True)
        header = _next_row(reader)
        if not isinstance(header, list):
            yield Raw(label, 1, None, "unreadable_file", f"no header row ({header or 'empty file'})")
            return
        header = [h.lstrip("\ufeff") for h in header]
        yield Raw(label, 0, dict.fromkeys(header, ""))
        yield from _csv_rows(reader, header, label)


def _csv_rows(reader, header: list[str], label: str) -> Iterator[Raw]:
    start = reader.line_num + 1
    while True:
        row = _next_row(reader)
        if row is None:
            return
        if isinstance(row, TooLong):
            yield Raw(
                label,
                reader.line_num + 1,
                None,
                "too_long",
                f"{row}; it and the rest of the file are not read",
            )
            return
        if isinstance(row, str):
            # An unclosed quote swallows every line after it: reject each one by its own line
            # number, so accepted + rejected still equals what the file holds.
            end = max(start, reader.line_num)
            where = f"; lines {start}-{end} are inside that field" if end > start else ""
            for line in range(start, end + 1):
                yield Raw(
                    label, line, None, "invalid_csv", f"{row} (quoted field opened at line {start}){where}"
                )
        elif not any(cell.strip() for cell in row):
            yield Raw(label, start, None, "blank_line", "an empty row")
        elif len(row) != len(header):
            yield Raw(
                label,
                start,
                None,
                "invalid_csv",
                f"{len(row)} cells, header has {len(header)}",
                str(row)[:200],
            )
        else:
            yield Raw(label, start, dict(zip(header, row, strict=True)), excerpt=str(row)[:200])
        start = reader.line_num + 1


def _next_row(reader) -> "list[str] | str | TooLong | None":
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as e:
        return f"CSV error: {e}"
    except TooLong as e:
        return e


class TooLong(Exception):
    """A line (or file) over the bounds, met inside a reader that cannot skip it (csv)."""


def _refuse_oversize(lines: Iterator[bytes | Oversize]) -> Iterator[bytes]:
    for line in lines:
        if isinstance(line, Oversize):
            raise TooLong(
                f"line longer than {LINE_BYTES} bytes"
                if not line.whole_file
                else f"file past {FILE_BYTES} bytes"
            )
        yield line


def read_parquet(path: Path, label: str, groups: list[int] | None = None, row: int = 0) -> Iterator[Raw]:
    """Header (line 0) then one `Raw` per row (of row groups `groups[0]` to `groups[1]`, the
    first of which is row `row` + 1); a corrupt file is one `unreadable_file` reject, and a
    file whose rows stop being readable ends with one.

    Row group by row group (pyarrow's batches would span them): what a read of some row groups
    yields is then the same as those row groups' part of a read of the whole file."""
    from tasks.memory import parquet

    try:
        pf = parquet(path)
    except Exception as e:  # pyarrow raises several types for a bad footer
        yield Raw(label, 0, None, "unreadable_file", f"not a readable Parquet file: {e}")
        return
    yield Raw(label, 0, dict.fromkeys(pf.schema_arrow.names, ""))
    try:
        for g in range(*(groups or (0, pf.num_row_groups))):
            too_big = _oversize_column(pf.metadata.row_group(g))
            if too_big:
                n = pf.metadata.row_group(g).num_rows
                for at in range(row + 1, row + n + 1):
                    yield Raw(
                        label, at, None, "too_long", f"row group {g} {too_big}; its {n} rows are not read"
                    )
                row += n
                continue
            for batch in pf.iter_batches(batch_size=BATCH, row_groups=[g]):
                yield from bounded_rows(batch, label, row)
                row += batch.num_rows
    except Exception as e:
        yield Raw(label, row + 1, None, "unreadable_file", f"rows after {row} unreadable: {e}")


def _oversize_column(group) -> str:
    """Why a Parquet row group is too big to read (a column past COLUMN_BYTES), or ""."""
    for c in range(group.num_columns):
        column = group.column(c)
        if column.total_uncompressed_size > COLUMN_BYTES:
            return (
                f"column {column.path_in_schema!r} holds {column.total_uncompressed_size} bytes decompressed "
                f"(more than {COLUMN_BYTES}; write the file with smaller row groups)"
            )
    return ""


def bounded_rows(batch: pa.RecordBatch, label: str, row: int) -> Iterator[Raw]:
    """The rows of an Arrow batch as records, the first being row `row` + 1; a row holding
    more than LINE_BYTES is a `too_long` reject and never becomes Python objects (a memory-mapped
    `save_to_disk` file then never even reads its bytes)."""
    if batch.nbytes <= LINE_BYTES:
        for at, record in enumerate(batch.to_pylist(), start=row + 1):
            yield Raw(label, at, record)
        return
    for i in range(batch.num_rows):
        one = batch.slice(i, 1)
        if one.nbytes > LINE_BYTES:
            yield Raw(
                label,
                row + i + 1,
                None,
                "too_long",
                f"row holds {one.nbytes} bytes (more than {LINE_BYTES}); not read",
            )
        else:
            yield Raw(label, row + i + 1, one.to_pylist()[0])


def read_text(path: Path, label: str, unit: str, key: str) -> Iterator[Raw]:
    """A text file as one document, or one per paragraph (blank-line separated); ids are made
    of `key` (the file's content hash), not its path.

    >>> [r.record for r in read_text(Path("a.txt"), "a.txt", "paragraph", "9f2c")]  # "One.\\n\\nTwo.\\n"
    [{'id': '9f2c#1', 'text': 'One.'}, {'id': '9f2c#3', 'text': 'Two.'}]
    """
    with _open(path) as f:
        if unit == "file":
            data = f.read(LINE_BYTES + 1)
            if len(data) > LINE_BYTES:
                yield Raw(label, 1, None, "too_long", f"document longer than {LINE_BYTES} bytes; not read")
                return
            text = data.decode("utf-8", errors="surrogateescape")
            yield Raw(label, 1, {"id": key, "text": text}, excerpt=text[:200])
            return
        yield from _paragraphs(bounded_lines(f), label, key)


def _paragraphs(lines: Iterator[bytes | Oversize], label: str, key: str) -> Iterator[Raw]:
    """Blank-line separated paragraphs; one over LINE_BYTES is a `too_long` reject, not held."""
    start, para, size = 0, [], 0
    for number, line in enumerate(itertools.chain(lines, [b""]), start=1):
        if isinstance(line, Oversize) and line.whole_file:
            yield from _paragraph(label, key, start, para, size) if start else ()
            yield line.reject(label, number)
            return
        text = None if isinstance(line, Oversize) else line.rstrip(b"\n").decode("utf-8", "surrogateescape")
        if text is None or text.strip():
            start, size = start or number, size + (LINE_BYTES + 1 if text is None else len(line))
            if size <= LINE_BYTES:
                para.append(text)
            else:
                para.clear()  # rejected whole at its end; never held
        elif start:
            yield from _paragraph(label, key, start, para, size)
            start, para, size = 0, [], 0


def _paragraph(label: str, key: str, start: int, para: list[str], size: int) -> Iterator[Raw]:
    if size > LINE_BYTES:
        yield Raw(label, start, None, "too_long", f"paragraph longer than {LINE_BYTES} bytes; not read")
        return
    text = "\n".join(para)
    yield Raw(label, start, {"id": f"{key}#{start}", "text": text}, excerpt=text[:200])


def _read_disk(path: Path, label: str, split: str | None) -> Iterator[Raw]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        yield Raw(label, 0, None, "unreadable_file", f"not a `save_to_disk` dataset: {e}")
        return
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise SourceError(f"corpus source {label!r}: set `split` to one of {sorted(ds)} (got {split!r})")
        ds = ds[split]
    yield from _read_dataset(ds, label)


def _read_dataset(ds, label: str) -> Iterator[Raw]:
    row = 0
    for table in ds.with_format("arrow").iter(batch_size=BATCH):
        for batch in table.to_batches():
            yield from bounded_rows(batch, label, row)
            row += batch.num_rows


def _load_hub(src: Source):
    """`datasets.load_dataset(name)`; offline it fails at once, naming the way out."""
    import datasets
    import huggingface_hub.constants as hub

    offline = hub.HF_HUB_OFFLINE or os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false")
    if offline:
        raise SourceError(
            f"corpus source {src.path!r}: hub datasets cannot be loaded offline (HF_HUB_OFFLINE=1); "
            "download it where the hub is reachable, `save_to_disk` it and use that folder as the path"
        )
    try:
        return datasets.load_dataset(src.path, src.subset, split=src.split, revision=src.revision)
    except Exception as e:
        raise SourceError(f"corpus source {src.path!r}@{src.revision}: cannot load from the hub: {e}") from e


def _open(path: "Path | Hashed"):
    """A binary file to read from, gzip decompressed."""
    if isinstance(path, Hashed):
        return gzip.GzipFile(fileobj=path, mode="rb") if path.name.endswith(".gz") else path
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _column_mismatch(first: tuple[str, set[str]], columns: set[str]) -> str:
    label, expected = first
    if columns == expected:
        return ""
    missing, extra = sorted(expected - columns), sorted(columns - expected)
    return f"columns differ from {label}: missing {missing}, extra {extra}"


def _reject_file(raws: Iterator[Raw], reason: str, detail: str) -> Iterator[Raw]:
    """Every record of a file, rejected for one file-level reason (nothing of it is kept)."""
    for raw in raws:
        if raw.line > 0:
            yield Raw(raw.file, raw.line, None, reason, detail, raw.excerpt)
