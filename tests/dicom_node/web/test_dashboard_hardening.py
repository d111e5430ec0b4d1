"""The dashboard under attack, through real HTTP against a real `psma-node serve`: logout, CSRF, login
throttling, aggregated refusals, Host checking, framing headers and read-only anonymous access."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from db.models import AuditEvent, ClinicalInfo
from db.session import make_engine, make_session_factory
from dicom_node.web.throttle import MAX_DELAY_S, PAIR_FREE_ATTEMPTS, SOURCE_FREE_ATTEMPTS, delay_after
from tests.support.db import migrate
from tests.db.seed import seed
from tests.support.settings import FAST_HASH, PASSWORD, TOKEN, make_settings
from tests.support.node import NodeProcess, wait_for_port, write_config
from tests.support.tools import require_tool

pytestmark = pytest.mark.slow
ALLOWED_NAME = "psma.hospital.test"


@dataclass
class Dashboard:
    node: NodeProcess
    url: str
    db_url: str
    study_uid: str

    def client(self, source: str = "127.0.0.1", **kwargs: object) -> httpx.Client:
        """A client whose connections come from `source` (any 127/8 address), so tests do not share
        throttling and refusal windows."""
        transport = httpx.HTTPTransport(local_address=source)
        return httpx.Client(
            base_url=self.url, transport=transport, timeout=30, **kwargs  # type: ignore[arg-type]
        )

    def events(self, action: str, peer: str) -> list[AuditEvent]:
        engine = make_engine(self.db_url)
        try:
            with make_session_factory(engine)() as session:
                return list(session.scalars(
                    select(AuditEvent).where(AuditEvent.action == action, AuditEvent.peer == peer)
                    .order_by(AuditEvent.id)
                ))
        finally:
            engine.dispose()

    def warnings(self, peer: str) -> list[dict]:
        lines = [json.loads(line) for line in self.node.log_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line["level"] == "WARNING" and line.get("peer") == peer]


def start_dashboard(folder: Path, **dashboard: object) -> Dashboard:
    url = f"sqlite:///{folder / 'node.db'}"
    migrate(url)
    engine = make_engine(url)
    settings = make_settings(folder / "node", url)
    done, _failed = seed(make_session_factory(engine), settings)
    engine.dispose()
    config = write_config(
        folder / "node",
        {
            "storage": {
                "directory": str(settings.storage.directory),
                "results_directory": str(settings.storage.results_directory),
            },
            "workers": {"count": 0},
            "dashboard": {
                "enabled": True,
                "users": [{"name": "alice", "password_hash": FAST_HASH}],
                "tokens": [TOKEN],
                "session_secret": "hardening-test",
                "allowed_hosts": [ALLOWED_NAME],
                **dashboard,
            },
        },
        db_url=url,
    )
    node = NodeProcess(config).start()
    port = int(node.config["dashboard"]["port"])
    wait_for_port(port)
    return Dashboard(node, f"http://127.0.0.1:{port}", url, done.study_uid)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    running = start_dashboard(tmp_path_factory.mktemp("dashboard"))
    yield running
    running.node.stop()


def log_in(client: httpx.Client) -> str:
    """Log alice in; returns the CSRF token of her session (from a page's forms)."""
    answer = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert answer.status_code == 200, answer.text  # followed the redirect to /studies
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', answer.text)
    assert match, "the logout form carries the CSRF token"
    return match.group(1)


def test_logout_ends_the_session_on_the_server(dashboard: Dashboard) -> None:
    with dashboard.client("127.0.0.2", follow_redirects=True) as browser:
        csrf = log_in(browser)
        stolen = browser.cookies.get("psma_session")
        assert browser.get("/api/studies").status_code == 200
        forged = browser.post("/logout", data={}, follow_redirects=False)
        assert forged.status_code == 403, "logout without the CSRF token is refused"
        assert browser.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    with dashboard.client("127.0.0.2", cookies={"psma_session": stolen}) as replay:
        assert replay.get("/api/studies").status_code == 401, "the old cookie opens nothing"
        page = replay.get("/studies")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")


def test_clinical_api_with_a_session_cookie_needs_the_csrf_token(dashboard: Dashboard) -> None:
    body = {"accession_number": "ACC-CSRF", "psa_ng_ml": 2.5}
    with dashboard.client("127.0.0.3", follow_redirects=True) as browser:
        csrf = log_in(browser)
        refused = browser.post("/api/clinical", json=body)
        assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
        accepted = browser.post("/api/clinical", json=body, headers={"X-CSRF-Token": csrf})
        assert accepted.status_code == 201, accepted.text
    with dashboard.client("127.0.0.3", headers={"Authorization": f"Bearer {TOKEN}"}) as ris:
        assert ris.post("/api/clinical", json=body).status_code == 201, "a token needs no CSRF token"


def test_repeated_wrong_passwords_are_throttled_but_the_admin_elsewhere_gets_in(dashboard: Dashboard) -> None:
    attacker = "127.0.0.4"
    with dashboard.client(attacker) as client:
        statuses = [
            client.post("/login", data={"username": "alice", "password": f"guess-{n}"}).status_code
            for n in range(8)
        ]
        assert statuses[:PAIR_FREE_ATTEMPTS] == [401] * PAIR_FREE_ATTEMPTS
        assert 429 in statuses[PAIR_FREE_ATTEMPTS:], statuses
        right = client.post("/login", data={"username": "alice", "password": PASSWORD})
        assert right.status_code == 429, "the right password waits out the delay too"
        assert 1 <= int(right.headers["Retry-After"]) <= MAX_DELAY_S
        assert "Too many failed log-ins" in right.text
    with dashboard.client("127.0.0.5", follow_redirects=True) as admin:
        log_in(admin)  # at once, from the admin's own address
    refused = dashboard.events("login", attacker)
    assert len(refused) == 1 and refused[0].reason == "wrong user name or password"
    assert len(dashboard.warnings(attacker)) == 1, "one WARNING per source and window"


def test_one_address_trying_many_user_names_is_throttled(dashboard: Dashboard) -> None:
    with dashboard.client("127.0.0.6") as client:
        statuses = [
            client.post(
                "/login",
                data={"username": f"user{n}", "password": "x"},
                headers={"X-Forwarded-For": f"10.9.9.{n}"},  # a claimed address does not reset anything
            ).status_code
            for n in range(SOURCE_FREE_ATTEMPTS + 3)
        ]
    assert statuses[:SOURCE_FREE_ATTEMPTS] == [401] * SOURCE_FREE_ATTEMPTS
    assert statuses[-1] == 429
    assert "user3" not in dashboard.node.log_text(), "names tried (often mistyped passwords) stay out of the log"


def test_concurrent_guesses_do_not_all_slip_through_before_the_first_fails(dashboard: Dashboard) -> None:
    def guess(n: int) -> int:
        with dashboard.client("127.0.0.12") as client:
            return client.post("/login", data={"username": "alice", "password": f"burst-{n}"}).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(guess, range(16)))
    assert statuses.count(401) <= PAIR_FREE_ATTEMPTS + 2 and statuses.count(429) >= 10, statuses


