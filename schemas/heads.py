"""Config of the heads stage: task heads fine-tuned from the encoder, built-in or from the
user's labelled files."""

from typing import Literal

from pydantic import Field, model_validator

from schemas.base import StrictModel, runtime_field
from schemas.training import TrainConfig

HeadName = Literal["domain", "pair", "tagging", "qa"]
HeadKind = Literal["sequence", "token", "span"]
KINDS: dict[str, str] = {"domain": "sequence", "pair": "sequence", "tagging": "token", "qa": "span"}
# The canonical fields of a user's head data per kind (`text_pair` may be left out).
HEAD_FIELDS: dict[str, tuple[str, ...]] = {
    "sequence": ("text", "text_pair", "label"),
    "token": ("tokens", "tags"),
    "span": ("context", "question", "answer", "answer_start"),
}


class HeadTuning(StrictModel):
    """One head's own steps and learning rate, where the shared ones do not fit it."""

    max_steps: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)


class HeadData(StrictModel):
    """A user's labelled data for one more head, from files like corpus sources (tasks.heads_data).

    Fields map from the record layout by dotted paths, e.g. CoNLL-style tagging or SQuAD:

        {name: ner, kind: token, train: data/ner/train.jsonl, validation: data/ner/dev.jsonl,
         fields: {tags: ner_tags}}
        {name: squad, kind: span, train: ..., validation: ...,
         fields: {answer: answers.text.0, answer_start: answers.answer_start.0}}
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    kind: HeadKind
    # Where the files are does not define the artifact: their content hashes do (tasks.plan).
    train: str = runtime_field(..., min_length=1)
    validation: str = runtime_field(..., min_length=1)
    format: Literal["auto", "jsonl", "parquet", "csv", "tsv"] = "auto"
    fields: dict[str, str] = Field(default_factory=dict)
    id_field: str | None = "id"  # None: ids are "<file>:<line>"
    # Class or tag names in id order (integer labels index this list); default: the sorted
    # labels of the training file. Records with another label are rejected.
    labels: list[str] | None = Field(None, min_length=2)
    # More bad records than this share of a file fails the stage: a mis-mapped field or a broken
    # export must not train a head on whatever happened to parse.
    max_reject_rate: float = runtime_field(0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def known_fields(self) -> "HeadData":
        unknown = sorted(set(self.fields) - set(HEAD_FIELDS[self.kind]))
        if unknown:
            raise ValueError(
                f"fields {unknown} are not fields of a {self.kind} head: {HEAD_FIELDS[self.kind]}"
            )
        return self

    def field_path(self, field: str) -> str:
        return self.fields.get(field, field)


class HeadsConfig(TrainConfig):
    """Task heads fine-tuned from the encoder, each from its own copy (tasks.heads)."""

    lr: float = Field(5e-4, gt=0)
    heads: list[HeadName] = Field(default_factory=lambda: ["domain", "pair", "tagging", "qa"])
    data: list[HeadData] = Field(default_factory=list)  # more heads, from the user's labelled files
    tuning: dict[str, HeadTuning] = Field(default_factory=dict)  # per head, over max_steps / lr
    max_len: int = Field(512, ge=8)  # longer examples go to rejects.jsonl, never cut (<= encoder positions)
    train_examples: int = Field(4000, ge=1)  # per head: the first N records of the training split
    eval_examples: int = Field(400, ge=1)  # per head, from the validation split
    # Publishing requires every head to beat its trivial baseline (majority class, first-token
    # span) on validation. It decides whether to publish, not what is built: not fingerprinted.
    require_baseline: bool = runtime_field(True)

    @model_validator(mode="after")
    def some_heads(self) -> "HeadsConfig":
        names = [*self.heads, *(d.name for d in self.data)]
        if not names:
            raise ValueError("no heads: list built-in `heads` or add `data`")
        if len(names) != len(set(names)):
            raise ValueError(f"head names must be distinct: {names}")
        unknown = sorted(set(self.tuning) - set(names))
        if unknown:
            raise ValueError(f"tuning for heads {unknown} that are not trained: {names}")
        return self

    def for_head(self, head: str) -> "HeadsConfig":
        """This config with the head's own `tuning` applied."""
        own = self.tuning.get(head)
        return self.model_copy(update=own.model_dump(exclude_none=True)) if own else self

    def kinds(self) -> dict[str, str]:
        """Every head to train, built-in first, with its kind."""
        return {**{h: KINDS[h] for h in self.heads}, **{d.name: d.kind for d in self.data}}
