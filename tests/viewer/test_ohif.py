"""The node's results in a real viewer: OHIF (pinned prebuilt dist) on Orthanc's DICOMweb, in Debian Chromium.

Real nodes analyse small synthetic studies and deliver SR + SEG + SC to Orthanc exactly as in production;
the same Orthanc holds the studies' PET and CT. One viewer serves every case; each test opens one study,
double-clicks the SR and checks what a radiologist sees: the focus drawn on the PET image through its
SUVbw max with its labels ("SUVbw max: 12.30 g/ml{SUVbw}", distinct from "SUVbw peak" and "SUVbw mean"),
the probability as a percentage, no error, the Measurements panel listing the finding by its site, the SEG
overlaid, and the Secondary Capture shown at 1:1 (at least one screen pixel per picture pixel).
Screenshots go to $PSMA_VIEWER_ARTIFACTS (default: a temporary folder) for a human look; docs/images/ holds
the ones docs/results.md shows.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from playwright.sync_api import BrowserContext, ConsoleMessage, Request, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node.cli.main import cli
from dicom_node.synth import SynthOptions, generate_study
from dicom_node.synth.transmit import send_files
from tests.dicom_node.report.validation import dciodvfy_errors, dsrdump_problems
from tests.inference.studies import write_random_checkpoint
from tests.support.node import NodeProcess, write_config
from tests.support.ohif import CHROMIUM, CHROMIUM_ARGS, OhifServer, ohif_dist
from tests.support.orthanc import OrthancServer

pytestmark = [pytest.mark.slow, pytest.mark.viewer]
STUDY: dict[str, Any] = {"ct_matrix": 128, "pet_matrix": 96, "extent_mm": 200.0, "pet_fov_mm": 400.0,
                         "ct_fov_mm": 400.0}
QUICK: dict[str, dict[str, Any]] = {"assembly": {"quiet_seconds": 2, "ceiling_seconds": 120},
                                    "workers": {"lease_seconds": 30}, "results": {"send_tick_seconds": 0.5}}
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "intact": ({"seed": 3, "recurrence": True, "prostatectomy": False}, "model"),
    "prostatectomy": ({"seed": 5, "recurrence": True, "prostatectomy": True}, "model"),
    "no-focus": ({"seed": 7, "recurrence": False, "prostatectomy": False}, "model"),
    "no-classifier": ({"seed": 11, "recurrence": True, "prostatectomy": False}, "bare"),
    "bone": ({"seed": 12, "recurrence": False, "prostatectomy": False, "site_foci": ("pubic_bone",)}, "model"),
}
"""Case name: synthetic study options, and which node analyses it (with a classifier model or without)."""
RESULT_SERIES = {"SR": 9900, "SC": 9901, "SEG": 9902}
SR_CONSOLE = re.compile(r"SCOORD|ReferencedSOPSequence|TID ?1500|Structured Report|DICOM SR|dicom-sr|SRDisplay|"
                        r"hydrat|tool state|measurement", re.IGNORECASE)
"""What an SR-extension problem prints (the crash the issue describes printed SCOORD/ReferencedSOPSequence)."""


@dataclass
class Delivered:
    """One case's study as it sits in Orthanc after the node delivered its results."""

    study_uid: str
    instances: list[dict[str, Any]]
    sr: Dataset

    def instance_number(self, sop_instance_uid: str) -> int:
        return int(next(t for t in self.instances if t["SOPInstanceUID"] == sop_instance_uid)["InstanceNumber"])

    def groups(self) -> dict[str, Dataset]:
        """The SR's measurement groups by their label (first Comment)."""
        report = next(i for i in self.sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010")
        return {next(c.TextValue for c in group.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue
                     == "121106"): group for group in report.ContentSequence}


@dataclass
class Pacs:
    orthanc_url: str
    cases: dict[str, Delivered]


def _artefacts() -> Path:
    folder = Path(os.environ.get("PSMA_VIEWER_ARTIFACTS") or tempfile.mkdtemp(prefix="ohif-screenshots-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _node(root: Path, orthanc: OrthancServer, with_model: bool) -> NodeProcess:
    destination = {"name": "orthanc", "kind": "dicom", "ae_title": orthanc.aet, "host": "127.0.0.1",
                   "port": orthanc.dicom_port}
    config = write_config(root, {**QUICK, "results": {**QUICK["results"], "destinations": [destination]}})
    if with_model:
        checkpoint = write_random_checkpoint(root / "checkpoint.pt")
        outcome = CliRunner().invoke(cli, ["--config", str(config), "models", "import", str(checkpoint), "--as", "D"])
        assert outcome.exit_code == 0, outcome.output
    return NodeProcess(config)


def _results_in(orthanc: OrthancServer, study_uid: str) -> list[dict[str, Any]] | None:
    tags = orthanc.study_instances(study_uid)
    numbers = {int(t.get("SeriesNumber", 0) or 0) for t in tags}
    sc_instances = sum(int(t.get("SeriesNumber", 0) or 0) == RESULT_SERIES["SC"] for t in tags)
    return tags if set(RESULT_SERIES.values()) <= numbers and sc_instances == 4 else None


def _sr_file(orthanc: OrthancServer, sop_instance_uid: str) -> Dataset:
    found = orthanc.post("/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}})
    response = requests.get(f"{orthanc.url}/instances/{found[0]}/file", timeout=30)
    response.raise_for_status()
    return dcmread(BytesIO(response.content))


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    """Four studies analysed by real nodes, their results in a real Orthanc with DICOMweb.

    The nodes are stopped as soon as everything is delivered: the viewer needs only Orthanc.
    """
    root = tmp_path_factory.mktemp("viewer")
    orthanc = OrthancServer(root / "orthanc", dicomweb=True)
    nodes = {"model": _node(root / "node-model", orthanc, True), "bare": _node(root / "node-bare", orthanc, False)}
    with orthanc:
        try:
            with ThreadPoolExecutor(len(nodes)) as starting:  # the nodes start while the studies are made
                started = [starting.submit(node.start) for node in nodes.values()]
                studies = {name: generate_study(root / "studies" / name, SynthOptions(**{**STUDY, **options}))
                           for name, (options, _) in CASES.items()}
                for future in started:
                    future.result()
            uids: dict[str, str] = {}
            for name, truth in studies.items():
                which = CASES[name][1]
                files = sorted((root / "studies" / name).glob("*/*.dcm"))
                report = send_files(files, "127.0.0.1", nodes[which].port, "PSMA_NODE")
                assert report.ok, report.failures
                stored = send_files(files, "127.0.0.1", orthanc.dicom_port, orthanc.aet)
                assert stored.ok, stored.failures
                uids[name] = truth.study_uid
            cases: dict[str, Delivered] = {}
            for name, uid in uids.items():
                node = nodes[CASES[name][1]]
                tags = node.wait_until(partial(_results_in, orthanc, uid), 150, f"results of {name}")
                sr = next(t for t in tags if t.get("Modality") == "SR")
                cases[name] = Delivered(uid, tags, _sr_file(orthanc, sr["SOPInstanceUID"]))
        finally:
            stoppers = [threading.Thread(target=node.stop) for node in nodes.values()]
            for stopper in stoppers:
                stopper.start()
            for stopper in stoppers:
                stopper.join()
        yield Pacs(orthanc.url, cases)


@pytest.fixture(scope="module")
def viewer(pacs: Pacs) -> Iterator[tuple[BrowserContext, str]]:
    """One OHIF server and one headless Debian Chromium for the module."""
    dist = ohif_dist()
    if not (dist / "index.html").exists():
        pytest.fail(f"OHIF viewer not installed at {dist}: run deploy/install-ohif-viewer.sh (make setup does)")
    with OhifServer(dist, pacs.orthanc_url) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:  # one context: OHIF's first-visit tour is dismissed once and stays dismissed
            yield browser.new_context(viewport={"width": 1400, "height": 900}), server.url
        finally:
            browser.close()
        assert server.proxy_errors == []


@pytest.fixture(scope="module")
def artefacts() -> Path:
    return _artefacts()


class Session:
    """One browser page on one study, collecting console errors and page errors."""

    tour_dismissed: set[int] = set()
    """Browser contexts in which OHIF's first-visit tour was dismissed (it stays dismissed in a context)."""

    def __init__(self, context: BrowserContext, base: str, study_uid: str) -> None:
        self.page = context.new_page()
        self.errors: list[str] = []
        """Uncaught page errors, and console errors/warnings of the SR extension."""
        self.console: list[str] = []
        """Every console error and warning, kept as an artefact."""
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        self._in_flight: set[Request] = set()
        self.page.on("request", self._request_started)
        self.page.on("requestfinished", self._request_finished)
        self.page.on("requestfailed", self._request_failed)
        self.page.goto(f"{base}/viewer?StudyInstanceUIDs={study_uid}")
        self.page.locator('[data-cy^="study-browser-thumbnail"]').first.wait_for(timeout=60_000)
        self._dismiss_tour(id(context))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text}")
            if SR_CONSOLE.search(message.text):
                self.errors.append(f"{message.type}: {message.text}")

    def _request_started(self, request: Request) -> None:
        self._in_flight.add(request)

    def _request_finished(self, request: Request) -> None:
        self._in_flight.discard(request)

    def _request_failed(self, request: Request) -> None:
        self._in_flight.discard(request)
        self.console.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def settle(self, quiet_ms: int = 500, timeout: float = 30.0) -> None:
        """Wait until no request has been in flight for `quiet_ms`, as a reader waits for the images to
        appear before opening the next series. (Replacing a series whose images are still loading makes
        OHIF 3.13 itself fail: its IMAGE_LOAD_ERROR handler raises "handler is not a function" and shows
        "Something went wrong", seen 1 in 16 runs on a loaded machine.)"""
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            if self._in_flight:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_ms / 1000:
                return
            self.page.wait_for_timeout(50)

    def _dismiss_tour(self, context: int) -> None:
        if context in Session.tour_dismissed:
            return
        try:
            self.page.get_by_text("Skip all").first.click(timeout=10_000)
        except PlaywrightTimeout:
            pass  # no tour shown
        Session.tour_dismissed.add(context)

    def open_series(self, series_number: int) -> None:
        self.settle()
        self.page.locator(f'[data-cy^="study-browser-thumbnail"][data-series="{series_number}"]').dblclick()

    def answer(self, prompt: str, button: str = "Yes") -> None:
        self.page.get_by_text(prompt).wait_for(timeout=30_000)
        self.page.get_by_role("button", name=button, exact=True).first.click()

    def annotation_text(self) -> str:
        texts = self.page.locator('[data-cy="viewport-pane"] svg text').evaluate_all(
            "nodes => nodes.map(node => node.textContent || '')")
        return " | ".join(texts)

    def overlay(self, corner: str) -> str:
        return self.page.locator(f'[data-cy="viewport-overlay-{corner}"]').inner_text()

    def save(self, shots: Path, name: str) -> None:
        """A screenshot and the console so far, saved before any assertion so a failure keeps its cause."""
        self.page.screenshot(path=str(shots / f"{name}.png"))
        (shots / f"{name}-console.txt").write_text("\n".join(self.console + self.errors))

    def assert_no_error(self, shots: Path, name: str) -> None:
        """No uncaught error, no SR-extension error or warning, no error toast, no error page."""
        self.save(shots, f"{name}-final")
        assert self.errors == []
        assert self.page.locator('[data-sonner-toast][data-type="error"]').count() == 0
        assert "Something went wrong" not in self.page.inner_text("body")

    def close(self) -> None:
        self.page.close()


def _focus_roi(case: Delivered, modality: str = "PET") -> tuple[str, dict[str, float]]:
    """The PET instance the SR draws focus 1 on, and its NUMs as written (by concept name)."""
    group = next(g for name, g in case.groups().items() if name.startswith("Focus 1") and name.endswith(modality))
    scoord = next(i for i in group.ContentSequence if i.ValueType == "SCOORD")
    values = {i.ConceptNameCodeSequence[0].CodeMeaning: float(i.MeasuredValueSequence[0].NumericValue)
              for i in group.ContentSequence if i.ValueType == "NUM"}
    return str(scoord.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID), values


def _wait_for_text(session: Session, wanted: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = session.annotation_text()
        if wanted in text:
            return text
        session.page.wait_for_timeout(250)
    return text


def _check_sr_draws_focus(viewer: tuple[BrowserContext, str], case: Delivered, shots: Path, name: str) -> Session:
    context, base = viewer
    session = Session(context, base, case.study_uid)
    sop_uid, values = _focus_roi(case)
    session.open_series(RESULT_SERIES["SR"])
    label = f"SUVbw max: {values['SUVbw max']:.2f} g/ml{{SUVbw}}"
    text = _wait_for_text(session, label)
    session.save(shots, f"{name}-sr")
    assert label in text, text  # distinct, readable labels: each SUV says which it is, the unit says SUVbw
    assert f"SUVbw mean: {values['SUVbw mean']:.2f} g/ml{{SUVbw}}" in text
    if "SUVbw peak" in values:
        assert f"SUVbw peak: {values['SUVbw peak']:.2f} g/ml{{SUVbw}}" in text
    assert "Volume:" in text and "SUVmax" not in text
    assert f"I:{case.instance_number(sop_uid)} " in session.overlay("bottom-right").replace("\n", " ") + " "
    assert "Something went wrong" not in session.page.inner_text("body")
    return session


def _check_measurements_panel(session: Session, shots: Path, name: str, label: str) -> None:
    session.answer("continue tracking measurements")
    session.page.locator('[data-cy="trackedMeasurements-btn"]').click()
    panel = session.page.get_by_text(re.compile(r"Measurements \((\d+)\)"))
    panel.first.wait_for(timeout=30_000)
    count = int(re.search(r"\((\d+)\)", panel.first.inner_text()).group(1))  # type: ignore[union-attr]
    session.save(shots, f"{name}-measurements")
    assert count >= 1
    assert session.page.get_by_text(label).count() >= 1


def _check_seg_overlays(session: Session, shots: Path, name: str, label: str) -> None:
    session.open_series(RESULT_SERIES["SEG"])
    session.answer("open this Segmentation")
    session.page.locator('[data-cy="panelSegmentation-btn"]').click()
    session.page.get_by_text(label).first.wait_for(timeout=30_000)
    session.save(shots, f"{name}-seg")


def test_delivered_srs_pass_dciodvfy_and_dsrdump(pacs: Pacs, tmp_path: Path) -> None:
    """The very SRs the viewer opens, as the real publish path made them."""
    for name, case in pacs.cases.items():
        path = tmp_path / f"{name}.dcm"
        case.sr.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], name
        status, errors, _ = dsrdump_problems(path)
        assert status == 0 and errors == [], name


def test_intact_prostate_recurrence_is_drawn_listed_and_overlaid(viewer, pacs: Pacs, artefacts: Path) -> None:
    case = pacs.cases["intact"]
    focus = case.groups()["Focus 1 (prostate), PET"]
    assert [i.ConceptNameCodeSequence[0].CodeMeaning for i in focus.ContentSequence if i.ValueType == "IMAGE"] == [
        "Referenced Segment"]  # the SEG reference OHIF has to tolerate
    session = _check_sr_draws_focus(viewer, case, artefacts, "intact")
    _check_measurements_panel(session, artefacts, "intact", "Focus 1 (prostate), PET")
    _check_seg_overlays(session, artefacts, "intact", "Focus 1")
    session.assert_no_error(artefacts, "intact")
    session.close()


def test_recurrence_after_prostatectomy_is_drawn_in_the_prostate_bed(viewer, pacs: Pacs, artefacts: Path) -> None:
    case = pacs.cases["prostatectomy"]
    assert any("prostate bed" in name for name in case.groups())
    session = _check_sr_draws_focus(viewer, case, artefacts, "prostatectomy")
    session.assert_no_error(artefacts, "prostatectomy")
    session.close()


def test_no_focus_draws_the_analysed_region_with_no_focal_uptake(viewer, pacs: Pacs, artefacts: Path) -> None:
    case = pacs.cases["no-focus"]
    names = list(case.groups())
    assert names == ["Analysed region (prostate): no focus ≥ SUVbw 4; AI: recurrence absent"]
    context, base = viewer
    session = Session(context, base, case.study_uid)
    session.open_series(RESULT_SERIES["SR"])
    text = _wait_for_text(session, "SUVbw max:")
    session.save(artefacts, "no-focus-sr")
    assert re.search(r"Probability of cancer: \d+\.\d\d %", text), text  # a percentage, not "0.83 1"
    assert "SUVbw max:" in text and "SUVbw mean:" in text
    assert "Something went wrong" not in session.page.inner_text("body")
    _check_measurements_panel(session, artefacts, "no-focus", names[0])
    _check_seg_overlays(session, artefacts, "no-focus", "Analysed region")
    session.assert_no_error(artefacts, "no-focus")
    session.close()


def test_without_classifier_the_focus_is_still_drawn_without_a_probability(
        viewer, pacs: Pacs, artefacts: Path) -> None:
    case = pacs.cases["no-classifier"]
    session = _check_sr_draws_focus(viewer, case, artefacts, "no-classifier")
    assert "Probability" not in session.annotation_text()
    session.assert_no_error(artefacts, "no-classifier")
    session.close()


def test_a_bone_focus_is_named_by_its_site_and_the_sc_reads_at_full_size(
        viewer, pacs: Pacs, artefacts: Path) -> None:
    """The pubic-bone vignette: the SR's focus is the bone focus, named so in the Measurements panel and the
    SEG; the Secondary Capture's summary, opened in a window large enough, is shown at 1:1 or larger."""
    case = pacs.cases["bone"]
    assert "Focus 1 (pubic bone), PET" in case.groups()
    session = _check_sr_draws_focus(viewer, case, artefacts, "bone")
    _check_measurements_panel(session, artefacts, "bone", "Focus 1 (pubic bone), PET")
    _check_seg_overlays(session, artefacts, "bone", "Focus 1: pubic bone")
    session.assert_no_error(artefacts, "bone")
    session.close()

    context, base = viewer
    large = context.browser.new_context(viewport={"width": 2400, "height": 1900})  # type: ignore[union-attr]
    try:
        sc = Session(large, base, case.study_uid)
        sc.open_series(RESULT_SERIES["SC"])
        sc.settle()
        canvas = sc.page.locator('[data-cy="viewport-pane"] canvas').first
        canvas.wait_for(timeout=30_000)
        box = canvas.bounding_box()
        summary = next(t for t in case.instances if int(t.get("SeriesNumber", 0) or 0) == RESULT_SERIES["SC"]
                       and int(t["InstanceNumber"]) == 1)
        rows, columns = int(summary["Rows"]), int(summary["Columns"])
        assert box is not None and min(box["width"] / columns, box["height"] / rows) >= 1.0, (box, rows, columns)
        sc.page.screenshot(path=str(artefacts / "bone-sc-1to1.png"), clip=box)
        sc.assert_no_error(artefacts, "bone-sc")
        sc.close()
    finally:
        large.close()
