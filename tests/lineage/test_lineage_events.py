"""OpenLineage events through HTTP when configured the library's way (OPENLINEAGE_URL), and a
FAIL event when a build fails. The default file transport and the graph it carries are checked
on the end-to-end run (tests/operations/test_pipeline.py::assert_openlineage_graph)."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flows.corpus import corpus_flow
from schemas.base import fingerprint_view
from schemas.config import PROJECT_ROOT, load_config
from schemas.stages import STAGES
from tasks.artifacts import Home, sha256_file, sha256_json
from tasks.lineage_events import events_file

pytestmark = pytest.mark.e2e


class Collector(BaseHTTPRequestHandler):
    """A stand-in OpenLineage endpoint (as Marquez's /api/v1/lineage): keeps what it is sent."""

    received: list[tuple[str, dict]] = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Collector.received.append((self.path, json.loads(body)))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_failed_stage_sends_start_and_fail_over_http(
    prefect_harness, no_openlineage_config, tiny_config, tmp_path, monkeypatch
):
    home = str(tmp_path / "home")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("OPENLINEAGE_NAMESPACE", "lab")
    monkeypatch.setenv("LMPIPE_CRASH_AT", "corpus:after_build:raise")
    try:
        with pytest.raises(RuntimeError, match="injected failure"):
            corpus_flow(config=str(tiny_config), home=home)
    finally:
        server.shutdown()

    assert [path for path, _ in Collector.received] == ["/api/v1/lineage"] * 2
    start, fail = (event for _, event in Collector.received)
    assert (start["eventType"], fail["eventType"]) == ("START", "FAIL")
    assert start["run"]["runId"] == fail["run"]["runId"]
    assert start["job"] == fail["job"] and (start["job"]["namespace"], start["job"]["name"]) == (
        "lab",
        "corpus",
    )
    assert "injected failure at corpus:after_build" in fail["run"]["facets"]["errorMessage"]["message"]
    raw = {str(p): sha256_file(p) for p in (tiny_config.parent / "raw").glob("*.jsonl")}
    assert {d["name"]: d["facets"]["version"]["datasetVersion"] for d in fail["inputs"]} == raw
    assert fail["outputs"] == []  # nothing was published
    facet = start["run"]["facets"]["lmpipe"]
    section = load_config(str(tiny_config)).corpus
    assert facet["config_fingerprint"] == sha256_json(fingerprint_view(section))
    assert facet["code"]["format"] == STAGES["corpus"].version and facet["code"]["package"] == "0.1.0"
    assert not events_file(Home.resolve(home)).exists()  # configured transport, not the default file


def facet(flow_run_id: str):
    from tasks.lineage_events import LmpipeRunFacet

    return LmpipeRunFacet(
        stage="corpus",
        config_name="t",
        fingerprint="f" * 64,
        config_fingerprint="c" * 64,
        code={},
        flow_run_id=flow_run_id,
    )


def sent(home) -> list[dict]:
    return [json.loads(line) for line in events_file(home).read_text().splitlines()]


def test_a_retry_is_a_new_run_linked_to_the_first(no_openlineage_config, tmp_path):
    from tasks.lineage_events import StageRun

    home, first = Home.resolve(tmp_path / "home"), "0b7e2c36-54a1-4c4e-9d57-5d0c3a51e1aa"
    StageRun(home, [], facet(first)).start()
    StageRun(home, [], facet(first), attempt=2).start()
    one, two = sent(home)
    assert one["run"]["runId"] == first and "parent" not in one["run"]["facets"]
    assert two["run"]["runId"] != first
    assert two["run"]["facets"]["parent"]["run"]["runId"] == first
    assert two["run"]["facets"]["parent"]["job"]["name"] == "corpus"


def test_a_run_whose_process_died_is_aborted_by_the_next(no_openlineage_config, tmp_path):
    """A child process starts a stage run and is SIGKILLed: its START has no end until
    abort_orphans (called by the next stage run) sends ABORT, once."""
    from tasks.lineage_events import abort_orphans

    home = Home.resolve(tmp_path / "home")
    child = (
        "import os, signal, sys; sys.path.insert(0, sys.argv[1]); "
        "sys.path.insert(0, sys.argv[1] + '/tests/lineage'); from test_lineage_events import facet; "
        "from tasks.lineage_events import StageRun; "
        "from tasks.artifacts import Home; "
        "StageRun(Home.resolve(sys.argv[2]), [], facet('6f1d3c2a-8b7e-4f60-a1d2-3c4b5a697887')).start(); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    died = subprocess.run(
        [sys.executable, "-c", child, str(PROJECT_ROOT), str(tmp_path / "home")], check=False
    )
    assert died.returncode == -9
    assert [e["eventType"] for e in sent(home)] == ["START"]
    assert abort_orphans(home) == ["6f1d3c2a-8b7e-4f60-a1d2-3c4b5a697887"]
    assert abort_orphans(home) == []
    start, abort = sent(home)
    assert abort["eventType"] == "ABORT" and abort["run"]["runId"] == start["run"]["runId"]
    assert "died while building" in abort["run"]["facets"]["errorMessage"]["message"]


def test_a_finished_run_leaves_no_marker(no_openlineage_config, tmp_path):
    from tasks.lineage_events import StageRun, abort_orphans, running_dir

    home = Home.resolve(tmp_path / "home")
    run = StageRun(home, [], facet("9c0e8a7b-1d2f-4e3a-8b4c-5d6e7f809aab"))
    run.start()
    assert run.marker().is_file()
    run.fail(RuntimeError("boom"))
    assert not any(running_dir(home).iterdir()) and abort_orphans(home) == []
