"""Experiment tracking: one MLflow run per training-stage build, with its steps and figures.

The default store needs no server: `sqlite:///<artifact home>/mlflow/mlflow.db`, its artifact
files beside it (`mlflow ui --backend-store-uri sqlite:///data/artifacts/mlflow/mlflow.db`).
`tracking.uri` in the config, else `MLFLOW_TRACKING_URI`, points at a team's server;
`tracking: {backend: none}` turns tracking off. While a run is open (`stage_run`), `fit` logs
every step into it (`log_step`), TRL trainers through `TrainerReport`, and the flow adds the
evaluation figures, the manifest and the plots (`Run.finish`).

A resumed build continues the same run: an unfinished run with the build's fingerprint is
reopened, and steps it already holds are not logged again (on CPU a resumed step equals the
lost one bit for bit, so nothing is lost either). Tracking is side output: the first error
(a server that is down, a locked store) logs one warning and tracking stops for that build;
the build itself goes on.

    >>> where = store(TrackingConfig(), Path("data/artifacts"))
    >>> with stage_run(where, "sft-tiny-0a1b2c3d4e5f", "0a1b...", {"sft.lr": 0.001}, {}) as run:
    ...     sft.build(...)   # train_loss, lr, tokens_per_s, grad_norm per step
    ...     run.finish(stats, [manifest_path, loss_png])
"""

import contextlib
import json
import logging
import os
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from schemas.tracking import TrackingConfig

log = logging.getLogger(__name__)

FINGERPRINT_TAG = "lmpipe.fingerprint"
STEP_METRICS = ("train_loss", "lr", "grad_norm", "tokens_per_s")  # a curve each, logged per step
PROGRESS_EVERY_S = 2.0  # the UI's progress bar needs no more; each update is a server call
# What this process is tracking now, set for the length of a build like the seed
_current: dict = {"run": None, "parent": None, "progress": None}


@dataclass(frozen=True)
class Store:
    uri: str
    experiment: str
    artifact_root: str | None  # the embedded store's artifact folder; a server chooses its own
    ui_url: str


def store(cfg: TrackingConfig, artifacts: Path) -> Store | None:
    """Where this build reports, or None when tracking is off."""
    if cfg.backend == "none":
        return None
    uri = cfg.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return Store(uri, cfg.experiment, None, uri if uri.startswith("http") else cfg.ui_url)
    root = artifacts / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    return Store(f"sqlite:///{root / 'mlflow.db'}", cfg.experiment, (root / "artifacts").as_uri(), cfg.ui_url)


def flatten(data: dict, prefix: str = "") -> dict[str, str | float]:
    """Nested config or figures as one level of dotted keys.

    >>> flatten({"sft": {"lr": 0.001, "noise": {"fraction": 0.0}}})
    {'sft.lr': 0.001, 'sft.noise.fraction': 0.0}
    """
    out: dict = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def numbers(stats: dict) -> dict[str, float]:
    """The numeric figures of a build's stats, flattened (lists such as `comparisons` left out)."""
    return {
        k: float(v)
        for k, v in flatten(stats).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v
    }


class Progress:
    """Live progress of a build: `update(step, max_steps, figures)` calls `show` (a Prefect
    progress artifact, flows/tracking.py) at most every PROGRESS_EVERY_S, and at the last step."""

    def __init__(self, show: Callable[[int, int, dict], None]):
        self.show, self.last = show, 0.0

    def update(self, step: int, max_steps: int, figures: dict) -> None:
        now = time.perf_counter()
        if self.show is None or (now - self.last < PROGRESS_EVERY_S and step < max_steps):
            return
        self.last = now
        try:
            self.show(step, max_steps, figures)
        except Exception as e:  # noqa: BLE001 - a progress bar never fails a build
            log.warning(f"live progress stopped: {e}")
            self.show = None


