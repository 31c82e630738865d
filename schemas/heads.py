"""Config of the heads stage: task heads fine-tuned from the encoder, built-in or from the
user's labelled files."""

from typing import Literal

from pydantic import Field, model_validator

from schemas.base import StrictModel, runtime_field
from schemas.training import TrainConfig, learning_rate

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

    max_steps: int | None = Field(
        None, ge=1, description="This head's optimizer steps; null: the shared `max_steps`."
    )
    lr: float | None = Field(None, gt=0, description="This head's peak learning rate; null: the shared `lr`.")


class HeadData(StrictModel):
    """A user's labelled data for one more head, from files like corpus sources (tasks.heads_data).

    Fields map from the record layout by dotted paths, e.g. CoNLL-style tagging or SQuAD:

        {name: ner, kind: token, train: data/ner/train.jsonl, validation: data/ner/dev.jsonl,
         fields: {tags: ner_tags}}
        {name: squad, kind: span, train: ..., validation: ...,
         fields: {answer: answers.text.0, answer_start: answers.answer_start.0}}
    """

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_-]*$",
        description="The head's name (lower-case letters, digits, `_`, `-`): its checkpoint folder "
        "and its key in `tuning`.",
    )
    kind: HeadKind = Field(
        description="`sequence`: one label per text or text pair (fields text, text_pair, label); "
        "`token`: one tag per word (tokens, tags); `span`: the answer's span in a context "
        "(context, question, answer, answer_start)."
    )
    # Where the files are does not define the artifact: their content hashes do (tasks.plan).
    train: str = runtime_field(
        ..., min_length=1, description="The training file (JSONL, Parquet, CSV or TSV)."
    )
    validation: str = runtime_field(
        ..., min_length=1, description="The validation file, scored before and after training."
    )
    format: Literal["auto", "jsonl", "parquet", "csv", "tsv"] = Field(
        "auto", description="How to read the files; `auto` goes by the suffix."
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="The kind's field -> dotted path in the record (a number indexes a list: "
        "`answers.text.0`). Fields left out are read under their own name.",
    )
    id_field: str | None = Field(
        "id", description="Dotted path of each record's unique id. null: ids are `<file>:<line>`."
    )
    labels: list[str] | None = Field(
        None,
        min_length=2,
        description="Class or tag names in id order (integer labels index this list). null: the "
        "sorted labels of the training file. Records with another label are rejected.",
    )
    # A mis-mapped field or a broken export must not train a head on whatever happened to parse.
    max_reject_rate: float = runtime_field(
        0.05,
        ge=0.0,
        le=1.0,
        description="The stage fails when more than this share of a file's records is bad.",
    )

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

    lr: float = learning_rate(5e-4)
    heads: list[HeadName] = Field(
        default_factory=lambda: ["domain", "pair", "tagging", "qa"],
        description="Built-in heads, derived from the corpus (docs/encoders.md): `domain` (which "
        "source a text comes from), `pair` (is it a translation), `tagging` (English or French per "
        "word), `qa` (answer span).",
    )
    data: list[HeadData] = Field(
        default_factory=list, description="More heads, from your own labelled files."
    )
    tuning: dict[str, HeadTuning] = Field(
        default_factory=dict,
        description="Per head name, its own `max_steps` and `lr` where the shared ones do not fit it.",
    )
    max_len: int = Field(
        512,
        ge=8,
        description="Longest example in tokens (at most the encoder's positions); longer ones go to "
        "`rejects.jsonl`, never cut.",
    )
    train_examples: int = Field(
        4000, ge=1, description="Training examples per head: the first N records of the training split."
    )
    eval_examples: int = Field(
        400, ge=1, description="Validation examples per head, scored before and after training."
    )
    # It decides whether to publish, not what is built: not fingerprinted.
    require_baseline: bool = runtime_field(
        True,
        description="Publish only if every head beats its trivial baseline on validation (majority "
        "class or tag; the first-token span).",
    )

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


def key_figures(s: dict) -> str:
    """Per head: its main validation metric against the trivial baseline."""
    return ", ".join(
        f"{head} {m['primary']} {m['val'][m['primary']]} (baseline {m['baseline'][m['primary']]})"
        for head, m in s["heads"].items()
    )
