"""Inference from a published checkpoint directory and its tokenizer: `lmpipe generate` / `predict`.

generate (decoders and encoder-decoders): the prompt is built from the task's template, so
`--task translate` gives `<bos> text <to-fr>` with the control token inserted by id (a user
never types it, and a literal "<to-fr>" in the text stays text). Greedy or sampled
(temperature, top-k, seeded), one token at a time, streamed to the console, stopping at
`<eos>`. Without `--task` the text is continued as is (`<bos> text`).

    lmpipe generate checkpoints/sft/tiny-<fp> "Save changes" --task translate
    lmpipe generate checkpoints/seq2seq/tiny-<fp> --file docs.txt --task summarize --sample

predict (encoder heads, checkpoints/heads/<name>/<head>): one JSON line per input, e.g.
`{"label": "translation", "score": 0.93}`, `{"tokens": [...], "tags": [...]}`,
`{"answer": "...", "start": 14, "end": 19}`. Inputs are text lines, or JSON lines with the
head's fields (`text`, `text_pair`; `question`, `context`).
"""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from schemas.templates import GENERATE_TASKS, PRETRAIN, SFT_TEMPLATES
from schemas.tokens import BOS, EOS, token_id
from tasks import heads_data, heads_model, seq2seq_model, tokenizer_file
from tasks.evaluation import repeated_ngram_tokens
from tasks.shard_chunks import encode_template


class InputError(ValueError):
    """Inputs that cannot be used; the message names the file and line."""


def read_inputs(text: str | None, file: Path | None) -> list:
    """The inputs, one per non-empty line of `file` (a JSON object where the line is one), or `text`."""
    if (text is None) == (file is None):
        raise InputError("give either a text or --file, not both")
    if text is not None:
        return [text]
    items = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"{file}:{n}: not valid JSON: {e}") from None
        else:
            items.append(line)
    if not items:
        raise InputError(f"{file}: no inputs (every line is empty)")
    return items


def fields_of(item, names: list[str], where: str) -> dict:
    """A template's fields from a plain text (single-field templates) or a JSON object."""
    if isinstance(item, str) and len(names) == 1:
        return {names[0]: item}
    missing = [n for n in names if not isinstance(item, dict) or not isinstance(item.get(n), str)]
    if missing:
        raise InputError(f"{where}: needs a JSON object with text fields {names}; missing {missing}")
    return {n: item[n] for n in names}


def prompt_ids(tok, item, task: str | None, where: str = "input") -> list[int]:
    """`<bos> text` to continue, or the task template's prompt: `<bos> text <to-fr>`."""
    parts = SFT_TEMPLATES[GENERATE_TASKS[task]].prompt if task else PRETRAIN.prompt + ("{text}",)
    names = [p[1:-1] for p in parts if p.startswith("{")]
    return encode_template(tok, parts, [fields_of(item, names, where)])[0]


def load_generator(directory: Path):
    """(model, tokenizer) of a decoder or seq2seq checkpoint."""
    tok = tokenizer_file.load(directory)
    if (directory / seq2seq_model.SPEC).is_file():
        return seq2seq_model.load(directory), tok
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{directory}: not a checkpoint directory (no config.json or {seq2seq_model.SPEC})"
        )
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(directory, use_safetensors=True).eval(), tok


def next_logits(
    model, prompt: list[int], device, cache: bool = True
) -> tuple[list[int], Callable[[list[int]], torch.Tensor]]:
    """(starting ids, ids -> logits of the next token). A seq2seq model encodes the prompt once
    and decodes from `<bos>`; a decoder continues the prompt itself. With `cache` the decoder's
    keys and values (transformers 5's `cache`, formerly `past_key_values`) are kept, so each
    call after the first runs only the tokens it has not seen; without it every call
    recomputes the whole sequence."""
    if hasattr(model, "encode"):
        ids = torch.tensor([prompt], device=device)
        memory = model.encode(ids, torch.ones_like(ids))
        start = [token_id(BOS)]

        def run(new, past):
            return model.decode(memory, new, cache=past, use_cache=cache)
    else:
        start = list(prompt)

        def run(new, past):
            return model(input_ids=new, cache=past, use_cache=cache)

    state = {"past": None, "seen": 0}

    def logits_of(seq: list[int]) -> torch.Tensor:
        out = run(torch.tensor([seq[state["seen"] :]], device=device), state["past"])
        if cache:
            state["past"], state["seen"] = out.cache, len(seq)
        return out.logits[0, -1]

    return start, logits_of


