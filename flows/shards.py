"""The shards stage as a deployable Prefect flow. Templated, masked, packed (pretrain) and length-bucketed (SFT, DPO) Arrow IPC shards.

Tokenising runs as one Prefect task per corpus chunk (`shards.chunk_rows` records) on
Prefect's thread pool, or with `shards.runner: dask` on a local Dask cluster of
`shards.workers` processes or an existing cluster (`shards.dask_address`); the shards are the
same bytes either way (runners/).
"""

from flows.stage import stage_flow
from runners import prefect_map
from schemas.shards import ShardsConfig
from tasks import shards as shards_task


def parallel_build(cfg: ShardsConfig, inputs: dict, out) -> dict:
    """tasks.shards.build with its chunk jobs submitted as Prefect tasks (results are file names)."""
    return shards_task.build(cfg, inputs, out, prefect_map(cfg, "shards"))


shards_flow = stage_flow(
    "shards",
    "Templated, masked, packed (pretrain) and length-bucketed (SFT, DPO) Arrow IPC shards.",
    parallel_build,
)
