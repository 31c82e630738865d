"""The corpus stage as a deployable Prefect flow. Raw sources (JSONL, Parquet, CSV/TSV, text, datasets) -> clean, deduplicated, split Parquet tables + rejects."""

from prefect import flow

from flows.stage import run_stage


@flow(name="corpus", log_prints=True, persist_result=False)
def corpus_flow(
    config: str = "tiny", overrides: list[str] | None = None, force: bool = False, home: str | None = None
) -> dict:
    """Raw sources (JSONL, Parquet, CSV/TSV, text, datasets) -> clean, deduplicated, split Parquet tables + rejects.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...].
    """
    return run_stage("corpus", config, overrides, force, home)
