"""Operate lmpipe through a real Prefect server, as a person would from the UI.

One `lmpipe server` (`prefect server start` on SQLite, 127.0.0.1, a free port, its own
PREFECT_HOME) serves the module. `lmpipe setup-server` creates the pools and the crash
automation, `prefect deploy --all` runs from the project root, and `prefect worker start --pool cpu --run-once`, started in an
unrelated directory, executes each queued run. Headless Chromium then finds the run and its
artifacts in the UI. Everything happens in tmp dirs with the tiny test config.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from cli.server import PREFECT, wait_healthy
from schemas.config import PROJECT_ROOT, load_config
from tasks.artifacts import Home, published, read_manifest
from tasks.plan import plan_pipeline
from tests.conftest import tiny_config_data

pytestmark = pytest.mark.e2e
SPEC = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
SCREENSHOTS = PROJECT_ROOT / "build" / "screenshots"  # git-ignored; kept after the run for CI


class RetryUnavailable(httpx.HTTPTransport):
    """Retries a 503 as Prefect's own client does: the server answers 503 for errors a client
    may retry (its SQLite database locked while a finished run's events are written)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for wait in (0.5, 1, 2, 4, 8):
            response = super().handle_request(request)
            if response.status_code != 503:
                return response
            response.close()
            time.sleep(wait)
        return super().handle_request(request)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `prefect server start` child process and the environment its clients need."""

    def __init__(self, root: Path, extra_env: dict[str, str] | None = None):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_API_URL": self.api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "LMPIPE_DATA_ROOTS": str(root),
            "PWD": "/",  # a stale PWD must not decide where workers look for the code
            **(extra_env or {}),
        }
        self.env.pop("PREFECT_API_KEY", None)
        self.log = open(root / "server.log", "w")  # noqa: SIM115 (closed in stop)
        started = time.monotonic()
        self.proc = subprocess.Popen(  # `lmpipe server`: prefect server start, UI on this port
            [sys.executable, "-m", "cli", "server", "--port", str(self.port)],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_healthy(self.api, timeout_s=180, proc=self.proc)
        except Exception:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        self.http = httpx.Client(base_url=self.api, timeout=30, transport=RetryUnavailable())

    def run(self, *args: str, cwd: Path = PROJECT_ROOT, timeout: float = 300, env=None) -> str:
        """A command against this server; returns its output, fails the test on a non-zero exit."""
        done = subprocess.run(
            args, cwd=cwd, env=env or self.env, capture_output=True, text=True, timeout=timeout
        )
        assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    def deployment(self, name: str) -> dict:
        flow = next(d["entrypoint"].rsplit(":", 1)[1] for d in SPEC["deployments"] if d["name"] == name)
        flow_name = flow.removesuffix("_flow")  # corpus_flow is the flow named "corpus"
        r = self.http.get(f"/deployments/name/{flow_name}/{name}")
        r.raise_for_status()
        return r.json()

    def create_run(self, deployment: str, **parameters) -> httpx.Response:
        dep = self.deployment(deployment)
        return self.http.post(f"/deployments/{dep['id']}/create_flow_run", json={"parameters": parameters})

    def work(self, pool: str = "cpu", cwd: Path | None = None) -> float:
        """One `prefect worker start --run-once`, from a directory unrelated to the checkout."""
        started = time.monotonic()
        self.run(str(PREFECT), "worker", "start", "--pool", pool, "--run-once", cwd=cwd or self.root)
        return time.monotonic() - started

    def flow_run(self, run_id: str) -> dict:
        return self.http.get(f"/flow_runs/{run_id}").raise_for_status().json()

    def artifact_keys(self, run_id: str) -> set[str]:
        body = {"artifacts": {"flow_run_id": {"any_": [run_id]}}}
        return {a["key"] for a in self.http.post("/artifacts/filter", json=body).raise_for_status().json()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    config = root / "tiny-test.yaml"
    config.write_text(yaml.safe_dump(tiny_config_data(root / "raw")))
    srv = Server(root)
    srv.config, srv.home = str(config), str(root / "home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMPIPE_DATA_ROOTS", str(root))  # the in-process plan checks read the same files
        srv.setup = srv.run(sys.executable, "-m", "cli", "setup-server", "--within", "45")
        started = time.monotonic()
        srv.deploy = srv.run(sys.executable, "-m", "cli", "deploy")
        srv.deploy_s = time.monotonic() - started
        yield srv
    srv.stop()
    print(f"\nserver start {srv.startup_s:.1f}s, deploy --all {srv.deploy_s:.1f}s")


def wait_task_runs(srv: Server, run_id: str, timeout_s: float = 120) -> None:
    """Until the flow run has started a task (its stage is building)."""
    body = {"task_runs": {"flow_run_id": {"any_": [run_id]}}}
    deadline = time.monotonic() + timeout_s
    while not srv.http.post("/task_runs/filter", json=body).raise_for_status().json():
        assert time.monotonic() < deadline, f"flow run {run_id} started no task in {timeout_s}s"
        time.sleep(0.5)


def wait_state(srv: Server, run_id: str, types: set[str], timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        run = srv.flow_run(run_id)
        if run["state"]["type"] in types or time.monotonic() > deadline:
            return run
        time.sleep(1)


def test_setup_creates_pools_and_the_crash_automation(server):
    pools = {p["name"]: p["type"] for p in server.http.post("/work_pools/filter", json={}).json()}
    assert pools["cpu"] == pools["gpu"] == "process"
    automations = server.http.post("/automations/filter", json={}).json()
    (zombie,) = [a for a in automations if a["name"] == "lmpipe: crash zombie flow runs"]
    assert zombie["trigger"]["posture"] == "Proactive"
    assert zombie["trigger"]["after"] == ["prefect.flow-run.heartbeat"]
    assert zombie["actions"][0]["state"] == "CRASHED" and zombie["enabled"]


def test_deploy_all_creates_every_deployment_pointing_at_this_checkout(server):
    for spec in SPEC["deployments"]:
        dep = server.deployment(spec["name"])
        assert dep["work_pool_name"] == spec["work_pool"]["name"]
        assert dep["enforce_parameter_schema"] is True
        (step,) = dep["pull_steps"]  # recorded at deploy time from the cwd, not from $PWD
        assert step["prefect.deployments.steps.set_working_directory"]["directory"] == str(PROJECT_ROOT)
        for schedule in dep["schedules"]:
            assert schedule["active"] is False  # corpus-refresh ships inactive
    assert server.deployment("corpus-refresh")["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
    heartbeat = server.deployment("pipeline")["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]
    assert int(heartbeat) * 3 <= 120  # a lost machine shows Crashed within 2 minutes


def test_a_redeploy_keeps_an_activated_schedule_on_and_its_id(server):
    dep = server.deployment("corpus-refresh")
    (schedule,) = dep["schedules"]
    url = f"/deployments/{dep['id']}/schedules/{schedule['id']}"
    server.http.patch(url, json={"active": True}).raise_for_status()
    try:
        server.run(sys.executable, "-m", "cli", "deploy")
        (after,) = server.deployment("corpus-refresh")["schedules"]
        assert (after["id"], after["active"], after["slug"]) == (schedule["id"], True, "nightly")
    finally:
        server.http.patch(url, json={"active": False}).raise_for_status()


@pytest.mark.parametrize(
    "parameters",
    [
        {"force": "maybe"},
        {"overrides": "corpus.min_chars=1"},
        {"config": 3},
        {"overrides": ["corpus.min_char=1"]},
    ],
    ids=["force-not-bool", "overrides-not-list", "config-not-str", "unknown-override-key"],
)
def test_invalid_parameters_are_refused_before_any_run_exists(server, parameters):
    r = server.create_run("corpus", **parameters)
    assert r.status_code == 409, r.text
    assert "Validation failed" in r.text


def test_stage_from_deployment_then_forced_rerun_then_override_makes_downstream_stale(server):
    params = {"config": server.config, "home": server.home}
    first = server.create_run("corpus", **params).raise_for_status().json()["id"]
    run_s = server.work()
    assert server.flow_run(first)["state"]["type"] == "COMPLETED"
    ((corpus_dir, m1),) = published(Home.resolve(server.home), "corpus")
    assert m1.flow_run_id == first
    key = f"corpus-t-{m1.fingerprint[:12]}"
    assert {
        key,
        f"{key}-stats",
        f"{key}-lineage",
        f"{key}-lineage-runs",
        f"{key}-stale",
    } <= server.artifact_keys(first)

    tok = server.create_run("tokenizer", **params).raise_for_status().json()["id"]
    server.work()
    assert server.flow_run(tok)["state"]["type"] == "COMPLETED"

    forced = server.create_run("corpus", **params, force=True).raise_for_status().json()["id"]
    server.work()
    assert server.flow_run(forced)["state"]["type"] == "COMPLETED"
    m2 = read_manifest(corpus_dir)
    assert m2.flow_run_id == forced and m2.fingerprint == m1.fingerprint
    # A forced rebuild reproduces the same bytes, so what was built from it stays valid.
    assert [(f.path, f.sha256) for f in m2.files] == [(f.path, f.sha256) for f in m1.files]
    plan = {p.stage: p for p in plan_pipeline(load_config(server.config), Home.resolve(server.home))}
    assert plan["corpus"].up_to_date and plan["tokenizer"].up_to_date
    again = server.create_run("tokenizer", **params).raise_for_status().json()["id"]
    server.work()
    ((_, tok_m),) = published(Home.resolve(server.home), "tokenizer")
    reused = artifact(server, again, f"tokenizer-t-{tok_m.fingerprint[:12]}-skipped")["data"]
    assert f"[the flow run that built it]({server.url}/runs/flow-run/{tok})" in reused

    # Rerun the stage with an override, as from the UI's "Custom run": the tokenizer is now stale.
    override = ["corpus.validation_fraction=0.3"]
    third = server.create_run("corpus", **params, overrides=override).raise_for_status().json()["id"]
    server.work()
    assert server.flow_run(third)["state"]["type"] == "COMPLETED"
    plan = {
        p.stage: p for p in plan_pipeline(load_config(server.config, override), Home.resolve(server.home))
    }
    assert plan["corpus"].up_to_date and not plan["tokenizer"].up_to_date
    (reason,) = plan["tokenizer"].reasons
    assert reason == f"input corpus: {m1.fingerprint[:12]} -> {plan['corpus'].fingerprint[:12]}"
    out = subprocess.run(
        [sys.executable, "-m", "cli", "plan", "--config", server.config, "--home", server.home]
        + [f"--set={o}" for o in override],
        cwd=PROJECT_ROOT,
        env=server.env,
        capture_output=True,
        text=True,
    ).stdout
    assert "tokenizer  run" in out and "input corpus:" in out
    new_fp = plan["corpus"].fingerprint[:12]
    stale = json.loads(artifact(server, third, f"corpus-t-{new_fp}-stale")["data"])
    assert [(r["stale"], r["built from"], r["now"]) for r in stale] == [
        (f"tokenizer/t {tok_m.fingerprint[:12]}", f"corpus {m1.fingerprint[:12]}", f"corpus {new_fp}")
    ]
    server.override_run, server.override_key = third, f"corpus-t-{new_fp}"
    print(f"\ncorpus through a worker: {run_s:.1f}s")
    server.corpus_run = first


def chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1400,1000",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_text(driver, *texts: str, timeout_s: float = 90) -> str:
    """The page's text once every one of `texts` shows in it."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout_s).until(
        lambda d: all(t in d.find_element("tag name", "body").text for t in texts)
    )
    return driver.find_element("tag name", "body").text


