"""The tokenizer stage as a deployable Prefect flow. Byte-level BPE trained on the corpus, special tokens from schemas/tokens.py."""

from flows.stage import stage_flow

tokenizer_flow = stage_flow(
    "tokenizer", "Byte-level BPE trained on the corpus, special tokens from schemas/tokens.py."
)