@torch.no_grad()
def complete(
    model,
    prompt: list[int],
    max_new: int,
    device,
    temperature: float = 0.0,
    top_k: int = 0,
    generator=None,
    cache: bool = True,
) -> Iterator[int]:
    """New token ids one by one, up to and including `<eos>`. temperature 0 is greedy. Like the
    evaluation's decoding, the answer never repeats a 3-gram of its own (evaluation.NO_REPEAT_NGRAM)."""
    model.to(device).eval()
    seq, logits_of = next_logits(model, prompt, device, cache)
    answer_start = len(seq)
    for _ in range(max_new):
        logits = logits_of(seq).float()
        if banned := repeated_ngram_tokens(seq[answer_start:]):
            logits[sorted(banned)] = float("-inf")
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            if top_k:
                logits[logits < logits.topk(min(top_k, len(logits))).values[-1]] = float("-inf")
            probs = torch.softmax(logits / temperature, -1)
            nxt = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        yield nxt
        if nxt == token_id(EOS):
            return
        seq.append(nxt)


def stream_text(tok, tokens: Iterator[int], write: Callable[[str], object]) -> list[int]:
    """Write the decoded text as tokens arrive (held back while a character is incomplete)."""
    ids, shown = [], ""
    for t in tokens:
        ids.append(t)
        text = tok.decode(ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):
            write(text[len(shown) :])
            shown = text
    return ids


def load_head(directory: Path):
    """(model, tokenizer, head.json) of one published head."""
    import transformers

    spec_file = directory / heads_model.HEAD_FILE
    if not spec_file.is_file():
        raise FileNotFoundError(
            f"{directory}: not an encoder head (no {heads_model.HEAD_FILE}); heads live in checkpoints/heads/<name>/<head>"
        )
    spec = json.loads(spec_file.read_text())
    auto = getattr(transformers, heads_model.AUTO[spec["kind"]])
    return auto.from_pretrained(directory, use_safetensors=True).eval(), tokenizer_file.load(directory), spec


@torch.no_grad()
def predict_one(model, tok, spec: dict, item, where: str = "input") -> dict:
    """One prediction as a JSON-able dict (see the module docstring)."""
    kind = spec["kind"]
    if kind == "sequence":
        f = fields_of(item, ["text", "text_pair"] if spec["pair"] else ["text"], where)
        ids = heads_data.encode_sequence(tok, f["text"], f.get("text_pair"))
        probs = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0], -1)
        return {"label": spec["labels"][int(probs.argmax())], "score": round(float(probs.max()), 4)}
    if kind == "token":
        words = fields_of(item, ["text"], where)["text"].split()
        ids, firsts = heads_data.encode_words(tok, words)
        tags = model(input_ids=torch.tensor([ids])).logits[0].argmax(-1).tolist()
        return {"tokens": words, "tags": [spec["labels"][tags[i]] for i in firsts]}
    f = fields_of(item, ["question", "context"], where)
    ids, ctx, offsets = heads_data.encode_question(tok, f["question"], f["context"])
    out = model(input_ids=torch.tensor([ids]))
    s, e = heads_model.best_span(out.start_logits[0], out.end_logits[0], ctx, len(ids) - 1)
    start, end = offsets[s - ctx][0], offsets[e - ctx][1]
    return {"answer": f["context"][start:end].strip(), "start": start, "end": end}
