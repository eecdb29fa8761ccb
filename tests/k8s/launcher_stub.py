"""A loopback HTTP stand-in for the Kubernetes API server (just what the launcher calls).

Serves the real REST paths the ``kubernetes`` client uses:
``/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs[/{name}]`` and
``/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs[/{name}]`` (POST, GET,
DELETE), the discovery documents ``/apis/{group}/{version}`` of the kinds in ``served``,
``/api/v1/namespaces/{ns}/pods`` (list with labelSelector) and ``.../pods/{pod}/log``.
Each GET of a job advances it one step along ``script`` (a list of condition types), so
tests describe a job's life as e.g. ``["Created", "Running", "Succeeded"]`` (a TrainJob reports
``Complete`` where the script says ``Succeeded``, as Trainer v2 does). A TrainJob that names a
runtime missing from ``runtimes`` is refused like Trainer v2's admission webhook refuses it, and
``GET .../trainingruntimes/{name}`` (or ``clustertrainingruntimes``) finds only those runtimes.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

JOB_PATH = re.compile(
    r"^/apis/(kubeflow\.org/v1|trainer\.kubeflow\.org/v1alpha1)/namespaces/([^/]+)/"
    r"(pytorchjobs|trainjobs)(?:/([^/]+))?$"
)
RUNTIME_PATH = re.compile(
    r"^/apis/trainer\.kubeflow\.org/v1alpha1/(?:namespaces/[^/]+/)?"
    r"(trainingruntimes|clustertrainingruntimes)/([^/]+)$"
)
DISCOVERY_PATH = re.compile(r"^/apis/([^/]+)/([^/]+)/?$")
GROUP_VERSION = {"pytorchjobs": "kubeflow.org/v1", "trainjobs": "trainer.kubeflow.org/v1alpha1"}
PODS_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
LOG_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")


@dataclass
class ApiState:
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: condition types the job walks through, one per GET; the last one sticks
    script: list[str] = field(default_factory=lambda: ["Created", "Running", "Succeeded"])
    #: replaces ``script`` at the next create (a job re-created after a failure behaves anew)
    next_script: list[str] | None = None
    fail_reason: str = "BackoffLimitExceeded"
    log_lines: list[str] = field(default_factory=lambda: ["step 1 loss 0.9", "step 2 loss 0.5"])
    terminated_reason: str = "Error"
    #: (method, path-regex) -> 403 with the API server's message
    forbid: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    creates: int = 0
    deletes: int = 0
    steps: dict[str, int] = field(default_factory=dict)
    #: job resources the "cluster" has CRDs for
    served: set[str] = field(default_factory=lambda: {"pytorchjobs", "trainjobs"})
    #: Trainer v2 runtimes that exist (a TrainJob naming another one is refused)
    runtimes: set[str] = field(default_factory=lambda: {"sam2kf-torch", "torch-distributed"})


def _condition(kind: str, reason: str) -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "message": f"job is {kind.lower()}"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, code: int, body: Any, *, ctype: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._send(
            code,
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "message": message,
                "reason": reason,
                "code": code,
            },
        )

    def _forbidden(self, method: str, path: str) -> bool:
        st = self.server.state
        for (m, pattern), msg in st.forbid.items():
            if m == method and re.search(pattern, path):
                self._status(403, "Forbidden", msg)
                return True
        return False

    def _handle(self, method: str) -> None:
        st = self.server.state
        url = urlparse(self.path)
        st.requests.append((method, url.path))
        if self._forbidden(method, url.path):
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        if (m := JOB_PATH.match(url.path)) and m.group(3) in st.served:
            self._job(method, m.group(2), m.group(4), body, m.group(3))
        elif (m := RUNTIME_PATH.match(url.path)) and method == "GET":
            if m.group(2) in st.runtimes:
                self._send(200, {"kind": "TrainingRuntime", "metadata": {"name": m.group(2)}})
            else:
                self._status(404, "NotFound", f'{m.group(1)} "{m.group(2)}" not found')
        elif (m := DISCOVERY_PATH.match(url.path)) and method == "GET":
            self._discovery(f"{m.group(1)}/{m.group(2)}")
        elif (m := PODS_PATH.match(url.path)) and method == "GET":
            self._pods(m.group(1), parse_qs(url.query).get("labelSelector", [""])[0])
        elif (m := LOG_PATH.match(url.path)) and method == "GET":
            stamped = [
                f"2026-11-22T00:00:{i:02d}.000000000Z {line}" for i, line in enumerate(st.log_lines)
            ]
            self._send(200, ("\n".join(stamped) + "\n").encode(), ctype="text/plain")
        else:
            self._status(404, "NotFound", f"no route {method} {url.path}")

    def _discovery(self, group_version: str) -> None:
        served = [p for p in self.server.state.served if GROUP_VERSION[p] == group_version]
        if not served:
            self._status(404, "NotFound", "the server could not find the requested resource")
            return
        resources = [
            {"name": p, "singularName": "", "namespaced": True, "kind": "", "verbs": ["create"]}
            for p in served
        ]
        self._send(
            200,
            {"kind": "APIResourceList", "groupVersion": group_version, "resources": resources},
        )

    def _job(self, method: str, ns: str, name: str | None, body: Any, plural: str) -> None:
        st = self.server.state
        resource = f"{plural}.{GROUP_VERSION[plural].split('/')[0]}"
        with self.server.lock:
            if method == "POST":
                name = body["metadata"]["name"]
                runtime = (body.get("spec") or {}).get("runtimeRef", {}).get("name")
                if plural == "trainjobs" and runtime not in st.runtimes:
                    kind = body["spec"]["runtimeRef"].get("kind", "ClusterTrainingRuntime")
                    self._status(
                        422,
                        "Invalid",
                        f'admission webhook "validator.trainjob.trainer.kubeflow.org" denied the '
                        f"request: spec.runtimeRef: Not found: {kind}.trainer.kubeflow.org "
                        f"{runtime!r} not found",
                    )
                    return
                if name in st.jobs:
                    self._status(409, "AlreadyExists", f'{resource} "{name}" already exists')
                    return
                st.creates += 1
                if st.next_script is not None:
                    st.script, st.next_script = st.next_script, None
                body.setdefault("status", {})
                st.jobs[name] = body
                st.steps[name] = 0
                self._send(201, body)
            elif method == "GET" and name:
                job = st.jobs.get(name)
                if job is None:
                    self._status(404, "NotFound", f'{resource} "{name}" not found')
                    return
                i = min(st.steps[name], len(st.script) - 1)
                st.steps[name] += 1
                kind = st.script[i]
                if plural == "trainjobs" and kind == "Succeeded":
                    kind = "Complete"
                reason = st.fail_reason if kind == "Failed" else f"PyTorchJob{kind}"
                conds = [
                    _condition(k, f"PyTorchJob{k}")
                    for k in st.script[:i]
                    if k not in ("Failed", "Succeeded")
                ]
                job["status"] = {"conditions": [*conds, _condition(kind, reason)]}
                self._send(200, job)
            elif method == "DELETE" and name:
                if st.jobs.pop(name, None) is None:
                    self._status(404, "NotFound", f'{resource} "{name}" not found')
                    return
                st.deletes += 1
                self._send(200, {"kind": "Status", "status": "Success"})
            else:
                self._status(405, "MethodNotAllowed", method)

    def _pods(self, ns: str, selector: str) -> None:
        st = self.server.state
        m = re.search(r"(?:job-name|jobset-name)=([^,]+)", selector)
        job = m.group(1) if m else ""
        items = []
        if job in st.jobs:
            items.append(
                {
                    "metadata": {
                        "name": f"{job}-master-0",
                        "namespace": ns,
                        "creationTimestamp": "2026-11-22T00:00:00Z",
                    },
                    "status": {
                        "phase": "Failed",
                        "containerStatuses": [
                            {
                                "name": "pytorch",
                                "image": "img:1",
                                "imageID": "",
                                "ready": False,
                                "restartCount": 0,
                                "state": {
                                    "terminated": {"exitCode": 137, "reason": st.terminated_reason}
                                },
                            }
                        ],
                    },
                }
            )
        self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: ApiState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.lock = threading.Lock()


class FakeApiServer:
    """Start with ``with FakeApiServer() as api: api.client`` (a real kubernetes ApiClient)."""

    def __init__(self, state: ApiState | None = None) -> None:
        self.state = state or ApiState()
        self._server = _Server(self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api_client(self) -> Any:
        from kubernetes import client

        cfg = client.Configuration(host=self.host)
        return client.ApiClient(cfg)

    def __enter__(self) -> FakeApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
