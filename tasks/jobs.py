"""Running a stage's jobs: plain dicts handed to one function, each writing one file.

A stage that works in jobs takes `map_chunks(fn, jobs) -> results`; this module's `serial` runs
them here, one after another, and the flows replace it with Prefect tasks on a thread pool or a
Dask cluster (runners/). Results come back in job order, whoever ran them.
"""

from collections.abc import Callable


def serial(fn: Callable[[dict], str], jobs: list[dict]) -> list[str]:
    """Run the jobs one after another in this process (what the flow replaces with Prefect tasks)."""
    return [fn(job) for job in jobs]