class Run:
    """One open MLflow run. Every call is safe: the first failure warns once and turns it off."""

    def __init__(self, client, run_id: str, experiment_id: str, url: str, reopened: bool):
        self.client, self.run_id, self.experiment_id, self.url = client, run_id, experiment_id, url
        self.reopened = reopened  # a resumed build's run, which already holds some steps
        self._upto: dict[str, int] = {}
        self._pending: list = []
        self._last_step_at: float | None = None

    def call(self, fn: Callable, *args, **kwargs) -> bool:
        if self.client is None:
            return False
        try:
            fn(*args, **kwargs)
            return True
        except Exception as e:  # noqa: BLE001 - tracking must never fail a build
            log.warning(f"experiment tracking stopped for this build (MLflow run {self.run_id}): {e}")
            self.client = None
            return False

    def logged_upto(self, metric: str = "train_loss") -> int:
        """The last step of `metric` the run already holds (0 for a new run)."""
        if metric not in self._upto:
            self._upto[metric] = 0
            if self.reopened:
                self.call(lambda: self._upto.update({metric: last_step(self.client, self.run_id, metric)}))
        return self._upto[metric]

    def log_step(self, h: dict, max_steps: int, every: int, phase: str = "", at: float | None = None) -> None:
        """One training step {step, loss, lr, tokens[, grad_norm]}, written every `every` steps.
        A stage that trains in phases (seq2seq's cross-attention warm-up, heads one by one)
        names their curves `<phase>/train_loss`, ... `at` is when the step ran (perf_counter;
        default now): `fit` reads its figures back a few steps at a time (tasks.steps)."""
        from mlflow.entities import Metric

        now = time.perf_counter() if at is None else at
        values = {"train_loss": h["loss"], "lr": h["lr"], "grad_norm": h.get("grad_norm")}
        if self._last_step_at is not None and h.get("tokens"):
            values["tokens_per_s"] = h["tokens"] / max(now - self._last_step_at, 1e-9)
        self._last_step_at = now
        prefix = f"{phase}/" if phase else ""
        if h["step"] > self.logged_upto(prefix + "train_loss"):
            stamp = int(time.time() * 1000)
            self._pending += [
                Metric(prefix + k, float(v), stamp, h["step"]) for k, v in values.items() if v is not None
            ]
        if h["step"] % every == 0 or h["step"] >= max_steps:
            self.flush()

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), stamp, step) for k, v in values.items()]
        self.flush()

    def flush(self) -> None:
        # MLflow takes at most 1000 metrics per batch
        while self._pending:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            if not self.call(self.client.log_batch, self.run_id, metrics=batch):
                self._pending = []

    def finish(self, stats: dict, files: list[Path]) -> None:
        """The build's figures (val loss before at step 0, everything at the last step) and files."""
        last = int(stats.get("steps") or 0)
        if "val_loss_before" in stats:  # the validation curve's first point, beside train loss
            self.log_metrics({"val_loss": stats["val_loss_before"]}, 0)
        self.log_metrics({k: v for k, v in numbers(stats).items() if k not in STEP_METRICS}, last)
        for f in files:
            self.call(self.client.log_artifact, self.run_id, str(f))


