"""Opening a tokenizer artifact for encoding, as every stage after the tokenizer does.

tok = load(tokenizer_dir)
tok.encode("say <to-fr>").ids   # the literal `<to-fr>` stays text: recognition is off
"""

from pathlib import Path

from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"


def load(directory: Path) -> Tokenizer:
    """The raw tokenizer of an artifact, with special-token recognition off."""
    tok = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    tok.encode_special_tokens = True
    return tok
