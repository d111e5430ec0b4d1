"""A real Orthanc (Debian package) as the PACS in tests: free ports, temporary config and storage.

`OrthancServer` writes a JSON configuration into a temporary folder, starts `/usr/sbin/Orthanc` in its own
process group, waits for its REST API, and always stops it (SIGTERM, then SIGKILL of the whole group).
The REST helpers are the few the tests need to look inside the PACS.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from tests.support.node import free_port

ORTHANC = "/usr/sbin/Orthanc"
PLUGINS = Path("/usr/share/orthanc/plugins")


class OrthancServer:
    """One Orthanc instance; use as a context manager or call start()/stop()."""

    def __init__(self, directory: Path, aet: str = "ORTHANC", modalities: dict[str, tuple[str, str, int]] | None = None,
                 dicomweb: bool = False, always_allow_store: bool = True, check_called_aet: bool = False,
                 extra: dict[str, Any] | None = None) -> None:
        self.directory = directory
        self.aet = aet
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.modalities = dict(modalities or {})
        self.dicomweb = dicomweb
        self.always_allow_store = always_allow_store
        self.check_called_aet = check_called_aet
        self.extra = extra or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = directory / "orthanc.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Name": f"test-{self.aet}",
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "StorageDirectory": str(self.directory / "storage"),
            "IndexDirectory": str(self.directory / "index"),
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": self.always_allow_store,
            "DicomAlwaysAllowEcho": self.always_allow_store,
            "DicomAlwaysAllowFind": self.always_allow_store,
            "DicomCheckCalledAet": self.check_called_aet,
            "DicomModalities": {name: list(peer) for name, peer in self.modalities.items()},
            "StableAge": 1,
            "HttpsVerifyPeers": False,
            "Plugins": [str(PLUGINS / "libOrthancDicomWeb.so")] if self.dicomweb else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        config.update(self.extra)
        return config

    def start(self, timeout: float = 30.0) -> "OrthancServer":
        if shutil.which(ORTHANC) is None and not Path(ORTHANC).exists():
            raise RuntimeError(f"{ORTHANC} not installed (Debian package orthanc)")
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "orthanc.json"
        path.write_text(json.dumps(self.config(), indent=2))
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([ORTHANC, str(path)], stdout=self._log, stderr=self._log,
                                     start_new_session=True, env={**os.environ, "TCP_NODELAY": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                if requests.get(f"{self.url}/system", timeout=0.5).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"Orthanc did not answer on {self.url}:\n{self.log_text()}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(10)
        self._log.close()
        self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "OrthancServer":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # REST helpers
    def get(self, path: str) -> Any:
        response = requests.get(f"{self.url}{path}", timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any) -> Any:
        response = requests.post(f"{self.url}{path}", json=body, timeout=120)
        response.raise_for_status()
        return response.json() if response.content else None

    def upload(self, file_path: Path) -> Any:
        response = requests.post(f"{self.url}/instances", data=Path(file_path).read_bytes(), timeout=30)
        response.raise_for_status()
        return response.json()

    def instance_tags(self, sop_instance_uid: str) -> dict[str, Any] | None:
        """Simplified tags of the instance with this SOP Instance UID, or None when Orthanc lacks it."""
        found = self.post("/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}})
        if not found:
            return None
        return self.get(f"/instances/{found[0]}/simplified-tags")

    def study_instances(self, study_uid: str) -> list[dict[str, Any]]:
        """Simplified tags of every instance of a study."""
        studies = self.post("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
        tags: list[dict[str, Any]] = []
        for study in studies:
            for instance in self.get(f"/studies/{study}/instances"):
                tags.append(self.get(f"/instances/{instance['ID']}/simplified-tags"))
        return tags

    def count_instances(self) -> int:
        return int(self.get("/statistics")["CountInstances"])

    def received_store_count(self) -> int:
        """How many C-STOREs/uploads the index saw (duplicates included), from Orthanc's change log."""
        changes = self.get("/changes?limit=10000")
        return sum(1 for change in changes["Changes"] if change["ChangeType"] == "NewInstance")
