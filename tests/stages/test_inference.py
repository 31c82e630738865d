"""`lmpipe generate` and `lmpipe predict` on real (tiny) checkpoints: task tokens from the registry,
greedy = transformers' greedy, seeded sampling, streaming, batches from a file, clear input errors."""

import json

import pytest
import torch

from cli.main import main
from schemas.tokens import BOS, EOS, TO_FR, token_id
from tasks import evaluation, inference, seq2seq_model, tokenizer_file


def test_task_token_comes_from_the_template_never_from_the_text(encoder_stack):
    _, inputs = encoder_stack
    tok = tokenizer_file.load(inputs["tokenizer"])
    ids = inference.prompt_ids(tok, "Save <to-fr> now", "translate")
    assert ids[0] == token_id(BOS) and ids[-1] == token_id(TO_FR) and ids.count(token_id(TO_FR)) == 1
    assert inference.prompt_ids(tok, "Save", None) == [token_id(BOS), *tok.encode("Save").ids]
    with pytest.raises(inference.InputError, match="line 3: needs a JSON object"):
        inference.prompt_ids(tok, "just text", "qa", "line 3")


def test_greedy_matches_transformers_and_sampling_is_seeded(encoder_stack):
    from transformers import AutoModelForCausalLM

    _, inputs = encoder_stack
    model = AutoModelForCausalLM.from_pretrained(inputs["sft"], use_safetensors=True)
    prompt, cpu = [1, 40, 41, token_id(TO_FR)], torch.device("cpu")
    ours = list(inference.complete(model, prompt, 10, cpu))
    assert ours == evaluation.generate(model, [prompt], 10, cpu)[0]
    assert token_id(EOS) not in ours[:-1]

    def sample(seed):
        gen = torch.Generator().manual_seed(seed)
        return list(inference.complete(model, prompt, 10, cpu, temperature=1.5, top_k=50, generator=gen))

    assert sample(1) == sample(1) and sample(1) != sample(2)


def test_kv_cache_gives_the_uncached_greedy_tokens(encoder_stack):
    from transformers import AutoModelForCausalLM

    _, inputs = encoder_stack
    decoder = AutoModelForCausalLM.from_pretrained(inputs["sft"], use_safetensors=True)
    assembled = seq2seq_model.assemble(inputs["encoder"], inputs["pretrain"], heads=2)
    for block in assembled.cross:  # open the gates: the encoder's memory shapes every token
        block.gate.data.fill_(1.0)
    prompt, cpu = [1, 40, 41, 42, token_id(TO_FR)], torch.device("cpu")
    for model in (decoder, assembled):
        cached = list(inference.complete(model, prompt, 16, cpu, cache=True))
        assert cached == list(inference.complete(model, prompt, 16, cpu, cache=False))
        assert len(cached) > 1
    seen = []  # the cached decoder reads each token once: the prompt, then one new token per call
    hook = decoder.model.embed_tokens.register_forward_hook(
        lambda m, args, out: seen.append(args[0].shape[1])
    )
    list(inference.complete(decoder, prompt, 4, cpu))
    hook.remove()
    assert seen[0] == len(prompt) and set(seen[1:]) == {1}


def test_stream_text_writes_pieces_that_add_up(encoder_stack):
    _, inputs = encoder_stack
    tok = tokenizer_file.load(inputs["tokenizer"])
    ids = tok.encode("Dieu vit que la lumière était bonne").ids
    pieces = []
    assert inference.stream_text(tok, iter(ids + [token_id(EOS)]), pieces.append) == ids + [token_id(EOS)]
    assert "".join(pieces) == "Dieu vit que la lumière était bonne" and len(pieces) > 3
    assert not any("\ufffd" in p for p in pieces)


def test_generate_command_streams_a_batch_for_decoder_and_seq2seq(encoder_stack, tmp_path, capsys):
    _, inputs = encoder_stack
    assembled = seq2seq_model.assemble(inputs["encoder"], inputs["pretrain"], heads=2)
    assembled.save_pretrained(tmp_path / "s2s")
    (tmp_path / "s2s" / "tokenizer.json").write_bytes((inputs["tokenizer"] / "tokenizer.json").read_bytes())
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Save changes\n\nDelete the page\n")
    for checkpoint in (inputs["sft"], tmp_path / "s2s"):
        assert (
            main(
                [
                    "generate",
                    str(checkpoint),
                    "--file",
                    str(prompts),
                    "--task",
                    "translate",
                    "--max-new-tokens",
                    "5",
                ]
            )
            == 0
        )
        assert len(capsys.readouterr().out.splitlines()) == 2  # one line per prompt
    assert (
        main(["generate", str(inputs["sft"]), "Save", "--sample", "--seed", "3", "--max-new-tokens", "5"])
        == 0
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "c", "question": "q"}\n{"context": \n')
    assert main(["generate", str(inputs["sft"]), "--file", str(bad), "--task", "qa"]) == 2
    assert f"{bad}:2: not valid JSON" in capsys.readouterr().err


def test_predict_command_for_every_head_kind(trained_heads, tmp_path, capsys):
    head_dirs = trained_heads[2]
    assert main(["predict", str(head_dirs / "pair"), "Save", "--pair", "Enregistrer"]) == 0
    pair = json.loads(capsys.readouterr().out)
    assert pair["label"] in ("translation", "mismatch") and 0.5 <= pair["score"] <= 1
    assert main(["predict", str(head_dirs / "tagging"), "God saw la lumière"]) == 0
    tagged = json.loads(capsys.readouterr().out)
    assert tagged["tokens"] == ["God", "saw", "la", "lumière"] and set(tagged["tags"]) <= {"en", "fr"}
    context = "Use pip. It installs packages from the index."
    assert main(["predict", str(head_dirs / "qa"), context, "--question", "How do I install?"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (
        answer["answer"]
        and answer["answer"] in context
        and context[answer["start"] : answer["end"]].strip() == answer["answer"]
    )
    lines = tmp_path / "texts.txt"
    lines.write_text('Delete the page\n{"text": "Save"}\n')
    assert main(["predict", str(head_dirs / "domain"), "--file", str(lines)]) == 0
    labels = json.loads((head_dirs / "domain" / "head.json").read_text())["labels"]
    assert [json.loads(x)["label"] in labels for x in capsys.readouterr().out.splitlines()] == [True, True]
    assert main(["predict", str(head_dirs), "text"]) == 2  # the stage dir, not one head: a clear error
