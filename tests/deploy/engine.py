"""A Docker engine, a Debian base image and the node's image for the deployment tests, made on this machine.

No container registry is reachable here, so everything a hospital would pull is made locally:
- the engine: Debian's `dockerd` (package docker.io), started by the tests with its own socket, host
  networking only (no bridge, no iptables), overlay2 where the kernel allows it, else vfs;
- `debian:bookworm-slim`: `debootstrap --variant=minbase` from the Debian mirror apt uses, imported with
  `docker import`; its tarball is cached in CACHE and reused;
- the Python packages: this machine's pip (with its own mirrors and find-links) downloads the node's
  dependencies, torch's CPU wheel included, into a cached wheelhouse, served to the build as a PEP 503
  index on 127.0.0.1 (the build uses host networking). deploy/Dockerfile itself is unchanged: only its
  TORCH_WHEELS and PIP_INDEX_URL build arguments point here instead of at download.pytorch.org and PyPI.
The engine's data root is kept in CACHE too, so the build cache survives from one test run to the next.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.node import REPO

CACHE = Path(os.environ.get("PSMA_DEPLOY_CACHE", "/var/cache/psma-node"))
RUN_DIR = Path("/run/psma-node-docker")
BASE_IMAGE = "debian:bookworm-slim"
NODE_IMAGE = "psma-node:test"
COMPOSE_FILE = REPO / "deploy" / "docker-compose.yml"
TORCH_REQUIREMENT = "torch==2.13.0+cpu"
INDEX_PORT = 38431


class EngineUnavailable(RuntimeError):
    """No Docker engine can run here; the message says why (the tests skip with it)."""


@dataclass
class Engine:
    """A running dockerd reached through its own socket; `docker()` and `compose()` run the real CLIs."""

    socket: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}", "DOCKER_BUILDKIT": "0",
                    "COMPOSE_DOCKER_CLI_BUILD": "0"}

    def docker(self, *args: str, timeout: float = 300, check: bool = True,
               input: bytes | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["docker", *args], env=self.env, capture_output=True, timeout=timeout,
                                input=input.decode() if input is not None else None, text=True)
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    @functools.cached_property
    def compose_command(self) -> list[str]:
        """The v2 plugin where installed, else Debian's docker-compose (v1); the file works with both."""
        if subprocess.run(["docker", "compose", "version"], env=self.env, capture_output=True).returncode == 0:
            return ["docker", "compose"]
        if shutil.which("docker-compose"):
            return ["docker-compose"]
        raise EngineUnavailable("neither the docker compose plugin nor docker-compose is installed")

    def compose(self, project: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.compose_command, "-p", project, "-f", str(COMPOSE_FILE), *args],
                                env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def answers(self) -> bool:
        return self.docker("version", "--format", "{{.Server.Version}}", timeout=20, check=False).returncode == 0

    def stop(self) -> None:
        """Drop older builds of the test images, then stop the daemon if this session started it."""
        self.docker("image", "prune", "-f", timeout=600, check=False)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def _missing_tools() -> list[str]:
    return [tool for tool in ("dockerd", "docker", "debootstrap") if shutil.which(tool) is None]


def start_engine() -> Engine:
    """Reuse the deployment tests' engine if it runs, else start one (overlay2, then vfs)."""
    if os.geteuid() != 0:
        raise EngineUnavailable("the Docker engine needs root here (run `make test` as root)")
    missing = _missing_tools()
    if missing:
        raise EngineUnavailable(f"{', '.join(missing)} not installed (deploy/install-system-packages.sh installs "
                                "docker.io, docker-compose and debootstrap)")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    engine = Engine(RUN_DIR / "docker.sock")
    if engine.socket.exists() and engine.answers():
        return engine
    errors = []
    for driver in ("overlay2", "vfs"):
        log = open(RUN_DIR / f"dockerd-{driver}.log", "wb")
        process = subprocess.Popen(
            ["dockerd", f"--storage-driver={driver}", "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--data-root", str(CACHE / f"docker-{driver}"), "--exec-root", str(RUN_DIR / "exec"),
             "-H", f"unix://{engine.socket}", "--pidfile", str(RUN_DIR / "dockerd.pid")],
            stdout=log, stderr=log, start_new_session=True,
        )
        engine.process = process
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if engine.socket.exists() and engine.answers():
                return engine
            time.sleep(0.5)
        engine.stop()
        log.close()
        errors.append(f"{driver}: " + (RUN_DIR / f"dockerd-{driver}.log").read_text(errors="replace")[-1500:])
    raise EngineUnavailable("dockerd did not start:\n" + "\n".join(errors))


