"""Where a stage's jobs run: Prefect tasks on a thread pool, or on a Dask cluster.

A stage section with the runtime fields `runner` (threads | dask), `workers` and `dask_address`
gets a `map_chunks(fn, jobs)` for its build (see tasks/jobs.py): one Prefect task per job,
results in job order. The corpus and shards stages use it; their output is the same bytes
whichever runner and worker count runs the jobs.
"""

import contextlib
import ctypes
import os
import signal
import sys

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def signal_on_parent_death(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send this process `sig` when its parent dies, SIGKILL included
    (`PR_SET_PDEATHSIG`); False elsewhere, where nothing is asked."""
    if not sys.platform.startswith("linux"):
        return False
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    return True


class WorkerDied(BaseException):
    """The worker that started this flow run died. A BaseException, as a signal is: Prefect marks
    the run Crashed, with this message."""


def tie_to_worker() -> int | None:
    """In a flow run that a worker started: be told (SIGTERM) when that worker dies, so the run
    stops at once and says why (WorkerDied) instead of failing later on a write to the dead
    worker's pipe. The worker's pid, or None outside a worker's flow run (or off the main thread)."""
    if "PREFECT__FLOW_RUN_ID" not in os.environ:
        return None
    worker, previous = os.getppid(), signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        if os.getppid() == worker:  # a SIGTERM from anyone else: as Prefect handles it
            return (
                previous(signum, frame) if callable(previous) else signal.default_int_handler(signum, frame)
            )
        # stdout and stderr were the dead worker's pipes: a log line written there now breaks the run
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        raise WorkerDied(f"the worker (pid {worker}) that started this run died")

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: signals cannot be caught here
        return None
    return worker if signal_on_parent_death() else None


def worker_died(worker: int | None) -> bool:
    return worker is not None and os.getppid() != worker


def prefect_task(fn, name: str):
    """`fn` as a Prefect task named `name` (a stage's build and validate, each job of a build)."""
    # Results stay in memory (flows and tasks use persist_result=False): no pickled result
    # files, no cache keyed on path strings.
    return task(fn, name=name, cache_policy=NO_CACHE, persist_result=False)


def task_runner(cfg):
    if cfg.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if cfg.dask_address:
            return DaskTaskRunner(address=cfg.dask_address)
        # Worker processes, one thread each: the jobs are Python that holds the GIL most of the time.
        kwargs = {
            "n_workers": cfg.workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
        return DaskTaskRunner(cluster_kwargs=kwargs)
    return ThreadPoolTaskRunner(max_workers=cfg.workers)


def prefect_map(cfg, stage: str):
    """A `map_chunks` that submits each job as a Prefect task on `cfg`'s runner, named after the
    stage and the job's function (`shards-tokenize-chunk`, `corpus-read-chunk`)."""

    def map_chunks(fn, jobs: list[dict]) -> list[str]:
        job_task = prefect_task(fn, f"{stage}-{fn.__name__.replace('_', '-')}")
        with same_api(), task_runner(cfg) as runner:
            futures = [runner.submit(job_task, {"job": job}) for job in jobs]
            return [f.result() for f in futures]

    return map_chunks


def same_api():
    """Jobs report to this process's Prefect API. With no PREFECT_API_URL, Prefect runs a
    temporary server in this process and hands the workers its settings, API URL unset, so each
    Dask worker process started a temporary server of its own (10-20 s each on the default
    corpus stage); this hands them the running server's URL instead."""
    if PREFECT_API_URL.value():
        return contextlib.nullcontext()
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the one this process started, if it did
    if not server.running:
        return contextlib.nullcontext()
    return temporary_settings({PREFECT_API_URL: server.api_url})
