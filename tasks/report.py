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
            + (
                f"; {s['split_documents']} document pieces from splitting, {s['rejected_too_long']} too long"
                if "split_documents" in s
                else ""
            )
        )
    if stage == "reward":
        return (
            f"train loss {s['train_loss']}, val loss {s['val_loss_before']} -> {s['val_loss']}, "
            f"reward accuracy {s['val_reward_accuracy_before']} -> {s['val_reward_accuracy']}"
        )
    if stage == "rl":
        return (
            ", ".join(
                f"{m}: reward {s[f'val_mean_reward_{m}']}, preference accuracy {s[f'val_preference_accuracy_{m}']}"
                for m in ("sft", "dpo", "rl")
            )
            + f" (KL {s['train_kl_last']})"
        )
    if stage == "heads":
        return heads_figures(s)
    figures = training_figures(stage, s)
    if stage == "seq2seq":  # against the decoder-only SFT model, same validation rows
        sft = s["sft_generation"]
        figures += "; decoder-only sft " + ", ".join(
            f"{metric} {sft[task][metric]:.1f}"
            for task, metric in (("translation", "chrf"), ("summarization", "rougeL"), ("qa", "f1"))
            if metric in sft.get(task, {})
        )
    return figures


def heads_figures(s: dict) -> str:
    """Per head: its main validation metric against the trivial baseline."""
    return ", ".join(
        f"{head} {m['primary']} {m['val'][m['primary']]} (baseline {m['baseline'][m['primary']]})"
        for head, m in s["heads"].items()
    )


def training_figures(stage: str, s: dict) -> str:
    """Losses, and what shows the model learned: the unigram baseline, generation metrics,
    preference accuracy (each "before -> after"). Older manifests lack some; they are skipped."""
    figures = f"train loss {s['train_loss']}, val loss {s['val_loss_before']} -> {s['val_loss']}"
    if "unigram_baseline" in s:
        figures += f" (unigram baseline {s['unigram_baseline']})"
    if "val_masked_accuracy" in s:
        figures += f", masked accuracy {s['val_masked_accuracy']}"
    before, after = s.get("generation_before", {}), s.get("generation", {})
    for task, metric in (("translation", "chrf"), ("summarization", "rougeL"), ("qa", "f1")):
        if metric in after.get(task, {}) and task in before:
            figures += f", {metric} {before[task][metric]:.1f} -> {after[task][metric]:.1f}"
        elif metric in after.get(task, {}):
            figures += f", {metric} {after[task][metric]:.1f}"
    seen, heldout = (
        s.get(k, {}).get("translation", {}) for k in ("generation_instruct", "generation_heldout")
    )
    if "chrf" in seen and "chrf" in heldout:
        figures += f", instruct chrf {seen['chrf']:.1f} (held-out phrasings {heldout['chrf']:.1f})"
    if "val_preference_accuracy" in s:
        figures += (
            f", preference accuracy {s['val_preference_accuracy_before']} -> {s['val_preference_accuracy']}"
        )
    if stage == "dpo":
        figures += f", val reward accuracy {s['val_reward_accuracy']}"
    return figures
