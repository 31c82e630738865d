"""Learning: lmpipe's default chain against a plain-library chain, same data, same seconds.

    python -m benchmarks.learning [--quick] [--rounds N]

lmpipe side: the pipeline flow (tiny preset) into a fresh home; its figures are the manifests'.
Plain side, on the same corpus tables (lmpipe's corpus artifact of that run, so both read the
same cleaned records): a `tokenizers` byte-level BPE of the same vocabulary size; a
`transformers` Llama of the same shape trained with a bare PyTorch loop on random padded
batches (pretraining, then SFT with loss on the answer, prompts in plain words); TRL's
DPOTrainer with the same LoRA rank. Each plain stage trains until it has spent as many CPU
seconds (this process, every thread) as lmpipe's stage flow did, its evaluations, contracts and
Prefect's share included: the plain side gets its evaluation free. CPU time, not wall time, so a
busy neighbour on the machine does not shorten either side's budget.

Both are scored on the same validation records (the ones lmpipe's SFT evaluation picks; the
preference pairs of lmpipe's DPO validation shards) with the same metric code (sacrebleu chrF
and BLEU, ROUGE-L, SQuAD F1/EM, per-token preference accuracy). The sides alternate, lmpipe
first, `--rounds` times. Results: benchmarks/results/learning{,-quick}.{json,md}.
"""

import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from benchmarks.common import save_results
from schemas.config import load_config
from schemas.stages import PIPELINE
from tasks import evaluation
from tasks.artifacts import read_manifest

QUICK = [
    "pretrain.max_steps=20",
    "pretrain.warmup_steps=2",
    "sft.max_steps=10",
    "sft.warmup_steps=1",
    "sft.eval_examples=4",
    "dpo.max_steps=4",
    "dpo.warmup_steps=1",
    "sft.require_gain=false",  # a smoke-test budget: too few steps to learn
    "dpo.require_gain=false",
]
PROMPTS = {  # the plain side's prompts: what a user of plain libraries would write
    "translation": "{source_text}\nFrench:",
    "summarization": "{document}\nSummary:",
    "qa": "Context: {context}\nQuestion: {question}\nAnswer:",
}
ANSWERS = {"translation": "target_text", "summarization": "summary", "qa": "answer"}


def lmpipe_chain(overrides: list[str], home: Path) -> dict:
    """The pipeline's stage flows in order (tiny preset) in this process; per stage its manifest's
    stats, the CPU seconds of this process while it ran (every thread) and its path."""
    from flows.pipeline import STAGE_FLOWS

    out = {}
    for stage in PIPELINE:
        start = time.process_time()
        result = STAGE_FLOWS[stage](config="tiny", overrides=overrides, home=str(home))
        stats = read_manifest(Path(result["path"])).stats
        out[stage] = {"stats": stats, "cpu_s": time.process_time() - start, "path": result["path"]}
    return out


def lmpipe_figures(chain: dict) -> dict:
    pre, sft, dpo = (chain[s]["stats"] for s in ("pretrain", "sft", "dpo"))
    return {
        "pretrain": {"val_loss": pre["val_loss"], "unigram": pre["unigram_baseline"]},
        "sft": {"before": flat(sft["generation_before"]), "after": flat(sft["generation"])},
        "dpo": {
            "before": dpo.get("val_preference_accuracy_before"),
            "after": dpo.get("val_preference_accuracy"),
        },
    }


def flat(generation: dict) -> dict:
    """{task: {metric: v}} -> {"translation chrf": v, ...} for the headline metrics."""
    return {
        f"{t} {k}": generation[t][k]
        for t, keys in evaluation.HEADLINE.items()
        if t in generation
        for k in keys
    }


