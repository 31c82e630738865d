"""The pretrain stage as a deployable Prefect flow. A small Llama-style decoder trained from scratch on the packed shards."""

from flows.stage import stage_flow

pretrain_flow = stage_flow(
    "pretrain", "A small Llama-style decoder trained from scratch on the packed shards."
)
