"""Evaluation of trained models beyond the loss: generation metrics and preference accuracy.

SFT: greedy generation on validation prompts, stopping at `<eos>`, scored per task with
chrF and BLEU (translation, sacrebleu), ROUGE-L (summarization, rouge-score), exact match and
token F1 (QA, SQuAD normalization). Example, translation: prompt `<bos> Hello <to-fr>`,
reference "Bonjour", hypothesis "Bonjour" -> chrF 100.

Decoding is greedy, except that the answer may not repeat a 3-gram of its own
(`NO_REPEAT_NGRAM`): a small model's greedy output falls into loops otherwise.

DPO: preference accuracy, the share of validation pairs where the model gives the chosen
completion a higher log-probability per token than the rejected one, and the mean margin.
"""

import collections
import logging
import re
import string
from pathlib import Path

import pyarrow as pa
import torch

from schemas.manifest import ContractResult
from schemas.shards import IGNORE_INDEX
from schemas.tokens import EOS, PAD, token_id
from tasks.contracts import require
from tasks.tokenizer_file import load as load_tokenizer

log = logging.getLogger(__name__)


def generation_set(table: pa.Table, per_task: int) -> dict[str, list[tuple[list[int], list[int]]]]:
    """Per task, up to `per_task` (prompt ids, reference ids) spread evenly over the split."""
    cols = table.select(["task", "input_ids", "labels"]).to_pydict()
    return {
        task: [_split_prompt(cols["input_ids"][i], cols["labels"][i]) for i in rows]
        for task, rows in generation_rows(cols["task"], per_task).items()
    }