def apt_mirror() -> str:
    """The Debian mirror apt uses on this machine (deb822 sources first, then sources.list)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]:
        if not path.is_file():
            continue
        text = path.read_text()
        for match in re.finditer(r"^URIs:\s*(\S+)", text, flags=re.MULTILINE):
            if "security" not in match.group(1):
                return match.group(1)
        for match in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\b", text, flags=re.MULTILINE):
            return match.group(1)
    return "http://deb.debian.org/debian"


def ensure_base_image(engine: Engine) -> None:
    """debian:bookworm-slim from debootstrap (cached tarball), as no registry can be pulled from."""
    if engine.docker("image", "inspect", BASE_IMAGE, check=False, timeout=30).returncode == 0:
        return
    tarball = CACHE / "debian-bookworm-minbase.tar"
    if not tarball.is_file():
        make_base_tarball(tarball)
    with tarball.open("rb") as stream:
        subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=stream, env=engine.env, check=True,
                       capture_output=True, timeout=300)


def make_base_tarball(tarball: Path) -> None:
    """debootstrap a minimal bookworm and tar it (what `docker import` takes), without apt's caches."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent) as work:
        rootfs = Path(work) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), apt_mirror()],
                       check=True, capture_output=True, timeout=900)
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / leftover).glob("*"):
                if item.is_file():
                    item.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True, capture_output=True,
                       timeout=600)
        partial.rename(tarball)


def ensure_wheelhouse() -> Path:
    """The node's dependencies as wheels (torch's CPU build included), downloaded by this machine's pip."""
    wheelhouse = CACHE / "wheelhouse"
    wheelhouse.mkdir(parents=True, exist_ok=True)
    wanted = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + TORCH_REQUIREMENT.encode()).hexdigest()
    stamp = wheelhouse / ".requirements-sha256"
    if stamp.is_file() and stamp.read_text() == wanted:
        return wheelhouse  # the same requirements as last time: no need to ask the indexes again
    pip = REPO / ".venv" / "bin" / "pip"
    subprocess.run([str(pip), "download", "-q", "-d", str(wheelhouse), TORCH_REQUIREMENT, str(REPO),
                    "setuptools>=68", "wheel"], check=True, capture_output=True, timeout=900, cwd=REPO)
    stamp.write_text(wanted)
    return wheelhouse


def _simple_index(wheelhouse: Path, index: Path) -> None:
    """A PEP 503 index over the wheelhouse: one folder per normalised project name, links to the wheels."""
    for wheel in wheelhouse.glob("*.whl"):
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        (index / project).mkdir(exist_ok=True)
        link = index / project / wheel.name
        if not link.exists():
            link.symlink_to(wheel)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        """The build log shows what pip downloads; the server's own lines add nothing."""


@dataclass
class PackageIndex:
    """The wheelhouse served on 127.0.0.1 while images build."""

    url: str
    server: http.server.ThreadingHTTPServer

    @property
    def build_args(self) -> list[str]:
        return ["--build-arg", f"TORCH_WHEELS={self.url}torch/", "--build-arg", f"PIP_INDEX_URL={self.url}"]


@functools.cache
def _index_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="psma-index-"))


def serve_index(wheelhouse: Path) -> Iterator[PackageIndex]:
    index = _index_dir()
    _simple_index(wheelhouse, index)
    handler = functools.partial(_QuietHandler, directory=str(index))
    try:  # a fixed port keeps the build arguments, and so the build cache, the same from run to run
        server = http.server.ThreadingHTTPServer(("127.0.0.1", INDEX_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield PackageIndex(f"http://127.0.0.1:{server.server_address[1]}/", server)
    finally:
        server.shutdown()
        shutil.rmtree(index, ignore_errors=True)


def build_image(engine: Engine, tag: str, dockerfile: Path, context: Path, build_args: Sequence[str] = (),
                timeout: float = 1200) -> str:
    """`docker build` with host networking; returns the build log (the failure message carries it)."""
    result = engine.docker("build", "--network", "host", "-f", str(dockerfile), "-t", tag, *build_args,
                           str(context), timeout=timeout, check=False)
    if result.returncode != 0:
        raise AssertionError(f"building {tag} failed:\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}")
    return result.stdout
