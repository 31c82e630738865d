"""Instruct format config: the natural-language instructions per task, and the format mix.

An instruction is a phrasing with the task's input fields as `{placeholders}`; the shards stage
fills them from the record and wraps the text in the instruct template (schemas.templates):

    "Traduis en français :\\n{source_text}" + {"source_text": "Hello"}
    -> <bos> <prompt> Traduis en français :\\nHello <answer> Bonjour <eos>

`instructions` are used in training; `heldout` phrasings never are: validation examples written
with them show whether the model follows an instruction it has not seen, or only a memorised
string. Which phrasing (and, in training, which format) a record gets is decided by a hash of
its id, so it is deterministic and does not move when records are added.
"""

import re

from pydantic import Field, model_validator

from schemas.base import StrictModel
from schemas.templates import SFT_TEMPLATES

PLACEHOLDER = re.compile(r"\{(\w+)\}")

INSTRUCTIONS: dict[str, list[str]] = {
    "translation": [
        "Translate from English to French:\n{source_text}",
        "{source_text}\nTranslate this sentence into French.",
        "Traduis en français :\n{source_text}",
        "{source_text}\nTraduisez cette phrase en français.",
    ],
    "summarization": [
        "Summarize in one sentence:\n{document}",
        "{document}\nWrite a one-line summary of this text.",
        "Résume ce texte en une phrase :\n{document}",
        "{document}\nRésumez ce document en une phrase.",
    ],
    "qa": [
        "Answer the question using the context.\nContext: {context}\nQuestion: {question}",
        "{context}\nBased on the text above, answer: {question}",
        "Réponds à la question à partir du contexte.\nContexte : {context}\nQuestion : {question}",
        "{context}\nD'après ce texte : {question}",
    ],
}

HELDOUT: dict[str, list[str]] = {
    "translation": [
        "Render this English text in French:\n{source_text}",
        "Peux-tu traduire ceci en français ?\n{source_text}",
    ],
    "summarization": [
        "Give a short summary of the following:\n{document}",
        "Quel est le résumé de ce texte ?\n{document}",
    ],
    "qa": [
        "Read the passage and answer the question.\n{context}\n{question}",
        "Lis le passage puis réponds.\n{context}\nQuestion : {question}",
    ],
}


class InstructConfig(StrictModel):
    # Validation records are written in every format, so each is measured on its own.
    fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of SFT training records written in the instruct format; the rest keep "
        "the task-token format. Chosen by a hash of the record id.",
    )
    instructions: dict[str, list[str]] = Field(
        default_factory=lambda: dict(INSTRUCTIONS),
        description="Training phrasings per task (translation, summarization, qa), each holding "
        "exactly the task's input fields as `{placeholders}` (e.g. `{source_text}`).",
    )
    heldout: dict[str, list[str]] = Field(
        default_factory=lambda: dict(HELDOUT),
        description="Phrasings never trained on: validation examples written with them show whether "
        "the model follows an unseen instruction. Must differ from `instructions`.",
    )

    @model_validator(mode="after")
    def phrasings_fit_their_task(self) -> "InstructConfig":
        for kind, table in (("instructions", self.instructions), ("heldout", self.heldout)):
            for task, phrasings in table.items():
                if task not in SFT_TEMPLATES:
                    raise ValueError(f"{kind}: unknown task {task!r} (tasks: {sorted(SFT_TEMPLATES)})")
                if not phrasings:
                    raise ValueError(f"{kind}.{task}: needs at least one phrasing")
                inputs = {p[1:-1] for p in SFT_TEMPLATES[task].prompt if p.startswith("{")}
                for phrase in phrasings:
                    if set(PLACEHOLDER.findall(phrase)) != inputs:
                        raise ValueError(
                            f"{kind}.{task}: {phrase!r} must contain exactly the placeholders "
                            f"{sorted('{' + f + '}' for f in inputs)}"
                        )
        for task in SFT_TEMPLATES:
            seen = set(self.heldout.get(task, [])) & set(self.instructions.get(task, []))
            if seen:
                raise ValueError(f"heldout.{task}: {sorted(seen)} is also a training instruction")
        return self
