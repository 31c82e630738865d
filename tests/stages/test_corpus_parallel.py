"""The corpus stage's jobs (pass one, and pass two's n-gram lookups): the same bytes serially,
on Prefect threads and on Dask worker processes, in pieces of JSONL lines or Parquet row
groups as from whole files, and a job that fails is named by its source, file and byte range."""

import gzip
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_corpus_stream import sources

from schemas.config import PROJECT_ROOT
from schemas.corpus import CorpusConfig, Source
from tasks import corpus, corpus_chunks
from tasks.artifacts import sha256_file
from tasks.corpus_chunks import ChunkError
from tasks.corpus_read import SourceChanged, line_ranges, parts, read_jsonl, read_part

ARTIFACT = ("translation.parquet", "summarization.parquet", "qa.parquet", "rejects.jsonl", "lengths.png")
PRETRAIN = ("pretrain.parquet", "rejects.jsonl", "lengths.png")


def config(tmp_path, **runtime) -> CorpusConfig:
    """Slices of the embedded corpus with bad records, duplicates and near-duplicates; JSONL
    files cut into pieces of ~40 KB, so a file's records are spread over several jobs."""
    cfg = CorpusConfig(sources=sources(tmp_path), validation_fraction=0.2, decontam_ngram=8)
    return cfg.model_copy(update={"chunk_bytes": 40_000, **runtime})


def build(cfg, out, build_fn=corpus.build, names=ARTIFACT) -> dict:
    """The artifact's files and stats (less the memory figures), as bytes."""
    out.mkdir()
    stats = build_fn(cfg, {}, out)
    stats.pop("memory")
    return {name: (out / name).read_bytes() for name in names} | {"stats": json.dumps(stats)}


def test_pieces_in_threads_and_dask_processes_build_the_same_bytes(tmp_path, prefect_harness):
    from distributed import LocalCluster

    from flows.corpus import parallel_build

    whole = config(tmp_path, chunk_bytes=1 << 30)  # one job per file, in this process
    reference = build(whole, tmp_path / "whole")
    stats = json.loads(reference["stats"])
    assert stats["near_duplicates"] and stats["contaminated"] and stats["reasons"]["empty_field"]
    cfg = config(tmp_path)
    jobs = corpus_chunks.plan(cfg, tmp_path)
    assert len(jobs) > 2 * len(cfg.sources) and {j["line"] for j in jobs} != {1}
    assert build(cfg, tmp_path / "serial") == reference
    assert build(cfg.model_copy(update={"workers": 2}), tmp_path / "threads", parallel_build) == reference
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        on_dask = cfg.model_copy(update={"runner": "dask", "dask_address": cluster.scheduler_address})
        assert build(on_dask, tmp_path / "dask", parallel_build) == reference
        ran = cluster.scheduler.task_prefixes
    assert {"read_chunk", "contamination_chunk"} <= set(ran), sorted(ran)  # both passes' jobs ran there


def test_a_failing_job_names_its_source_file_and_piece(tmp_path, prefect_harness):
    from runners import prefect_map

    cfg = config(tmp_path)
    vanished = next(s.path for s in cfg.sources if s.task == "summarization")

    def worker_without_the_file(fn, jobs):
        """A worker that does not see the planned file (no shared filesystem)."""
        (tmp_path / "raw" / "summarization.jsonl").unlink()
        return prefect_map(cfg, "corpus")(fn, jobs)

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(
        ChunkError, match=rf"summarization source {vanished}, bytes 0-\d+ \(from line 1\).*No such file"
    ):
        corpus.build(cfg, {}, out, worker_without_the_file)


def test_source_appended_to_while_the_stage_reads_it_fails_the_stage(tiny_config, tmp_path, prefect_harness):
    from prefect import flow

    from flows.stage import run_stage
    from tasks.artifacts import ArtifactError, Home, published

    qa = tmp_path / "raw" / "qa.jsonl"

    def build_while_a_writer_appends(cfg, inputs, out):
        with open(qa, "a") as f:  # another process still writing the file
            f.write(json.dumps({"id": "late", "question": "Late?", "answer": "Yes."}) + "\n")
        return corpus.build(cfg, inputs, out)

    run = flow(run_stage, name="corpus-appended", persist_result=False)
    home = tmp_path / "home"
    with pytest.raises(ArtifactError, match=rf"raw file {qa} changed while the corpus stage read it"):
        run("corpus", str(tiny_config), None, False, str(home), build=build_while_a_writer_appends)
    assert published(Home.resolve(str(home)), "corpus") == []


