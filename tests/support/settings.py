"""The one builder of in-process `Settings` for tests: everything under a temporary folder, quick timings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dicom_node.config import DashboardSettings, ResultSettings, Settings
from dicom_node.web.auth import hash_password

PASSWORD = "correct horse battery"
TOKEN = "ris-token-0123456789"
FAST_HASH = hash_password(PASSWORD, iterations=1000)
QUICK_RETRY = {"initial_seconds": 0.2, "max_seconds": 1.0, "jitter": 0.1, "give_up_after_seconds": 60.0}


def make_settings(tmp_path: Path, db_url: str, *, create_dirs: bool = True, **options: Any) -> Settings:
    """Settings for tests that run node parts in-process.

    Storage and results live under `tmp_path` (created unless `create_dirs=False`), deliveries retry quickly,
    and the dashboard has one user (`PASSWORD`) and one RIS token (`TOKEN`). Each keyword is a field of either
    the `dashboard` or the `results` section (their names do not overlap) and is set there, so a test names
    only what it is about: `make_settings(tmp, url, destinations=[...])`, `make_settings(tmp, url,
    public_metrics=True)`.
    """
    dashboard: dict[str, Any] = {
        "users": [{"name": "alice", "password_hash": FAST_HASH}],
        "tokens": [TOKEN],
        "session_secret": "test-secret",
        "allowed_hosts": ["testserver"],  # the name FastAPI's TestClient sends
    }
    results: dict[str, Any] = {"retry": QUICK_RETRY}
    for key, value in options.items():
        if key in DashboardSettings.model_fields:
            dashboard[key] = value
        elif key in ResultSettings.model_fields:
            results[key] = value
        else:
            raise TypeError(f"make_settings: {key!r} is neither a dashboard nor a results setting")
    if create_dirs:
        (tmp_path / "storage").mkdir(parents=True, exist_ok=True)
        (tmp_path / "results").mkdir(exist_ok=True)
    return Settings.model_validate({
        "node": {"ae_title": "PSMA_NODE", "network_timeout_s": 10, "min_free_disk_mb": 0},
        "storage": {"directory": str(tmp_path / "storage"), "results_directory": str(tmp_path / "results")},
        "database": {"url": db_url},
        "dashboard": dashboard,
        "results": results,
    })
