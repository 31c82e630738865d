"""What keeps `training.fit`'s step loop from waiting: batches read ahead, layers compiled, a
fused optimizer, figures read back from the GPU only every `log_every` steps.

On a GPU every `.item()` or `int(tensor)` makes the host wait until the GPU has finished all
queued work, so the next step cannot be queued while this one runs. The loop therefore keeps
each step's loss and token count as GPU tensors (`Pending`) and reads them back in one go every
`log_every` steps, before resume state is written and at the end. On CPU nothing runs
asynchronously and the same code costs nothing extra.

    step:     1   2   3   4 | 5   6   7   8 | ...      (log_every 4)
    host:     queue steps 1-4, then one read-back of 4 losses, one log line, next 4 ...

- `Prefetch` builds the next micro-batches on a thread (Arrow rows -> tensors, pinned on CUDA)
  while the GPU computes; on CPU (depth 0) it builds them in line, as before.
- `prepare` compiles each transformer layer with torch.compile (`compile: auto` = on CUDA) and
  turns on activation checkpointing when asked.
- `optimizer` is AdamW, fused into one kernel on CUDA.
"""

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator

import torch

Batch = dict[str, torch.Tensor]


def optimizer(params, lr: float, weight_decay: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW; fused on CUDA (one kernel for all parameters), the reference loop elsewhere."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")


def compiles(asked: str, device: torch.device) -> bool:
    """Whether to torch.compile: `auto` on CUDA only (on CPU compiling a tiny model takes longer
    than the run it would speed up).

    >>> compiles("auto", torch.device("cpu")), compiles("on", torch.device("cpu"))
    (False, True)
    """
    return asked == "on" or (asked == "auto" and device.type == "cuda")


def layers(model) -> torch.nn.ModuleList:
    """The model's stack of transformer layers (the first ModuleList in it)."""
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList):
            return module
    raise ValueError(f"{type(model).__name__} has no list of layers to compile or checkpoint")


def prepare(model, compile: str, checkpointing: bool, device: torch.device):
    """Activation checkpointing and per-layer compilation, in place; returns the model.

    Compiling layer by layer (as torchtitan does) leaves the model's own forward, with its
    data-dependent mask building, to run eagerly, and compiles the one layer shape once.
    """
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if compiles(compile, device):
        for layer in layers(model):
            layer.compile()
    return model


class Prefetch:
    """Micro-batches `stream(k)` for k in `ks`, moved to `device`; with depth > 0 built that
    many ahead on a thread and pinned, so host work and the copy overlap the GPU's compute.

    >>> batches = Prefetch(lambda k: {"x": torch.tensor([k])}, iter([3, 5]), torch.device("cpu"))
    >>> [next(batches)["x"].item() for _ in range(2)]
    [3, 5]
    """

    def __init__(
        self, stream: Callable[[int], Batch], ks: Iterator[int], device: torch.device, depth: int = 0
    ):
        self.stream, self.ks, self.device, self.depth = stream, ks, device, depth
        if depth:
            self.ready: queue.Queue = queue.Queue(maxsize=depth)
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._fill, daemon=True)
            self.thread.start()

    def _fill(self) -> None:
        try:
            for k in self.ks:
                batch = self.stream(k)
                if self.device.type == "cuda":  # page-locked: the copy runs without the host
                    batch = {n: t.pin_memory() for n, t in batch.items()}
                while not self.stop.is_set():
                    try:
                        self.ready.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except Exception as e:  # raised again in the training thread, where it can be handled
            self.ready.put(e)

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        if not self.depth:
            return {n: t.to(self.device) for n, t in self.stream(next(self.ks)).items()}
        batch = self.ready.get()
        if isinstance(batch, Exception):
            raise batch
        return {n: t.to(self.device, non_blocking=True) for n, t in batch.items()}

    def close(self) -> None:
        if self.depth:
            self.stop.set()
            self.thread.join()


def diverged(stage: str, loss: float, step: int) -> FloatingPointError:
    """The error a non-finite training loss stops a stage with. It is raised before any resume
    state or checkpoint holds the diverged weights; the staging dir keeps the resume states
    saved before it (tasks.artifacts.staging).

    >>> diverged("pretrain", float("nan"), 12)
    FloatingPointError('pretrain: the training loss is nan at step 12; stopped ...')
    """
    return FloatingPointError(
        f"{stage}: the training loss is {loss} at step {step}; stopped before any resume state or "
        f"checkpoint held these weights (the resume states saved before it are kept). A lower "
        f"{stage}.lr, more {stage}.warmup_steps or {stage}.precision=float32 usually avoids it"
    )


class Pending:
    """Each step's loss, scored-token count and gradient norm as device tensors, read back
    together.

    `add(loss, tokens, norm, lr)` queues a step (and the time it was queued); `settle(reduce)`
    returns each step's history entry ({"step", "loss", "lr", "tokens", "grad_norm"}, loss and
    norm rounded to 5 places) with that time, after one host sync and `reduce` (the all-reduce
    over ranks, or nothing), and raises on the first non-finite loss.
    """

    def __init__(self, first_step: int, stage: str = "training"):
        self.first, self.queued, self.stage = first_step, [], stage

    def add(self, loss: torch.Tensor, tokens: torch.Tensor, norm: torch.Tensor, lr: float) -> None:
        self.queued.append((loss, tokens, norm, lr, time.perf_counter()))

    def settle(self, reduce: Callable[[torch.Tensor], torch.Tensor]) -> list[tuple[dict, float]]:
        if not self.queued:
            return []
        losses, tokens, norms, lrs, times = zip(*self.queued, strict=True)
        figures = torch.stack([torch.stack(x).double() for x in (losses, tokens, norms)])
        losses, tokens, norms = reduce(figures).tolist()  # the one host sync
        entries = []
        for i, (loss, n, norm, lr, at) in enumerate(zip(losses, tokens, norms, lrs, times, strict=True)):
            step = self.first + i + 1
            if not math.isfinite(loss):
                raise diverged(self.stage, loss, step)
            entry = {
                "step": step,
                "loss": round(loss, 5),
                "lr": lr,
                "tokens": int(n),
                "grad_norm": round(norm, 5),
            }
            entries.append((entry, at))
        self.first += len(entries)
        self.queued = []
        return entries
