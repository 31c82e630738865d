"""Heads stage: task heads fine-tuned from the masked-LM encoder, each judged against a baseline.

For every head in `cfg.heads` (tasks.heads_data builds the examples from the corpus): encode
the records (too long or unlabelable ones go to `rejects.jsonl` with the reason), write them as
Arrow (`data/<head>-<split>.arrow`), fine-tune a copy of the encoder with the head on top
(first-token classifier, per-token classifier, or start/end span scorer) in the shared loop,
and score it on validation before and after, next to its trivial baseline:

    sequence  accuracy, macro F1       baseline: the training split's majority class
    token     accuracy, macro F1       baseline: the majority tag, on every scored token
    span      exact match, token F1    baseline: the span made of the first context token

Each head is a checkpoint directory (`<head>/`: weights, config with label names, tokenizer,
`head.json`) that `lmpipe predict` reads. A head that finished before a kill is kept as is
when the stage resumes; the one in progress resumes from its last step (tasks.training).
"""

import json
from pathlib import Path

import pyarrow as pa
import torch

from schemas.heads import KINDS, HeadsConfig
from schemas.manifest import ContractResult
from schemas.shards import IGNORE_INDEX
from schemas.tokens import PAD, SEP, token_id
from tasks import evaluation, heads_data, heads_model, packing, tokenizer_file, training
from tasks.checkpoints import no_pickle
from tasks.contracts import require, run_suite
from tasks.shard_chunks import read_split

REJECTS = "rejects.jsonl"
PRIMARY = {"sequence": "accuracy", "token": "accuracy", "span": "f1"}


class SpanLoss(torch.nn.Module):
    """The QA model with the loop's calling convention: `labels` = [[start, end], ...]."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels, **_):
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            start_positions=labels[:, 0],
            end_positions=labels[:, 1],
        )


def examples(
    head: str, tok, corpus: Path, cfg: HeadsConfig, rejects
) -> tuple[list[str], dict[str, pa.Table]]:
    """(label names, {split: example table}); records that cannot be examples go to `rejects`."""
    data = next((d for d in cfg.data if d.name == head), None)
    records, bad = {}, []
    for split, limit in (("train", cfg.train_examples), ("validation", cfg.eval_examples)):
        if data is None:
            # A uniform sample (hashed-id order): corpus order groups records by source.
            rows = heads_data.RECORDS[head](read_split(corpus, heads_data.CORPUS_TASK[head], split))
            records[split] = heads_data.sample(rows, limit)
        else:  # the user's files, in file order
            rows, rejected = heads_data.user_records(data, split)
            heads_data.check_reject_rate(data, split, len(rows), rejected)
            records[split] = rows[:limit]
            bad += [{"split": split, **r} for r in rejected]
    labels = heads_data.label_names(head, records["train"], data)
    kind = data.kind if data else KINDS[head]
    tables = {}
    for split, recs in records.items():
        rows = []
        for r in recs:
            row, why = heads_data.encode(kind, tok, r, labels)
            if row is not None and len(row["input_ids"]) > cfg.max_len:
                row, why = None, f"too long: {len(row['input_ids'])} tokens > max_len {cfg.max_len}"
            if row is None:
                where = {"file": r["file"], "line": r["line"]} if data else {}
                bad.append({"split": split, "id": r["id"], **where, "reason": why})
            else:
                rows.append(row)
        tables[split] = pa.Table.from_pylist(rows, schema=heads_data.EXAMPLE_SCHEMA)
        if not rows:
            raise ValueError(f"head {head!r}: no usable {split} example (see {REJECTS})")
    for r in bad:
        rejects.write(json.dumps({"head": head, **r}, ensure_ascii=False) + "\n")
    return labels, tables


def batch(table: pa.Table, rows: list[int], kind: str) -> training.Batch:
    """Right-padded ids and mask; labels per example (sequence, span) or per token (token)."""
    cols = table.take(rows).select(["input_ids", "labels"]).to_pydict()
    width = max(len(x) for x in cols["input_ids"])

    def fill(seqs, value):
        return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)

    labels = (
        torch.tensor(cols["labels"], dtype=torch.long)
        if kind != "token"
        else fill(cols["labels"], IGNORE_INDEX)
    )
    return {
        "input_ids": fill(cols["input_ids"], token_id(PAD)),
        "attention_mask": fill([[1] * len(x) for x in cols["input_ids"]], 0),
        "labels": labels[:, 0] if kind == "sequence" else labels,
    }


def is_pair(kind: str, train: pa.Table) -> bool:
    """A sentence-pair head: its sequence examples hold the `<sep>` between the two texts."""
    return kind == "sequence" and token_id(SEP) in train["input_ids"][0].as_py()


def length_buckets(table: pa.Table) -> list[int]:
    return [len(x) // 32 for x in table["input_ids"].to_pylist()]


@torch.no_grad()
def predict(model, kind: str, table: pa.Table, device, batch_size: int = 32) -> list:
    """Per example: a class id (sequence), a tag id per token (token), (start, end) (span)."""
    model.to(device).eval()
    out: list = []
    ctx = table["context_start"].to_pylist()
    for k in range(0, table.num_rows, batch_size):
        rows = list(range(k, min(k + batch_size, table.num_rows)))
        b = batch(table, rows, kind)
        lengths = b["attention_mask"].sum(-1).tolist()
        result = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device))
        if kind == "sequence":
            out += result.logits.argmax(-1).tolist()
        elif kind == "token":
            out += [p[:n] for p, n in zip(result.logits.argmax(-1).tolist(), lengths, strict=True)]
        else:
            for i, n in zip(rows, lengths, strict=True):
                out.append(
                    heads_model.best_span(result.start_logits[i - k], result.end_logits[i - k], ctx[i], n - 1)
                )
    model.train()
    return out


def macro_f1(pred: list[int], gold: list[int]) -> float:
    """Mean over the gold classes of each class's F1: `macro_f1([0, 1, 1], [0, 1, 0])` is 0.667."""
    scores = []
    for c in sorted(set(gold)):
        tp = sum(p == c and g == c for p, g in zip(pred, gold, strict=True))
        n_pred, n_gold = sum(p == c for p in pred), sum(g == c for g in gold)
        scores.append(2 * tp / (n_pred + n_gold) if n_pred + n_gold else 0.0)
    return sum(scores) / len(scores)


