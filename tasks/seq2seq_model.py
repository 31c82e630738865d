"""The encoder-decoder the seq2seq stage assembles and trains, and how a published one loads
(the stage, `lmpipe generate` and tests use it):

    model = assemble(encoder_dir, decoder_dir, heads=4)   # new, zero-gated cross-attention
    model.save_pretrained(out)
    model = load(out)                                     # safetensors only, no remote code

See tasks.seq2seq for the design of the gated cross-attention.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SPEC = "seq2seq.json"
CROSS = "cross_attention.safetensors"


class CrossAttention(torch.nn.Module):
    """Gated cross-attention from decoder states (d_model) to encoder states (d_memory)."""

    def __init__(self, d_model: int, d_memory: int, heads: int):
        super().__init__()
        self.norm = torch.nn.RMSNorm(d_model, eps=1e-6)
        self.attn = torch.nn.MultiheadAttention(
            d_model, heads, kdim=d_memory, vdim=d_memory, batch_first=True
        )
        self.gate = torch.nn.Parameter(torch.zeros(1))

    def forward(self, h: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor) -> torch.Tensor:
        out, _ = self.attn(self.norm(h), memory, memory, key_padding_mask=memory_padding, need_weights=False)
        return h + torch.tanh(self.gate).to(out.dtype) * out


class Seq2Seq(torch.nn.Module):
    """encoder (ModernBertModel) + decoder (LlamaForCausalLM) + one CrossAttention per decoder layer."""

    def __init__(self, encoder, decoder, heads: int):
        super().__init__()
        self.encoder, self.decoder, self.heads = encoder, decoder, heads
        d_model, d_memory = decoder.config.hidden_size, encoder.config.hidden_size
        layers = decoder.model.layers
        self.cross = torch.nn.ModuleList(CrossAttention(d_model, d_memory, heads) for _ in layers)
        self._memory: tuple[torch.Tensor, torch.Tensor] | None = None
        for layer, block in zip(layers, self.cross, strict=True):
            layer.register_forward_hook(self._hook(block))

    def _hook(self, block: CrossAttention):
        def after_layer(module, args, output):
            return output if self._memory is None else block(output, *self._memory)

        return after_layer

    def encode(self, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder states, padding mask with True on padding)."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return states, attention_mask == 0

    def decode(
        self,
        memory,
        decoder_input_ids,
        decoder_attention_mask=None,
        labels=None,
        cache=None,
        use_cache=False,
    ):
        """Decoder logits (and loss); with a cache (inference), `decoder_input_ids` are only the
        new tokens: cross-attention reads the whole encoder memory for each of them anyway."""
        self._memory = memory
        try:
            return self.decoder(
                input_ids=decoder_input_ids,
                attention_mask=decoder_attention_mask,
                labels=labels,
                cache=cache,
                use_cache=use_cache,
            )
        finally:
            self._memory = None

    def forward(
        self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask=None, labels=None, **_
    ):
        return self.decode(
            self.encode(input_ids, attention_mask), decoder_input_ids, decoder_attention_mask, labels
        )

    def save_pretrained(self, out: Path) -> None:
        self.encoder.save_pretrained(out / "encoder")
        self.decoder.save_pretrained(out / "decoder")
        save_file({k: v.contiguous() for k, v in self.cross.state_dict().items()}, str(out / CROSS))
        (out / SPEC).write_text(json.dumps({"kind": "seq2seq", "cross_heads": self.heads}) + "\n")


def assemble(encoder_dir: Path, decoder_dir: Path, heads: int) -> Seq2Seq:
    """The encoder's base model and the decoder, with new (zero-gated) cross-attention."""
    from transformers import AutoModel, AutoModelForCausalLM

    encoder = AutoModel.from_pretrained(encoder_dir, use_safetensors=True)
    decoder = AutoModelForCausalLM.from_pretrained(decoder_dir, use_safetensors=True)
    return Seq2Seq(encoder, decoder, heads)


def load(directory: Path) -> Seq2Seq:
    """A published seq2seq checkpoint (safetensors only, no remote code)."""
    spec = json.loads((directory / SPEC).read_text())
    model = assemble(directory / "encoder", directory / "decoder", spec["cross_heads"])
    model.cross.load_state_dict(load_file(str(directory / CROSS)))
    return model.eval()