def reachable(uri: str) -> bool:
    """A quick look at an HTTP server's /health: the client's own retries take minutes."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
            return True
    except Exception as e:  # noqa: BLE001
        log.warning(f"experiment tracking off for this build: MLflow at {uri} does not answer ({e})")
        return False


def open_run(
    where: Store, name: str, fingerprint: str | None, params: dict, tags: dict, resume: bool
) -> Run | None:
    """Create the run, or reopen the unfinished one of the same build; None if MLflow fails."""
    from mlflow.tracking import MlflowClient

    if not reachable(where.uri):
        return None
    try:
        client = MlflowClient(where.uri)
        experiment = client.get_experiment_by_name(where.experiment)
        exp_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(where.experiment, artifact_location=where.artifact_root)
        )
        previous = unfinished(client, exp_id, fingerprint) if resume else None
        if previous:
            client.update_run(previous, status="RUNNING")
        run_id = previous or client.create_run(exp_id, run_name=name).info.run_id
        log_fields(client, run_id, params, {**tags, FINGERPRINT_TAG: fingerprint})
    except Exception as e:  # noqa: BLE001 - tracking must never fail a build
        log.warning(f"experiment tracking off for this build: MLflow at {where.uri} failed ({e})")
        return None
    url = f"{where.ui_url.rstrip('/')}/#/experiments/{exp_id}/runs/{run_id}"
    return Run(client, run_id, exp_id, url, previous is not None)


def unfinished(client, exp_id: str, fingerprint: str) -> str | None:
    runs = client.search_runs(
        [exp_id],
        f"tags.`{FINGERPRINT_TAG}` = '{fingerprint}' and attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def last_step(client, run_id: str, metric: str) -> int:
    return max((m.step for m in client.get_metric_history(run_id, metric)), default=0)


def log_fields(client, run_id: str, params: dict, tags: dict) -> None:
    from mlflow.entities import Param, RunTag

    # values are strings of bounded length; 100 params per batch
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i : i + 100])
    client.log_batch(run_id, tags=[RunTag(k, str(v)[:8000]) for k, v in tags.items() if v is not None])


@contextlib.contextmanager
def stage_run(
    where: Store | None,
    name: str,
    fingerprint: str,
    params: dict,
    tags: dict,
    resume: bool = True,
    progress: Progress | None = None,
) -> Iterator[Run | None]:
    """The build's run (None when off or unreachable) and live progress, current for this
    process while the block runs; the run ends FINISHED, or FAILED on an exception."""
    parent = _current["parent"]
    tags = {**tags, "mlflow.parentRunId": parent.run_id if parent and parent.client else None}
    run = open_run(where, name, fingerprint, params, tags, resume) if where else None
    _current.update(run=run, progress=progress)
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        _current.update(run=None, progress=None)
        if run:
            run.flush()
            run.call(run.client.set_terminated, run.run_id, status)


@contextlib.contextmanager
def pipeline_run(where: Store | None, name: str, tags: dict) -> Iterator[Run | None]:
    """A parent run: every stage run opened inside the block is nested under it."""
    run = open_run(where, name, None, {}, tags, False) if where else None
    _current["parent"] = run
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        _current["parent"] = None
        if run:
            run.call(run.client.set_terminated, run.run_id, status)


def current() -> Run | None:
    return _current["run"]


def log_step(h: dict, max_steps: int, every: int, label: str, at: float | None = None) -> None:
    """`fit`'s hook after each optimizer step (a no-op when nothing is tracked). `label` is fit's
    stage label: `pretrain`, or `<stage>-<phase>` (`heads-domain`, `seq2seq-cross`); `at` when
    the step ran."""
    if _current["run"] is not None:
        _current["run"].log_step(h, max_steps, every, label.partition("-")[2], at)
    if _current["progress"] is not None:
        _current["progress"].update(h["step"], max_steps, {"train loss": h["loss"]})


RENAMED = {"loss": "train_loss", "learning_rate": "lr"}


def trainer_report():
    """A transformers callback that logs a TRL trainer's training logs into the current run.

    Not transformers' own MLflowCallback (`report_to="mlflow"`): that one ends the run when
    training ends (the evaluation after it then opens a stray run), logs again the steps a
    resumed build already logged, fails the build when the server is down, and adds some 150
    trainer arguments as params. Evaluation logs are left to `Run.finish`.
    """
    from transformers import TrainerCallback

    class TrainerReport(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            run, progress, step = _current["run"], _current["progress"], state.global_step
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            values = {RENAMED.get(k, k): v for k, v in logs.items() if isinstance(v, int | float)}
            if run is not None and step > run.logged_upto():
                run.log_metrics(values, step)
            if progress is not None:
                progress.update(step, state.max_steps, {"train loss": logs["loss"]})

    return TrainerReport()


def lineage_tags(upstream: list[dict]) -> dict[str, str]:
    """Tags from the input artifacts' lineage trees: each input's fingerprint, and every raw
    file under them with its sha256 (one JSON tag: `lmpipe.raw_sha256`)."""
    raw: dict[str, str] = {}

    def walk(node: dict) -> None:
        if node["stage"] == "raw":
            raw[node["name"]] = node["sha256"]
        for child in node.get("inputs", []):
            walk(child)

    for node in upstream:
        walk(node)
    tags = {f"lmpipe.input.{n['stage']}": n["fingerprint"] for n in upstream}
    return tags | {"lmpipe.raw_sha256": json.dumps(dict(sorted(raw.items())))}
