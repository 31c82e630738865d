"""What a published encoder head is: its files, the transformers class it loads with, and how a
span head's answer is read off its logits (the heads stage and `lmpipe predict` use it).

    best_span(start_logits, end_logits, first=3, stop=9)   # e.g. (4, 5): 3 <= start <= end < 9
"""

from pathlib import Path

import torch

HEAD_FILE = "head.json"
AUTO = {
    "sequence": "AutoModelForSequenceClassification",
    "token": "AutoModelForTokenClassification",
    "span": "AutoModelForQuestionAnswering",
}


def new_head(kind: str, encoder_dir: Path, labels: list[str]):
    """The encoder's weights under a fresh head; classifiers read the first (`<bos>`) token."""
    import transformers

    named = (
        {}
        if kind == "span"
        else {"id2label": dict(enumerate(labels)), "label2id": {n: i for i, n in enumerate(labels)}}
    )
    return getattr(transformers, AUTO[kind]).from_pretrained(
        encoder_dir, use_safetensors=True, classifier_pooling="cls", num_labels=len(labels), **named
    )


def best_span(start: torch.Tensor, end: torch.Tensor, first: int, stop: int) -> tuple[int, int]:
    """(s, e) maximising start[s] + end[e] with first <= s <= e < stop (the context tokens)."""
    s, e = start[first:stop].float(), end[first:stop].float()
    scores = s[:, None] + e[None, :]
    scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).tril(-1), float("-inf"))  # e < s
    flat = int(scores.argmax())
    return first + flat // len(e), first + flat % len(e)
