"""The sft stage as a deployable Prefect flow. Supervised fine-tuning of the pretrained decoder, loss on answers only."""

from flows.stage import stage_flow

sft_flow = stage_flow("sft", "Supervised fine-tuning of the pretrained decoder, loss on answers only.")
