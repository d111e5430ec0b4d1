"""Pictures of an analysis for the Secondary Capture: fused PET/CT views, the cube, attention, a text panel.

The Secondary Capture is the only result a radiologist is sure to see in any PACS viewer, so it has to be
readable on its own: views in radiological convention (patient left on image right on axial and coronal,
head up on coronal and sagittal), the analysed cube and the model's attention drawn over the fused image,
each focus outlined and numbered, and under the research-use banner four to five large lines a reader needs
first — the AI result and probability against the threshold, a warning when the inputs lie outside the
validated conditions, one line per focus (site, SUVbw max, miPSMA with its references, rule-based
category), the rule-based PROMISE suggestion set apart from the AI result — then a smaller block with the
definitions (SUVbw peak sphere, isocontour rule and level, references) and the provenance.

Radiologists read this, not admins: no server paths or install instructions appear (the admin gets those
from `doctor`, the log and the dashboard), and all burned-in content sits inside a safe area clear of the
corners and edges where viewers print their own overlays (OHIF: study date and series description top
left, tool menus top right, window/zoom bottom left, instance number bottom right, orientation markers at
the middle of the edges).

Everything here is a pure function of the `AnalysisResult`; volumes are sampled in patient LPS millimetres
through their own affines, so CT, PET and attention may each live on any grid.

Longer than most modules (about 600 lines): the layout (safe area, panel, views) and the drawing share one
set of measures, and a change to one is checked against the others by looking at the same page.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import textwrap
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal, cast

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from inference.result import AnalysisResult, Finding, Findings, Focus, ReferenceOrgan
from inference.volume import Volume

Plane = Literal["axial", "coronal", "sagittal"]
PLANES: tuple[Plane, ...] = ("axial", "coronal", "sagittal")

BANNER = "AI RESULT – NOT FOR DIAGNOSTIC USE"
PUBLISHED_PERFORMANCE = (
    "Published independent test (Korb et al., Cancers 2025, n=200): accuracy 0.71, sensitivity 0.57, "
    "specificity 0.89. The authors state the model is not reliable enough for clinical use."
)

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
BACKGROUND = (0, 0, 0)
PANEL_BACKGROUND = (16, 16, 16)
TEXT_COLOUR = (255, 255, 255)
BANNER_BACKGROUND = (170, 0, 0)
BOX_COLOUR = (255, 215, 0)
ATTENTION_COLOUR = (0, 255, 255)
FOCUS_COLOUR = (0, 255, 0)
SAFE_TOP_BOTTOM = 0.12
"""Fraction of the picture's height at the top and at the bottom left free of text and images: viewers
print study, series and instance details in the corners (OHIF: up to four lines at each corner)."""
SAFE_SIDES = 0.04
"""Fraction of the width left free at each side, where viewers put orientation markers."""
MAX_FOCI_LISTED = 4
"""Foci listed in the text panel; the SR and the SEG carry every focus."""
NOT_INSTALLED = "classifier not installed at this site"
CT_WINDOW = (40.0, 400.0)  # level, width in HU: soft tissue
ATTENTION_LEVEL = 0.5  # contour at this fraction of the attention map's maximum

# (u axis, v axis) in LPS for each plane: u runs to image right, v runs to image bottom.
_AXES: dict[Plane, tuple[np.ndarray, np.ndarray, int]] = {
    "axial": (np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), 2),  # right = L, down = P; fixed z
    "coronal": (np.array([1.0, 0, 0]), np.array([0, 0, -1.0]), 1),  # right = L, down = I; fixed y
    "sagittal": (np.array([0, 1.0, 0]), np.array([0, 0, -1.0]), 0),  # right = P, down = I; fixed x
}
_EDGE_LABELS: dict[Plane, tuple[str, str, str, str]] = {  # left, right, top, bottom
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}


@dataclass
class TextLine:
    """One drawn line of text, kept so tests can check sizes, placement and contrast."""

    text: str
    box: tuple[int, int, int, int]
    font_px: int
    colour: tuple[int, int, int]
    background: tuple[int, int, int]


@dataclass
class Rendered:
    """An RGB picture and where its parts are, for the SC and for tests."""

    image: Image.Image
    views: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    overlays: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    lines: list[TextLine] = field(default_factory=list)
    description: str = ""
    lead: str = ""
    """The panel's lead lines as plain text (the SC's Image Comments carry them for text-only viewers)."""

    @property
    def pixels(self) -> np.ndarray:
        return np.asarray(self.image.convert("RGB"), dtype=np.uint8)


@dataclass
class PanelFacts:
    """Facts the text panel shows that do not come from the analysis itself."""

    accession_number: str = ""
    study_date: str = ""
    analysed_at: dt.datetime | None = None


@lru_cache(maxsize=16)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans (Debian fonts-dejavu-core), else Pillow's built-in scalable font."""
    path = FONT_DIR / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return ImageFont.load_default(size=size)


