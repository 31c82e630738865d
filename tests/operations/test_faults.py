"""Faults: a stage killed at any commit point publishes nothing partial, and the rerun
produces the same fingerprint and file hashes as an uninterrupted run.

Each scenario runs `lmpipe run <stage>` in a child process against the test session's Prefect
server, with LMPIPE_CRASH_AT naming the point and the action (see tasks/faults.py).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.config import PROJECT_ROOT
from tasks.artifacts import Home, published, verify

pytestmark = pytest.mark.e2e


def lmpipe(args: list[str], home: Path, crash: str | None = None, wait: bool = True):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "LMPIPE_CRASH_AT": crash or ""}
    cmd = [sys.executable, "-m", "cli", "run", *args, "--home", str(home)]
    if not wait:
        return subprocess.Popen(
            cmd, env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    return subprocess.run(cmd, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)


def hashes(home: Path, stage: str) -> tuple[str, dict[str, str]]:
    [(_, manifest)] = published(Home.resolve(home), stage)
    return manifest.fingerprint, {f.path: f.sha256 for f in manifest.files}


@pytest.fixture(scope="module")
def reference(prefect_harness, tmp_path_factory):
    """An uninterrupted corpus -> tokenizer -> shards run to compare against."""
    root = tmp_path_factory.mktemp("faults")
    import yaml

    from tests.conftest import tiny_config_data

    config = root / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config_data(root / "raw")))
    home = root / "reference"
    for stage in ("corpus", "tokenizer", "shards"):
        result = lmpipe([stage, "--config", str(config)], home)
        assert result.returncode == 0, result.stdout + result.stderr
    return config, home


@pytest.mark.parametrize(
    ("stage", "point"),
    [
        ("corpus", "before_rename"),  # data and manifest written, not yet renamed into place
        ("corpus", "after_rename"),  # committed, the process dies before reporting
        ("shards", "after_pretrain-train-00000.arrow"),  # half the shard files written
        ("shards", "after_build"),  # all data written, contracts not yet run
    ],
)
def test_sigkill_leaves_nothing_partial_and_rerun_matches(reference, tmp_path, stage, point):
    config, ref_home = reference
    home = tmp_path / "home"
    if stage == "shards":  # reuse the reference upstream: fingerprints do not depend on location
        for up in ("corpus", "tokenizer"):
            shutil.copytree(Home.resolve(ref_home).stage_dir(up), Home.resolve(home).stage_dir(up))
    killed = lmpipe([stage, "--config", str(config)], home, crash=f"{stage}:{point}:SIGKILL")
    assert killed.returncode == -9
    visible = published(Home.resolve(home), stage)
    if point == "after_rename":  # the rename is the commit: what is visible is complete
        assert len(visible) == 1 and verify(visible[0][0]) == []
    else:
        assert visible == []
    rerun = lmpipe([stage, "--config", str(config)], home)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert hashes(home, stage) == hashes(ref_home, stage)
    assert not list(Home.resolve(home).stage_dir(stage).glob(".tmp-*"))


def test_full_disk_is_a_clear_error_and_publishes_nothing(reference, tmp_path):
    config, _ = reference
    home = tmp_path / "home"
    failed = lmpipe(["corpus", "--config", str(config)], home, crash="corpus:after_build:enospc")
    assert failed.returncode != 0
    error = next(x for x in failed.stderr.splitlines() if x.startswith("lmpipe: error:"))
    # the home's disk and the room the build needs, never the source it was reading
    assert re.search(
        r"No space left on device: the filesystem mounted at \S+ \(holding \S+/corpus\) has \d+ MiB free"
        r".*; the corpus build needs about \d+ MiB \(it had written \d+ MiB when the disk filled\)",
        error,
    ), error
    assert "data/raw" not in error and ".jsonl" not in error
    assert published(Home.resolve(home), "corpus") == []
    assert not list(Home.resolve(home).stage_dir("corpus").glob(".tmp-*"))


def test_two_runs_of_one_stage_build_it_once(reference, tmp_path):
    config, ref_home = reference
    home = tmp_path / "home"
    runs = [lmpipe(["corpus", "--config", str(config)], home, wait=False) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in runs]
    assert [p.returncode for p in runs] == [0, 0], outputs
    lines = [next(x for x in out.splitlines() if x.startswith("corpus ")) for out in outputs]
    assert sorted(line.split()[1] for line in lines) == ["ran", "skipped"], lines
    assert hashes(home, "corpus") == hashes(ref_home, "corpus")


def children(pid: int) -> dict[int, str]:
    """{pid: command line} of the processes whose parent is `pid` (from /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                found[int(stat.parent.name)] = (
                    (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_lmpipe_run_leaves_no_temporary_prefect_server(sig, tiny_config, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # a temporary server
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    cmd = [sys.executable, "-m", "cli", "run", "corpus", "--config", str(tiny_config)]
    run = subprocess.Popen([*cmd, "--home", str(tmp_path / "home")], env=env, cwd=PROJECT_ROOT)
    deadline, server = time.monotonic() + 120, None
    while server is None and time.monotonic() < deadline and run.poll() is None:
        server = next((p for p, cmd in children(run.pid).items() if "uvicorn" in cmd), None)
        time.sleep(0.05)
    assert server is not None, "lmpipe run started no temporary Prefect server"
    run.send_signal(sig)
    run.wait(timeout=30)
    deadline = time.monotonic() + 15
    while alive(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphan = alive(server)
    if orphan:
        os.kill(server, signal.SIGKILL)
    assert not orphan, f"the temporary Prefect server (pid {server}) outlived lmpipe run ({sig.name})"


def test_a_failing_run_prints_one_error_line_and_no_traceback(prefect_harness, tiny_config, tmp_path):
    empty = tmp_path / "raw" / "empty.jsonl"
    empty.write_text("")
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        tiny_config.read_text().replace("  sources:\n", f"  sources:\n  - {{task: qa, path: {empty}}}\n")
    )
    failed = lmpipe(["corpus", "--config", str(bad)], tmp_path / "home")
    out = failed.stdout + failed.stderr
    assert failed.returncode == 2 and "Traceback" not in out, out
    assert f"lmpipe: error: contract corpus/sources failed: source '{empty}' (qa) gave no records" in out
