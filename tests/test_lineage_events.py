"""OpenLineage events through HTTP when configured the library's way (OPENLINEAGE_URL), and a
FAIL event when a build fails. The default file transport and the graph it carries are checked
on the end-to-end run (tests/test_pipeline.py::assert_openlineage_graph)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from flows.corpus import corpus_flow
from schemas.base import fingerprint_view
from schemas.config import load_config
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
