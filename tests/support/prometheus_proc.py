"""A real Prometheus server (Debian's `prometheus` package, as CI installs it) on a free loopback
port, scraping given targets every second and evaluating given rule files; its storage and
config in a temporary directory. And a stand-in for node-exporter's textfile collector."""

import json
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from .redis_proc import find_free_port
from .standin import wait_for

INSTALL_HINT = "apt-get install -y --no-install-recommends prometheus (.ci/run does)"


def binary(name: str) -> str:
    """The path of ``name`` (prometheus, promtool): a missing one fails the test, never skips it."""
    path = shutil.which(name)
    assert path, f"{name} is not on PATH: {INSTALL_HINT}"
    return path


class PrometheusProcess:
    def __init__(self, tmpdir: Path, job: str, targets: list[str], rule_files: list[Path]):
        self.tmpdir, self.port = tmpdir, find_free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                       "rule_files": [str(path) for path in rule_files],
                       "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}]}
        self.proc: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=self.url, timeout=5)

    def start(self, timeout: float = 30) -> "PrometheusProcess":
        config = self.tmpdir / "prometheus.yml"
        config.write_text(json.dumps(self.config))  # YAML is a superset of JSON
        with open(self.tmpdir / "prometheus.log", "wb") as log:
            self.proc = subprocess.Popen(
                [binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={self.tmpdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        if not wait_for(self._ready, timeout=timeout, interval=0.05):
            self.stop()
            raise AssertionError(f"prometheus not ready within {timeout}s; its log:\n{self.log()[-4000:]}")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}; its log:\n{self.log()[-4000:]}")
        try:
            return self.http.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def api(self, path: str, **params) -> dict:
        reply = self.http.get(f"/api/v1/{path}", params=params)
        body = reply.json()
        assert reply.status_code == 200 and body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def log(self) -> str:
        path = self.tmpdir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.tmpdir / "data", ignore_errors=True)


class TextfileServer:
    """A file served at /metrics on a free loopback port, as node-exporter's textfile collector
    passes on what a cron run left (nothing yet: an empty scrape)."""

    def __init__(self, path: Path):
        self.path = path
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _textfile_handler(path))
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "TextfileServer":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _textfile_handler(path: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = path.read_bytes() if path.exists() else b""
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:
            pass

    return Handler