class Plain:
    """The plain-library chain on lmpipe's corpus tables, each stage given `seconds`."""

    def __init__(self, corpus_dir: Path, shards_dir: Path, cfg, scratch: Path):
        self.cfg, self.scratch = cfg, scratch
        self.tables = {p.stem: pq.read_table(p).to_pylist() for p in corpus_dir.glob("*.parquet")}
        self.shards_dir = shards_dir
        self.rng = random.Random(0)
        torch.manual_seed(0)

    def split(self, task: str, split: str) -> list[dict]:
        return [r for r in self.tables[task] if r["split"] == split]

    def tokenizer(self):
        from tokenizers import ByteLevelBPETokenizer
        from transformers import PreTrainedTokenizerFast

        texts = [r["text"] for r in self.split("pretrain", "train")]
        for task, fields in (
            ("translation", ("source_text", "target_text")),
            ("summarization", ("document", "summary")),
        ):
            texts += [r[f] for r in self.split(task, "train") for f in fields]
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            texts, vocab_size=self.cfg.tokenizer.vocab_size, special_tokens=["<pad>", "<eos>"]
        )
        self.tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>")
        return self.tok

    def model(self):
        from transformers import LlamaConfig, LlamaForCausalLM

        m = self.cfg.pretrain.model
        config = LlamaConfig(
            vocab_size=len(self.tok),
            hidden_size=m.hidden_size,
            num_hidden_layers=m.num_layers,
            num_attention_heads=m.num_heads,
            intermediate_size=m.intermediate_size,
            max_position_embeddings=self.cfg.shards.seq_len,
            pad_token_id=self.tok.pad_token_id,
            eos_token_id=self.tok.eos_token_id,
        )
        self.lm = LlamaForCausalLM(config)
        return self.lm

    def pretrain(self, seconds: float) -> dict:
        docs = [self.encode(r["text"] + "<eos>") for r in self.split("pretrain", "train")]
        steps = train_for(
            self.lm, lambda: self.pad(self.rng.sample(docs, 8), None), seconds, self.cfg.pretrain
        )
        val = [self.encode(r["text"] + "<eos>") for r in self.split("pretrain", "validation")]
        return {
            "steps": steps,
            "val_loss": mean_loss(self.lm, [self.pad(val[k : k + 8], None) for k in range(0, len(val), 8)]),
        }

    def sft_examples(self, split: str) -> list[tuple[list[int], list[int]]]:
        out = []
        for task, template in PROMPTS.items():
            for r in self.split(task, split):
                prompt = self.encode(template.format(**r))
                answer = self.encode(" " + r[ANSWERS[task]] + "<eos>")
                if len(prompt) + len(answer) <= self.cfg.shards.max_len:
                    out.append((prompt, answer))
        return out

    def sft(self, seconds: float) -> dict:
        examples = self.sft_examples("train")
        batch = self.cfg.sft.batch_size
        steps = train_for(
            self.lm,
            lambda: self.pad(*zip(*self.rng.sample(examples, batch), strict=True)),
            seconds,
            self.cfg.sft,
        )
        return {"steps": steps}

    def encode(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"][: self.cfg.shards.max_len]

    def pad(self, prompts, answers) -> dict:
        """Right-padded ids and labels; with `answers`, loss on the answers only."""
        rows = [p + a for p, a in zip(prompts, answers, strict=True)] if answers else list(prompts)
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.tok.pad_token_id)
        labels = torch.full((len(rows), width), -100)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            start = len(prompts[i]) if answers else 0
            labels[i, start : len(row)] = torch.tensor(row[start:])
        return {
            "input_ids": ids,
            "labels": labels,
            "attention_mask": (labels != -100) | (ids != self.tok.pad_token_id),
        }

    def generation(self, records: dict[str, list[dict]], max_new: int) -> dict:
        """The headline metrics on `records` (per task), greedy with no repeated 3-gram."""
        self.lm.eval()
        scores = {}
        for task, rows in records.items():
            hyps = []
            for r in rows:
                prompt = torch.tensor([self.encode(PROMPTS[task].format(**r))])
                with torch.no_grad():
                    out = self.lm.generate(
                        prompt,
                        max_new_tokens=max_new,
                        do_sample=False,
                        no_repeat_ngram_size=3,
                        eos_token_id=self.tok.eos_token_id,
                        pad_token_id=self.tok.pad_token_id,
                    )
                hyps.append(self.tok.decode(out[0, prompt.shape[1] :], skip_special_tokens=True).strip())
            scores[task] = evaluation.SCORERS[task](hyps, [r[ANSWERS[task]] for r in rows])
        self.lm.train()
        return flat(scores)

    def preference_table(self, ids: list[str]) -> pa.Table:
        by_id = {r["id"]: r for r in self.tables["preference"]}
        rows = [by_id[i] for i in ids if i in by_id]
        return pa.table(
            {
                "prompt_ids": [self.encode(r["prompt"] + "\n") for r in rows],
                "chosen_ids": [self.encode(r["chosen"] + "<eos>") for r in rows],
                "rejected_ids": [self.encode(r["rejected"] + "<eos>") for r in rows],
            }
        )

    def dpo(self, seconds: float) -> dict:
        from datasets import Dataset
        from peft import LoraConfig
        from trl import DPOConfig, DPOTrainer

        d = self.cfg.dpo
        pairs = [
            {k: r[k] for k in ("prompt", "chosen", "rejected")} for r in self.split("preference", "train")
        ]
        args = DPOConfig(
            output_dir=str(self.scratch / "dpo"),
            max_steps=10**6,
            per_device_train_batch_size=d.batch_size,
            learning_rate=d.lr,
            beta=d.beta,
            report_to=[],
            save_strategy="no",
            logging_steps=10**6,
            use_cpu=True,
            seed=0,
            warmup_steps=d.warmup_steps,
            max_length=self.cfg.shards.max_len,
        )
        stop = StopAfter(seconds)
        lora = LoraConfig(r=d.lora_r, lora_alpha=d.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM")
        trainer = DPOTrainer(
            model=self.lm,
            args=args,
            train_dataset=Dataset.from_list(pairs),
            processing_class=self.tok,
            peft_config=lora,
            callbacks=[stop],
        )
        trainer.train()
        self.lm = trainer.model.merge_and_unload()
        return {"steps": trainer.state.global_step}


class StopAfter:
    """A TrainerCallback that ends training once it has spent `seconds` of CPU time."""

    def __new__(cls, seconds: float):
        from transformers import TrainerCallback

        class _Stop(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                self.start = time.process_time()

            def on_step_end(self, args, state, control, **kwargs):
                control.should_training_stop = time.process_time() - self.start >= seconds

        return _Stop()


def train_for(model, next_batch, seconds: float, train) -> int:
    """AdamW with linear warmup then constant lr, until this process has spent `seconds` of CPU
    time (every thread) on it; the step count."""
    opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    model.train()
    start, step = time.process_time(), 0
    while time.process_time() - start < seconds:
        for group in opt.param_groups:
            group["lr"] = train.lr * min(1.0, (step + 1) / max(1, train.warmup_steps))
        loss = model(**next_batch()).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
    return step


def mean_loss(model, batches: list[dict]) -> float:
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for b in batches:
            n = int((b["labels"][:, 1:] != -100).sum())
            total += float(model(**b).loss) * n
            tokens += n
    model.train()
    return round(total / tokens, 4)


def same_records(shards_dir: Path, plain: Plain, per_task: int) -> tuple[dict, list[str]]:
    """The corpus records behind lmpipe's SFT generation rows, and its DPO validation pair ids."""
    sft = pa.concat_tables(read_arrow(p) for p in sorted(shards_dir.glob("sft-validation-*.arrow")))
    sft = sft.filter(pa.compute.equal(sft["format"], "task"))
    chosen = evaluation.generation_rows(sft["task"].to_pylist(), per_task)
    ids = sft["id"].to_pylist()
    records = {}
    for task, rows in chosen.items():
        by_id = {r["id"]: r for r in plain.split(task, "validation")}
        records[task] = [by_id[ids[i]] for i in rows if ids[i] in by_id]
    dpo = pa.concat_tables(read_arrow(p) for p in sorted(shards_dir.glob("dpo-validation-*.arrow")))
    return records, dpo["id"].to_pylist()


def read_arrow(path: Path) -> pa.Table:
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def plain_chain(chain: dict, cfg, scratch: Path) -> dict:
    shards_dir = Path(chain["shards"]["path"])
    plain = Plain(Path(chain["corpus"]["path"]), shards_dir, cfg, scratch)
    plain.tokenizer()
    plain.model()
    records, pair_ids = same_records(shards_dir, plain, cfg.sft.eval_examples)
    prefs = plain.preference_table(pair_ids)
    out = {"pretrain": plain.pretrain(chain["pretrain"]["cpu_s"])}
    before = plain.generation(records, cfg.sft.eval_max_new_tokens)
    out["sft"] = plain.sft(chain["sft"]["cpu_s"]) | {
        "before": before,
        "after": plain.generation(records, cfg.sft.eval_max_new_tokens),
    }
    pref_before = evaluation.preference_accuracy(plain.lm, prefs, "cpu")["preference_accuracy"]
    out["dpo"] = plain.dpo(chain["dpo"]["cpu_s"]) | {
        "before": pref_before,
        "after": evaluation.preference_accuracy(plain.lm, prefs, "cpu")["preference_accuracy"],
    }
    out["pretrain"]["unigram"] = unigram_entropy(plain)
    return out


def unigram_entropy(plain: Plain) -> float:
    """Cross-entropy of validation tokens under train-token frequencies (add-one), nats."""
    counts = torch.ones(len(plain.tok))
    for r in plain.split("pretrain", "train"):
        counts += torch.bincount(torch.tensor(plain.encode(r["text"] + "<eos>")), minlength=len(plain.tok))
    logp = torch.log(counts / counts.sum())
    val = [t for r in plain.split("pretrain", "validation") for t in plain.encode(r["text"] + "<eos>")]
    return round(float(-logp[torch.tensor(val)].mean()), 4)


def main(quick: bool = False, rounds: int = 1) -> dict:
    from benchmarks.overhead import with_server

    overrides = QUICK if quick else []
    cfg = load_config("tiny", overrides)
    runs = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as scratch:
            chain = with_server(lambda home=home: lmpipe_chain(overrides, Path(home)))
            start = time.perf_counter()
            plain = plain_chain(chain, cfg, Path(scratch))
            runs.append(
                {
                    "lmpipe": lmpipe_figures(chain),
                    "plain": plain,
                    "cpu_s": {s: round(chain[s]["cpu_s"], 1) for s in ("pretrain", "sft", "dpo")},
                    "plain_wall_s": round(time.perf_counter() - start, 1),
                }
            )
    data = {"config": "tiny", "overrides": overrides, "rounds": runs}
    save_results("learning-quick" if quick else "learning", data, markdown(runs))
    return data


def markdown(runs: list[dict]) -> str:
    rows = []
    for k, r in enumerate(runs, 1):
        lm, pl, sec = r["lmpipe"], r["plain"], r["cpu_s"]
        rows.append(
            f"| {k} | pretrain val loss (unigram) | {lm['pretrain']['val_loss']} ({lm['pretrain']['unigram']}) | {pl['pretrain']['val_loss']} ({pl['pretrain']['unigram']}) | {sec['pretrain']:.0f} s |"
        )
        for metric in lm["sft"]["after"]:
            rows.append(
                f"| {k} | sft {metric}, before -> after | {lm['sft']['before'][metric]:.1f} -> {lm['sft']['after'][metric]:.1f} | {pl['sft']['before'].get(metric, math.nan):.1f} -> {pl['sft']['after'].get(metric, math.nan):.1f} | {sec['sft']:.0f} s |"
            )
        rows.append(
            f"| {k} | dpo preference accuracy, before -> after | {lm['dpo']['before']} -> {lm['dpo']['after']} | {pl['dpo']['before']} -> {pl['dpo']['after']} | {sec['dpo']:.0f} s |"
        )
    return (
        "# Learning: lmpipe against plain libraries\n\nThe tiny preset's chain against tokenizers + transformers + "
        "a bare PyTorch loop + TRL's DPOTrainer on the same corpus records, each plain stage trained for the "
        "CPU seconds lmpipe's stage flow took (its evaluations included); both scored on the same validation records with the same metric code.\n\n"
        "| round | figure | lmpipe | plain | CPU seconds per side |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


if __name__ == "__main__":
    n = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 1
    print(json.dumps(main(quick="--quick" in sys.argv, rounds=n)["rounds"][-1], indent=1, default=str)[:3000])
