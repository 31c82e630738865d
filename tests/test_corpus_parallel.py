"""The corpus stage's pass one in jobs: the same bytes serially, on Prefect threads and on Dask
worker processes, and a job that fails is named by its source, file and byte range."""

import json

import pytest

from schemas.corpus import CorpusConfig
from tasks import corpus, corpus_chunks
from tasks.corpus_chunks import ChunkError
from tests.test_corpus_stream import sources

ARTIFACT = ("translation.parquet", "summarization.parquet", "qa.parquet", "rejects.jsonl", "lengths.png")


def config(tmp_path, **runtime) -> CorpusConfig:
    """Slices of the embedded corpus with bad records, duplicates and near-duplicates; JSONL
    files cut into pieces of ~40 KB, so a file's records are spread over several jobs."""
    cfg = CorpusConfig(sources=sources(tmp_path), validation_fraction=0.2, decontam_ngram=8)
    return cfg.model_copy(update={"chunk_bytes": 40_000, **runtime})


def artifact(out, stats) -> dict:
    stats.pop("memory")
    return {name: (out / name).read_bytes() for name in ARTIFACT} | {"stats": json.dumps(stats)}


def build(cfg, out, build_fn=corpus.build) -> dict:
    out.mkdir()
    return artifact(out, build_fn(cfg, {}, out))


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
    assert "read_chunk" in ran, sorted(ran)  # the jobs ran in that cluster's worker processes


def test_a_failing_job_names_its_source_file_and_piece(tmp_path, prefect_harness):
    from flows.runners import prefect_map

    cfg = config(tmp_path)
    vanished = next(s.path for s in cfg.sources if s.task == "summarization")

    def worker_without_the_file(fn, jobs):
        """A worker that does not see the planned file (no shared filesystem)."""
        (tmp_path / "raw" / "summarization.jsonl").unlink()
        return prefect_map(cfg, "corpus-read-chunk")(fn, jobs)

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(
        ChunkError, match=rf"summarization source {vanished}, bytes 0-\d+ \(from line 1\).*No such file"
    ):
        corpus.build(cfg, {}, out, worker_without_the_file)