def open_artifacts_tab(driver, server: Server, run_id: str, keys: set[str], screenshot: Path) -> str:
    """The run's page in the UI, Artifacts tab; returns the page text once every key shows."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{server.url}/runs/flow-run/{run_id}")
    WebDriverWait(driver, 90).until(lambda d: d.find_element("css selector", "li.p-tab#artifacts")).click()
    text = wait_text(driver, *keys)
    driver.save_screenshot(str(screenshot))
    return text


needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless browser test needs Debian's chromium + chromium-driver (apt-get install chromium chromium-driver)",
)


@pytest.fixture
def browser():
    driver = chrome()
    yield driver
    driver.quit()


def subflow_runs(server: Server, run_id: str) -> dict[str, dict]:
    """The stage runs under a pipeline run, by flow name."""
    body = {"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}}
    runs = server.http.post("/flow_runs/filter", json=body).raise_for_status().json()
    names = {f["id"]: f["name"] for f in server.http.post("/flows/filter", json={}).json()}
    return {names[r["flow_id"]]: r for r in runs}


def artifact(server: Server, run_id: str, key: str) -> dict:
    body = {"artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": [key]}}}
    (found,) = server.http.post("/artifacts/filter", json=body).raise_for_status().json()
    return found


def artifact_link(server: Server, run_id: str, key: str) -> Path:
    """The file a link artifact points at (its markdown is `[text](file:///...)`)."""
    data = artifact(server, run_id, key)["data"]
    return Path(data[data.index("(file://") + len("(file://") : -1])


@pytest.mark.browser
@needs_chromium
def test_audit_from_the_ui(server, browser):
    """After the override rerun of corpus (the test before), from its run's page, two clicks each
    (the Artifacts tab, then the artifact): its lineage picture and the list of what it made stale;
    the same way a `plan` deployment's answer and what used a raw file (the `lineage`
    deployment); and the run form's descriptions."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    run, key = server.override_run, server.override_key
    click_artifact(browser, server, run, f"{key}-lineage", "Lineage of corpus/t")
    (image,) = browser.find_elements("css selector", "img[alt='lineage']")
    assert browser.execute_script("return arguments[0].naturalWidth", image) > 300
    browser.save_screenshot(str(SCREENSHOTS / "lineage-picture.png"))
    click_artifact(browser, server, run, f"{key}-stale", "tokenizer/t", "built from")
    browser.save_screenshot(str(SCREENSHOTS / "stale-after-override.png"))
    overrides = ["corpus.validation_fraction=0.3"]
    planned = server.create_run("plan", config=server.config, home=server.home, overrides=overrides)
    plan_id = planned.raise_for_status().json()["id"]
    server.work()
    click_artifact(browser, server, plan_id, "plan-t", "tokenizer", "input corpus:")
    browser.save_screenshot(str(SCREENSHOTS / "plan-deployment.png"))
    raw = str(Path(server.config).parent / "raw" / "qa.jsonl")  # what used this raw file?
    traced = server.create_run("lineage", target=raw, home=server.home).raise_for_status().json()["id"]
    server.work()
    used = click_artifact(browser, server, traced, "lineage-qa-jsonl-used-by", "tokenizer")
    assert used.count("corpus") >= 2  # both corpus variants were built from it
    browser.save_screenshot(str(SCREENSHOTS / "raw-file-used-by.png"))
    browser.get(f"{server.url}/deployments/deployment/{server.deployment('sft')['id']}/run")
    wait_text(browser, "Config changes as stage.field=value items", "Rebuild even when")
    browser.save_screenshot(str(SCREENSHOTS / "run-form.png"))