def test_parquet_row_group_pieces_read_as_the_whole_file_even_past_a_corrupt_group(tmp_path):
    rows = [
        {"id": f"d{i}", "text": f"Document {i} is about topic {i % 7}, in a few more words."}
        for i in range(700)
    ]
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pylist(rows), good, row_group_size=100)
    data = bytearray(good.read_bytes())
    at = pq.ParquetFile(good).metadata.row_group(3).column(1).data_page_offset
    data[at + 20 : at + 60] = b"\xff" * 40  # a page header of the fourth row group garbled
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    for path, kept in ((good, 700), (bad, 300)):
        cfg = CorpusConfig(sources=[{"task": "pretrain", "path": str(path)}], max_reject_rate=1.0)
        pieces = cfg.model_copy(update={"chunk_bytes": 3000})
        assert len(corpus_chunks.plan(pieces, tmp_path)) == 7  # row groups, read apart
        whole = build(
            cfg.model_copy(update={"chunk_bytes": 1 << 30}), tmp_path / f"{path.stem}-whole", names=PRETRAIN
        )
        assert build(pieces, tmp_path / f"{path.stem}-pieces", names=PRETRAIN) == whole
        assert json.loads(whole["stats"])["kept"] == kept
    assert b"rows after 300 unreadable" in whole["rejects.jsonl"]  # the file ends at its bad row group


def test_jsonl_line_ranges_read_as_the_whole_file(tmp_path):
    """A BOM, blank lines, CRLF ends, a bad line, a line longer than a piece, no final newline."""
    lines = ['\ufeff{"id": "a", "text": "one"}', "", '{"id": "b", "text": "two"}\r', "{broken", "   "]
    lines += [json.dumps({"id": "long", "text": "word " * 400}), '{"id": "c", "text": "three"}']
    path = tmp_path / "t.jsonl"
    path.write_bytes("\n".join(lines).encode())
    whole = [(r.line, r.record, r.reason) for r in read_jsonl(path, "t.jsonl")]
    assert [line for line, _, _ in whole] == [1, 2, 3, 4, 5, 6, 7] and whole[3][2] == "invalid_json"
    assert [reason for _, _, reason in whole if reason != "invalid_json"] == [
        "",
        "blank_line",
        "",
        "blank_line",
        "",
        "",
    ]
    for size in (1, 10, 40, 1000):
        ranges, sums, sha = line_ranges(path, size)
        pieces = [
            (r.line, r.record, r.reason) for a, b, n in ranges for r in read_jsonl(path, "t.jsonl", a, b, n)
        ]
        assert pieces == whole, size
        assert sha == sha256_file(path) and len(sums) == len(ranges)
    assert len(line_ranges(path, 1)[0]) == 6  # a piece per line, the blank line 2 with line 1


@pytest.mark.parametrize("name", ["t.jsonl", "t.csv.gz"])
def test_the_bytes_read_are_the_bytes_hashed_or_the_read_fails(tmp_path, name):
    """Each piece is hashed as it is read: a file appended to or rewritten after it was listed
    (even one put back before anyone could rehash it) fails, naming it."""
    rows = [{"id": f"r{i}", "text": f"Text number {i}."} for i in range(3000)]
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write("id,text\n" + "".join(f"{r['id']},{r['text']}\n" for r in rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = Source(task="pretrain", path=str(path))
    pieces = parts(src, 20_000)
    assert len(pieces) == (1 if name.endswith(".gz") else 7) and parts(src)[0]["sha256"] == sha256_file(path)
    assert [r.record["id"] for p in pieces for r in read_part(src, p)] == [r["id"] for r in rows]
    before = path.read_bytes()
    with open(path, "ab") as f:  # a writer appends after the listing
        f.write(
            gzip.compress(b"r3000,Late.\n") if name.endswith(".gz") else b'{"id": "late", "text": "Late."}\n'
        )
    with pytest.raises(
        SourceChanged, match=rf"{name} changed while the corpus stage read it: .* when listed"
    ):
        list(read_part(src, pieces[-1]))
    path.write_bytes(before)
    if name.endswith(".gz"):
        return
    records = read_part(src, parts(src)[0])
    next(records)  # reading; a byte far ahead is rewritten, and put back once read
    path.write_bytes(before[:100_000] + b"X" + before[100_001:])
    with pytest.raises(SourceChanged, match=r"the file hashed"):
        for raw in records:
            if raw.line == 2900:
                path.write_bytes(before)
    assert sha256_file(path) == parts(src)[0]["sha256"]  # a rehash after the stage sees nothing


def test_jobs_report_to_the_temporary_server_of_their_run():
    """A run without PREFECT_API_URL starts a temporary Prefect server; the jobs' Dask workers
    are handed its URL (each used to start a server of its own: 10-20 s apiece)."""
    code = (
        "import flows\n"
        "from prefect.server.api.server import SubprocessASGIServer\n"
        "from prefect.settings import PREFECT_API_URL\n"
        "from runners import same_api\n"
        "server = SubprocessASGIServer()\n"
        "server.start()\n"
        "with same_api():\n"
        "    print('handed', PREFECT_API_URL.value() == server.api_url, flush=True)\n"
        "server.stop()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert "handed True" in done.stdout, done.stderr[-3000:]
