"""The shards stage as a deployable Prefect flow. Templated, masked, packed (pretrain) and length-bucketed (SFT, DPO) Arrow IPC shards.

Tokenising runs as one Prefect task per corpus chunk (`shards.chunk_rows` records) on
Prefect's thread pool, or with `shards.runner: dask` on a local Dask cluster of
`shards.workers` processes or an existing cluster (`shards.dask_address`); the shards are the
same bytes either way.
"""

from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

from flows.stage import _task, run_stage
from schemas.shards import ShardsConfig
from tasks import shards as shards_task


def task_runner(cfg: ShardsConfig):
    if cfg.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.dask_address:
            return DaskTaskRunner(address=cfg.dask_address)
        # Worker processes, one thread each: tokenising holds the GIL between tokenizer calls.
        kwargs = {
            "n_workers": cfg.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
        return DaskTaskRunner(cluster_kwargs=kwargs)
    return ThreadPoolTaskRunner(max_workers=cfg.workers)


def parallel_build(cfg: ShardsConfig, inputs: dict, out) -> dict:
    """tasks.shards.build with its chunk jobs submitted as Prefect tasks (results are file names)."""

    def map_chunks(fn, jobs: list[dict]) -> list[str]:
        chunk_task = _task(fn, "shards-tokenize-chunk")
        with task_runner(cfg) as runner:
            futures = [runner.submit(chunk_task, {"job": job}) for job in jobs]
            return [f.result() for f in futures]

    return shards_task.build(cfg, inputs, out, map_chunks)


@flow(name="shards", log_prints=True, persist_result=False)
def shards_flow(
    config: str = "tiny", overrides: list[str] | None = None, force: bool = False, home: str | None = None
) -> dict:
    """Templated, masked, packed (pretrain) and length-bucketed (SFT, DPO) Arrow IPC shards.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...].
    """
    return run_stage("shards", config, overrides, force, home, build=parallel_build)
