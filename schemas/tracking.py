"""Where training stages report their runs (tasks/tracking.py). Not part of any fingerprint.

tracking: {backend: none}                          # off
tracking: {uri: http://mlflow.team:5000}           # a team's MLflow server
(default)                                          # SQLite store under the artifact home
"""

from typing import Literal

from schemas.base import StrictModel


class TrackingConfig(StrictModel):
    backend: Literal["mlflow", "none"] = "mlflow"
    uri: str | None = None  # else MLFLOW_TRACKING_URI, else sqlite:///<artifact home>/mlflow/mlflow.db
    experiment: str = "lmpipe"
    ui_url: str = "http://127.0.0.1:5000"  # where `mlflow ui` serves a file-based store, for links
