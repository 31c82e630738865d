"""The one registry of special tokens.

Every stage takes its control tokens from here: the tokenizer trainer reserves them (in this
order, so `<pad>` is id 0), the task templates refer to them by name, and the contracts check
that each one encodes to exactly one id. `<pad>` is its own token, never `<eos>`: a model whose
pad is its eos never learns to stop, because every eos is masked as padding.
"""

PAD = "<pad>"
BOS = "<bos>"
EOS = "<eos>"
UNK = "<unk>"
MASK = "<mask>"
TO_FR = "<to-fr>"
SUMMARIZE = "<summarize>"
QUESTION = "<question>"
CONTEXT = "<context>"
PROMPT = "<prompt>"
ANSWER = "<answer>"
# Joins the two texts of a sentence pair for encoder heads: `<bos> a <sep> b <eos>`.
SEP = "<sep>"

SPECIAL_TOKENS: tuple[str, ...] = (
    PAD,
    BOS,
    EOS,
    UNK,
    MASK,
    TO_FR,
    SUMMARIZE,
    QUESTION,
    CONTEXT,
    PROMPT,
    ANSWER,
    SEP,  # appended: the ids of the tokens before it never move
)
TASK_TOKENS: tuple[str, ...] = (TO_FR, SUMMARIZE, QUESTION, CONTEXT, PROMPT, ANSWER)


def token_id(token: str) -> int:
    """Reserved id of a special token: `token_id("<pad>") == 0`, `token_id("<to-fr>") == 5`."""
    return SPECIAL_TOKENS.index(token)
