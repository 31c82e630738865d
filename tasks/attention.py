"""How packed rows attend: one document mask, three attention kernels (`attention:` in the config).

A packed row holds several documents; position ids restart at each one (tasks.packing draws
the layout). A token may attend only inside its own document (causally for the decoder, both
ways for the encoder). The document of each token follows from the position ids alone:

    position_ids  0 1 2 0 1 0 1 2 3
    document_ids  0 0 0 1 1 2 2 2 2      (a new document wherever the position does not step by 1)

The kernels differ in how that mask reaches them:

- `sdpa` (the CPU default) and `eager`: a dense mask, L x L per row. Memory grows as L², and
  SDPA cannot use its flash kernel with a mask.
- `flex` (the CUDA default): PyTorch FlexAttention with a `BlockMask`, which stores per
  128 x 128 tile only whether it is empty, full or partial; empty tiles are skipped and the
  L x L mask never exists. Compiled on CUDA. torch 2.13 has no FlexAttention backward on CPU,
  so on CPU `flex` runs forward only (evaluation, the proof tests) and training refuses it.

`use(model, kernel, causal)` sets the model's kernel. The decoder needs nothing more:
transformers detects packed rows from the position ids (no mask passed, cache off) and builds
the kernel's mask (`flex_mask` for flex). The encoder gets a forward pre-hook that turns
`position_ids` into the kernel's mask, so every caller (the step loop, evaluation, DDP/FSDP
wrappers) gets it without knowing the kernel.
"""

import torch

KERNELS = ("sdpa", "eager", "flex")
FLEX = "lmpipe_flex"  # our registered attention function (transformers' own always compiles)
_compiled: dict[str, object] = {}


def resolve(asked: str, device: torch.device) -> str:
    """The kernel to use: `auto` is flex on CUDA and sdpa elsewhere (the fastest proven path on
    CPU; flex cannot train there).

    >>> resolve("auto", torch.device("cpu"))
    'sdpa'
    """
    if asked == "auto":
        return "flex" if device.type == "cuda" else "sdpa"
    if asked not in KERNELS:
        raise ValueError(f"attention: {asked!r} is not one of auto, {', '.join(KERNELS)}")
    return asked


def check_trainable(kernel: str, device: torch.device) -> None:
    """Refuse, before any step, a kernel that cannot compute gradients on this device."""
    if kernel == "flex" and device.type == "cpu":
        raise ValueError(
            "attention: flex cannot train on CPU (torch 2.13's FlexAttention has no CPU backward); "
            "use attention: auto or sdpa on CPU, flex on a GPU"
        )


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """The document of every token: a new one wherever the position does not step by one (the
    rule transformers uses to detect packed rows).

    >>> document_ids(torch.tensor([[0, 1, 2, 0, 1, 0]])).tolist()
    [[0, 0, 0, 1, 1, 2]]
    """
    step = torch.diff(position_ids, prepend=position_ids[:, :1] - 1, dim=-1)
    return (step != 1).cumsum(-1)


def dense_mask(position_ids: torch.Tensor, causal: bool) -> torch.Tensor:
    """(batch, 1, L, L) booleans, True = may attend: same document (and not ahead, if causal).

    >>> dense_mask(torch.tensor([[0, 1, 0]]), causal=True)[0, 0].int().tolist()
    [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    """
    doc = document_ids(position_ids)
    mask = doc[:, :, None] == doc[:, None, :]
    if causal:
        mask &= torch.ones_like(mask[0], dtype=torch.bool).tril()
    return mask[:, None]


def additive_mask(position_ids: torch.Tensor, causal: bool) -> torch.Tensor:
    """`dense_mask` as the eager kernel adds it to the scores: 0 = may attend, else the float
    minimum (a boolean mask would be added as 0/1 there and let every token through)."""
    allowed = dense_mask(position_ids, causal)
    return torch.zeros(allowed.shape, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(torch.float32).min
    )


def block_mask(position_ids: torch.Tensor, causal: bool):
    """The same mask as a FlexAttention BlockMask (built compiled on CUDA, so that the L x L
    booleans are never materialised there).

    >>> block_mask(torch.tensor([[0, 1, 0]]), causal=False).shape  # (batch, heads, L, L)
    (1, 1, 3, 3)
    """
    from torch.nn.attention.flex_attention import create_block_mask

    doc = document_ids(position_ids)

    def same_document(b, h, q, k):
        return doc[b, q] == doc[b, k]

    def causal_document(b, h, q, k):
        return (doc[b, q] == doc[b, k]) & (q >= k)

    batch, length = doc.shape
    return create_block_mask(
        causal_document if causal else same_document,
        batch,
        None,
        length,
        length,
        device=doc.device,
        _compile=doc.device.type == "cuda",
    )


def flex_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention-function signature over FlexAttention with our BlockMask
    (compiled once on CUDA; eager elsewhere, where it is exact but unfused)."""
    from torch.nn.attention.flex_attention import BlockMask, flex_attention

    if dropout:
        raise ValueError("attention: flex does not support attention dropout")
    if attention_mask is not None and not isinstance(attention_mask, BlockMask):
        raise ValueError("attention: flex expects packed rows (position_ids, no attention_mask)")
    run = flex_attention
    if query.device.type == "cuda":
        if "flex" not in _compiled:
            _compiled["flex"] = torch.compile(flex_attention, dynamic=False)
        run = _compiled["flex"]
    out = run(
        query,
        key,
        value,
        block_mask=attention_mask,
        scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def flex_mask(
    batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, attention_mask=None, **kw
):
    """The BlockMask transformers builds for a call (its own `flex_attention_mask`, which
    compiles even on CPU, where that takes ~30 s): the model's mask function (causal or not, and
    per document on packed rows) and the 2-D padding mask, compiled on CUDA only."""
    from torch.nn.attention.flex_attention import create_block_mask
    from transformers import masking_utils as mu

    if attention_mask is not None and not mu.fast_all(attention_mask):
        padding = mu.prepare_padding_mask(attention_mask, kv_length, kv_offset)
        mask_function = mu.and_masks(mask_function, mu.padding_mask_function(padding))
    device = torch.device(kw.get("device", "cpu"))
    return create_block_mask(
        mu.add_offsets_to_mask_function(mask_function, q_offset, kv_offset),
        batch_size,
        None,
        q_length,
        kv_length,
        device=device,
        _compile=device.type == "cuda",
    )


def register() -> None:
    """Make `lmpipe_flex` known to transformers (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(FLEX, flex_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(FLEX, flex_mask)


def use(model, kernel: str, causal: bool):
    """Run `model` with this kernel on packed rows; returns the model. For the encoder a
    pre-hook builds the mask from the position ids of any call that passes `position_ids`
    without an `attention_mask` (transformers does this itself for causal models only)."""
    if kernel == "flex":
        register()
    model.set_attn_implementation(FLEX if kernel == "flex" else kernel)
    if not causal:
        make = {"flex": block_mask, "sdpa": dense_mask, "eager": additive_mask}[kernel]

        def add_mask(module, args, kwargs):
            position_ids = kwargs.get("position_ids")
            if position_ids is None or kwargs.get("attention_mask") is not None:
                return None
            return args, {**kwargs, "attention_mask": make(position_ids, causal)}

        model.register_forward_pre_hook(add_mask, with_kwargs=True)
    return model