def scores(kind: str, preds: list, table: pa.Table, tok) -> dict:
    """Accuracy + macro F1 (classes), or exact match + token F1 of the decoded spans (0-100)."""
    labels = table["labels"].to_pylist()
    if kind == "span":
        ids = table["input_ids"].to_pylist()
        hyps = [tok.decode(x[s : e + 1]) for x, (s, e) in zip(ids, preds, strict=True)]
        refs = [tok.decode(x[s : e + 1]) for x, (s, e) in zip(ids, labels, strict=True)]
        return {k: round(v, 2) for k, v in evaluation.qa_scores(hyps, refs).items()}
    if kind == "token":
        pairs = [(p, g) for ps, gs in zip(preds, labels, strict=True) for p, g in zip(ps, gs, strict=True)]
        preds, gold = [p for p, g in pairs if g != IGNORE_INDEX], [g for p, g in pairs if g != IGNORE_INDEX]
    else:
        gold = [g[0] for g in labels]
    accuracy = sum(p == g for p, g in zip(preds, gold, strict=True)) / len(gold)
    return {"accuracy": round(accuracy, 4), "macro_f1": round(macro_f1(preds, gold), 4)}


def baseline(kind: str, train: pa.Table, val: pa.Table) -> list:
    """The trivial predictions: majority class / majority tag / first context token as the span."""
    if kind == "span":
        return [(c, c) for c in val["context_start"].to_pylist()]
    scored = [x for row in train["labels"].to_pylist() for x in row if x != IGNORE_INDEX]
    majority = max(set(scored), key=scored.count)
    if kind == "sequence":
        return [majority] * val.num_rows
    return [[majority] * len(x) for x in val["input_ids"].to_pylist()]


def train_head(
    head: str,
    kind: str,
    labels: list[str],
    data: dict[str, pa.Table],
    cfg: HeadsConfig,
    inputs,
    out: Path,
    runtime: training.Runtime,
) -> dict:
    """Fine-tune one head into `out`; returns its metrics (kept from a finished earlier run)."""
    if (out / "README.md").is_file():  # written last by training.finish: this head is done
        return json.loads((out / "metrics.json").read_text())
    tok = tokenizer_file.load(inputs["tokenizer"])
    train, val = data["train"], data["validation"]
    model = heads_model.new_head(kind, inputs["encoder"], labels)
    before = training.cached_json(
        out / training.RESUME / "before.json",
        lambda: scores(kind, predict(model, kind, val, runtime.device), val, tok),
    )
    buckets = length_buckets(train)
    stream = training.Stream(
        lambda epoch: packing.bucket_batches(buckets, cfg.batch_size, cfg.seed, epoch),
        lambda rows, k: batch(train, rows, kind),
    )
    trained = SpanLoss(model) if kind == "span" else model
    own = cfg.for_head(head)
    history = training.fit(trained, stream, own, runtime, out, inputs, f"heads-{head}")
    after = scores(kind, predict(model, kind, val, runtime.device), val, tok)
    base = scores(kind, baseline(kind, train, val), val, tok)
    primary = PRIMARY[kind]
    metrics = {
        "kind": kind,
        "labels": labels,
        "train_examples": train.num_rows,
        "val_examples": val.num_rows,
        "steps": own.max_steps,
        "lr": own.lr,
        "train_loss": round(sum(h["loss"] for h in history[-10:]) / len(history[-10:]), 4),
        "before": before,
        "val": after,
        "baseline": base,
        "primary": primary,
        "beats_baseline": after[primary] > base[primary],
    }
    (out / heads_model.HEAD_FILE).write_text(
        json.dumps({"head": head, "kind": kind, "pair": is_pair(kind, train), "labels": labels}) + "\n"
    )
    card = training.model_card(f"heads/{head}", metrics, own, inputs, heads_model.AUTO[kind])
    training.finish(out, model, inputs["tokenizer"], history, metrics, card)
    return metrics


