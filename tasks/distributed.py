"""Run a training stage as N processes (torchrun, DDP) when its config asks for `processes: N`.

The stage's flow calls `build` as usual; `launch` then starts

    python -m torch.distributed.run --standalone --nproc-per-node N -m tasks.distributed \
        <stage> <config json> <inputs json> <out>

and waits. Every process runs the same `tasks.<stage>.build` (gloo on CPU, NCCL on GPUs, one
GPU per process); `training.fit` shards the micro-batches across ranks and DDP averages the
gradients. Only rank 0 evaluates and writes the checkpoint into `out`; the flow, back in the
parent process, validates it and publishes the artifact and its manifest once, as for a
single-process run. On CUDA set `processes` to the number of GPUs of the worker.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from schemas.config import PROJECT_ROOT
from schemas.training import TrainConfig
from tasks import training

log = logging.getLogger(__name__)


def launch(stage: str, cfg: TrainConfig, inputs: dict[str, Path], out: Path) -> dict | None:
    """Rank 0's metrics after a `cfg.processes`-process run; None when one process is asked
    for or this already is one of the group (the caller then trains in-process)."""
    if cfg.processes == 1 or training.world()[1] > 1:
        return None
    import torch

    if torch.cuda.is_available() and cfg.processes > torch.cuda.device_count():
        # NCCL refuses two ranks on one GPU; fail here, before torchrun starts N processes
        raise ValueError(
            f"{stage}: processes={cfg.processes} but this worker has {torch.cuda.device_count()} "
            "GPU(s); on CUDA each process takes one GPU: set processes to at most that"
        )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={cfg.processes}",
        "-m",
        "tasks.distributed",
        stage,
        cfg.model_dump_json(),
        json.dumps({k: str(v) for k, v in inputs.items()}),
        str(out),
    ]
    log.info(f"{stage}: training in {cfg.processes} processes: {' '.join(cmd[:6])} ...")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{stage}: the {cfg.processes}-process run failed (exit code {done.returncode}); "
            "its output is above. A rerun resumes from the last resume state."
        )
    return json.loads((out / "metrics.json").read_text())


def main(stage: str, config: str, inputs: str, out: str) -> None:
    """One rank: join the group, run the stage's build, leave the group."""
    import importlib

    import torch
    import torch.distributed as dist

    import flows  # noqa: F401  (offline defaults)
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
    main(*sys.argv[1:])
