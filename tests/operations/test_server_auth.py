"""API authentication on a self-hosted server: no credentials, no access.

The server runs with PREFECT_SERVER_API_AUTH_STRING; clients authenticate with
PREFECT_API_AUTH_STRING (docs/operations.md). Only the health check answers anonymously.
"""

import subprocess

import httpx
import pytest
from test_server import Server

from cli.server import PREFECT
from schemas.config import PROJECT_ROOT

pytestmark = pytest.mark.e2e
SECRET = "admin:s3cret-for-tests"


def test_unauthenticated_requests_are_refused(tmp_path):
    srv = Server(tmp_path, {"PREFECT_SERVER_API_AUTH_STRING": SECRET, "PREFECT_API_AUTH_STRING": SECRET})
    try:
        anon = httpx.Client(base_url=srv.api, timeout=30)
        assert anon.get("/health").status_code == 200
        assert anon.post("/flow_runs/filter", json={}).status_code == 401
        assert anon.get("/version").status_code == 401
        assert anon.post("/flow_runs/filter", json={}, auth=("admin", "wrong")).status_code == 401
        assert (
            anon.post("/flow_runs/filter", json={}, headers={"Authorization": "Bearer x"}).status_code == 401
        )
        assert anon.post("/flow_runs/filter", json={}, auth=tuple(SECRET.split(":"))).status_code == 200

        cmd = [str(PREFECT), "work-pool", "ls"]
        with_credentials = subprocess.run(
            cmd, env=srv.env, cwd=PROJECT_ROOT, capture_output=True, timeout=120
        )
        assert with_credentials.returncode == 0, with_credentials.stderr
        env = {k: v for k, v in srv.env.items() if k != "PREFECT_API_AUTH_STRING"}
        without = subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
        assert without.returncode != 0 and "401" in without.stdout + without.stderr
    finally:
        srv.stop()
