"""The pretrain stage as a deployable Prefect flow. A small Llama-style decoder trained from scratch on the packed shards."""

from prefect import flow

from flows.stage import run_stage


@flow(name="pretrain", log_prints=True, persist_result=False)
def pretrain_flow(
    config: str = "tiny", overrides: list[str] | None = None, force: bool = False, home: str | None = None
) -> dict:
    """A small Llama-style decoder trained from scratch on the packed shards.

    config: preset name in configs/ or a YAML path; overrides: ["stage.field=value", ...].
    """
    return run_stage("pretrain", config, overrides, force, home)
