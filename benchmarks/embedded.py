"""The data every comparison of `python -m benchmarks` shares: the embedded corpus, built once.

The tiny preset's five raw files go through our corpus stage once; the 8k byte-level BPE is
trained on the stage's sample once; the SFT and DPO examples are what the shards stage would
write (templates, control tokens by id, examples over max_len left out). `--quick` cuts every
file to its first 20 lines and the tokenizer's sample to 50k characters.
"""

from dataclasses import dataclass
from pathlib import Path

from benchmarks.corpus import sources
from schemas.config import load_config
from schemas.corpus import TASK_FIELDS
from schemas.templates import PRETRAIN
from schemas.tokenizer import TokenizerConfig
from tasks import corpus, shard_chunks, shards, tokenizer, tokenizer_file

VOCAB = 8192
QUICK_LINES, QUICK_TRAIN_CHARS = 20, 50_000


@dataclass
class Embedded:
    corpus: Path  # our corpus stage's output folder
    tokenizer_dir: Path  # the 8k tokenizer, saved as the stage saves it (AutoTokenizer loads it)
    tok: object  # the same tokenizer (tokenizers.Tokenizer), special-token recognition off
    cfg: TokenizerConfig
    quick: bool

    def all_texts(self) -> list[str]:
        """Every text field of every record, both splits, all tasks."""
        return [
            row[f] for task, _, row in tokenizer.corpus_rows(self.corpus, None) for f in TASK_FIELDS[task]
        ]

    def train(self, task: str) -> list[dict]:
        """The task's training records, source weights applied, as the shards stage reads them."""
        return shard_chunks.read_split(self.corpus, task, "train")

    def pretrain_docs(self) -> list[list[int]]:
        """Token ids of the pretraining documents (<bos> text <eos>), as the shards stage makes them."""
        return shard_chunks.encode_template(
            self.tok, PRETRAIN.prompt + PRETRAIN.answer, self.train("pretrain")
        )

    def sft_examples(self, max_len: int) -> list[dict]:
        """The shards stage's SFT training examples of at most `max_len` tokens."""
        cfg = load_config("tiny").shards
        examples = shards.sft_examples(self.tok, self.corpus, cfg.sft_tasks, "train", cfg.instruct)
        return [ex for ex in examples if len(ex["input_ids"]) <= max_len]

    def dpo_examples(self, max_len: int) -> list[dict]:
        """The shards stage's DPO training pairs whose longer side fits in `max_len` tokens."""
        pairs = shards.dpo_examples(self.tok, self.corpus, "train")
        return [
            p
            for p in pairs
            if len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) <= max_len
        ]


def build(work: Path, quick: bool) -> Embedded:
    corpus_dir, tok_dir = work / "corpus", work / "tokenizer"
    corpus_dir.mkdir()
    corpus.build(sources(work, QUICK_LINES if quick else None), {}, corpus_dir)
    cfg = TokenizerConfig(vocab_size=VOCAB, **({"max_train_chars": QUICK_TRAIN_CHARS} if quick else {}))
    tok = tokenizer.train(tokenizer.training_texts(corpus_dir, cfg.max_train_chars), cfg)
    tokenizer.save(tok, tok_dir)
    return Embedded(corpus_dir, tok_dir, tokenizer_file.load(tok_dir), cfg, quick)
