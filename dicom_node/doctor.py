"""`psma-node doctor`: check that this machine can run the node as configured, and say what to fix.

Each check returns OK, WARN or FAIL with a message naming the thing checked and, when it is not OK, the
action that fixes it. The checks only look: they create no database, folder or schema (a write probe file
is created and removed again), so the doctor is safe to run next to a running node.

Over 500 lines because it is a list of independent checks with one shape each; an admin reads them as the
one catalogue of what the node needs, so they stay together.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import ssl
import tempfile
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from alembic.script import ScriptDirectory
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from db.session import alembic_config, current_revision, head_revision, make_engine
from dicom_node import readiness
from dicom_node.admission import admit, unbound_exposure
from dicom_node.association import destination_tls, keep_responses_for_sender
from dicom_node.config import Destination, Settings
from dicom_node.preflight import nearest_existing

DCMTK_TOOLS = ("echoscu", "storescu", "findscu", "dcmdump")
# TotalSegmentator 2.x weight folders (under TOTALSEG_HOME_DIR/nnunet/results) that the localizer's
# `--roi_subset prostate urinary_bladder` run loads: the 6 mm crop model 298 plus the organ model 291,
# or with --fast the 3 mm model 297.
TOTALSEG_DATASETS = {False: (291, 298), True: (297, 298)}
TOTALSEG_MANIFEST = "SHA256SUMS"
_MANIFEST_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")  # sha256sum text and binary mode


class Status(str, Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class CheckResult:
    """One line of the doctor's report."""

    name: str
    status: Status
    message: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status.value:<4}  {self.name}: {self.message}"
        return text + (f"  -> fix: {self.fix}" if self.fix and self.status is not Status.OK else "")


@dataclass(frozen=True)
class EchoOutcome:
    ok: bool
    detail: str
    speaks_dicom: bool = False


def c_echo(
    host: str, port: int, called_ae: str, calling_ae: str, timeout: float,
    tls_context: ssl.SSLContext | None = None,
) -> EchoOutcome:
    """C-ECHO a peer, telling apart 'nothing listens', 'no answer', 'not DICOM', 'rejected' and success."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except ConnectionRefusedError:
        return EchoOutcome(False, "connection refused (nothing listens there)")
    except socket.gaierror as exc:
        return EchoOutcome(False, f"cannot resolve host {host!r} ({exc.strerror})")
    except TimeoutError:
        return EchoOutcome(False, f"no answer within {timeout:g} s (host down or firewalled)")
    except OSError as exc:
        return EchoOutcome(False, f"cannot connect ({exc.strerror or exc})")
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    ae.add_requested_context(Verification)
    tls_args = (tls_context, host) if tls_context is not None else None
    assoc = ae.associate(host, port, ae_title=called_ae, tls_args=tls_args)
    try:
        if assoc.is_established:
            keep_responses_for_sender(assoc)
            status = assoc.send_c_echo()
            assoc.release()
            if status is not None and int(getattr(status, "Status", -1)) == 0:
                return EchoOutcome(True, "C-ECHO succeeded", speaks_dicom=True)
            return EchoOutcome(False, "association accepted but C-ECHO got no success status", True)
        if assoc.is_rejected:
            return EchoOutcome(
                False,
                f"association rejected (called AE {called_ae!r}, calling AE {calling_ae!r} not accepted)",
                speaks_dicom=True,
            )
        if assoc.is_aborted:
            return EchoOutcome(False, "association aborted by the peer")
        return EchoOutcome(False, "a program listens but did not answer as a DICOM node")
    finally:
        ae.shutdown()


def _bind_probe(host: str, port: int) -> OSError | None:
    """Try to bind like the node does (SO_REUSEADDR, as socketserver sets), returning the error if any."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError as exc:
            return exc
    return None


