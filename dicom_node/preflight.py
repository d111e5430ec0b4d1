"""Start-up checks: every problem that would stop `serve` is found before anything starts, as one line.

Each `StartupError` names the setting, its value (passwords masked) and the fix, so an admin never has to
read a traceback. `problems()` holds the checks without lasting side effects (what `config check` runs);
`open_database()` and `create_folders()` are the steps of `serve` that touch the outside world, with their
failures translated the same way.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import ssl
import tempfile
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError

from db.session import ensure_schema, make_engine
from dicom_node.config import Settings

SUPPORTED_DATABASES = "use sqlite:///path/to/node.db or postgresql://user:password@host:5432/dbname"
LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


class StartupError(Exception):
    """The node cannot start; the message is one line: setting, value, problem, fix."""


def mask_url(url: str) -> str:
    """The URL as it may be shown: any password replaced by ***."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --- database -------------------------------------------------------------------------------------------


def check_database_url(url: str) -> None:
    """The URL parses, names a supported database, and its driver is installed (no connection made)."""
    shown = mask_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StartupError(f"database.url {shown!r} is not a database URL: {SUPPORTED_DATABASES}") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StartupError(
            f"database.url {shown}: {backend} is not supported by this node: {SUPPORTED_DATABASES}"
        )
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise StartupError(
            f"database.url {shown}: unknown driver {parsed.drivername!r}: {SUPPORTED_DATABASES}"
        ) from None
    except ImportError as exc:
        raise StartupError(
            f"database.url {shown}: the driver {parsed.drivername!r} is not installed ({exc.name}): "
            f"write postgresql://… (uses the installed psycopg2) or install it"
        ) from None
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        _check_creatable("database.url", Path(parsed.database).parent, what="SQLite file's folder")


def _connection_problem(url: str, exc: SQLAlchemyError) -> StartupError:
    shown = mask_url(url)
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
    parsed = make_url(url)
    if "does not exist" in reason and "database" in reason:
        createdb = f"createdb -h {parsed.host} -U {parsed.username} {parsed.database}"
        fix = f"create it ({createdb}) or correct the name"
    elif "password authentication failed" in reason or "no password supplied" in reason:
        fix = "correct the user name and password in database.url"
    elif parsed.get_backend_name() == "sqlite":
        fix = "check that the node's user may create and write the file and its folder"
    else:
        fix = "start PostgreSQL or correct the host and port in database.url"
    return StartupError(f"database.url {shown}: cannot connect: {reason[:300]}: {fix}")


def open_database(settings: Settings) -> Engine:
    """An engine on a reachable database whose schema is current (upgraded if configured)."""
    url = settings.database.url.get_secret_value()
    check_database_url(url)
    try:
        engine = make_engine(url)
    except OSError as exc:  # the SQLite file's folder could not be made
        raise StartupError(
            f"database.url {mask_url(url)}: cannot create the file's folder: {exc.strerror or exc}"
        ) from None
    try:
        ensure_schema(engine, url, settings.database.auto_upgrade)
    except OperationalError as exc:
        engine.dispose()
        raise _connection_problem(url, exc) from None
    return engine


# --- folders --------------------------------------------------------------------------------------------


def nearest_existing(path: Path) -> Path:
    """The path itself or its closest existing ancestor: where creating it would start."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_creatable(key: str, path: Path, what: str = "folder") -> None:
    """`path` is a folder or can be made one, and the node may write into it.

    Tried with a temporary folder in the nearest existing ancestor that is removed at once, because
    permission bits do not tell (root passes every access check, yet cannot create anything in /proc).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StartupError(f"{key} {path}: the {what} is a file: point {key} to a folder")
    anchor = nearest_existing(path)
    if not anchor.is_dir():
        raise StartupError(
            f"{key} {path}: cannot create the {what}, {anchor} is a file: point {key} elsewhere"
        )
    try:
        probe = tempfile.mkdtemp(prefix=".psma-node-probe-", dir=anchor)
    except OSError as exc:
        where = f"write into the {what}" if anchor == path else f"create the {what} in {anchor}"
        raise StartupError(
            f"{key} {path}: cannot {where}: {exc.strerror or exc}: "
            f"point {key} to a writable place or give the node's user write access"
        ) from None
    os.rmdir(probe)


def _folders(settings: Settings) -> list[tuple[str, Path]]:
    folders = [
        ("storage.directory", Path(settings.storage.directory)),
        ("storage.results_directory", Path(settings.storage.results_directory)),
    ]
    if settings.logging.file is not None:
        folders.append(("logging.file", Path(settings.logging.file).parent))
    return folders


