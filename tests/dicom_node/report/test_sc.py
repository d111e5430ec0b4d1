"""The Secondary Capture: valid, correctly labelled, in radiological orientation, legible, clear of the
corners viewers overlay, with the findings per focus and no admin text for the radiologist."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from dicom_node.config import ResultSettings
from dicom_node.report.render import (
    BANNER,
    FOCUS_COLOUR,
    PANEL_BACKGROUND,
    PUBLISHED_PERFORMANCE,
    SAFE_TOP_BOTTOM,
    WARNING_COLOUR,
    PanelFacts,
    Rendered,
    display_bounds,
    focus_point,
    lead_lines,
    panel_lines,
    plane_grid,
    render_all,
    render_summary,
    safe_area,
    sample,
)
from dicom_node.report.sc import build_sc_series
from dicom_node.report.sr import device_uid
from inference.result import AnalysisResult, Focus
from inference.volume import Volume
from tests.dicom_node.report.synthetic import CENTRE, LESION_OFFSET, make_analysis, make_pet_header
from tests.dicom_node.report.synthetic_findings import make_analysis_with_findings
from tests.dicom_node.report.validation import dciodvfy_errors

FACTS = PanelFacts(accession_number="ACC12345", study_date="20240501",
                   analysed_at=dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc))


def _luminance(rgb: tuple[int, int, int]) -> float:
    def channel(c: int) -> float:
        v = c / 255.0
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_sc_series_passes_dciodvfy_with_the_source_patient_and_study(tmp_path: Path) -> None:
    pet = make_pet_header()
    settings = ResultSettings(institution_name="Test Hospital")
    series_uid = generate_uid()
    pictures = render_all(make_analysis(), FACTS)
    datasets = build_sc_series(pictures, pet, settings, series_uid, "0.1.0", device_uid(None, "0.1.0"))
    assert len(datasets) == 4
    for n, ds in enumerate(datasets, start=1):
        path = tmp_path / f"sc{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == []
        back = dcmread(path)
        assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
        assert (back.ConversionType, back.BurnedInAnnotation, back.BodyPartExamined) == ("WSD", "YES", "PELVIS")
        assert back.PhotometricInterpretation == "RGB" and back.SamplesPerPixel == 3 and back.BitsAllocated == 8
        assert back.SeriesInstanceUID == series_uid and back.InstanceNumber == n
        assert back.SeriesNumber == settings.sc_series_number and back.SeriesDescription.startswith("AI")
        assert back.ImageComments.endswith("NOT FOR DIAGNOSTIC USE")
        for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                        "AccessionNumber", "StudyDate", "StudyID"):
            assert back.get(keyword) == pet.get(keyword), keyword
        assert str(back.PatientName) == "Müller^Hans"
        assert back.pixel_array.shape == (pictures[n - 1].image.height, pictures[n - 1].image.width, 3)
    assert [d.PatientOrientation for d in datasets[1:]] == [["L", "P"], ["L", "F"], ["P", "F"]]


def test_text_panel_is_complete_large_and_high_contrast() -> None:
    analysis = make_analysis()
    picture = render_summary(analysis, FACTS)
    width, height = picture.image.size
    texts = [line.text for line in picture.lines]
    assert BANNER in texts
    drawn = " ".join(texts)
    for text, _ in panel_lines(analysis, FACTS):  # every line made it onto the picture, none cut off
        assert " ".join(text.split()) in drawn
    assert PUBLISHED_PERFORMANCE.split(".")[0] in drawn
    assert "Accession ACC12345" in drawn and "probability 0.83 (threshold 0.50)" in drawn
    assert "PSA 4.2 ng/ml (tag: AdditionalPatientHistory)" in drawn
    pixels = picture.pixels
    for line in picture.lines:
        x0, y0, x1, y1 = line.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, line.text
        assert line.font_px >= 14, line.text
        assert _contrast(line.colour, line.background) >= 7.0, line.text
        region = pixels[y0:y1, x0:x1].reshape(-1, 3)
        assert (region == line.colour).all(axis=1).sum() > 10, f"text not drawn: {line.text}"
        if line.background != (0, 0, 0):
            assert (region == line.background).all(axis=1).mean() > 0.3, f"background wrong: {line.text}"


def test_overlays_lie_inside_their_views_and_the_contour_surrounds_the_lesion() -> None:
    analysis = make_analysis()
    picture = render_summary(analysis, FACTS)
    assert set(picture.views) == {"axial", "coronal", "sagittal"}
    for key, (x0, y0, x1, y1) in picture.overlays.items():
        vx0, vy0, vx1, vy1 = picture.views[key.split(":")[0]]
        assert vx0 <= x0 <= x1 <= vx1 and vy0 <= y0 <= y1 <= vy1, key
    for plane in ("axial", "coronal", "sagittal"):
        assert f"{plane}:box" in picture.overlays and f"{plane}:attention" in picture.overlays
        x, y = _lesion_pixel(picture, plane)
        ax0, ay0, ax1, ay1 = picture.overlays[f"{plane}:attention"]
        assert ax0 < x < ax1 and ay0 < y < ay1, plane


def _lesion_pixel(picture: Rendered, plane: str) -> tuple[int, int]:
    """Centre of the PET hot spot in one view: orange-yellow pixels, thin lines (box, text) opened away."""
    x0, y0, x1, y1 = picture.views[plane]
    view = picture.pixels[y0:y1 + 1, x0:x1 + 1].astype(int)
    hot = (view[..., 0] > 200) & (view[..., 1] > 100) & (view[..., 2] < 150)
    hot = ndimage.binary_opening(hot, iterations=3)
    rows, cols = np.nonzero(hot)
    assert rows.size > 0, f"no hot spot in the {plane} view"
    return x0 + int(round(cols.mean())), y0 + int(round(rows.mean()))


def test_views_follow_radiological_convention() -> None:
    """Lesion is patient-left, anterior and slightly superior: check where each view puts it."""
    assert LESION_OFFSET[0] > 0 and LESION_OFFSET[1] < 0 and LESION_OFFSET[2] > 0
    analysis = make_analysis()
    picture = render_summary(analysis, FACTS)
    low, high = display_bounds(analysis)
    focus, how = focus_point(analysis)
    assert how == "through SUVbw max" and np.allclose(focus, CENTRE + LESION_OFFSET)
    for plane, right_of_centre, above_centre in (("axial", True, True), ("coronal", True, True),
                                                 ("sagittal", False, True)):
        x, y = _lesion_pixel(picture, plane)
        vx0, vy0, vx1, vy1 = picture.views[plane]
        grid = plane_grid(plane, low, high, focus, vx1 - vx0 + 1)  # type: ignore[arg-type]
        expected = grid.to_pixel(CENTRE + LESION_OFFSET)
        assert abs(x - vx0 - expected[0]) <= 4 and abs(y - vy0 - expected[1]) <= 4, plane
        assert (x > (vx0 + vx1) / 2) == right_of_centre, f"{plane}: left/right or anterior/posterior flipped"
        assert (y < (vy0 + vy1) / 2) == above_centre, f"{plane}: up/down flipped"


def test_result_without_images_still_renders_a_readable_panel(tmp_path: Path) -> None:
    analysis = make_analysis(classifier_run=False, with_images=False)
    pictures = render_all(analysis, FACTS)
    assert len(pictures) == 1 and pictures[0].views == {}
    drawn = " ".join(line.text for line in pictures[0].lines)
    assert "UNDETERMINED" in drawn and "AI classifier not run" in drawn
    datasets = build_sc_series(pictures, make_pet_header(), ResultSettings(), generate_uid(), "0.1.0", "2.25.1")
    path = tmp_path / "sc.dcm"
    datasets[0].save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


def test_sc_pixels_saved_as_png_equal_the_rendering_so_text_stays_sharp(tmp_path: Path) -> None:
    picture = render_summary(make_analysis(prostatectomy=True), FACTS)
    ds = build_sc_series([picture], make_pet_header(), ResultSettings(), generate_uid(), "0.1.0", "2.25.1")[0]
    path = tmp_path / "sc.dcm"
    ds.save_as(path, enforce_file_format=True)
    png = tmp_path / "sc.png"
    Image.fromarray(dcmread(path).pixel_array, "RGB").save(png)
    assert np.array_equal(np.asarray(Image.open(png).convert("RGB")), picture.pixels)


ADMIN_NOTE = ("classifier not installed: weights for model D are not installed in /srv/psma/var/models: download "
              "them and install them with `psma-node models import D model_D.pt`")


def _not_installed() -> AnalysisResult:
    analysis = make_analysis_with_findings(classifier_run=False)
    analysis.classifier_note = ADMIN_NOTE
    analysis.warnings = [ADMIN_NOTE, "PET header read from /var/lib/psma/storage/x.dcm had no PatientWeight"]
    return analysis


def test_every_picture_keeps_its_content_inside_the_viewer_safe_area() -> None:
    for analysis in (make_analysis_with_findings(), _not_installed(), make_analysis(with_images=False)):
        for picture in render_all(analysis, FACTS):
            width, height = picture.image.size
            x0, y0, x1, y1 = safe_area(width, height)
            assert y0 >= SAFE_TOP_BOTTOM * height and height - y1 >= SAFE_TOP_BOTTOM * height
            for line in picture.lines:
                lx0, ly0, lx1, ly1 = line.box
                assert x0 <= lx0 and lx1 <= x1 and y0 <= ly0 and ly1 <= y1, (line.text, line.box, (width, height))
            for box in [*picture.views.values(), *picture.overlays.values()]:
                assert x0 <= box[0] and box[2] < x1 and y0 <= box[1] and box[3] < y1
            pixels = picture.pixels
            outside = np.ones((height, width), bool)
            outside[y0:y1, x0:x1] = False
            assert not pixels[outside].any(), "something drawn where viewers print their overlays"


def test_classifier_not_installed_reads_as_such_without_paths_or_instructions() -> None:
    analysis = _not_installed()
    drawn = " ".join(line.text for picture in render_all(analysis, FACTS) for line in picture.lines)

    assert "AI classifier not run (classifier not installed at this site)" in drawn
    assert "UNDETERMINED" in drawn and BANNER in drawn
    for admin in ("/srv", "/var", "var/models", "psma-node models", "install them", "download", ".dcm"):
        assert admin not in drawn, admin
    assert "Warning: PET header read from … had no PatientWeight" in drawn


def test_findings_per_focus_and_the_suggested_category_are_listed() -> None:
    analysis = make_analysis_with_findings()
    assert analysis.findings is not None
    first, second = analysis.findings.foci
    picture = render_summary(analysis, FACTS)
    drawn = " ".join(" ".join(line.text for line in picture.lines).split())

    assert (f"Focus 1, prostate: SUVbw max {first.suv_max:.1f}, miPSMA 2 (≥ spleen 9.1, < parotid 18.0); miT2 if "
            "judged tumour") in drawn
    assert ("Focus 2, pubic bone: SUVbw max 3.1, miPSMA ≥ 2 (≥ spleen 9.1; no parotid); miM1b if metastasis"
            in drawn)
    assert ("Rule-based PROMISE V2 suggestion, independent of the AI classifier: miT2u (1 focus in the prostate; "
            "extension not assessed)") in drawn
    assert (f"Focus 1: SUVbw peak 11.8 (1.22 ml sphere); Volume (41 % isocontour) {first.volume_ml:.1f} ml, "
            f"SUVbw mean {first.suv_mean:.1f}, level {first.contour_suv:.1f}") in drawn
    assert (f"Focus 2: SUVbw peak none (PET voxels too coarse); Volume (adaptive isocontour) {second.volume_ml:.2f} "
            "ml, SUVbw mean 2.4, level 1.8 (adaptive: background + 50 % of (SUVbw max - background))") in drawn
    assert "blood pool: SUVbw mean 1.60 (VOI 14.2 ml)" in drawn
    assert "green = focus outline" in drawn and "SUVmax" not in drawn and " g/ml" not in drawn


def test_the_result_leads_in_large_lines_and_provenance_follows_smaller() -> None:
    analysis = make_analysis_with_findings()
    analysis.envelope_violations = ["uptake time 240 min > 150 min"]
    analysis.warnings = ["CT lossy-compressed (JPEG baseline): HU approximate"]
    picture = render_summary(analysis, FACTS)
    panel = [line for line in picture.lines if line.background == PANEL_BACKGROUND]
    texts = [" ".join(line.text.split()) for line in panel]
    assert texts[0] == "AI classifier: local recurrence PRESENT, probability 0.83 (threshold 0.50)"
    assert texts[1].startswith("Warning: Outside the conditions the model was validated for: uptake time 240 min")
    assert panel[1].colour == WARNING_COLOUR and panel[1].font_px >= panel[2].font_px
    lead = [text for text, _ in lead_lines(analysis)]
    assert len(lead) == 5 and lead[-1].startswith("Rule-based PROMISE V2 suggestion, independent of the AI")
    large = min(line.font_px for line in panel[:4])
    provenance = [line for line in panel if "Published" in line.text or line.text.startswith("Model D")]
    assert large >= 20 and all(line.font_px < large for line in provenance) and provenance[0].font_px >= 14
    details = next(i for i, text in enumerate(texts) if text.startswith("Focus 1: SUVbw peak"))
    category = next(i for i, text in enumerate(texts) if text.startswith("Rule-based"))
    assert texts.index("Warning: CT lossy-compressed (JPEG baseline): HU approximate") > details > category
    datasets = build_sc_series([picture], make_pet_header(), ResultSettings(), generate_uid(), "0.1.0", "2.25.1")
    comments = datasets[0].ImageComments
    assert comments.startswith("AI summary: fused PET/CT views and result: AI classifier: local recurrence PRESENT")
    assert " | Focus 2, pubic bone: SUVbw max 3.1" in comments and comments.endswith("NOT FOR DIAGNOSTIC USE")


def test_no_focus_and_many_foci_are_said_plainly() -> None:
    analysis = make_analysis_with_findings()
    assert analysis.findings is not None
    template = analysis.findings.foci[1]
    analysis.findings.foci = [Focus(**{**template.__dict__, "number": n}) for n in range(1, 7)]
    drawn = " ".join(text for text, _ in panel_lines(analysis, FACTS))
    assert "Focus 4, pubic bone:" in drawn and "Focus 5, pubic bone" not in drawn
    assert "… and 2 more foci (all listed in the SR and SEG)" in drawn

    analysis.findings.foci, analysis.findings.local_category = [], "miT0"
    drawn = " ".join(text for text, _ in panel_lines(analysis, FACTS))
    assert "No focus with SUVbw max ≥ 4 and ≥ 1.5 × local background in the analysed region" in drawn
    assert ("Rule-based PROMISE V2 suggestion, independent of the AI classifier: miT0 (no focus in the prostate / "
            "prostate bed)") in drawn

    analysis.findings.local_category = None
    drawn = " ".join(text for text, _ in panel_lines(analysis, FACTS))
    assert "independent of the AI classifier: miT not suggested: prostatectomy status unknown" in drawn


def test_focus_outline_surrounds_the_lesion_in_every_view() -> None:
    picture = render_summary(make_analysis_with_findings(), FACTS)
    pixels = picture.pixels
    for plane in ("axial", "coronal", "sagittal"):
        x, y = _lesion_pixel(picture, plane)
        fx0, fy0, fx1, fy1 = picture.overlays[f"{plane}:focus-1"]
        assert fx0 < x < fx1 and fy0 < y < fy1, plane
        outline = pixels[fy0:fy1 + 1, fx0:fx1 + 1]
        assert (outline == FOCUS_COLOUR).all(axis=-1).sum() >= 8, plane


def test_many_foci_and_long_notes_grow_the_panel_instead_of_shrinking_the_text() -> None:
    analysis = make_analysis_with_findings()
    assert analysis.findings is not None
    template = analysis.findings.foci[0]
    analysis.findings.foci = [Focus(**{**template.__dict__, "number": n}) for n in range(1, 5)]
    analysis.findings.mipsma_assessable = False
    analysis.findings.mipsma_note = "no reference organ masks: the anatomical localiser does not segment them " * 2
    analysis.findings.local_category_note = "suggestion only; extracapsular extension is not assessed " * 3

    for picture in render_all(analysis, FACTS):
        drawn = " ".join(" ".join(line.text for line in picture.lines).split())
        assert "Focus 4, prostate: SUVbw max" in drawn and "Published" in drawn
        lead = [line for line in picture.lines if line.font_px > 16]
        assert sum("SUVbw max" in line.text for line in lead) >= 4, picture.description
        assert min(line.font_px for line in picture.lines) >= 14, picture.description


def test_views_along_the_voxel_axes_sample_the_same_values_as_trilinear_interpolation() -> None:
    analysis = make_analysis_with_findings()
    assert analysis.images is not None
    low, high = display_bounds(analysis)
    focus, _ = focus_point(analysis)
    for volume in (analysis.images.ct_crop, analysis.images.pet_suv_crop):
        for plane in ("axial", "coronal", "sagittal"):
            grid = plane_grid(plane, low, high, focus + np.array([0.3, -0.7, 1.1]), 96)  # between voxels
            inverse = np.linalg.inv(volume.affine_lps)
            rows, cols = np.mgrid[0 : grid.rows, 0 : grid.cols]
            step = grid.step_mm
            lps = grid.origin + cols[..., None] * step * grid.u + rows[..., None] * step * grid.v
            index = np.moveaxis(lps @ inverse[:3, :3].T + inverse[:3, 3], -1, 0)
            expected = ndimage.map_coordinates(np.asarray(volume.array, dtype=np.float32), index, order=1,
                                               mode="constant", cval=np.nan)
            got = sample(volume, grid)
            assert np.array_equal(np.isnan(got), np.isnan(expected)), plane
            assert np.isfinite(got).any(), plane
            assert np.allclose(got, expected, rtol=1e-5, atol=1e-3, equal_nan=True), plane
    outside = Volume(np.ones((4, 4, 4), dtype=np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    far = plane_grid("axial", np.zeros(3), np.full(3, 3.0), np.array([1.0, 1.0, 9.0]), 8)
    assert np.isnan(sample(outside, far)).all()  # a plane beyond the volume shows nothing
