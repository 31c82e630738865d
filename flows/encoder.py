"""The encoder stage as a deployable Prefect flow. A ModernBERT-style encoder pretrained with masked LM on the packed shards (optional stage)."""

from flows.stage import stage_flow

encoder_flow = stage_flow(
    "encoder", "A ModernBERT-style encoder pretrained with masked LM on the packed shards (optional stage)."
)
