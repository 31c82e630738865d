"""What a person sees of a stage run: status, time, the key figures, where the artifact is."""

from schemas.manifest import Manifest


def summary(stage: str, status: str, manifest: Manifest, seconds: float, path) -> dict:
    return {
        "stage": stage,
        "status": status,
        "seconds": round(seconds, 1),
        "figures": key_figures(stage, manifest.stats),
        "fingerprint": manifest.fingerprint[:12],
        "path": str(path),
    }


def key_figures(stage: str, s: dict) -> str:
    """The few numbers a person looks at first, per stage."""
    if stage == "corpus":
        rejected = s["rejected"]
        dup, contaminated = s["reasons"].get("exact_duplicate", 0), s["contaminated"]
        bad = rejected - dup - s["near_duplicates"] - contaminated
        return (
            f"{s['kept']} records kept, {rejected} rejected ({bad} bad, {dup} duplicates, "
            f"{s['near_duplicates']} near-duplicates, {contaminated} contaminated)"
        )
    if stage == "tokenizer":
        fertility = s.get("fertility", {})
        spread = f", fertility {min(fertility.values())}-{max(fertility.values())}" if fertility else ""
        return f"vocab {s['vocab_size']}" + (f" ({s['adopted']})" if s.get("adopted") else "") + spread
    if stage == "shards":
        p, sft, dpo = s["pretrain_train"], s["sft_train"], s["dpo_train"]
        pad = next(k for k in sft if k.startswith("padding_bucketed"))
        return (
            f"pretrain {p['rows']} rows, {p['tokens']} tokens, fill {p['fill_rate']:.2%}; "
            f"sft {sft['examples']} ex, padding {sft[pad]:.1%}; dpo {dpo['examples']} pairs, padding {dpo[pad]:.1%}"
        )
    figures = f"train loss {s['train_loss']}, val loss {s['val_loss_before']} -> {s['val_loss']}"
    if stage == "dpo":
        figures += f", val reward accuracy {s['val_reward_accuracy']}"
    return figures