def create_folders(settings: Settings) -> None:
    """Make the storage and results folders (the log file's folder is made when logging starts)."""
    for key, folder in _folders(settings):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(
                f"{key} {folder}: cannot create the folder: {exc.strerror or exc}: "
                f"point {key} to a writable place"
            ) from None


# --- TLS, ports, exposure -------------------------------------------------------------------------------


def _pem_blocks(path: Path, marker: str) -> bool:
    try:
        return marker in path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False


def check_tls(settings: Settings) -> None:
    """The DICOM TLS certificate, key and CA bundle load as PEM and fit together."""
    tls = settings.node.tls
    if not tls.enabled:
        return
    files = [("node.tls.certificate", tls.certificate, "-----BEGIN CERTIFICATE-----"),
             ("node.tls.private_key", tls.private_key, "PRIVATE KEY-----"),
             ("node.tls.ca_certificates", tls.ca_certificates, "-----BEGIN CERTIFICATE-----")]
    for key, path, marker in files:
        if path is not None and not _pem_blocks(Path(path), marker):
            raise StartupError(
                f"{key} {path}: not a PEM file (no '{marker.strip('-')}' block): convert it, e.g. "
                f"`openssl x509 -inform DER -in {path} -out {path}.pem` (keys: `openssl pkey`)"
            )
    from dicom_node.receive import tls_context

    try:
        tls_context(settings.node)
    except (ssl.SSLError, OSError) as exc:
        raise StartupError(
            f"node.tls.certificate {tls.certificate} / node.tls.private_key {tls.private_key}: "
            f"cannot be loaded together ({' '.join(str(exc).split())}): check that the key belongs to "
            "the certificate and is not encrypted"
        ) from None


def check_port(key: str, host: str, port: int) -> None:
    """Bind like the listener will (SO_REUSEADDR), so that a port in use is named before anything starts."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            hint = (
                "another program (or another psma-node) listens there: stop it or change the port"
                if exc.errno == errno.EADDRINUSE
                else "use a port above 1023 or an address of this machine"
            )
            reason = exc.strerror or exc
            raise StartupError(f"{key} {port} on {host}: cannot listen: {reason}: {hint}") from None


def check_dashboard_exposure(settings: Settings) -> None:
    """Anonymous access shows patient data to whoever reaches the port: only on the loopback interface."""
    dashboard = settings.dashboard
    if dashboard.enabled and dashboard.allow_anonymous and not is_loopback(dashboard.bind):
        raise StartupError(
            f"dashboard.allow_anonymous true with dashboard.bind {dashboard.bind}: anyone who reaches the "
            "port would see patient data: set allow_anonymous: false and add dashboard.users "
            "(or tokens), or bind to 127.0.0.1"
        )


def problems(settings: Settings) -> list[StartupError]:
    """Everything checkable without lasting side effects (what `config check` reports)."""
    found: list[StartupError] = []
    checks = [
        lambda: check_database_url(settings.database.url.get_secret_value()),
        *[lambda key=key, folder=folder: _check_creatable(key, folder) for key, folder in _folders(settings)],
        lambda: check_tls(settings),
        lambda: check_dashboard_exposure(settings),
    ]
    for check in checks:
        try:
            check()
        except StartupError as exc:
            found.append(exc)
    return found


def _device_problem(requested: str) -> str | None:
    """Run in a child process: what `resolve_device` says about `requested` (None: usable)."""
    from inference.network import DeviceError, resolve_device

    try:
        resolve_device(requested)
    except DeviceError as exc:
        return str(exc)
    return None


def check_device(requested: str) -> None:
    """models.device judged by the one device rule (`inference.network.resolve_device`) before workers start.

    Only "cuda" can be refused, so only then is torch loaded, and in a short-lived child process: the
    receiving process and the worker supervisor stay free of torch.
    """
    if requested != "cuda":
        return
    from concurrent.futures import ProcessPoolExecutor  # only here: `config check` stays quick
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as probe:
        problem = probe.submit(_device_problem, requested).result()
    if problem is not None:
        raise StartupError(problem)


def check_before_start(settings: Settings) -> None:
    """What `serve` checks before starting anything: the above, that the device can be used, and that its
    ports are free."""
    found = problems(settings)
    if found:
        raise found[0]
    if settings.workers.count:
        check_device(settings.models.device)
    check_port("node.port", settings.node.bind, settings.node.port)
    if settings.dashboard.enabled:
        check_port("dashboard.port", settings.dashboard.bind, settings.dashboard.port)