def test_delays_grow_exponentially_up_to_a_cap() -> None:
    delays = [delay_after(n, PAIR_FREE_ATTEMPTS) for n in range(1, 20)]
    assert delays[:PAIR_FREE_ATTEMPTS - 1] == [0.0] * (PAIR_FREE_ATTEMPTS - 1)
    assert delays[PAIR_FREE_ATTEMPTS - 1:PAIR_FREE_ATTEMPTS + 3] == [1.0, 2.0, 4.0, 8.0]
    assert max(delays) == MAX_DELAY_S and delays[-1] == MAX_DELAY_S


def test_foreign_host_header_is_refused_but_addresses_and_names_work(dashboard: Dashboard) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with dashboard.client("127.0.0.7", headers=bearer) as client:
        rebound = client.get("/api/studies", headers={"Host": "attacker.example"})
        assert rebound.status_code == 400 and "dashboard.allowed_hosts" in rebound.text
        assert "Sentinel" not in rebound.text
        for host in ("127.0.0.1", "localhost:8080", ALLOWED_NAME, "[::1]:8080"):
            assert client.get("/api/studies", headers={"Host": host}).status_code == 200, host
        assert client.get("/healthz", headers={"Host": "attacker.example"}).status_code == 200
    assert [e.reason for e in dashboard.events("host-refused", "127.0.0.7")] == [
        "Host header 'attacker.example' is not a name of this dashboard"
    ]


