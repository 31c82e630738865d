"""Prefect flows: one per stage plus `pipeline`. Thin: the work lives in tasks/.

Importing this package sets the offline and no-telemetry defaults that every run needs
(before Prefect, pyarrow, transformers or great-expectations are imported); a value already set in
the environment wins.
"""

import logging
import os

for _key, _value in {
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
}.items():
    os.environ.setdefault(_key, _value)

# Stage progress (training steps, tokens/s) is logged by the tasks.* loggers; Prefect shows
# them in the console and the UI through PREFECT_LOGGING_EXTRA_LOGGERS, at INFO.
logging.getLogger("tasks").setLevel(logging.INFO)
