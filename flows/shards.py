"""The shards stage as a deployable Prefect flow. Templated, masked, packed (pretrain) and length-bucketed (SFT, DPO) Arrow IPC shards.

Tokenising runs as one Prefect task per corpus chunk (`shards.chunk_rows` records) on
Prefect's thread pool, or with `shards.runner: dask` on a local Dask cluster of
`shards.workers` processes or an existing cluster (`shards.dask_address`); the shards are the
same bytes either way (runners/).
"""

from prefect import flow

from flows.stage import run_stage
from runners import prefect_map
from schemas.config import PipelineConfig
from schemas.manifest import Ref
from schemas.shards import ShardsConfig
from tasks import shards as shards_task


def parallel_build(cfg: ShardsConfig, inputs: dict, out) -> dict:
    """tasks.shards.build with its chunk jobs submitted as Prefect tasks (results are file names)."""
    return shards_task.build(cfg, inputs, out, prefect_map(cfg, "shards"))


@flow(name="shards", log_prints=True, persist_result=False)
def shards_flow(
    config: str | PipelineConfig = "tiny",
    overrides: list[str] | None = None,
    force: bool = False,
    home: str | None = None,
    inputs: list[Ref] | None = None,
) -> dict:
    """Templated, masked, packed (pretrain) and length-bucketed (SFT, DPO) Arrow IPC shards.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...];
    inputs: the input refs the pipeline planned (None: the latest matching artifacts).
    """
    return run_stage("shards", config, overrides, force, home, inputs, parallel_build)
