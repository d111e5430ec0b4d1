"""OHIF's prebuilt viewer (npm package @ohif/app, its dist/) served next to a same-origin proxy to Orthanc.

`deploy/install-ohif-viewer.sh` unpacks the pinned version into a cache folder; `OhifServer` serves it on a
free port with an `app-config.js` whose only data source is Orthanc's DICOMweb plugin, reached through
`/dicom-web/` on the same origin (so no CORS setup in Orthanc), and answers every other path with
index.html as a single-page app needs. `launch_chromium` starts Debian's Chromium through Playwright
(never a downloaded browser).
"""

from __future__ import annotations

import json
import mimetypes
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import requests

from tests.support.node import REPO, free_port

OHIF_VERSION = "3.13.2"
INSTALLER = REPO / "deploy" / "install-ohif-viewer.sh"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PROXIED = ("/dicom-web/", "/wado")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"}
TYPES = {".js": "application/javascript", ".mjs": "application/javascript", ".wasm": "application/wasm",
         ".css": "text/css", ".json": "application/json", ".svg": "image/svg+xml", ".html": "text/html",
         ".woff2": "font/woff2"}


def ohif_dist() -> Path:
    """The unpacked dist/ of the pinned OHIF version (where the installer puts it)."""
    cache = os.environ.get("PSMA_OHIF_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "psma-node" / "ohif")
    return Path(cache) / OHIF_VERSION / "dist"


def app_config() -> str:
    """OHIF's window.config: one DICOMweb source on this origin, nothing fetched from elsewhere."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
        "sourceName": "orthanc",
        "configuration": {
            "friendlyName": "Orthanc (test PACS)",
            "name": "orthanc",
            "wadoUriRoot": "/wado",
            "qidoRoot": "/dicom-web",
            "wadoRoot": "/dicom-web",
            "qidoSupportsIncludeField": False,
            "imageRendering": "wadors",
            "thumbnailRendering": "wadors",
            "enableStudyLazyLoad": True,
            "supportsFuzzyMatching": False,
            "supportsWildcard": True,
            "staticWado": False,
            "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {
        "routerBasename": "/",
        "extensions": [],
        "modes": [],
        "showStudyList": True,
        "maxNumberOfWebWorkers": 2,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "orthanc",
        "dataSources": [source],
    }
    return f"window.config = {json.dumps(config, indent=2)};\n"


class OhifServer:
    """The viewer and the DICOMweb proxy on one free port, in a background thread; stop() always ends it."""

    def __init__(self, dist: Path, orthanc_url: str) -> None:
        self.dist = dist.resolve()
        self.orthanc_url = orthanc_url.rstrip("/")
        self.port = free_port()
        self.config_js = app_config().encode()
        self.proxy_errors: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        if not (self.dist / "index.html").exists():
            raise FileNotFoundError(f"OHIF {OHIF_VERSION} not installed at {self.dist}: run {INSTALLER}")
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def log_message(self, *_: Any) -> None:  # quiet: failures are collected in proxy_errors
                return

            def handle(self) -> None:
                try:
                    super().handle()
                except (ConnectionResetError, BrokenPipeError):
                    pass  # the browser closed a connection it no longer needed

            def do_GET(self) -> None:
                owner.handle(self, "GET")

            def do_POST(self) -> None:
                owner.handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ohif-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        path = request.path.split("?", 1)[0]
        if path.startswith(PROXIED):
            self._proxy(request, method)
        elif path == "/app-config.js":
            self._send(request, 200, "application/javascript", self.config_js)
        else:
            self._static(request, path)

    def _static(self, request: BaseHTTPRequestHandler, path: str) -> None:
        target = (self.dist / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.dist) or not target.is_file():
            target = self.dist / "index.html"  # the single-page app routes every other path itself
        kind = TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self._send(request, 200, kind, target.read_bytes())

    def _proxy(self, request: BaseHTTPRequestHandler, method: str) -> None:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "content-type")}
        body = None
        if method == "POST":
            body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        try:
            answer = requests.request(method, self.orthanc_url + request.path, headers=headers, data=body,
                                      timeout=60)
        except requests.RequestException as error:
            self.proxy_errors.append(f"{method} {request.path}: {error}")
            self._send(request, 502, "text/plain", str(error).encode())
            return
        if answer.status_code >= 500:
            self.proxy_errors.append(f"{method} {request.path}: HTTP {answer.status_code}")
        request.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in HOP_BY_HOP:
                request.send_header(key, value)
        request.send_header("Content-Length", str(len(answer.content)))
        request.end_headers()
        request.wfile.write(answer.content)

    @staticmethod
    def _send(request: BaseHTTPRequestHandler, status: int, kind: str, body: bytes) -> None:
        request.send_response(status)
        request.send_header("Content-Type", kind)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
