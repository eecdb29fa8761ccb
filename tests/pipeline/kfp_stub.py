"""A loopback HTTP stand-in for the KFP v2beta1 REST API (what kfp.Client calls to start runs)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.server.requests.append(
            {"method": method, "path": url.path, "query": url.query, "body": body}
        )
        p = url.path
        if p.endswith("/healthz"):
            self._send(200, {"multi_user": False})
        elif p == "/apis/v2beta1/experiments" and method == "POST":
            self._send(
                200,
                {
                    "experiment_id": "exp-1",
                    "display_name": body.get("display_name"),
                    "namespace": "",
                },
            )
        elif p == "/apis/v2beta1/experiments" and method == "GET":
            self._send(200, {"experiments": [], "total_size": 0})
        elif p == "/apis/v2beta1/runs" and method == "POST":
            self._send(200, {**body, "run_id": "run-123", "state": "PENDING"})
        elif p == "/apis/v2beta1/recurringruns" and method == "POST":
            self._send(200, {**body, "recurring_run_id": "rr-456", "status": "ENABLED"})
        else:
            self._send(404, {"error": f"no route {method} {p}", "code": 5})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []


class FakeKfpServer:
    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self._server.requests

    def __enter__(self) -> "FakeKfpServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
