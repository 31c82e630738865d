"""Run a training stage as N processes (torchrun, DDP) when its config asks for `processes: N`,
on one node or on `nodes: M` of them.

The stage's flow calls `build` as usual; `launch` then starts

    python -m torch.distributed.run --standalone --nproc-per-node N -m tasks.distributed \
        <stage> <config json> <inputs json> <out>

(with M nodes, `--nnodes M --node-rank 0 --master-addr HOST --master-port PORT` instead of
`--standalone`, and every other node runs the same command with its own `--node-rank`: `launch`
logs it) and waits. Every process runs the same `tasks.<stage>.build` (gloo on CPU, NCCL on
GPUs, one GPU per process); `training.fit` shards the micro-batches across ranks and DDP
averages the gradients. Only rank 0 (on node 0) evaluates and writes the checkpoint into `out`;
the flow, back in the parent process, validates it and publishes the artifact and its manifest
once, as for a single-process run. On CUDA set `processes` to the number of GPUs of a node.
"""

import json
import logging
import os
import shlex
import subprocess
import sys
from pathlib import Path

from schemas.config import PROJECT_ROOT
from schemas.training import TrainConfig
from tasks import training
from tasks.environment import apply_offline_defaults

log = logging.getLogger(__name__)


def launch(stage: str, cfg: TrainConfig, inputs: dict[str, Path], out: Path) -> dict | None:
    """Rank 0's metrics after a multi-process run; None when one process is asked for or this
    already is one of the group (the caller then trains in-process)."""
    if (cfg.processes == 1 and cfg.nodes == 1) or training.world()[1] > 1:
        return None
    import torch

    if torch.cuda.is_available() and cfg.processes > torch.cuda.device_count():
        # NCCL refuses two ranks on one GPU; fail here, before torchrun starts N processes
        raise ValueError(
            f"{stage}: processes={cfg.processes} but this worker has {torch.cuda.device_count()} "
            "GPU(s); on CUDA each process takes one GPU: set processes to at most that"
        )
    cmd = command(stage, cfg, inputs, out)
    log.info(f"{stage}: training in {cfg.nodes} x {cfg.processes} processes: {' '.join(cmd[:8])} ...")
    if cfg.nodes > 1:
        other = command(stage, cfg, inputs, Path("<scratch dir>"), node_rank="<1..M-1>")
        log.info(f"{stage}: on each other node, from the same checkout and inputs: {shlex.join(other)}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{stage}: the {cfg.nodes * cfg.processes}-process run failed (exit code {done.returncode}); "
            "its output is above. A rerun resumes from the last resume state."
        )
    return json.loads((out / "metrics.json").read_text())


def command(
    stage: str, cfg: TrainConfig, inputs: dict[str, Path], out: Path, node_rank: int | str = 0
) -> list[str]:
    """The torchrun command line of one node (node 0 is the flow's)."""
    if cfg.nodes == 1:
        where = ["--standalone"]
    elif not cfg.rendezvous or ":" not in cfg.rendezvous:
        raise ValueError(
            f"{stage}: nodes={cfg.nodes} needs rendezvous: 'host:port' of this node (node 0), "
            f"reachable from the other nodes; got {cfg.rendezvous!r}"
        )
    else:
        host, port = cfg.rendezvous.rsplit(":", 1)
        where = [
            f"--nnodes={cfg.nodes}",
            f"--node-rank={node_rank}",
            f"--master-addr={host}",
            f"--master-port={port}",
        ]
    paths = json.dumps({k: str(v) for k, v in inputs.items()})
    return [
        sys.executable, "-m", "torch.distributed.run", *where, f"--nproc-per-node={cfg.processes}",
        "-m", "tasks.distributed", stage, cfg.model_dump_json(), paths, str(out),
    ]  # fmt: skip


def main(stage: str, config: str, inputs: str, out: str) -> None:
    """One rank: join the group, run the stage's build, leave the group."""
    import importlib

    import torch
    import torch.distributed as dist

    from schemas.config import PipelineConfig

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, format=f"[rank {rank}] %(message)s"
    )
    section = PipelineConfig.model_fields[stage].annotation.model_validate_json(config)
    paths = {k: Path(v) for k, v in json.loads(inputs).items()}
    try:
        importlib.import_module(f"tasks.{stage}").build(section, paths, Path(out))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    apply_offline_defaults()
    main(*sys.argv[1:])
