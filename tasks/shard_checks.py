"""The shards stage's contracts: a GX suite on per-row summaries, and exact layout checks.

Each row of a shard is summarised (min/max token id, loss tokens) for the great-expectations
suite, run shard by shard, and checked exactly against the layout its kind promises
(_LAYOUT_RULES); example ids are unique across the split (64-bit hashes, then the ids). A
violation names the row's id and what is wrong, and blocks publication.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import xxhash

from schemas.contracts import shard_suite
from schemas.manifest import ContractResult
from schemas.shards import IGNORE_INDEX, ShardsConfig
from schemas.templates import PREFERENCE_PROMPT
from schemas.tokens import BOS, EOS, PROMPT, token_id
from tasks import instruct
from tasks.contracts import ContractError, require, run_suite
from tasks.corpus_dedup import member, repeated
from tasks.shard_reading import read_shard


def check(cfg: ShardsConfig, shards: dict[str, list[Path]], vocab: int, work: Path) -> list[ContractResult]:
    """The GX suite (shard by shard), unique ids and the layout check of each kind's shards (the
    stage passes its training split's files). The shards are read one at a time, memory-mapped:
    memory holds one shard's summary; the id check sorts id hashes a partition at a time in
    files under `work`."""
    results = []
    for kind, paths in shards.items():
        bad, rows = [], 0
        for path in paths:
            summaries = []  # Python lists of a few rows at a time:
            for batch in read_shard(path).to_batches(max_chunksize=256):
                summary, problems = check_rows(kind, batch.to_pylist(), cfg, first=rows)
                summaries.append(summary)
                bad += problems
                rows += len(summary)
            if summaries:  # an empty shard has no batch
                run_suite(f"shards/{kind}", pd.concat(summaries, ignore_index=True), shard_suite(vocab))
        if not rows:  # GX would pass on nothing; say which corpus records were missing
            raise ContractError(
                f"contract shards/{kind} failed: its training split holds no rows: the corpus gave no "
                f"training records of task {FROM_TASKS[kind]} (or all were too long for shards.max_len); "
                f"the stages that train on {kind} shards need them: add such a source to corpus.sources"
            )
        results.append(ContractResult(name=f"shards/{kind}", success=True, checked=rows))
        if kind in ("sft", "dpo"):  # their rows are examples, named by id
            repeated = _repeated_ids(paths, rows, work)
            results.append(require(f"shards/{kind}-ids", repeated, rows, "each example id once"))
        results.append(require(f"shards/{kind}-layout", bad, rows, _LAYOUT_RULES[kind]))
    return results


def _ids(path: Path) -> tuple[list[str], np.ndarray]:
    """One shard's example ids and their 64-bit hashes."""
    ids = read_shard(path).column("id").to_pylist()
    return ids, np.fromiter(
        (xxhash.xxh3_64_intdigest(i.encode("utf-8", "surrogatepass")) for i in ids), np.uint64, len(ids)
    )


def _repeated_ids(paths: list[Path], rows: int, work: Path) -> list[str]:
    """Ids that occur more than once, with the shards that hold them: the hashes that repeat
    first, a partition at a time on disk (corpus_dedup.repeated, as the corpus stage's id check
    finds them), then the ids behind those hashes."""
    work.mkdir(parents=True, exist_ok=True)
    twice = repeated((_ids(path)[1] for path in paths), rows, work)
    if not len(twice):
        return []
    shards: dict[str, list[str]] = {}  # id -> the shard of each of its rows
    for path in paths:
        ids, hashes = _ids(path)
        for i in np.flatnonzero(member(twice, hashes)).tolist():
            shards.setdefault(ids[i], []).append(path.name)
    return [
        f"id={i}: {len(names)} rows, in {', '.join(dict.fromkeys(names))}"
        for i, names in shards.items()
        if len(names) > 1
    ]


FROM_TASKS = {  # the corpus tasks each kind of shard is made of
    "pretrain": "pretrain",
    "sft": "translation, summarization or qa",
    "dpo": "preference",
    "sft_packed": "translation, summarization or qa",
}

_LAYOUT_RULES = {
    "pretrain": "position ids restart at each document; no loss on document starts or padding",
    "sft": "<bos> first, task token (or <prompt> ... <answer>) ends the prompt, loss only on the answer, ending with <eos>",
    "dpo": "prompt <bos> ... <answer>; both completions non-empty, end with <eos>, and differ",
    "sft_packed": "positions restart at each example; each example is a valid SFT example; no loss on padding",
}


def check_rows(
    kind: str, rows: list[dict], cfg: ShardsConfig, first: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    """Per-row summary for the GX suite, and exact layout violations. Rows without an id (packed
    rows) are named by their number in the split, counting from `first` for this batch."""
    summary, bad = [], []
    for i, row in enumerate(rows):
        rid = row.get("id", f"row {first + i}")
        if kind == "dpo":
            ids = row["prompt_ids"] + row["chosen_ids"] + row["rejected_ids"]
            n_loss = min(len(row["chosen_ids"]), len(row["rejected_ids"]))
            problem = _dpo_problem(row)
        else:
            ids, n_loss = row["input_ids"], sum(x != IGNORE_INDEX for x in row["labels"])
            problem = _row_problem(kind, row, cfg)
        summary.append({"id": rid, "min_id": min(ids), "max_id": max(ids), "n_loss": n_loss})
        if problem:
            bad.append(f"id={rid}: {problem}")
    return pd.DataFrame(summary, columns=["id", "min_id", "max_id", "n_loss"]), bad


def _row_problem(kind: str, row: dict, cfg: ShardsConfig) -> str:
    if kind == "pretrain":
        return _pretrain_problem(row, cfg.seq_len)
    return sft_packed_problem(row, cfg.max_len) if kind == "sft_packed" else _sft_problem(row)


def _positions_problem(row: dict, seq_len: int) -> str:
    if len(row["input_ids"]) != seq_len or sum(row["doc_lens"]) != seq_len:
        return f"row length {len(row['input_ids'])}, doc_lens sum {sum(row['doc_lens'])}, seq_len {seq_len}"
    expected_pos = np.concatenate([np.arange(n) for n in row["doc_lens"]])
    if not np.array_equal(expected_pos, row["position_ids"]):
        return "position ids do not restart at each document"
    return ""


def _pretrain_problem(row: dict, seq_len: int) -> str:
    if problem := _positions_problem(row, seq_len):
        return problem
    starts = np.cumsum([0] + row["doc_lens"][:-1])
    if any(row["labels"][s] != IGNORE_INDEX for s in starts):
        return "a document's first token carries loss (cross-document prediction)"
    if any(x != IGNORE_INDEX for x in row["labels"][row["n_tokens"] :]):
        return "loss on padding"
    return ""


def sft_packed_problem(row: dict, row_len: int) -> str:
    """Positions reset per example, and every packed example passes the single-example checks."""
    if problem := _positions_problem(row, row_len):
        return problem
    start = 0
    for rid, task, n in zip(row["ids"], row["tasks"], row["doc_lens"], strict=False):  # padding: no id
        end = start + n
        example = {"input_ids": row["input_ids"][start:end], "labels": row["labels"][start:end], "task": task}
        if problem := _sft_problem(example):
            return f"example {rid}: {problem}"
        start = end
    if any(x != IGNORE_INDEX for x in row["labels"][row["n_tokens"] :]):
        return "loss on padding"
    return ""


def _sft_problem(row: dict) -> str:
    ids, labels = row["input_ids"], row["labels"]
    first = next((i for i, x in enumerate(labels) if x != IGNORE_INDEX), None)
    if first is None:
        return "no loss token"
    if ids[0] != token_id(BOS) or ids[-1] != token_id(EOS) or labels[-1] != token_id(EOS):
        return "does not start with <bos> and end with a scored <eos>"
    fmt = "instruct" if ids[1] == token_id(PROMPT) else "task"  # packed rows carry no format column
    if ids[first - 1] != token_id(instruct.template(row["task"], fmt).prompt[-1]):
        return f"token before the answer is {ids[first - 1]}, not the end of the {fmt} template's prompt"
    if any(x != IGNORE_INDEX for x in labels[:first]) or labels[first:] != ids[first:]:
        return "labels are not -100 on the prompt and the tokens themselves on the answer"
    return ""


def _dpo_problem(row: dict) -> str:
    p, c, r = row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]
    if p[0] != token_id(BOS) or p[-1] != token_id(PREFERENCE_PROMPT[-1]):
        return "prompt does not start with <bos> and end with <answer>"
    if len(c) < 2 or len(r) < 2 or c[-1] != token_id(EOS) or r[-1] != token_id(EOS):
        return "a completion is empty or does not end with <eos>"
    if c == r:
        return "chosen equals rejected"
    return ""
