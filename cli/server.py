"""Run lmpipe against a self-hosted Prefect server: start it, prepare it, wait for it.

    lmpipe server --port 4200            # prefect server start on 127.0.0.1 (SQLite by default)
    lmpipe setup-server                  # work pools cpu + gpu, and the crash-detection automation

A worker that is killed (OOM, SIGKILL, lost machine) leaves its flow run "Running" forever on a
self-hosted server: nothing reports the death. Flow runs started from deployments emit a
heartbeat event every `PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (default 180, minimum 30);
the automation made here marks a run Crashed when no heartbeat (and no terminal state) follows
the last one within `within_s` seconds. Keep `within_s` above the heartbeat frequency.
"""

import os
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

import flows  # noqa: F401  (offline + no-telemetry environment)
from runners import signal_on_parent_death
from schemas.config import PROJECT_ROOT

ZOMBIE_AUTOMATION = "lmpipe: crash zombie flow runs"
POOLS = {"cpu": "process", "gpu": "process"}
PREFECT = Path(sys.executable).with_name("prefect")


def die_with(parent: int):
    """A `preexec_fn`: the child gets SIGTERM when `parent` (the process starting it) dies, by
    SIGKILL too (Linux `PR_SET_PDEATHSIG`). Elsewhere it does nothing.

    >>> subprocess.Popen(["sleep", "1000"], preexec_fn=die_with(os.getpid()))  # gone with us
    """

    def tie() -> None:
        if signal_on_parent_death() and os.getppid() != parent:  # it died before the prctl took effect
            os._exit(1)

    return tie


class _TiedSubprocess:
    """The `subprocess` module as Prefect's server module sees it, its Popen children tied to us."""

    def __getattr__(self, name: str):
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args, **kwargs):  # noqa: N802 (subprocess's name)
        return subprocess.Popen(*args, preexec_fn=die_with(os.getpid()), **kwargs)


def tie_temporary_server() -> None:
    """Make the temporary Prefect server that a flow run without PREFECT_API_URL starts die
    with this process. Prefect stops it at exit (atexit), which SIGKILL and SIGTERM skip: it
    then ran on forever (uvicorn, ~230 MB). Idempotent."""
    from prefect.server.api import server as prefect_server

    prefect_server.subprocess = _TiedSubprocess()


def server_command(host: str = "127.0.0.1", port: int = 4200) -> list[str]:
    return [str(PREFECT), "server", "start", "--host", host, "--port", str(port)]


def wait_healthy(api_url: str, timeout_s: float = 120.0, proc: subprocess.Popen | None = None) -> float:
    """Seconds until `GET {api_url}/health` answers 200; raises with a clear message otherwise."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {proc.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"prefect server at {api_url} not healthy after {timeout_s:.0f}s")


# Flow runs of the deployments beat every HEARTBEAT_S seconds (prefect.yaml sets
# PREFECT_FLOWS_HEARTBEAT_FREQUENCY for both pools; Prefect's default is 180, its minimum 30), and
# a run is declared dead after three missed beats: a lost machine shows Crashed within 2 minutes.
HEARTBEAT_S = 30


def default_within_s() -> int:
    """Three heartbeats: a run is declared dead only after it missed three in a row."""
    return 3 * HEARTBEAT_S


def zombie_automation(within_s: int):
    """Crashed, for a flow run whose heartbeats stop without a terminal state (Prefect's recipe)."""
    from prefect.automations import AutomationCore
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="Marks a flow run Crashed when its heartbeats stop (a killed worker or machine).",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {within_s}s: the worker or its machine died.",
            )
        ],
    )


async def setup_server(within_s: int) -> list[str]:
    """Create the work pools and (re)create the zombie automation; returns what was done."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    done = []
    async with get_client() as client:
        for name, kind in POOLS.items():
            try:
                await client.read_work_pool(name)
                done.append(f"work pool {name}: exists")
            except ObjectNotFound:
                template = ProcessWorker.get_default_base_job_template()
                await client.create_work_pool(
                    WorkPoolCreate(name=name, type=kind, base_job_template=template)
                )
                done.append(f"work pool {name}: created ({kind})")
        for old in await client.read_automations_by_name(ZOMBIE_AUTOMATION):
            await client.delete_automation(old.id)
        await client.create_automation(zombie_automation(within_s))
        done.append(f"automation {ZOMBIE_AUTOMATION!r}: Crashed after {within_s}s without a heartbeat")
    return done


def run_server(host: str, port: int) -> int:
    """`prefect server start` in the foreground, telemetry off; Ctrl-C stops it."""
    api = f"http://{host}:{port}/api"
    # The UI calls PREFECT_UI_API_URL, which defaults to :4200 whatever --port says.
    env = {"PREFECT_UI_API_URL": api, **os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    print(f"UI: http://{host}:{port}   clients: export PREFECT_API_URL={api}", flush=True)
    try:
        return subprocess.call(server_command(host, port), env=env)
    except KeyboardInterrupt:
        return 0


async def schedule_states() -> dict[tuple[str, str], tuple]:
    """{(deployment name, schedule slug): (deployment id, schedule id, active)} on the server."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        deployments = await client.read_deployments()
    return {(d.name, s.slug): (d.id, s.id, s.active) for d in deployments for s in d.schedules if s.slug}


async def deploy_keeping_schedules() -> list[str]:
    """`prefect deploy --all`, then every schedule someone switched on or off keeps that state.

    prefect.yaml gives each schedule a slug, so a redeploy updates it in place (same id) instead
    of replacing it; but the file's `active: false` (how corpus-refresh ships) would switch an
    activated schedule off again. Returns what was restored."""
    from prefect.client.orchestration import get_client

    before = await schedule_states()
    subprocess.run([str(PREFECT), "--no-prompt", "deploy", "--all"], cwd=PROJECT_ROOT, check=True)
    restored = []
    async with get_client() as client:
        for key, (deployment, schedule, active) in (await schedule_states()).items():
            if key in before and before[key][2] != active:
                await client.update_deployment_schedule(deployment, schedule, active=before[key][2])
                restored.append(
                    f"schedule {key[1]} of {key[0]}: kept {'active' if before[key][2] else 'inactive'}"
                )
    return restored
