"""The heads stage as a deployable Prefect flow. Task heads (classification, tagging, extractive QA) fine-tuned from the masked-LM encoder (optional stage)."""

from flows.stage import stage_flow

heads_flow = stage_flow(
    "heads",
    "Task heads (classification, tagging, extractive QA) fine-tuned from the masked-LM encoder (optional stage).",
)