def _box_bounds(analysis: AnalysisResult) -> tuple[np.ndarray, np.ndarray] | None:
    images = analysis.images
    if images is None or images.crop_box_lps is None:
        return None
    a, b = (np.asarray(p, dtype=float) for p in images.crop_box_lps)
    return np.minimum(a, b), np.maximum(a, b)


def volume_bounds(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """LPS bounding box of a volume's voxels (outer edges)."""
    shape = np.array(volume.array.shape[:3], dtype=float)
    corners = np.array([[i, j, k] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                        for k in (-0.5, shape[2] - 0.5)])
    points = volume.index_to_lps(corners)
    return points.min(axis=0), points.max(axis=0)


def display_bounds(analysis: AnalysisResult) -> tuple[np.ndarray, np.ndarray]:
    """The region the views show: the CT crop, widened to include the analysed cube."""
    assert analysis.images is not None
    low, high = volume_bounds(analysis.images.ct_crop)
    box = _box_bounds(analysis)
    if box is not None:
        low, high = np.minimum(low, box[0]), np.maximum(high, box[1])
    return low, high


def focus_point(analysis: AnalysisResult) -> tuple[np.ndarray, str]:
    """Where the three planes cross: the SUVmax of the region if known and inside it, else the cube centre."""
    low, high = display_bounds(analysis)
    quant = analysis.quantification
    if quant is not None and quant.suv_max_lps is not None:
        point = np.asarray(quant.suv_max_lps, dtype=float)
        if np.all(point >= low) and np.all(point <= high):
            return point, "through SUVbw max"
    box = _box_bounds(analysis)
    if box is not None:
        return (box[0] + box[1]) / 2.0, "through cube centre"
    return np.asarray(analysis.localisation.center_lps, dtype=float), "through cube centre"


@dataclass
class PlaneGrid:
    """A display plane: pixel (row, col) -> LPS = origin + col*step*u + row*step*v."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    step_mm: float
    rows: int
    cols: int

    def to_pixel(self, lps: np.ndarray) -> tuple[float, float]:
        delta = np.asarray(lps, dtype=float) - self.origin
        return float(delta @ self.u / self.step_mm), float(delta @ self.v / self.step_mm)


def plane_grid(plane: Plane, low: np.ndarray, high: np.ndarray, focus: np.ndarray, size_px: int) -> PlaneGrid:
    """A square grid of size_px pixels covering the display bounds in `plane`, through `focus`."""
    u, v, fixed = _AXES[plane]
    extent = high - low
    span = float(max(abs(extent @ u), abs(extent @ v)))
    step = span / size_px
    centre = (low + high) / 2.0
    centre[fixed] = focus[fixed]
    origin = centre - (u + v) * (span / 2.0) + (u + v) * (step / 2.0)
    return PlaneGrid(origin=origin, u=u, v=v, step_mm=step, rows=size_px, cols=size_px)


def sample(volume: Volume, grid: PlaneGrid, order: int = 1) -> np.ndarray:
    """Values of `volume` at the grid's pixels (NaN outside the volume).

    The plane is affine in voxel space too, so voxel coordinates are built from three vectors instead of
    mapping every pixel's LPS position through the inverse affine. When the plane runs along two voxel axes
    (the usual axial/coronal/sagittal view of an axial series), the two slices around it are blended first
    and interpolated in 2-D: the same values at half the cost of trilinear sampling.
    """
    inverse = np.linalg.inv(volume.affine_lps)[:3, :3]
    start = volume.lps_to_index(grid.origin[None, :])[0]
    per_col = inverse @ grid.u * grid.step_mm
    per_row = inverse @ grid.v * grid.step_mm
    rows = np.arange(grid.rows, dtype=np.float32)[:, None]
    cols = np.arange(grid.cols, dtype=np.float32)[None, :]
    data = np.asarray(volume.array, dtype=np.float32)
    fixed = [axis for axis in range(3) if abs(per_col[axis]) < 1e-9 and abs(per_row[axis]) < 1e-9]
    if order == 1 and len(fixed) == 1:
        axis, depth = fixed[0], float(start[fixed[0]])
        if not 0.0 <= depth <= data.shape[axis] - 1:
            return np.full((grid.rows, grid.cols), np.nan, dtype=np.float32)
        below = min(int(depth), data.shape[axis] - 1)
        weight = np.float32(depth - below)
        plane = np.take(data, below, axis=axis)
        if weight > 0:
            plane = plane * (1 - weight) + np.take(data, below + 1, axis=axis) * weight
        in_plane = [a for a in range(3) if a != axis]
        index = np.stack([start[a] + rows * per_row[a] + cols * per_col[a] for a in in_plane])
        return ndimage.map_coordinates(plane, index, order=1, mode="constant", cval=np.nan)
    index = np.stack([start[a] + rows * per_row[a] + cols * per_col[a] for a in range(3)])
    return ndimage.map_coordinates(data, index, order=order, mode="constant", cval=np.nan)


def suv_display_max(analysis: AnalysisResult) -> float:
    """Upper end of the PET colour scale: the region's SUVmax (bladder excluded), kept within 5..40."""
    quant = analysis.quantification
    if quant is None or not np.isfinite(quant.suv_max):
        return 10.0
    return float(np.clip(quant.suv_max, 5.0, 40.0))


def hot(t: np.ndarray) -> np.ndarray:
    """The 'hot' colour map (black, red, yellow, white) for t in [0, 1]."""
    t = np.clip(t, 0.0, 1.0)
    return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1)


