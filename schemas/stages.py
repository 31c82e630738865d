"""The stage graph: order, inputs, output root, work pool, format version and key figures of
each stage.

Bump a stage's `version` whenever its output changes meaning: every artifact of that stage
(and everything downstream) then gets a new fingerprint.
"""

from collections.abc import Callable
from dataclasses import dataclass

from schemas import corpus, dpo, heads, reward, rl, seq2seq, shards, tokenizer
from schemas.training import training_figures


@dataclass(frozen=True)
class StageDef:
    name: str
    inputs: tuple[str, ...]
    root: str  # "artifacts" (data) or "checkpoints" (models)
    pool: str  # Prefect work pool
    version: int
    uses_registry: bool  # output depends on special tokens / templates
    figures: Callable[[dict], str]  # manifest stats -> the few numbers a person looks at first
    resumable: bool = False  # a killed build continues from what it left in its staging dir
    optional: bool = False  # not part of `lmpipe run`; built on request (`lmpipe run reward`)


STAGES: dict[str, StageDef] = {
    s.name: s
    for s in (
        # 2: Parquet read by row group; 3: generated ids from the file's content hash, not its
        # path, and blank JSONL lines / CSV rows counted as `blank_line` rejects; 4: pretraining
        # documents longer than max_chars cut into pieces, not rejected
        StageDef("corpus", (), "artifacts", "cpu", 4, False, corpus.key_figures),
        StageDef("tokenizer", ("corpus",), "artifacts", "cpu", 1, True, tokenizer.key_figures),
        StageDef(
            "shards", ("corpus", "tokenizer"), "artifacts", "cpu", 1, True, shards.key_figures, resumable=True
        ),
        StageDef(
            "pretrain",
            ("shards", "tokenizer"),
            "checkpoints",
            "gpu",
            1,
            False,
            training_figures,
            resumable=True,
        ),
        # sft 2, rl 2, seq2seq 2: decoding never repeats a 3-gram of the answer (tasks.evaluation)
        StageDef(
            "sft",
            ("pretrain", "shards", "tokenizer"),
            "checkpoints",
            "gpu",
            2,
            False,
            training_figures,
            resumable=True,
        ),
        # 2: preference accuracy per token, not summed (tasks.evaluation.preference_accuracy)
        StageDef(
            "dpo",
            ("sft", "shards", "tokenizer"),
            "checkpoints",
            "gpu",
            2,
            False,
            dpo.key_figures,
            resumable=True,
        ),
        StageDef(
            "reward",
            ("sft", "shards", "tokenizer"),
            "checkpoints",
            "gpu",
            1,
            False,
            reward.key_figures,
            optional=True,
        ),
        StageDef(
            "rl",
            ("sft", "reward", "dpo", "shards", "tokenizer"),
            "checkpoints",
            "gpu",
            2,
            False,
            rl.key_figures,
            optional=True,
        ),
        StageDef(
            "encoder",
            ("shards", "tokenizer"),
            "checkpoints",
            "gpu",
            1,
            False,
            training_figures,
            True,
            optional=True,
        ),
        StageDef(
            "heads",
            ("encoder", "corpus", "tokenizer"),
            "checkpoints",
            "gpu",
            1,
            True,
            heads.key_figures,
            True,
            optional=True,
        ),
        StageDef(
            "seq2seq",
            ("encoder", "pretrain", "sft", "shards", "tokenizer"),
            "checkpoints",
            "gpu",
            2,
            False,
            seq2seq.key_figures,
            resumable=True,
            optional=True,
        ),
    )
}
ORDER: tuple[str, ...] = tuple(STAGES)
PIPELINE: tuple[str, ...] = tuple(s for s in ORDER if not STAGES[s].optional)  # what `lmpipe run` builds


def downstream(stage: str) -> list[str]:
    """Stages that (transitively) read `stage`'s output: `downstream("sft") == ["dpo"]`."""
    out: list[str] = []
    for name in ORDER:
        if any(i == stage or i in out for i in STAGES[name].inputs):
            out.append(name)
    return out