def build(cfg: HeadsConfig, inputs: dict[str, Path], out: Path) -> dict:
    runtime = training.setup(cfg)
    tok = tokenizer_file.load(inputs["tokenizer"])
    (out / "data").mkdir(exist_ok=True)
    stats: dict = {"heads": {}, "rejected": {}}
    with open(out / REJECTS, "w", encoding="utf-8") as rejects:
        for head, kind in cfg.kinds().items():
            labels, data = examples(head, tok, inputs["corpus"], cfg, rejects)
            for split, table in data.items():
                write_table(table, out / "data" / f"{head}-{split}.arrow")
            torch.manual_seed(cfg.seed)  # each head starts from the same seed, whatever ran before
            stats["heads"][head] = train_head(head, kind, labels, data, cfg, inputs, out / head, runtime)
    for line in (out / REJECTS).read_text().splitlines():
        head = json.loads(line)["head"]
        stats["rejected"][head] = stats["rejected"].get(head, 0) + 1
    stats["vocab_size"] = tok.get_vocab_size()
    return stats


def write_table(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def read_table(path: Path) -> pa.Table:
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def validate(cfg: HeadsConfig, inputs: dict[str, Path], out: Path, stats: dict) -> list[ContractResult]:
    from schemas.contracts import shard_suite

    results = []
    for head, metrics in stats["heads"].items():
        for split in ("train", "validation"):
            table = read_table(out / "data" / f"{head}-{split}.arrow")
            summary, bad = example_problems(metrics["kind"], table, len(metrics["labels"]))
            results.append(
                run_suite(f"heads/{head}-{split}", summary, shard_suite(stats["vocab_size"], unique_ids=True))
            )
            results.append(
                require(f"heads/{head}-{split}-labels", bad, table.num_rows, LABEL_RULES[metrics["kind"]])
            )
        results.append(no_pickle(out / head))
        results.append(reloads(out / head, metrics["kind"]))
    if cfg.require_baseline:
        worse = [
            f"{h}: {m['primary']} {m['val'][m['primary']]} <= baseline {m['baseline'][m['primary']]}"
            for h, m in stats["heads"].items()
            if not m["beats_baseline"]
        ]
        results.append(
            require(
                "heads/beat-baseline",
                worse,
                len(stats["heads"]),
                "each head beats its trivial baseline on validation",
            )
        )
    return results


LABEL_RULES = {
    "sequence": "one label per example, a class id in range",
    "token": "one label per token, each -100 or a tag id in range, at least one labelled token",
    "span": "start <= end, both inside the context (after <sep>, before the final <eos>)",
}


def example_problems(kind: str, table: pa.Table, n_labels: int) -> tuple:
    """Per-example summary for the GX suite, and the exact label violations, by id."""
    import pandas as pd

    summary, bad = [], []
    for row in table.to_pylist():
        ids, labels = row["input_ids"], row["labels"]
        scored = [x for x in labels if x != IGNORE_INDEX]
        summary.append({"id": row["id"], "min_id": min(ids), "max_id": max(ids), "n_loss": len(scored)})
        if kind == "span":
            s, e = labels
            ok = len(labels) == 2 and row["context_start"] <= s <= e < len(ids) - 1
        elif kind == "token":
            ok = len(labels) == len(ids) and bool(scored) and all(0 <= x < n_labels for x in scored)
        else:
            ok = len(labels) == 1 and 0 <= labels[0] < n_labels
        if not ok:
            bad.append(f"id={row['id']}: labels {labels[:8]} (input length {len(ids)})")
    return pd.DataFrame(summary, columns=["id", "min_id", "max_id", "n_loss"]), bad


def reloads(directory: Path, kind: str) -> ContractResult:
    """The published head loads with its Auto class (no remote code) and gives finite scores."""
    import transformers

    model = getattr(transformers, heads_model.AUTO[kind]).from_pretrained(directory, use_safetensors=True)
    with torch.no_grad():
        result = model(input_ids=torch.tensor([[1, 20, 30, 40, 2]]))
    logits = result.logits if kind != "span" else torch.cat([result.start_logits, result.end_logits])
    bad = [] if torch.isfinite(logits).all() else [f"{directory.name}: non-finite outputs"]
    return require(f"heads/{directory.name}-loads", bad, 1, "reloads with finite outputs")
