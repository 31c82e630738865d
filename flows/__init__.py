"""Prefect flows: one per stage plus `pipeline`. Thin: the work lives in tasks/.

Importing this package applies the offline and no-telemetry defaults that every run needs
(tasks.environment), before Prefect, pyarrow, transformers or great-expectations are imported.
"""

import logging

from tasks.environment import apply_offline_defaults

apply_offline_defaults()

# Stage progress (training steps, tokens/s) is logged by the tasks.* loggers; Prefect shows
# them in the console and the UI through PREFECT_LOGGING_EXTRA_LOGGERS, at INFO.
logging.getLogger("tasks").setLevel(logging.INFO)