def fuse(ct: np.ndarray, suv: np.ndarray, suv_max: float) -> np.ndarray:
    """CT in a soft-tissue grey window with PET in hot colours blended over it; uint8 RGB."""
    level, width = CT_WINDOW
    grey = np.clip((np.nan_to_num(ct, nan=-1024.0) - (level - width / 2)) / width, 0.0, 1.0)
    t = np.nan_to_num(suv, nan=0.0) / suv_max
    alpha = (0.8 * np.clip(t / 0.3, 0.0, 1.0))[..., None]
    rgb = grey[..., None] * (1 - alpha) + hot(t) * alpha
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def _contour(mask: np.ndarray) -> np.ndarray:
    """Pixels on the border of a mask, two pixels thick so it survives viewer down-scaling."""
    inner = ndimage.binary_erosion(mask, iterations=2)
    return mask & ~inner


def render_view(analysis: AnalysisResult, plane: Plane, size_px: int) -> tuple[Image.Image, dict[str, tuple]]:
    """One fused view with the cube outline and the attention contour; returns overlay boxes in view pixels."""
    assert analysis.images is not None
    images = analysis.images
    low, high = display_bounds(analysis)
    focus, _ = focus_point(analysis)
    grid = plane_grid(plane, low, high, focus, size_px)
    ct = sample(images.ct_crop, grid)
    suv = sample(images.pet_suv_crop, grid)
    rgb = fuse(ct, suv, suv_display_max(analysis))
    overlays: dict[str, tuple] = {}
    if images.attention is not None:
        attention = sample(images.attention, grid)
        peak = float(np.nanmax(images.attention.array)) if images.attention.array.size else 0.0
        if peak > 0:
            mask = np.nan_to_num(attention, nan=0.0) >= ATTENTION_LEVEL * peak
            edge = _contour(mask)
            if edge.any():
                rgb[edge] = ATTENTION_COLOUR
                rows, cols = np.nonzero(edge)
                overlays["attention"] = (int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max()))
    outlines = _focus_outlines(analysis, grid)
    for number, edge in outlines.items():
        rgb[edge] = FOCUS_COLOUR
    image = Image.fromarray(rgb, "RGB")
    label_font = font(max(14, size_px // 30), bold=True)
    for number, edge in outlines.items():
        rows, cols = np.nonzero(edge)
        x0, y0, x1, y1 = int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())
        overlays[f"focus-{number}"] = (x0, y0, x1, y1)
        ImageDraw.Draw(image).text((min(x1 + 3, size_px - 1), max(y0 - 3, 0)), str(number), font=label_font,
                                   fill=FOCUS_COLOUR, anchor="lb", stroke_width=2, stroke_fill=(0, 0, 0))
    box = _box_bounds(analysis)
    if box is not None:
        _, _, fixed = _AXES[plane]
        if box[0][fixed] <= focus[fixed] <= box[1][fixed]:
            corners = [grid.to_pixel(box[0]), grid.to_pixel(box[1])]
            x0, x1 = sorted(c[0] for c in corners)
            y0, y1 = sorted(c[1] for c in corners)
            x0, y0 = max(0, round(x0)), max(0, round(y0))
            x1, y1 = min(size_px - 1, round(x1)), min(size_px - 1, round(y1))
            ImageDraw.Draw(image).rectangle((x0, y0, x1, y1), outline=BOX_COLOUR, width=2)
            overlays["box"] = (x0, y0, x1, y1)
    _edge_labels(image, plane)
    return image, overlays


def _focus_outlines(analysis: AnalysisResult, grid: PlaneGrid) -> dict[int, np.ndarray]:
    """Each focus's isocontour where this view's plane cuts it, as border pixels, by focus number."""
    findings, images = analysis.findings, analysis.images
    if findings is None or images is None:
        return {}
    outlines: dict[int, np.ndarray] = {}
    for focus in findings.foci:
        if focus.mask is None or not np.any(focus.mask):
            continue
        mask = Volume(np.asarray(focus.mask, dtype=np.float32), images.pet_suv_crop.affine_lps)
        inside = np.nan_to_num(sample(mask, grid, order=0), nan=0.0) > 0.5
        edge = _contour(inside)
        if edge.any():
            outlines[focus.number] = edge
    return outlines


def _edge_labels(image: Image.Image, plane: Plane) -> None:
    draw = ImageDraw.Draw(image)
    f = font(max(14, image.width // 22), bold=True)
    left, right, top, bottom = _EDGE_LABELS[plane]
    w, h = image.size
    for text, anchor, xy in ((left, "lm", (6, h // 2)), (right, "rm", (w - 6, h // 2)),
                             (top, "mt", (w // 2, 6)), (bottom, "mb", (w // 2, h - 6))):
        draw.text(xy, text, font=f, fill=TEXT_COLOUR, anchor=anchor, stroke_width=2, stroke_fill=(0, 0, 0))


def _finding_words(analysis: AnalysisResult) -> str:
    if not analysis.classifier_run or analysis.finding is Finding.UNDETERMINED:
        return "UNDETERMINED"
    return "PRESENT" if analysis.finding is Finding.PRESENT else "ABSENT"


def _clinical(label: str, value: float | bool | None, source: str, detail: str, unit: str = "") -> str:
    if isinstance(value, bool):
        shown = "yes" if value else "no"
    elif value is None:
        shown = "unknown"
    else:
        shown = f"{value:g}{unit}"
    where = f"{source}: {detail}" if detail else source
    return f"{label} {shown} ({where})"


_PATH = re.compile(r"(?<![\w.])(?:~|\.{1,2})?/[^\s,;:()]+")
_COMMAND = re.compile(r"`[^`]*`")


def for_radiologists(text: str) -> str:
    """A message without server paths or commands: those are for the admin (`doctor`, log, dashboard)."""
    text = _COMMAND.sub("", _PATH.sub("…", text))
    return re.sub(r"\s+([,;:.])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()


def ai_headline(analysis: AnalysisResult) -> str:
    """The classifier's answer and probability against its threshold, or why it did not run."""
    if analysis.classifier_run and analysis.probability is not None:
        digits = 3 if abs(analysis.probability - analysis.threshold) < 0.01 else 2
        return (f"AI classifier: local recurrence {_finding_words(analysis)}, probability "
                f"{analysis.probability:.{digits}f} (threshold {analysis.threshold:.{digits}f})")
    return f"AI classifier not run ({NOT_INSTALLED}): local recurrence {_finding_words(analysis)}"


def envelope_line(analysis: AnalysisResult) -> str:
    """Why the inputs lie outside the conditions the model was validated for; empty when inside."""
    if not analysis.envelope_violations:
        return ""
    return ("Outside the conditions the model was validated for: "
            + "; ".join(for_radiologists(v) for v in analysis.envelope_violations))


def category_summary(findings: Findings) -> str:
    """The rule-based category in one line, labelled so it cannot be read as the classifier's answer."""
    label = "Rule-based PROMISE V2 suggestion, independent of the AI classifier"
    if findings.local_category is None:
        return f"{label}: miT not suggested: prostatectomy status unknown"
    local = [f for f in findings.foci if f.feeds_local_category]
    count = f"{len(local)} focus" if len(local) == 1 else f"{len(local)} foci"
    where = {"miTr": f"{count} in the prostate-bed region after prostatectomy",
             "miT2u": f"{count} in the prostate", "miT2m": f"{count} in the prostate"}.get(
                 findings.local_category, "no focus in the prostate / prostate bed")
    extension = "; extension not assessed" if findings.local_category.startswith("miT2") else ""
    return f"{label}: {findings.local_category} ({where}{extension})"


def reference_summary(organ: ReferenceOrgan) -> str:
    """A reference region's SUVmean with its VOI size (and per side), or why it is missing."""
    if organ.suv_mean is None:
        return f"{organ.name}: not assessable ({organ.note or 'no region'})"
    sides = ", ".join(f"{p.name.split()[0]} {p.suv_mean:.1f}" for p in organ.parts if p.suv_mean is not None)
    volume = f"VOI {organ.volume_ml:g} ml" if organ.volume_ml is not None else ""
    details = "; ".join(part for part in (volume, sides) if part)
    return f"{organ.name}: SUVbw mean {organ.suv_mean:.2f}" + (f" ({details})" if details else "")


def focus_headline(focus: Focus) -> str:
    """One focus in a line: where, SUVbw max, miPSMA with its references, the rule-based category."""
    score = focus.mipsma_evidence or (
        "miPSMA not assessable" if focus.mipsma is None else f"miPSMA {focus.mipsma}")
    return (f"Focus {focus.number}, {focus.where}: SUVbw max {focus.suv_max:.1f}, {score}; "
            f"{focus.category_hint or focus.call}")


def _volume(value: float) -> str:
    return f"{value:.2f}" if value < 1 else f"{value:.1f}"


def focus_details(focus: Focus) -> str:
    """The focus's other measures, each with its definition, for the smaller block."""
    peak = (f"SUVbw peak {focus.suv_peak:.1f} ({focus.suv_peak_ml:.2f} ml sphere)"
            if focus.suv_peak is not None and focus.suv_peak_ml is not None
            else "SUVbw peak none (" + for_radiologists(focus.suv_peak_note.removeprefix("none: ")) + ")")
    adaptive = focus.contour_rule.startswith("adaptive")
    label = "adaptive isocontour" if adaptive else focus.contour_rule.replace(" of SUVbw max", " isocontour")
    level = f", level {focus.contour_suv:.1f}" if focus.contour_suv is not None else ""
    why = f" ({focus.contour_rule})" if adaptive else ""
    bladder = {"separate": "", "adjacent": "; adjacent to the bladder", "touching": "; touching the bladder"}[
        focus.bladder_relation]
    return (f"Focus {focus.number}: {peak}; Volume ({label}) {_volume(focus.volume_ml)} ml, SUVbw mean "
            f"{focus.suv_mean:.1f}{level}{why}{bladder}")


PanelStyle = Literal["headline", "warning", "focus", "body", "small"]
STYLE_SCALE: dict[str, float] = {"headline": 1.3, "warning": 1.15, "focus": 1.15, "body": 1.0, "small": 0.8}
"""Text size per line style, relative to the panel's body size (the small block stays >= MIN_BODY_PX)."""
WARNING_COLOUR = (255, 200, 0)


def _bold(style: str) -> bool:
    """The lead lines are bold; the rule-based suggestion and the smaller block are not."""
    return style not in ("small", "body")


def lead_lines(analysis: AnalysisResult) -> list[tuple[str, PanelStyle]]:
    """What a reader needs first, in large text: the AI result, a warning when outside the validated
    conditions, one line per focus, then the rule-based suggestion set apart from the AI result."""
    lines: list[tuple[str, PanelStyle]] = [(ai_headline(analysis), "headline")]
    envelope = envelope_line(analysis)
    if envelope:
        lines.append((f"Warning: {envelope}", "warning"))
    findings = analysis.findings
    if findings is None:
        return lines
    if not findings.foci:
        lines.append((findings.no_focus_statement, "focus"))
    for focus in findings.foci[:MAX_FOCI_LISTED]:
        lines.append((focus_headline(focus), "focus"))
    if len(findings.foci) > MAX_FOCI_LISTED:
        lines.append((f"… and {len(findings.foci) - MAX_FOCI_LISTED} more foci (all listed in the SR and SEG)",
                      "body"))
    lines.append((category_summary(findings), "body"))
    return lines


def findings_details(findings: Findings) -> list[tuple[str, PanelStyle]]:
    """Definitions and provenance of the findings, for the smaller block."""
    lines: list[tuple[str, PanelStyle]] = [(focus_details(f), "small") for f in findings.foci[:MAX_FOCI_LISTED]]
    if findings.spill_note:
        lines.append((findings.spill_note, "small"))
    if findings.foci:
        measured = [reference_summary(r) for r in findings.references if r.suv_mean is not None]
        if measured:
            lines.append((for_radiologists("miPSMA references: " + "; ".join(measured)), "small"))
        if not findings.mipsma_assessable:
            lines.append((for_radiologists(findings.mipsma_note or "miPSMA not assessable"), "small"))
    lines.append((f"Foci: SUVbw max ≥ {findings.min_suv:g} and ≥ {findings.min_contrast:g} × local background "
                  f"in the {findings.region_description}; SUVbw peak = highest mean of a 1 cm³ sphere centred in "
                  "the focus (voxel centres inside, excluded voxels left out)", "small"))
    return lines


def panel_lines(analysis: AnalysisResult, facts: PanelFacts) -> list[tuple[str, PanelStyle]]:
    """The text panel as (text, style) lines: the lead lines, then the smaller block of definitions and
    provenance (model, clinical values, region, time, colours, warnings, published performance)."""
    lines = lead_lines(analysis)
    if analysis.findings is not None:
        lines.extend(findings_details(analysis.findings))
    weights = (analysis.weights_sha256 or "")[:12]
    model = f"Model {analysis.model_id}" if analysis.model_id else "No classification model"
    model += f" (weights sha256 {weights}…)" if weights else ""
    lines.append((f"{model}, Korb et al. Cancers 2025; psma-node {analysis.software_version}", "small"))
    lines.append((_clinical("PSA", analysis.psa.value, analysis.psa.source, analysis.psa.detail, " ng/ml")
                  + "; " + _clinical("prostatectomy", analysis.prostatectomy.value, analysis.prostatectomy.source,
                                     analysis.prostatectomy.detail), "small"))
    loc = analysis.localisation
    lines.append((f"Region: 200 mm cube centred on {loc.organ} ({loc.method}, confidence {loc.confidence:.2f})",
                  "small"))
    quant = analysis.quantification
    if quant is not None and analysis.findings is None:
        lines.append((f"SUVbw max {quant.suv_max:.1f}, SUVbw mean {quant.suv_mean:.1f}, focal volume "
                      f"{quant.focal_volume_ml:.1f} ml, bladder excluded", "small"))
    when = facts.analysed_at.strftime("%Y-%m-%d %H:%M UTC") if facts.analysed_at else "unknown"
    total = analysis.timings.get("total") or (sum(analysis.timings.values()) if analysis.timings else None)
    took = f" in {total:.1f} s" if total is not None else ""
    study_date = facts.study_date
    if len(study_date) == 8 and study_date.isdigit():
        study_date = f"{study_date[:4]}-{study_date[4:6]}-{study_date[6:]}"
    lines.append((f"Accession {facts.accession_number or '-'}, study date {study_date or '-'}; "
                  f"analysed {when}{took}", "small"))
    outlines = "; green = focus outline (number)" if analysis.findings is not None and analysis.findings.foci else ""
    has_attention = analysis.images is not None and analysis.images.attention is not None
    attention = "; cyan = model attention" if has_attention else ""
    lines.append((f"Colours: PET SUVbw 0–{suv_display_max(analysis):.0f} hot over CT W400/L40"
                  f"{attention}; yellow = analysed cube{outlines}", "small"))
    for warning in analysis.warnings:
        if analysis.classifier_note and warning == analysis.classifier_note:
            continue  # said above in the radiologist's words; the admin's version is in the log
        lines.append((f"Warning: {for_radiologists(warning)}", "small"))
    published = analysis.published_performance
    lines.append((f"Published performance (Korb et al., Cancers 2025): {published}" if published
                  else PUBLISHED_PERFORMANCE, "small"))
    return lines


MIN_BODY_PX = 13
SMALL_MIN_PX = 14
"""The smaller block never goes below this (the text-size test of the SC checks every line)."""


def _small(body_px: int) -> int:
    return max(int(body_px * STYLE_SCALE["small"]), SMALL_MIN_PX)


def _layout(analysis: AnalysisResult, facts: PanelFacts, width: int, body_px: int,
            small_px: int | None = None) -> tuple[list, int]:
    """Wrapped (text, size, style) pieces and the height they need at these sizes."""
    pieces: list[tuple[str, int, str]] = []  # (text, size, a PanelStyle or "gap")
    height = 0
    previous: PanelStyle | None = None
    small = small_px if small_px is not None else _small(body_px)
    for text, style in panel_lines(analysis, facts):
        size = small if style == "small" else int(body_px * STYLE_SCALE[style])
        if previous is not None and previous != "small" and style == "small":
            height += body_px // 2  # a gap sets the smaller block apart
            pieces.append(("", body_px // 2, "gap"))
        for piece in _wrap(text, font(size, bold=_bold(style)), width):
            pieces.append((piece, size, style))
            height += int(size * 1.35)
        previous = style
    return pieces, height


def panel_height(analysis: AnalysisResult, facts: PanelFacts, width: int, body_px: int) -> int:
    """Height a panel of this width needs to show every line at `body_px` (the layout `_draw_panel` uses)."""
    margin = max(8, body_px)
    _, needed = _layout(analysis, facts, width - 2 * margin, body_px)
    return int(int(body_px * 1.35) * 1.8) + body_px + needed


def _draw_panel(canvas: Image.Image, area: tuple[int, int, int, int], analysis: AnalysisResult,
                facts: PanelFacts, body_px: int, lines_out: list[TextLine]) -> None:
    """Banner plus wrapped text inside `area`, shrinking the text until every line fits (none is dropped):
    the smaller block first (down to SMALL_MIN_PX), the lead lines only after it."""
    draw = ImageDraw.Draw(canvas)
    x0, y0, x1, y1 = area
    draw.rectangle(area, fill=PANEL_BACKGROUND)
    margin = max(8, body_px)
    width = x1 - x0 - 2 * margin
    banner_px = int(body_px * 1.35)
    while banner_px > MIN_BODY_PX and font(banner_px, bold=True).getlength(BANNER) > width:
        banner_px -= 1
    banner_font = font(banner_px, bold=True)
    banner_h = int(banner_px * 1.8)
    draw.rectangle((x0, y0, x1, y0 + banner_h), fill=BANNER_BACKGROUND)
    bx, by = (x0 + x1) // 2, y0 + banner_h // 2
    draw.text((bx, by), BANNER, font=banner_font, fill=TEXT_COLOUR, anchor="mm")
    bbox = draw.textbbox((bx, by), BANNER, font=banner_font, anchor="mm")
    box = cast("tuple[int, int, int, int]", tuple(int(v) for v in bbox))
    lines_out.append(TextLine(BANNER, box, banner_px, TEXT_COLOUR, BANNER_BACKGROUND))
    top = y0 + banner_h + body_px // 2
    size, small = body_px, _small(body_px)
    pieces, needed = _layout(analysis, facts, width, size, small)
    while needed > y1 - top and size > MIN_BODY_PX:
        if small > SMALL_MIN_PX:
            small -= 1
        else:
            size -= 1
        pieces, needed = _layout(analysis, facts, width, size, min(small, _small(size)))
    y = top
    for piece, px, style in pieces:
        if style == "gap":
            y += px
            continue
        f = font(px, bold=_bold(style))
        colour = WARNING_COLOUR if style == "warning" else TEXT_COLOUR
        draw.text((x0 + margin, y), piece, font=f, fill=colour)
        bbox = draw.textbbox((x0 + margin, y), piece, font=f)
        box = cast("tuple[int, int, int, int]", tuple(int(v) for v in bbox))
        lines_out.append(TextLine(piece, box, px, colour, PANEL_BACKGROUND))
        y += int(px * 1.35)


def _wrap(text: str, f: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap measured with the real font."""
    words = text.split()
    pieces: list[str] = []
    current = ""
    for word in words:
        trial = f"{current} {word}".strip()
        if current and f.getlength(trial) > width:
            pieces.append(current)
            current = word
        else:
            current = trial
    if current:
        pieces.append(current)
    return pieces or [textwrap.shorten(text, 10)]


def _colour_bar(canvas: Image.Image, area: tuple[int, int, int, int], suv_max: float, body_px: int) -> None:
    x0, y0, x1, y1 = area
    draw = ImageDraw.Draw(canvas)
    bar = (hot(np.linspace(0, 1, x1 - x0))[None, :, :] * 255).astype(np.uint8).repeat(y1 - y0, axis=0)
    canvas.paste(Image.fromarray(bar, "RGB"), (x0, y0))
    f = font(body_px)
    draw.text((x0 - 8, (y0 + y1) // 2), "SUVbw 0", font=f, fill=TEXT_COLOUR, anchor="rm")
    draw.text((x1 + 8, (y0 + y1) // 2), f"{suv_max:.0f}", font=f, fill=TEXT_COLOUR, anchor="lm")


def safe_area(width: int, height: int) -> tuple[int, int, int, int]:
    """The part of a picture of this size where burned-in content may go (x0, y0, x1, y1, exclusive ends)."""
    x, y = math.ceil(SAFE_SIDES * width), math.ceil(SAFE_TOP_BOTTOM * height)
    return x, y, width - x, height - y


def _framed(rendered: Rendered) -> Rendered:
    """The picture inside black margins wide enough that everything drawn lies in `safe_area`."""
    w, h = rendered.image.size
    mx = math.ceil(w * SAFE_SIDES / (1 - 2 * SAFE_SIDES)) + 1
    my = math.ceil(h * SAFE_TOP_BOTTOM / (1 - 2 * SAFE_TOP_BOTTOM)) + 1
    canvas = Image.new("RGB", (w + 2 * mx, h + 2 * my), BACKGROUND)
    canvas.paste(rendered.image, (mx, my))

    def moved(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        return box[0] + mx, box[1] + my, box[2] + mx, box[3] + my

    return Rendered(
        image=canvas,
        views={key: moved(box) for key, box in rendered.views.items()},
        overlays={key: moved(box) for key, box in rendered.overlays.items()},
        lines=[TextLine(line.text, moved(line.box), line.font_px, line.colour, line.background)
               for line in rendered.lines],
        description=rendered.description,
        lead=rendered.lead,
    )


def render_summary(analysis: AnalysisResult, facts: PanelFacts, view_px: int = 400) -> Rendered:
    """Axial, coronal and sagittal fused views side by side, a colour bar, and the text panel below."""
    body_px = max(16, view_px // 20)
    gap = 8
    width = 3 * view_px + 4 * gap
    header = body_px * 2
    bar_h = body_px * 2
    # Room for every line at full size (many foci add lines), within limits; beyond them the text shrinks.
    panel_h = min(max(body_px * 19, panel_height(analysis, facts, width, body_px)), body_px * 32)
    height = header + view_px + bar_h + gap + panel_h
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    rendered = Rendered(image=canvas)
    title_font = font(body_px, bold=True)
    if analysis.images is not None:
        _, how = focus_point(analysis)
        for n, plane in enumerate(PLANES):
            x = gap + n * (view_px + gap)
            view, overlays = render_view(analysis, plane, view_px)
            canvas.paste(view, (x, header))
            rendered.views[plane] = (x, header, x + view_px - 1, header + view_px - 1)
            for key, (a, b, c, d) in overlays.items():
                rendered.overlays[f"{plane}:{key}"] = (x + a, header + b, x + c, header + d)
            label = f"{plane.capitalize()} ({how})"
            draw.text((x + 4, header // 2), label, font=title_font, fill=TEXT_COLOUR, anchor="lm")
            bbox = draw.textbbox((x + 4, header // 2), label, font=title_font, anchor="lm")
            box = cast("tuple[int, int, int, int]", tuple(int(v) for v in bbox))
            rendered.lines.append(TextLine(label, box, body_px, TEXT_COLOUR, BACKGROUND))
        bar_w = view_px
        bx0 = (width - bar_w) // 2
        _colour_bar(canvas, (bx0, header + view_px + bar_h // 4, bx0 + bar_w, header + view_px + 3 * bar_h // 4),
                    suv_display_max(analysis), body_px)
    else:
        message = "Images of the analysed region are not available for this result."
        draw.text((width // 2, header + view_px // 2), message, font=font(body_px), fill=TEXT_COLOUR, anchor="mm")
    panel = (0, header + view_px + bar_h + gap, width - 1, height - 1)
    _draw_panel(canvas, panel, analysis, facts, body_px, rendered.lines)
    rendered.description = "AI summary: fused PET/CT views and result"
    rendered.lead = " | ".join(text for text, _ in lead_lines(analysis))
    return _framed(rendered)


def render_plane(analysis: AnalysisResult, facts: PanelFacts, plane: Plane, view_px: int = 640) -> Rendered:
    """One large fused view with a compact text panel beside it."""
    assert analysis.images is not None
    body_px = max(16, view_px // 34)
    panel_w = view_px
    width = view_px + panel_w
    height = min(max(view_px, panel_height(analysis, facts, panel_w, body_px)), view_px * 3 // 2)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    view, overlays = render_view(analysis, plane, view_px)
    canvas.paste(view, (0, 0))
    rendered = Rendered(image=canvas, views={plane: (0, 0, view_px - 1, view_px - 1)})
    rendered.overlays = {f"{plane}:{key}": value for key, value in overlays.items()}
    _draw_panel(canvas, (view_px, 0, width - 1, height - 1), analysis, facts, body_px, rendered.lines)
    _, how = focus_point(analysis)
    rendered.description = f"AI {plane} fused PET/CT ({how})"
    rendered.lead = " | ".join(text for text, _ in lead_lines(analysis))
    return _framed(rendered)


def render_all(analysis: AnalysisResult, facts: PanelFacts) -> list[Rendered]:
    """The SC series' pictures: the summary first, then one large view per plane when images exist."""
    pictures = [render_summary(analysis, facts)]
    if analysis.images is not None:
        pictures.extend(render_plane(analysis, facts, plane) for plane in PLANES)
    return pictures
