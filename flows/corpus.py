"""The corpus stage as a deployable Prefect flow. Raw sources (JSONL, Parquet, CSV/TSV, text, datasets) -> clean, deduplicated, split Parquet tables + rejects.

Pass one (reading, admitting, dedup keys and signatures) runs as one Prefect task per piece of
a source (a file, or about `corpus.chunk_bytes` of a JSONL or Parquet file), and pass two's
decontamination lookups as one per 16 spool batches, on Prefect's thread pool, or
with `corpus.runner: dask` on a local Dask cluster of `corpus.workers` processes or an existing
cluster (`corpus.dask_address`); the artifact is the same bytes either way (runners/).
"""

from flows.stage import stage_flow
from runners import prefect_map
from schemas.corpus import CorpusConfig
from tasks import corpus as corpus_task


def parallel_build(cfg: CorpusConfig, inputs: dict, out) -> dict:
    """tasks.corpus.build with its jobs submitted as Prefect tasks (results are file names)."""
    return corpus_task.build(cfg, inputs, out, prefect_map(cfg, "corpus"))


corpus_flow = stage_flow(
    "corpus",
    "Raw sources (JSONL, Parquet, CSV/TSV, text, datasets) -> clean, deduplicated, split Parquet tables + rejects.",
    parallel_build,
)
