"""The offline and no-telemetry environment every entry point sets before anything heavy loads.

    apply_offline_defaults()   # first thing in a CLI, a flow package, a torchrun rank, a benchmark

It must run before Prefect, pyarrow, transformers or great-expectations are imported (some read
these variables once, at import). A value already set in the environment wins.
"""

import os

DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "tasks",  # stage progress (tasks.* loggers) in the UI
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "TOKENIZERS_PARALLELISM": "false",
    # Arrow's default pool (mimalloc) kept the pages that the shards stage's chunk jobs freed
    # (~140 MiB at 10x the embedded corpus, growing with it); malloc gives them back
    # (tasks.memory.release). Read once, when pyarrow is first imported.
    "ARROW_DEFAULT_MEMORY_POOL": "system",
}


def apply_offline_defaults() -> None:
    """Set each of DEFAULTS that the environment does not set already."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