def _port_error(name: str, key: str, host: str, port: int, exc: OSError) -> CheckResult:
    if isinstance(exc, PermissionError) or exc.errno == errno.EACCES:
        return CheckResult(
            name, Status.FAIL, f"not allowed to listen on port {port} (ports below 1024 need privileges)",
            f"set {key} to 1024 or above, or grant CAP_NET_BIND_SERVICE (AmbientCapabilities= in the unit)",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return CheckResult(
            name, Status.FAIL, f"{host} is not an address of this machine",
            f"set the bind address to 0.0.0.0 or one of this machine's addresses ({key} stays {port})",
        )
    return CheckResult(name, Status.FAIL, f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                       f"check {key} and the bind address")


def check_dicom_port(settings: Settings, timeout: float) -> CheckResult:
    node = settings.node
    name = "dicom port"
    error = _bind_probe(node.bind, node.port)
    if error is None:
        return CheckResult(name, Status.OK, f"port {node.port} on {node.bind} is free for the node")
    if error.errno != errno.EADDRINUSE:
        return _port_error(name, "node.port", node.bind, node.port, error)
    host = readiness.local_address(node.bind)
    calling = _self_check_caller(settings, host)
    echo = c_echo(host, node.port, node.ae_title, calling, timeout, _node_tls_context(settings))
    if echo.ok:
        return CheckResult(
            name, Status.OK, f"port {node.port} is in use by a DICOM node answering C-ECHO as "
            f"{node.ae_title} (the node is already running)",
        )
    if echo.speaks_dicom:
        return CheckResult(
            name, Status.WARN, f"port {node.port} is in use by a DICOM application that {echo.detail}",
            "if this is not the running node, stop that application or set node.port to a free port",
        )
    return CheckResult(
        name, Status.FAIL, f"port {node.port} on {node.bind} is in use by another program ({echo.detail})",
        f"stop the program holding port {node.port} (`ss -ltnp 'sport = :{node.port}'` names it) "
        "or set node.port to a free port",
    )


def _self_check_caller(settings: Settings, source: str) -> str:
    """A calling AE title the node admits from `source` (the doctor connects from this machine)."""
    node = settings.node
    titles = [*node.demo_calling_aes, *(entry.ae_title for entry in node.allowed_calling_aes), "PSMA_DOCTOR"]
    return next((title for title in titles if admit(node, title, source).allowed), titles[0])


def check_calling_aes(settings: Settings) -> CheckResult:
    """Calling AE titles bound to no host on a port the network reaches: anyone may send as them."""
    exposure = unbound_exposure(settings.node)
    if exposure is not None:
        return CheckResult("calling AEs", Status.WARN, exposure,
                           "give every node.allowed_calling_aes entry the hosts its sender connects from")
    return CheckResult("calling AEs", Status.OK, "every allowed calling AE title is bound to its hosts "
                       "(or the DICOM port listens on loopback only)")


def _node_tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A client context for the self-check: it proves the node answers, not who it is."""
    tls = settings.node.tls
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if tls.require_client_certificate and tls.certificate and tls.private_key:
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    return context


def check_tls(settings: Settings) -> CheckResult | None:
    tls = settings.node.tls
    if not tls.enabled:
        return None
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
        if tls.ca_certificates is not None:
            context.load_verify_locations(str(tls.ca_certificates))
    except (ssl.SSLError, OSError) as exc:
        return CheckResult(
            "dicom tls", Status.FAIL, f"certificate/key cannot be used: {exc}",
            "node.tls.certificate and node.tls.private_key must be a matching PEM pair (ca_certificates PEM)",
        )
    return CheckResult("dicom tls", Status.OK, f"certificate {tls.certificate} and key load")


def _write_probe(directory: Path) -> None:
    """Create, fsync and remove a file: os.access says nothing for root or read-only mounts."""
    fd, name = tempfile.mkstemp(prefix=".psma-doctor-", dir=directory)
    try:
        os.write(fd, b"probe")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)


def check_directory(key: str, path: Path, min_free_mb: int) -> CheckResult:
    name = key
    fix = (f"create {path} and give it to the user the node runs as (`chown -R psma-node: {path}`), "
           "or point " + key + " elsewhere")
    if path.exists() and not path.is_dir():
        return CheckResult(name, Status.FAIL, f"{path} exists but is not a directory", fix)
    target = nearest_existing(path)
    if not target.is_dir():
        return CheckResult(name, Status.FAIL, f"{path} cannot be created: {target} is not a directory", fix)
    try:
        _write_probe(target)
    except OSError as exc:
        where = "" if target == path else f" (it does not exist yet and its parent {target} is not writable)"
        return CheckResult(name, Status.FAIL, f"{path} is not writable: {exc.strerror or exc}{where}", fix)
    free_mb = shutil.disk_usage(target).free // (1024 * 1024)
    state = "writable" if target == path else f"will be created (in writable {target})"
    if free_mb < min_free_mb:
        return CheckResult(
            name, Status.FAIL, f"{path} {state}, but only {free_mb} MB free < node.min_free_disk_mb "
            f"({min_free_mb} MB): instances would be refused with A700",
            "free disk space, move the folder to a larger disk, or lower node.min_free_disk_mb",
        )
    return CheckResult(name, Status.OK, f"{path} {state}, {free_mb / 1024:.1f} GB free")


def check_directories(settings: Settings) -> list[CheckResult]:
    minimum = settings.node.min_free_disk_mb
    results = [
        check_directory("storage.directory", settings.storage.directory, minimum),
        check_directory("storage.results_directory", settings.storage.results_directory, minimum),
    ]
    if settings.logging.file is not None:
        results.append(check_directory("logging.file", settings.logging.file.parent, 0))
    return results


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _doctor_engine(url: str, timeout: float) -> Engine:
    if make_url(url).get_backend_name() == "postgresql":
        return create_engine(url, connect_args={"connect_timeout": max(1, int(timeout))})
    return make_engine(url)


def check_database(settings: Settings, timeout: float) -> CheckResult:
    name = "database"
    url = settings.database.url.get_secret_value()
    shown = make_url(url).render_as_string(hide_password=True)
    upgrade_fix = "run `psma-node db upgrade`"
    pending = Status.WARN if settings.database.auto_upgrade else Status.FAIL
    pending_note = (" (`serve` applies it on start: database.auto_upgrade is true)"
                    if settings.database.auto_upgrade else "")
    sqlite_path = _sqlite_path(url)
    if sqlite_path is not None and not sqlite_path.exists():
        created = " (`serve` creates it on start)" if settings.database.auto_upgrade else ""
        return CheckResult(name, pending, f"SQLite file {sqlite_path} does not exist yet{created}",
                           upgrade_fix + " to create it")
    engine = _doctor_engine(url, timeout)
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return CheckResult(
            name, Status.FAIL, f"cannot open {shown}: {reason}",
            "check database.url, that the server runs, and that this host/user may connect",
        )
    finally:
        engine.dispose()
    head = head_revision()
    if current == head:
        return CheckResult(name, Status.OK, f"{shown} reachable, schema at revision {head} (current)")
    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config(url)).walk_revisions()}
    if current is not None and current not in known:
        return CheckResult(
            name, Status.FAIL,
            f"{shown} has schema revision {current}, unknown to this software (head {head})",
            "the database was migrated by a newer psma-node: install that version, or use another database",
        )
    state = "has no schema" if current is None else f"is at schema revision {current}, needs {head}"
    return CheckResult(name, pending, f"{shown} {state}{pending_note}", upgrade_fix)


def check_readiness(settings: Settings, timeout: float) -> CheckResult | None:
    """Whether the running node is ready (`readiness`); nothing to say when it is not running."""
    if readiness.listener_problem(settings.node, timeout) is not None:
        return None
    name = "readiness"
    engine = _doctor_engine(settings.database.url.get_secret_value(), timeout)
    try:
        with sessionmaker(engine)() as session:
            problem = readiness.worker_problem(settings, session)
    except SQLAlchemyError as exc:
        return CheckResult(name, Status.WARN, f"cannot read the workers' heartbeats: {type(exc).__name__}",
                           "fix the database check above")
    finally:
        engine.dispose()
    if problem is not None:
        return CheckResult(name, Status.WARN, f"the node runs but is not ready: {problem}",
                           "a worker needs seconds to load its model after a start: run the doctor again; if "
                           "it stays, check workers.count and the workers' log lines")
    return CheckResult(name, Status.OK, "the node is ready: its DICOM listener accepts connections and a "
                       "worker has loaded its model")


def _check_stow(destination: Destination, timeout: float) -> CheckResult:
    name = f"destination {destination.name}"
    url = str(destination.url)
    request = urllib.request.Request(url.rstrip("/") + "/studies?limit=1", method="GET")
    if destination.username:
        secret = destination.password.get_secret_value() if destination.password else ""
        token = b64encode(f"{destination.username}:{secret}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            code = response.status
    except urllib.error.HTTPError as exc:
        code = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return CheckResult(
            name, Status.FAIL, f"DICOMweb {url} does not answer: {reason}",
            f"check results.destinations entry {destination.name!r} (url) and that the server runs",
        )
    if code in (401, 403):
        return CheckResult(name, Status.FAIL, f"DICOMweb {url} refused the credentials (HTTP {code})",
                           f"check username/password of destination {destination.name!r}")
    return CheckResult(name, Status.OK, f"DICOMweb {url} answers (HTTP {code})")


def check_destinations(settings: Settings, timeout: float) -> list[CheckResult]:
    results_settings = settings.results
    checks: list[CheckResult] = []
    if not results_settings.destinations and not results_settings.return_to_sender:
        checks.append(CheckResult(
            "destinations", Status.WARN, "no results.destinations and return_to_sender is off: results "
            "are made but sent nowhere", "add a destination under results.destinations",
        ))
    if results_settings.return_to_sender and not any(a.port for a in settings.node.allowed_calling_aes):
        checks.append(CheckResult(
            "return to sender", Status.WARN,
            "results.return_to_sender is on but no allowed calling AE has a port",
            "set node.allowed_calling_aes[].port for the senders that should get results back",
        ))
    for destination in results_settings.destinations:
        if destination.kind == "stow":
            checks.append(_check_stow(destination, timeout))
            continue
        host, port, called = str(destination.host), int(destination.port or 0), str(destination.ae_title)
        name = f"destination {destination.name}"
        try:
            tls_context = destination_tls(destination)
        except (ssl.SSLError, OSError) as exc:
            checks.append(CheckResult(name, Status.FAIL, f"CA bundle cannot be loaded: {exc}",
                                      f"check ca_certificates of destination {destination.name!r}"))
            continue
        echo = c_echo(host, port, called, settings.node.ae_title, timeout, tls_context)
        peer = f"{called}@{host}:{port}" + (" (TLS)" if destination.tls else "")
        if echo.ok:
            checks.append(CheckResult(name, Status.OK, f"{peer} answers C-ECHO"))
        else:
            checks.append(CheckResult(
                name, Status.FAIL, f"{peer} did not answer C-ECHO: {echo.detail}",
                f"start the peer, or fix destination {destination.name!r} (ae_title/host/port); "
                "the peer must "
                f"accept calling AE {settings.node.ae_title!r} from this host",
            ))
    return checks


def check_models(settings: Settings) -> list[CheckResult]:
    """The checkpoints the routing will use are imported and unchanged since import (sha256)."""
    from inference.checkpoints import CheckpointError, verify_installed
    from inference.model_specs import UnknownModel, get_spec, routable_models

    models = settings.models
    try:
        needed = routable_models(models.routing, models.default_model)
    except UnknownModel as exc:
        return [CheckResult("model", Status.FAIL, str(exc), "set models.default_model to a published model")]
    checks = []
    for model_id in needed:
        name = f"model {model_id}"
        try:
            installed = verify_installed(models.models_dir, get_spec(model_id))
        except CheckpointError as exc:
            checks.append(CheckResult(
                name, Status.FAIL, str(exc),
                f"import the published checkpoint: `psma-node models import FILE --as {model_id}`",
            ))
            continue
        checks.append(CheckResult(
            name, Status.OK, f"{installed.path.name} verified, sha256 {installed.sha256[:16]}…"
        ))
    return checks


def check_device(settings: Settings) -> CheckResult:
    """The device by the rule every worker uses (`resolve_device`), so doctor and workers agree."""
    import torch

    from inference.network import DeviceError, resolve_device

    wanted = settings.models.device
    try:
        device = resolve_device(wanted)
    except DeviceError as exc:
        return CheckResult("device", Status.FAIL, str(exc),
                           "or, to use a GPU, install the CUDA build of torch and the NVIDIA driver")
    used = "CUDA (" + torch.cuda.get_device_name(device) + ")" if device.type == "cuda" else "CPU"
    return CheckResult("device", Status.OK, f"inference runs on {used} (models.device: {wanted})")


def verify_manifest(root: Path, manifest: Path) -> list[str]:
    """Problems found checking `sha256sum`-format lines (`<hex>  <relative path>`) against files."""
    from inference.checkpoints import sha256_file

    problems = []
    for number, raw in enumerate(manifest.read_text().splitlines(), 1):
        if not raw.strip():
            continue
        line = _MANIFEST_LINE.match(raw)
        if line is None:
            problems.append(f"{manifest.name} line {number} is not `<sha256>  <path>`")
            continue
        digest, relative = line.groups()
        target = root / relative
        if not target.is_file():
            problems.append(f"{relative} is missing")
        elif sha256_file(target) != digest.lower():
            problems.append(f"{relative} differs from its sha256")
    return problems


def check_totalsegmentator(settings: Settings) -> CheckResult:
    localizer = settings.localizer
    needed_by_config = localizer.kind == "totalsegmentator"
    missing_status = Status.FAIL if needed_by_config else Status.WARN
    use = "" if needed_by_config else " (not used: localizer.kind is anatomical)"
    name = "totalsegmentator"
    doc_fix = "see docs/totalsegmentator-offline.md"
    executable = shutil.which(localizer.totalsegmentator_command)
    if executable is None:
        return CheckResult(name, missing_status,
                           f"{localizer.totalsegmentator_command!r} not found on PATH{use}",
                           f"install TotalSegmentator into the node's environment; {doc_fix}")
    results = localizer.totalsegmentator_home / "nnunet" / "results"
    missing = [
        f"Dataset{task}_*" for task in TOTALSEG_DATASETS[localizer.totalsegmentator_fast]
        if not any(folder.is_dir() and any(folder.rglob("checkpoint_final.pth"))
                   for folder in results.glob(f"Dataset{task}_*"))
    ]
    if missing:
        return CheckResult(name, missing_status, f"weights {', '.join(missing)} missing in {results}{use}",
                           f"copy the `total` task weights into localizer.totalsegmentator_home; {doc_fix}")
    manifest = localizer.totalsegmentator_home / TOTALSEG_MANIFEST
    if manifest.is_file():
        problems = verify_manifest(localizer.totalsegmentator_home, manifest)
        if problems:
            return CheckResult(name, missing_status,
                               f"weights do not match {manifest}: {'; '.join(problems[:3])}",
                               f"copy the weights again; {doc_fix}")
        return CheckResult(name, Status.OK, f"{executable} and weights verified against {manifest}{use}")
    return CheckResult(name, Status.OK,
                       f"{executable} and weights in {results} present (no {TOTALSEG_MANIFEST} "
                       f"to verify against){use}")


def check_dcmtk() -> CheckResult:
    missing = [tool for tool in DCMTK_TOOLS if shutil.which(tool) is None]
    if missing:
        return CheckResult("dcmtk", Status.WARN, f"optional tools missing: {', '.join(missing)}",
                           "`apt-get install dcmtk` for troubleshooting with echoscu/storescu/findscu")
    return CheckResult("dcmtk", Status.OK, "echoscu, storescu, findscu, dcmdump available")


def check_dashboard(settings: Settings, timeout: float) -> list[CheckResult]:
    dashboard = settings.dashboard
    if not dashboard.enabled:
        return []
    checks = []
    if dashboard.port:
        error = _bind_probe(dashboard.bind, dashboard.port)
        if error is None:
            checks.append(CheckResult("dashboard port", Status.OK,
                                      f"port {dashboard.port} on {dashboard.bind} is free"))
        elif error.errno == errno.EADDRINUSE:
            url = f"http://{readiness.local_address(dashboard.bind)}:{dashboard.port}/healthz"
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    answered = response.status == 200
            except (urllib.error.URLError, OSError):
                answered = False
            checks.append(
                CheckResult("dashboard port", Status.OK,
                            f"port {dashboard.port} in use by the running node ({url})")
                if answered else
                CheckResult("dashboard port", Status.FAIL,
                            f"port {dashboard.port} is in use by another program (no /healthz answer)",
                            "stop that program or set dashboard.port to a free port")
            )
        else:
            checks.append(
                _port_error("dashboard port", "dashboard.port", dashboard.bind, dashboard.port, error)
            )
    exposed = dashboard.bind not in ("127.0.0.1", "::1", "localhost")
    if dashboard.allow_anonymous and exposed:
        checks.append(CheckResult(
            "dashboard access", Status.WARN,
            f"anonymous access on {dashboard.bind}: anyone on the network sees it",
            "set dashboard.allow_anonymous: false and add dashboard.users, or bind to 127.0.0.1",
        ))
    return checks


def run_checks(settings: Settings, timeout: float = 3.0) -> list[CheckResult]:
    """Every check, in the order an operator would fix things; a check that crashes is itself a FAIL."""
    steps: list[tuple[str, Callable[[], CheckResult | list[CheckResult] | None]]] = [
        ("dicom port", lambda: check_dicom_port(settings, timeout)),
        ("dicom tls", lambda: check_tls(settings)),
        ("calling AEs", lambda: check_calling_aes(settings)),
        ("dashboard", lambda: check_dashboard(settings, timeout)),
        ("directories", lambda: check_directories(settings)),
        ("database", lambda: check_database(settings, timeout)),
        ("readiness", lambda: check_readiness(settings, timeout)),
        ("destinations", lambda: check_destinations(settings, timeout)),
        ("models", lambda: check_models(settings)),
        ("device", lambda: check_device(settings)),
        ("totalsegmentator", lambda: check_totalsegmentator(settings)),
        ("dcmtk", check_dcmtk),
    ]
    results: list[CheckResult] = []
    for name, step in steps:
        try:
            outcome = step()
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others
            outcome = CheckResult(name, Status.FAIL, f"check could not run: {type(exc).__name__}: {exc}",
                                  "report this with the output of `psma-node config check`")
        if isinstance(outcome, CheckResult):
            results.append(outcome)
        elif outcome is not None:
            results.extend(outcome)
    return results
