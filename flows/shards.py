"""The shards stage as a deployable Prefect flow. Templated, masked, packed (pretrain) and length-bucketed (SFT, DPO) Arrow IPC shards."""

from prefect import flow

from flows.stage import run_stage


@flow(name="shards", log_prints=True, persist_result=False)
def shards_flow(
    config: str = "tiny", overrides: list[str] | None = None, force: bool = False, home: str | None = None
) -> dict:
    """Templated, masked, packed (pretrain) and length-bucketed (SFT, DPO) Arrow IPC shards.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...].
    """
    return run_stage("shards", config, overrides, force, home)
