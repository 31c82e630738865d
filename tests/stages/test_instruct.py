"""Instruct format: the format mix, held-out phrasings kept out of training, config checks,
and noisy teacher forcing (labels and special tokens untouched, the configured share)."""

import pytest
import torch
from pydantic import ValidationError

from schemas.instruct import HELDOUT, INSTRUCTIONS, InstructConfig
from schemas.sft import NoiseConfig
from schemas.shards import IGNORE_INDEX
from schemas.templates import INSTRUCT_PROMPT, PREFERENCE_PROMPT
from schemas.tokens import BOS, EOS, MASK, PAD, TO_FR, token_id
from tasks import instruct, noise

ROWS = [
    {"id": f"tr-{i}", "source_text": f"Sentence {i} {{x}}.", "target_text": f"Phrase {i}."}
    for i in range(400)
]


def by_format(variants: list[tuple[str, dict]]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for fmt, record in variants:
        out.setdefault(fmt, []).append(record)
    return out


def phrase_prefixes(phrasings: list[str]) -> list[str]:
    """The fixed text of each phrasing (around the placeholder) that must show in a prompt."""
    return [max(p.split("{source_text}"), key=len) for p in phrasings]


def test_training_mix_is_deterministic_and_never_uses_heldout_phrasings():
    cfg = InstructConfig(fraction=0.3)
    variants = instruct.formats(ROWS, "translation", "train", cfg)
    assert variants == instruct.formats(ROWS, "translation", "train", cfg)
    assert [r["id"] for _, r in variants] == [r["id"] for r in ROWS]  # record order, corpus ids
    train = by_format(variants)
    assert set(train) == {"task", "instruct"} and 0.22 < len(train["instruct"]) / len(ROWS) < 0.38
    prompts = [r["prompt"] for r in train["instruct"]]
    for fixed in phrase_prefixes(HELDOUT["translation"]):
        assert not any(fixed in p for p in prompts)
    used = {f for f in phrase_prefixes(INSTRUCTIONS["translation"]) if any(f in p for p in prompts)}
    assert len(used) == len(INSTRUCTIONS["translation"])  # English and French phrasings both used
    assert all(p.count(r["source_text"]) == 1 for p, r in zip(prompts, train["instruct"], strict=True))
    assert {f for f, _ in instruct.formats(ROWS, "translation", "train", InstructConfig(fraction=0))} == {
        "task"
    }


def test_validation_has_every_format_and_heldout_uses_only_heldout_phrasings():
    val = by_format(instruct.formats(ROWS[:50], "translation", "validation", InstructConfig()))
    assert {f: len(r) for f, r in val.items()} == {"task": 50, "instruct": 50, "heldout": 50}
    assert val["heldout"][0]["id"] == "tr-0@heldout"
    fixed = phrase_prefixes(HELDOUT["translation"])
    assert all(any(f in r["prompt"] for f in fixed) for r in val["heldout"])


def test_render_fills_once_and_config_names_the_bad_phrasing():
    assert instruct.render("T:\n{source_text}", {"source_text": "a {target_text}"}) == "T:\na {target_text}"
    with pytest.raises(ValidationError, match=r"instructions.translation: 'Translate' must contain"):
        InstructConfig(instructions={"translation": ["Translate"]})
    with pytest.raises(ValidationError, match="also a training instruction"):
        InstructConfig(heldout={"translation": [INSTRUCTIONS["translation"][0]]})
    with pytest.raises(ValidationError, match="unknown task 'poetry'"):
        InstructConfig(heldout={"poetry": ["{text}"]})


def test_preference_prompts_use_the_instruct_template():
    assert PREFERENCE_PROMPT == INSTRUCT_PROMPT
    assert instruct.template("qa", "heldout").prompt == INSTRUCT_PROMPT
    assert instruct.template("translation", "task").prompt[-1] == TO_FR


def noise_batch() -> dict:
    torch.manual_seed(0)
    ids = torch.randint(20, 400, (8, 40))
    ids[:, 0], ids[:, 10], ids[:, 30] = token_id(BOS), token_id(TO_FR), token_id(EOS)
    ids[:4, 31:] = token_id(PAD)
    mask = (ids != token_id(PAD)).long()
    labels = torch.where(torch.arange(40) > 10, ids, torch.full_like(ids, IGNORE_INDEX))
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@pytest.mark.parametrize("replace_with", ["random", "mask"])
def test_noise_touches_only_ordinary_inputs_at_the_configured_share(replace_with):
    batch = noise_batch()
    cfg = NoiseConfig(fraction=0.25, replace_with=replace_with)
    out = noise.corrupt(batch, cfg, 400, seed=7)
    assert torch.equal(out["labels"], batch["labels"]) and torch.equal(
        out["attention_mask"], batch["attention_mask"]
    )
    changed = out["input_ids"] != batch["input_ids"]
    ordinary = (batch["input_ids"] >= noise.FIRST_ORDINARY) & batch["attention_mask"].bool()
    assert not (changed & ~ordinary).any()  # <bos>, <to-fr>, <eos>, padding untouched
    assert changed.sum(1).tolist() == (ordinary.sum(1) * 0.25).round().long().tolist()  # exact share per row
    new = out["input_ids"][changed]
    if replace_with == "mask":
        assert (new == token_id(MASK)).all()
    else:
        assert ((new >= noise.FIRST_ORDINARY) & (new < 400)).all()
    assert torch.equal(out["input_ids"], noise.corrupt(batch, cfg, 400, seed=7)["input_ids"])  # resumable
    assert not torch.equal(out["input_ids"], noise.corrupt(batch, cfg, 400, seed=8)["input_ids"])
    summary = noise.summary(cfg, [batch], [out])
    assert summary["labels_changed"] == summary["special_tokens_changed"] == 0
    assert abs(summary["realized_fraction"] - 0.25) < 0.01
    assert noise.corrupt(batch, NoiseConfig(), 400, seed=7) is batch
