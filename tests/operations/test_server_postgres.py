"""The production setup: the Prefect server on PostgreSQL (PREFECT_API_DATABASE_CONNECTION_URL).

A throwaway PostgreSQL cluster from Debian's `postgresql` package (initdb + pg_ctl, trust auth,
127.0.0.1 on a free port, in a tmp dir) backs a `prefect server start`; `lmpipe setup-server`
and `prefect deploy --all` then write their rows into PostgreSQL, not SQLite. Skips when the
PostgreSQL binaries are not installed.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from test_server import Server, free_port

from cli.server import PREFECT
from schemas.config import PROJECT_ROOT

pytestmark = pytest.mark.e2e
BINDIR = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), None)
if BINDIR is None and shutil.which("initdb"):
    BINDIR = os.path.dirname(shutil.which("initdb"))
DEPLOYMENTS = {d["name"] for d in yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())["deployments"]}


def _has_user(name: str) -> bool:
    import pwd

    try:
        return bool(pwd.getpwnam(name))
    except KeyError:
        return os.geteuid() != 0  # only root needs to switch to it


def as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run the cluster as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres():
    if BINDIR is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    if os.geteuid() == 0 and (not shutil.which("runuser") or not _has_user("postgres")):
        pytest.skip("running as root needs runuser and a `postgres` user (apt-get install postgresql)")
    # Not under pytest's tmp dir: its root-only (0700) parents would lock the postgres user out.
    root = Path(tempfile.mkdtemp(prefix="lmpipe-pg-"))
    data, port = root / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    subprocess.run(
        as_postgres([f"{BINDIR}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres"]),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    pg_ctl = [f"{BINDIR}/pg_ctl", "-D", str(data), "-l", str(root / "pg.log"), "-w"]
    subprocess.run(as_postgres([*pg_ctl, "-o", opts, "start"]), check=True, capture_output=True)
    try:
        psql = [f"{BINDIR}/psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-tAc"]
        subprocess.run([*psql, "create database prefect"], check=True, capture_output=True)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect", psql
    finally:
        subprocess.run(as_postgres([*pg_ctl, "-m", "fast", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_server_on_postgresql_holds_pools_automation_and_deployments(postgres, tmp_path):
    url, psql = postgres
    srv = Server(tmp_path, {"PREFECT_API_DATABASE_CONNECTION_URL": url})
    try:
        srv.run(sys.executable, "-m", "cli", "setup-server")
        srv.run(str(PREFECT), "--no-prompt", "deploy", "--all")
        r = srv.create_run("corpus", force="maybe")
        assert r.status_code == 409  # parameter schema enforced on this backend too
    finally:
        srv.stop()

    def query(sql: str) -> list[str]:
        return subprocess.run(
            [*psql, sql, "prefect"], check=True, capture_output=True, text=True
        ).stdout.split()

    assert set(query("select name from deployment")) == DEPLOYMENTS
    assert set(query("select name from work_pool")) >= {"cpu", "gpu"}
    assert query("select count(*) from automation where name like 'lmpipe:%'") == ["1"]
    assert not list((tmp_path / "prefect-home").glob("*.db"))  # no SQLite database was made