def click_artifact(driver, server: Server, run_id: str, key: str, *texts: str) -> str:
    """From the flow run's page: click its Artifacts tab, then the artifact named `key`; the
    artifact page's text once `texts` show."""
    open_artifacts_tab(driver, server, run_id, {key}, SCREENSHOTS / "artifacts-tab.png")
    driver.find_element("xpath", f"//*[normalize-space(text())='{key}']").click()
    return wait_text(driver, *texts)


@pytest.mark.slow
@pytest.mark.browser
@needs_chromium
def test_pipeline_run_in_the_browser(server, browser):
    """The pipeline deployment through a worker, then found in the UI's runs list as a person
    would: its plan and summary, a stage's manifest link and lineage table, a loss plot."""
    params = {"config": server.config, "home": server.home}
    run_id = server.create_run("pipeline", **params).raise_for_status().json()["id"]
    server.work()
    run = server.flow_run(run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]

    browser.get(f"{server.url}/runs")
    wait_text(browser, run["name"])
    browser.find_element("link text", run["name"]).click()
    wait_text(browser, "Artifacts")
    browser.find_element("css selector", "li.p-tab#artifacts").click()
    wait_text(browser, "pipeline-plan", "pipeline-summary")
    assert run_id in browser.current_url
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / "pipeline-run.png"))
    assert (SCREENSHOTS / "pipeline-run.png").stat().st_size > 10_000

    stages = subflow_runs(server, run_id)
    shards = stages["shards"]["id"]
    ((_, shards_m),) = published(Home.resolve(server.home), "shards")
    key = f"shards-t-{shards_m.fingerprint[:12]}"
    keys = {key, f"{key}-stats", f"{key}-manifest", f"{key}-lineage"}
    text = open_artifacts_tab(browser, server, shards, keys, SCREENSHOTS / "shards-run.png")
    assert stages["shards"]["name"] in text
    m = read_manifest(artifact_link(server, shards, f"{key}-manifest").parent)
    assert m.flow_run_id == shards and m.flow_run_url == f"{server.url}/runs/flow-run/{shards}"
    rows = json.loads(artifact(server, shards, f"{key}-lineage-runs")["data"])
    # built before anything downstream of it: upstream to the raw files, nothing used it yet
    assert {r["role"] for r in rows} == {"raw", "upstream", "target"}
    assert any(r["node"].startswith("corpus/t") and "flow-run" in r["run"] for r in rows)

    (pretrain_m,) = [
        m
        for _, m in published(Home.resolve(server.home), "pretrain")
        if m.flow_run_id == stages["pretrain"]["id"]
    ]
    plots = artifact(server, stages["pretrain"]["id"], f"pretrain-t-{pretrain_m.fingerprint[:12]}-plots")
    browser.get(f"{server.url}/artifacts/artifact/{plots['id']}")
    wait_text(browser, "loss.png")
    images = browser.find_elements("css selector", "img[alt='loss.png']")
    assert images and browser.execute_script("return arguments[0].naturalWidth", images[0]) > 100
    browser.save_screenshot(str(SCREENSHOTS / "pretrain-plots.png"))
    print(f"\nscreenshots: {SCREENSHOTS}/{{pipeline-run,shards-run,pretrain-plots}}.png")