def generation_rows(tasks: list[str], per_task: int) -> dict[str, list[int]]:
    """Per task (sorted), up to `per_task` row numbers spread evenly over the rows of that task:
    `generation_rows(["a", "b", "a", "a"], 2) == {"a": [0, 2], "b": [1]}`."""
    by_task: dict[str, list[int]] = collections.defaultdict(list)
    for i, task in enumerate(tasks):
        by_task[task].append(i)
    return {task: rows[:: max(1, len(rows) // per_task)][:per_task] for task, rows in sorted(by_task.items())}


def _split_prompt(ids: list[int], labels: list[int]) -> tuple[list[int], list[int]]:
    first = next(i for i, x in enumerate(labels) if x != IGNORE_INDEX)
    return ids[:first], [x for x in ids[first:] if x != token_id(EOS)]


# Greedy decoding of a small model loops ("Return the the the ..."); forbidding the answer to
# repeat a 3-gram of its own stops that. Measured on the tiny preset's SFT checkpoint (48
# validation rows per task): translation chrF 9.3 -> 11.0, summarization ROUGE-L 3.7 -> 7.8,
# <eos> reached 14-90% -> 96-100%. Only the answer counts: n-grams of the prompt may be copied
# (QA answers are spans of the context; names and placeholders carry over in translation),
# which transformers' own `no_repeat_ngram_size` would forbid.
NO_REPEAT_NGRAM = 3


def repeated_ngram_tokens(answer: list[int], n: int = NO_REPEAT_NGRAM) -> set[int]:
    """Next tokens that would repeat an n-gram already in `answer`: ([5, 6, 7, 5, 6], 3) -> {7}."""
    if n < 2 or len(answer) < n - 1:
        return set()
    tail = answer[len(answer) - n + 1 :]
    return {answer[i + n - 1] for i in range(len(answer) - n + 1) if answer[i : i + n - 1] == tail}


def no_repeat_in_answer(start: int):
    """A transformers logits processor applying `repeated_ngram_tokens` to the ids after `start`."""
    from transformers import LogitsProcessor, LogitsProcessorList

    class NoRepeatInAnswer(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            for row, answer in enumerate(input_ids[:, start:].tolist()):
                if banned := repeated_ngram_tokens(answer):
                    scores[row, sorted(banned)] = float("-inf")
            return scores

    return LogitsProcessorList([NoRepeatInAnswer()])


@torch.no_grad()
def generate(model, prompts: list[list[int]], max_new: int, device, batch_size: int = 16) -> list[list[int]]:
    """Greedy continuations without self-repeats (left-padded batches of similar length), cut at
    `<eos>` inclusive."""
    model.to(device).eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    pad, eos = token_id(PAD), token_id(EOS)
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in idx], device=device)
        mask = torch.tensor(
            [[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in idx], device=device
        )
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
            use_cache=True,
            logits_processor=no_repeat_in_answer(width),
        )
        for i, row in zip(idx, gen[:, width:].tolist(), strict=True):
            out[i] = row[: row.index(eos) + 1] if eos in row else row
    model.train()
    return out


def generation_metrics(
    model, tokenizer_dir: Path, table: pa.Table, per_task: int, max_new: int, device, generate_fn=None
) -> dict:
    """{task: {metric: value}} plus the share of generations that stopped at <eos>.

    `generate_fn(model, prompts, max_new, device)` defaults to `generate` (decoder-only);
    tasks.seq2seq passes its own, so both kinds are scored on the same rows the same way.
    """
    tok = load_tokenizer(tokenizer_dir)
    results = {}
    for task, pairs in generation_set(table, per_task).items():
        gens = (generate_fn or generate)(model, [p for p, _ in pairs], max_new, device)
        hyps = [tok.decode(g, skip_special_tokens=True).strip() for g in gens]
        refs = [tok.decode(r, skip_special_tokens=True).strip() for _, r in pairs]
        scores = SCORERS[task](hyps, refs)
        scores["eos_rate"] = sum(bool(g) and g[-1] == token_id(EOS) for g in gens) / len(gens)
        results[task] = {k: round(v, 4) for k, v in scores.items()}
    return results


def translation_scores(hyps: list[str], refs: list[str]) -> dict:
    import sacrebleu

    return {
        "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
        "bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
    }


def summarization_scores(hyps: list[str], refs: list[str]) -> dict:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return {
        "rougeL": 100
        * sum(scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs, strict=True))
        / len(refs)
    }


def _normalize(text: str) -> list[str]:
    """SQuAD normalization: lower case, no punctuation or articles: "The Cat." -> ["cat"]."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def _f1(hyp: list[str], ref: list[str]) -> float:
    common = sum((collections.Counter(hyp) & collections.Counter(ref)).values())
    if not common:
        return float(hyp == ref)
    precision, recall = common / len(hyp), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def qa_scores(hyps: list[str], refs: list[str]) -> dict:
    pairs = [(_normalize(h), _normalize(r)) for h, r in zip(hyps, refs, strict=True)]
    return {
        "exact_match": 100 * sum(h == r for h, r in pairs) / len(pairs),
        "f1": 100 * sum(_f1(h, r) for h, r in pairs) / len(pairs),
    }


SCORERS = {"translation": translation_scores, "summarization": summarization_scores, "qa": qa_scores}
HEADLINE = {"translation": ("chrf", "bleu"), "summarization": ("rougeL",), "qa": ("f1", "exact_match")}


def comparison(metric: str, before: float, after: float, higher_is_better: bool) -> dict:
    """One row of a stage's evaluation table (stats "comparisons", a Prefect table artifact):
    comparison("translation chrf", 2.9, 11.4, True) -> {..., "improved": True}."""
    improved = after > before if higher_is_better else after < before
    return {"metric": metric, "before": before, "after": after, "improved": improved}


# The task metrics of SFT (task-token prompts) that `gain_check` holds to "better than before".
SFT_GAIN: tuple[str, ...] = tuple(f"{task} {metrics[0]}" for task, metrics in HEADLINE.items())


def gain_check(stats: dict, metrics: tuple[str, ...], required: bool) -> ContractResult:
    """The stage's task metrics (rows of `stats["comparisons"]`) beat the model it started from.

    A miss fails the build with the figures; with `required` false (a smoke-test budget) it is
    logged and recorded as a warning, and the contract passes:
    gain_check({"comparisons": [comparison("qa f1", 0.0, 0.0, True)]}, ("qa f1",), True)
    -> ContractError "... qa f1: 0.0 -> 0.0".
    """
    rows = [r for r in stats["comparisons"] if r["metric"] in metrics]
    figures = ", ".join(f"{r['metric']} {r['before']} -> {r['after']}" for r in rows)
    missed = [f"{r['metric']}: {r['before']} -> {r['after']} (not better)" for r in rows if not r["improved"]]
    if missed and not required:
        log.warning(f"task metrics not better than before (require_gain: false): {'; '.join(missed)}")
        details = f"warning, smoke-test budget (require_gain: false): {'; '.join(missed)}"
        return ContractResult(name="checkpoint/task-gain", success=True, checked=len(rows), details=details)
    return require("checkpoint/task-gain", missed, len(rows), f"task metrics better than before: {figures}")


def generation_comparisons(before: dict, after: dict, label: str = "") -> list[dict]:
    """chrF/BLEU, ROUGE-L, F1/EM and the <eos> rate of each task: before -> after SFT
    (`label` names a prompt format other than the task tokens, e.g. "heldout")."""
    prefix = f"{label} " if label else ""
    return [
        comparison(f"{prefix}{task} {m}", before[task][m], after[task][m], True)
        for task in after
        for m in (*HEADLINE[task], "eos_rate")
    ]


@torch.no_grad()
def completion_logprobs(
    model, prompts: list[list[int]], completions: list[list[int]], device
) -> torch.Tensor:
    """Summed log-probability of each completion given its prompt (right-padded batch)."""
    seqs = [p + c for p, c in zip(prompts, completions, strict=True)]
    width = max(map(len, seqs))
    ids = torch.tensor([s + [token_id(PAD)] * (width - len(s)) for s in seqs], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
    scored = torch.zeros_like(logp)
    for row, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        scored[row, len(p) - 1 : len(p) - 1 + len(c)] = 1
    return (logp * scored).sum(-1)


def preference_accuracy(model, table: pa.Table, device, batch_size: int = 16, limit: int = 512) -> dict:
    """Share of pairs whose chosen completion has the higher mean log-probability per token, and
    the mean per-token margin.

    Per token, because summed log-probabilities judge length, not preference: on the tiny
    preset's validation pairs the SFT model put every one of the 21 truncated-summary pairs
    (rejected = the chosen summary's first half) the wrong way round by sum and 17 the right
    way per token; accuracy 0.448 by sum, 0.667 per token.
    """
    model.to(device).eval()
    cols = table.slice(0, limit).select(["prompt_ids", "chosen_ids", "rejected_ids"]).to_pydict()
    margins = []
    for k in range(0, len(cols["prompt_ids"]), batch_size):
        p = cols["prompt_ids"][k : k + batch_size]
        chosen = completion_logprobs(model, p, cols["chosen_ids"][k : k + batch_size], device)
        rejected = completion_logprobs(model, p, cols["rejected_ids"][k : k + batch_size], device)
        chosen_n = torch.tensor([len(c) for c in cols["chosen_ids"][k : k + batch_size]], device=device)
        rejected_n = torch.tensor([len(c) for c in cols["rejected_ids"][k : k + batch_size]], device=device)
        margins += (chosen / chosen_n - rejected / rejected_n).tolist()
    model.train()
    return {
        "preference_accuracy": round(sum(m > 0 for m in margins) / len(margins), 4),
        "logprob_margin": round(sum(margins) / len(margins), 4),
        "pairs": len(margins),
    }
