"""Where training stages report their runs (tasks/tracking.py). Not part of any fingerprint.

tracking: {backend: none}                          # off
tracking: {uri: http://mlflow.team:5000}           # a team's MLflow server
(default)                                          # SQLite store under the artifact home
"""

from typing import Literal

from pydantic import Field

from schemas.base import StrictModel


class TrackingConfig(StrictModel):
    backend: Literal["mlflow", "none"] = Field(
        "mlflow", description="`mlflow` logs each training build as an MLflow run; `none` turns tracking off."
    )
    uri: str | None = Field(
        None,
        description="The MLflow tracking URI (a server's `http://...` or a `sqlite:///...` store). "
        "null: `MLFLOW_TRACKING_URI` if set, else `sqlite:///<artifact home>/mlflow/mlflow.db`.",
    )
    experiment: str = Field("lmpipe", description="The MLflow experiment the runs are logged under.")
    ui_url: str = Field(
        "http://127.0.0.1:5000",
        description="Where `mlflow ui` serves a local (SQLite or file) store: the base of the run "
        "links the builds report. With an `http` `uri`, the links use that server instead.",
    )
