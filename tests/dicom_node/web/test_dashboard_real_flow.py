"""The dashboard over real data flow: a synthetic PET/CT study sent with storescu is received, analysed and
reported by a real node, and its page shows the Secondary Capture the report stage wrote."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from dicom_node.synth import SynthOptions, generate_study
from tests.support.settings import TOKEN
from tests.support.tools import require_tool

pytestmark = pytest.mark.slow


def test_received_study_shows_up_with_state_result_and_sc_image(tmp_path: Path, node_factory) -> None:
    truth = generate_study(
        tmp_path / "study", SynthOptions(ct_matrix=96, pet_matrix=48, extent_mm=150, seed=5)
    )
    files = sorted(str(p) for p in (tmp_path / "study").glob("*/*.dcm"))
    node = node_factory(
        {
            "assembly": {"quiet_seconds": 4, "ceiling_seconds": 120},
            "dashboard": {"enabled": True, "tokens": [TOKEN]},
        }
    )
    sent = subprocess.run(
        [require_tool("storescu"), "-aec", "PSMA_NODE", "127.0.0.1", str(node.port), *files],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    assert sent.returncode == 0, sent.stderr

    api = httpx.Client(
        base_url=f"http://127.0.0.1:{node.config['dashboard']['port']}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    def settled() -> dict | None:
        detail = api.get(f"/api/studies/{truth.study_uid}").json()
        return detail if detail.get("study", {}).get("state") in ("done", "failed", "rejected") else None

    detail = node.wait_until(settled, timeout=180, what="the study to be analysed")
    assert detail["study"]["state"] == "done", f"{detail.get('study')}\n{node.log_text()[-3000:]}"
    assert detail["series"] and sum(s["instances"] for s in detail["series"]) == len(files)
    assert {e["category"] for e in detail["events"]} >= {"study", "job", "result"}
    images = [url for result in detail["results"] for url in result["images"]]
    assert images, "the report stage's Secondary Capture is found under the results directory"
    png = api.get(images[0])
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    listed = api.get("/api/studies", params={"state": "done"}).json()
    assert [s["study_uid"] for s in listed] == [truth.study_uid]
    api.close()
