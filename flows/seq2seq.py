"""The seq2seq stage as a deployable Prefect flow. An encoder-decoder assembled from the encoder and the pretrained decoder, compared with SFT (optional stage)."""

from flows.stage import stage_flow

seq2seq_flow = stage_flow(
    "seq2seq",
    "An encoder-decoder assembled from the encoder and the pretrained decoder, compared with SFT (optional stage).",
)
