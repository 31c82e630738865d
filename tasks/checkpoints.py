"""Contracts of a published model checkpoint, for every stage that writes one.

    check_checkpoint(out, stats)                                  # a decoder
    check_checkpoint(out, stats, "AutoModelForSequenceClassification")
    -> [checkpoint/no-pickle, checkpoint/loads, checkpoint/learned]

Each stage says how its checkpoint loads; this module knows no stage by name.
"""

from pathlib import Path

import torch

from schemas.manifest import ContractResult
from tasks.contracts import require
from tasks.training import RESUME


def check_checkpoint(out: Path, stats: dict, auto: str = "AutoModelForCausalLM") -> list[ContractResult]:
    """A checkpoint is safetensors only, has no resume leftovers, reloads with transformers'
    `auto` class, and learned something: its validation loss fell, where the stage measures one
    (a stage judged by comparisons alone has no `val_loss` in its stats)."""
    import transformers

    results = [no_pickle(out)]
    model = getattr(transformers, auto).from_pretrained(out, use_safetensors=True)
    ids = torch.tensor([[1, 20, 30, 40]])
    with torch.no_grad():
        finite = torch.isfinite(model(ids).logits).all().item()
    results.append(
        require("checkpoint/loads", [] if finite else ["non-finite logits"], 1, "reloads with finite logits")
    )
    if "val_loss" not in stats:
        return results
    worse = (
        []
        if stats["val_loss"] < stats["val_loss_before"]
        else [f"val loss {stats['val_loss_before']} -> {stats['val_loss']}"]
    )
    results.append(require("checkpoint/learned", worse, 1, "validation loss decreased during training"))
    return results


def no_pickle(out: Path) -> ContractResult:
    """Weights in safetensors only, and no resume state left anywhere in the checkpoint."""
    stray = [str(p.relative_to(out)) for p in out.rglob("*") if p.suffix in (".bin", ".pt", ".pkl", ".pth")]
    stray += [str(p.relative_to(out)) for p in out.rglob(f"{RESUME}*")]
    return require("checkpoint/no-pickle", stray, 1, "weights in safetensors only; no resume state left")
