"""`parallel: fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`) for the training stages.

Each rank holds 1/N of every weight, gradient and AdamW moment; a layer's weights are gathered
just before it runs and freed after. `training.fit` trains a sharded copy (`shard`) while the
stage's own model waits on the host; whenever the weights must leave the GPUs (resume state,
the end of training) every rank takes part in gathering them (`gather_into`) and rank 0 loads
them into that plain model, which then saves and evaluates exactly as in one process. So resume
state and checkpoints stay the plain safetensors files of an unsharded run, and a run resumes
under any sharding.

Optimizer state travels in the unsharded optimizer's own layout, {"state": {i: {...}},
"param_groups": [{"params": [0, 1, ...], ...}]}, where i numbers the trainable parameters in
`named_parameters` order; FSDP's full state dicts name them instead (`by_name`, `by_index`).
"""

import copy
from collections.abc import Callable

import torch

FULL = {"full_state_dict": True, "cpu_offload": True}


def shard(model, device: torch.device, prepare: Callable):
    """A copy of `model` on `device`, `prepare`d (checkpointing, compilation) and sharded: each
    transformer layer a unit, then the rest; `model` moves to the host."""
    from torch.distributed.fsdp import fully_shard

    from tasks.steps import layers

    model.to("cpu")
    runner = prepare(copy.deepcopy(model).to(device))
    for layer in layers(runner):
        fully_shard(layer)
    return fully_shard(runner)


def trainable_names(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def gather_into(model, runner, rank: int) -> None:
    """Every rank gathers the full weights; rank 0 loads them into the plain `model`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(runner, options=StateDictOptions(**FULL))
    if rank == 0:
        model.load_state_dict(full)


def optimizer_state(runner, optimizer) -> dict:
    """The full optimizer state, in the unsharded layout, on rank 0 ({} on the others; every
    rank must call)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    full = get_optimizer_state_dict(runner, optimizer, options=StateDictOptions(**FULL))
    return by_index(full, runner) if full else {}  # ranks > 0 get nothing


def load(runner, optimizer, weights: dict, optim: dict) -> None:
    """Shard full weights and optimizer state (unsharded layout) into the running copy."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(runner, weights, options=options)
    set_optimizer_state_dict(runner, optimizer, by_name(optim, runner), options=options)


def by_index(state: dict, runner) -> dict:
    """FSDP's {"state": {name: ...}} as the optimizer's own {"state": {i: ...}}.

    >>> by_index({"state": {"b": {"step": 1}}, "param_groups": [{"lr": 1, "params": ["a", "b"]}]}, m)
    {'state': {1: {'step': 1}}, 'param_groups': [{'lr': 1, 'params': [0, 1]}]}   # m: params a, b
    """
    index = {n: i for i, n in enumerate(trainable_names(runner))}
    return {
        "state": {index[n]: s for n, s in state["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]],
    }


def by_name(state: dict, runner) -> dict:
    """The inverse of `by_index`."""
    names = trainable_names(runner)
    return {
        "state": {names[int(i)]: s for i, s in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }
