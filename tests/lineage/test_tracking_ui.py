"""MLflow's own UI on the embedded store, in headless Chromium: two SFT variants (two learning
rates) built with tracking on, their train-loss curves on one chart. The screenshot is left in
build/screenshots/mlflow-sft-variants.png."""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import test_server
import test_sft
import test_training
from test_server import SCREENSHOTS, free_port, needs_chromium, wait_text

from schemas.tracking import TrackingConfig
from tasks import sft, tracking

pytestmark = pytest.mark.browser
data = test_training.data  # the tiny corpus, tokenizer and shards, built once for this module
pretrained = test_sft.pretrained
browser = test_server.browser


def mlflow_ui(uri: str, port: int) -> subprocess.Popen:
    """`mlflow ui` on the store (one worker, no job runner), once it answers /health. It runs in
    its own process group: the server starts workers of its own."""
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
        + ["--port", str(port), "--workers", "1"],
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.5)
    stop(server)
    raise TimeoutError(f"mlflow ui did not answer on port {port} within 180 s")


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)


@needs_chromium
def test_two_sft_variants_loss_curves_in_the_mlflow_ui(data, pretrained, tmp_path, browser):
    cfg, inputs = data
    where = tracking.store(TrackingConfig(), tmp_path / "home")
    runs = {}
    for lr, fp in ((5e-3, "a" * 64), (5e-4, "b" * 64)):
        name = f"sft-t-{fp[:12]}"
        with tracking.stage_run(where, name, fp, {"sft.lr": lr}, {}) as run:
            sft.build(
                test_sft.sft_cfg(cfg, max_steps=6, lr=lr), {**inputs, "pretrain": pretrained}, tmp_path / name
            )
        runs[name] = run
    server = mlflow_ui(where.uri, port := free_port())
    try:
        ids = [r.run_id for r in runs.values()]
        browser.get(
            f"http://127.0.0.1:{port}/#/metric/?runs={json_list(ids)}&metric=%22train_loss%22"
            f"&experiments={json_list([runs[name].experiment_id])}&plot_metric_keys=%5B%22train_loss%22%5D"
            "&plot_layout={}&x_axis=step&y_axis_scale=linear&line_smoothness=1&show_point=true"
            "&deselected_curves=[]&last_linear_y_axis_range=[]"
        )
        # the chart's legend: one train_loss curve per run
        text = wait_text(browser, *(f"{name} (train_loss)" for name in runs), "Completed Runs")
        time.sleep(2)  # let the chart finish drawing before the screenshot
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / "mlflow-sft-variants.png"))
    finally:
        stop(server)
    assert "2/2" in text  # both runs' histories loaded


def json_list(items: list[str]) -> str:
    return "[" + ",".join(f"%22{x}%22" for x in items) + "]"
