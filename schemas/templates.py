"""Task templates: how one corpus record becomes a token sequence, and which part is the answer.

A template is two tuples of parts. A part is either a special token from `schemas.tokens` or a
`{field}` of the record. The prompt is context only (label -100 in SFT); the answer carries the
loss. Example, translation:

    {"source_text": "Hello", "target_text": "Bonjour"}
    prompt: <bos> Hello <to-fr>      answer: Bonjour <eos>

Field text is encoded with special-token recognition off, and control tokens are inserted by
id, so a literal "<to-fr>" inside user text can never become the control token.
"""

from dataclasses import dataclass

from schemas.tokens import ANSWER, BOS, CONTEXT, EOS, PROMPT, QUESTION, SUMMARIZE, TO_FR


@dataclass(frozen=True)
class Template:
    prompt: tuple[str, ...]
    answer: tuple[str, ...]

    def fields(self) -> list[str]:
        """Record fields the template reads, in order: `["source_text", "target_text"]`."""
        return [p[1:-1] for p in self.prompt + self.answer if p.startswith("{")]


PRETRAIN = Template(prompt=(BOS,), answer=("{text}", EOS))

SFT_TEMPLATES: dict[str, Template] = {
    "translation": Template(prompt=(BOS, "{source_text}", TO_FR), answer=("{target_text}", EOS)),
    "summarization": Template(prompt=(BOS, "{document}", SUMMARIZE), answer=("{summary}", EOS)),
    "qa": Template(
        prompt=(BOS, CONTEXT, "{context}", QUESTION, "{question}", ANSWER), answer=("{answer}", EOS)
    ),
}

# `lmpipe generate --task NAME`: the template whose prompt wraps the user's text.
GENERATE_TASKS: dict[str, str] = {"translate": "translation", "summarize": "summarization", "qa": "qa"}

# Instruct format: the task is named in natural language between generic markers, so one
# template serves every task (and tasks nobody made a token for). `<answer>` closes the prompt
# and `<eos>` the answer, so no closing markers are needed. Example, translation:
#   {"prompt": "Translate from English to French:\nHello", "target_text": "Bonjour"}
#   prompt: <bos> <prompt> Translate from English to French:\nHello <answer>   answer: Bonjour <eos>
INSTRUCT_PROMPT: tuple[str, ...] = (BOS, PROMPT, "{prompt}", ANSWER)
INSTRUCT_TEMPLATES: dict[str, Template] = {
    task: Template(prompt=INSTRUCT_PROMPT, answer=t.answer) for task, t in SFT_TEMPLATES.items()
}

# Preference pairs share the prompt (a natural-language instruction, so the instruct prompt);
# each side is scored on its own completion.
PREFERENCE_PROMPT: tuple[str, ...] = INSTRUCT_PROMPT
PREFERENCE_COMPLETION: tuple[str, ...] = ("{completion}", EOS)


def registry_payload() -> dict:
    """Everything that defines token content, for the stage code hash (templates + tokens)."""
    from schemas.tokens import SPECIAL_TOKENS

    return {
        "special_tokens": list(SPECIAL_TOKENS),
        "pretrain": [PRETRAIN.prompt, PRETRAIN.answer],
        "sft": {k: [t.prompt, t.answer] for k, t in sorted(SFT_TEMPLATES.items())},
        "instruct": {k: [t.prompt, t.answer] for k, t in sorted(INSTRUCT_TEMPLATES.items())},
        "preference": [PREFERENCE_PROMPT, PREFERENCE_COMPLETION],
    }