def test_pages_with_patient_data_cannot_be_framed(dashboard: Dashboard) -> None:
    with dashboard.client("127.0.0.8", follow_redirects=True) as browser:
        log_in(browser)
        page = browser.get(f"/studies/{dashboard.study_uid}")
    assert "Sentinel^Zebra" in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "default-src 'self'" in policy
    assert page.headers["Cache-Control"] == "no-store"


def test_invalid_bearer_tokens_make_one_audit_row_and_one_warning_per_window(tmp_path: Path) -> None:
    running = start_dashboard(tmp_path)
    source = "127.0.0.9"
    try:
        with running.client(source, headers={"Authorization": "Bearer not-the-token"}) as client:
            assert {client.get("/api/studies").status_code for _ in range(300)} == {401}
        assert len(running.events("api-refused", source)) == 1
        assert len(running.warnings(source)) == 1
    finally:
        running.node.stop()
    rows = running.events("api-refused", source)
    assert [row.reason for row in rows][0] == "invalid bearer token"
    assert len(rows) == 2 and rows[1].detail["count"] == 299, "the rest summarised at shutdown"
    assert rows[1].reason.startswith("299 more refused")


def test_anonymous_dashboard_is_read_only(tmp_path: Path) -> None:
    running = start_dashboard(tmp_path, allow_anonymous=True)
    try:
        with running.client("127.0.0.10") as anonymous:
            assert anonymous.get("/api/studies").status_code == 200
            page = anonymous.get(f"/studies/{running.study_uid}")
            assert page.status_code == 200 and "read-only" in page.text and 'name="csrf"' not in page.text
            posted = anonymous.post("/api/clinical", json={"accession_number": "ACC-DONE", "psa_ng_ml": 1.0})
            assert posted.status_code == 403 and "read-only" in posted.json()["detail"]
            form = anonymous.post(f"/studies/{running.study_uid}/clinical",
                                  data={"csrf": "x", "psa_ng_ml": "1.0"})
            assert form.status_code == 403
    finally:
        running.node.stop()
    engine = make_engine(running.db_url)
    with make_session_factory(engine)() as session:
        assert session.scalars(select(ClinicalInfo)).all() == []
    engine.dispose()


def test_a_dashboard_process_that_dies_is_restarted_and_receiving_goes_on(tmp_path: Path) -> None:
    running = start_dashboard(tmp_path)
    try:
        assert running.node.proc is not None
        first = running.node.wait_until(lambda: _dashboard_pids(running), 60, "the dashboard process")[0]
        assert first != running.node.proc.pid, "the dashboard is not the receiving process"
        os.kill(first, signal.SIGKILL)
        echo = subprocess.run(
            [require_tool("echoscu"), "-aec", "PSMA_NODE", "127.0.0.1", str(running.node.port)],
            capture_output=True, text=True, timeout=30,
        )
        assert echo.returncode == 0, echo.stderr
        running.node.wait_until(lambda: len(_dashboard_pids(running)) == 2, 60, "a new dashboard process")
        with running.client("127.0.0.11") as client:
            assert running.node.wait_until(lambda: client.get("/healthz").status_code == 200, 30, "healthz")
        assert "dashboard process died" in running.node.log_text()
    finally:
        running.node.stop()


def _dashboard_pids(running: Dashboard) -> list[int]:
    lines = [json.loads(line) for line in running.node.log_text().splitlines() if line.startswith("{")]
    return [int(line["pid"]) for line in lines if line.get("event") == "dashboard process serving"]