@pytest.mark.slow
def test_killed_worker_leaves_a_crashed_run_and_no_partial_artifact(server, tmp_path):
    """The heartbeat automation (set up with --within 45) crashes a run whose worker died."""
    override = ["corpus.validation_fraction=0.25"]
    params = {"config": server.config, "home": server.home, "overrides": override}
    run_id = server.create_run("corpus", **params).raise_for_status().json()["id"]
    env = {**server.env, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
    worker = subprocess.Popen(
        [str(PREFECT), "worker", "start", "--pool", "cpu", "--run-once"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert wait_state(server, run_id, {"RUNNING"}, 120)["state"]["type"] == "RUNNING"
    time.sleep(3)  # the first heartbeat goes out as the run starts
    # As if the machine died: SIGKILL the worker and every process under it at once, so no
    # one is left to report (the flow process runs in a session of its own).
    procs = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
    assert len(procs) > 1, "the flow run process was not found under the worker"
    for p in procs:
        p.kill()
    worker.wait()
    killed = time.monotonic()
    run = wait_state(server, run_id, {"CRASHED", "COMPLETED", "FAILED"}, 150)
    assert run["state"]["type"] == "CRASHED", json.dumps(run["state"])
    print(f"\nCrashed {time.monotonic() - killed:.0f}s after the kill: {run['state']['message']}")
    assert run["state"]["message"].startswith("No heartbeat for 45s")  # the automation, not a worker
    plan = plan_pipeline(load_config(server.config, override), Home.resolve(server.home), ("corpus",))
    assert not plan[0].up_to_date  # nothing half-built was published


@pytest.mark.slow
def test_a_run_whose_worker_alone_is_killed_crashes_saying_so(server, tmp_path):
    """Only the worker dies (SIGKILL); its flow run is told, stops, and says why: Crashed with a
    true message, and the reason on the run's Artifacts tab."""
    override = ["corpus.validation_fraction=0.2"]
    params = {"config": server.config, "home": server.home, "overrides": override}
    run_id = server.create_run("corpus", **params).raise_for_status().json()["id"]
    worker = subprocess.Popen(
        [str(PREFECT), "worker", "start", "--pool", "cpu", "--run-once"],
        cwd=tmp_path,
        env=server.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert wait_state(server, run_id, {"RUNNING"}, 120)["state"]["type"] == "RUNNING"
    wait_task_runs(server, run_id)  # the stage has started (the flow process has tied itself to the worker)
    psutil.Process(worker.pid).kill()  # the worker only: its flow run process lives on
    worker.wait()
    run = wait_state(server, run_id, {"CRASHED", "COMPLETED", "FAILED"}, 120)
    assert run["state"]["type"] == "CRASHED", json.dumps(run["state"])
    assert f"the worker (pid {worker.pid}) that started this run died" in run["state"]["message"]
    assert "died while corpus was building" in artifact(server, run_id, "corpus-t-failed")["data"]
