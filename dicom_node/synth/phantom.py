"""A PSMA PET/CT patient described in continuous millimetres (DICOM LPS), rasterised to any axial grid.

Every organ is a solid whose axial cross-section is an ellipse (an ellipsoid, or an elliptic tube between
two points), drawn in painter's order into a per-slice tissue label map. CT and PET sample the same solids,
so both modalities agree wherever a test looks. Coordinates: x towards patient left, y towards posterior,
z towards head; the prostate sits near z = 0 with seed-dependent jitter.

Uptake of the PROMISE V2 reference organs (blood pool, spleen, liver, parotid glands) follows published
[18F]PSMA-1007 values (docs/synthetic-studies.md gives the sources and what each range means). Extra
prostate / prostate-bed foci and a near-bladder focus are drawn from their own random stream, foci at named
sites (pubic bone, rectal wall, seminal vesicle) from another, so a seed without them gives exactly the
study it always gave. `organs` also holds ground truth a segmenter would give without being drawn: the
vertebrae T5-T10 along the spine, which delimit the descending thoracic aorta used as blood pool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

BLOOD_POOL_SUV = (1.5, 2.5)
"""[18F]PSMA-1007 aortic blood pool SUVmean range drawn (see docs/synthetic-studies.md)."""
SPLEEN_SUV = (8.4, 14.2)
LIVER_SUV = (9.6, 14.0)
PAROTID_SUV = (15.2, 22.0)
NEAR_BLADDER_GAP_MM = 8.0
"""Gap between a near-bladder focus's surface and the bladder wall (by default)."""
SITE_FOCI = ("pubic_bone", "rectal_wall", "seminal_vesicle")
"""Named sites a focus can be placed at (`Variations.site_foci`)."""
PUBIC_SHIFT_MM = (0.0, 28.0, -14.0)
"""With a pubic-bone focus the symphysis lies this much closer to the prostate (posterior, caudal), as in a
small pelvis, so the focus falls inside the analysed 40 mm sphere."""
SPINE_LEVELS_MM: dict[str, tuple[float, float]] = {
    "vertebrae_T10": (399.0, 426.0), "vertebrae_T9": (426.0, 453.0), "vertebrae_T8": (453.0, 480.0),
    "vertebrae_T7": (480.0, 507.0), "vertebrae_T6": (507.0, 534.0), "vertebrae_T5": (534.0, 561.0),
}
"""Height ranges (z before the patient's placement offset) of the thoracic vertebrae the blood pool needs."""


@dataclass(frozen=True)
class Variations:
    """What a study varies beyond its seed; the defaults give the study the seed always gave."""

    extra_foci: int = 0
    near_bladder_focus: bool = False
    near_bladder_gap_mm: float = NEAR_BLADDER_GAP_MM
    site_foci: tuple[str, ...] = ()
    bladder_suv: float | None = None
    """Bladder (urine) SUV instead of the drawn one, e.g. a hot bladder next to a focus."""
    spleen_suv: float | None = None
    """Spleen SUV instead of the drawn one, e.g. above the parotid glands (an implausible order)."""


@dataclass(frozen=True)
class Tissue:
    name: str
    hu: float
    suv: float


@dataclass(frozen=True)
class Solid:
    """An ellipsoid (`end` None) or an elliptic tube from `center` to `end`, in-plane radii `radii[:2]`."""

    tissue: int
    center: tuple[float, float, float]
    radii: tuple[float, float, float]
    angle: float = 0.0
    end: tuple[float, float, float] | None = None

    def z_range(self) -> tuple[float, float]:
        if self.end is None:
            return self.center[2] - self.radii[2], self.center[2] + self.radii[2]
        return min(self.center[2], self.end[2]), max(self.center[2], self.end[2])

    def section(self, z: float) -> tuple[float, float, float, float] | None:
        """(cx, cy, a, b) of the cross-section at height z, or None when the plane misses the solid."""
        low, high = self.z_range()
        if z < low or z > high:
            return None
        if self.end is None:
            scale = math.sqrt(max(0.0, 1.0 - ((z - self.center[2]) / self.radii[2]) ** 2))
            if scale <= 0.0:
                return None
            return self.center[0], self.center[1], self.radii[0] * scale, self.radii[1] * scale
        dz = self.end[2] - self.center[2]
        t = 0.0 if dz == 0 else (z - self.center[2]) / dz
        cx = self.center[0] + t * (self.end[0] - self.center[0])
        cy = self.center[1] + t * (self.end[1] - self.center[1])
        return cx, cy, self.radii[0], self.radii[1]


@dataclass(frozen=True)
class Lesion:
    """A focal PSMA-avid sphere; `target_suv_max` is the SUVmax aimed at after the scanner's blur."""

    kind: str
    center: tuple[float, float, float]
    radius: float
    target_suv_max: float


@dataclass
class Phantom:
    tissues: list[Tissue]
    solids: list[Solid]
    lesions: list[Lesion]
    prostate_center: tuple[float, float, float] | None
    prostate_bed_center: tuple[float, float, float] | None
    bladder_center: tuple[float, float, float]
    notes: dict[str, float] = field(default_factory=dict)
    organs: dict[str, list[Solid]] = field(default_factory=dict)
    """Solids of the organs a segmenter would delineate, by TotalSegmentator name (ground truth for masks)."""

    def organ_suv(self, name: str) -> float:
        """SUV of the tissue the named organ is made of."""
        return self.tissues[self.organs[name][0].tissue].suv

    @property
    def hu_table(self) -> np.ndarray:
        return np.array([t.hu for t in self.tissues], dtype=np.float32)

    @property
    def suv_table(self) -> np.ndarray:
        return np.array([t.suv for t in self.tissues], dtype=np.float32)

    def labels(self, z: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Tissue labels of the axial plane at height z on the grid (rows = ys, columns = xs)."""
        out = np.zeros((ys.size, xs.size), dtype=np.uint8)
        x_step = float(xs[1] - xs[0]) if xs.size > 1 else 1.0
        y_step = float(ys[1] - ys[0]) if ys.size > 1 else 1.0
        for solid in self.solids:
            section = solid.section(z)
            if section is None:
                continue
            cx, cy, a, b = section
            reach = max(a, b)
            c0 = max(0, int(math.floor((cx - reach - xs[0]) / x_step)))
            c1 = min(xs.size, int(math.ceil((cx + reach - xs[0]) / x_step)) + 1)
            r0 = max(0, int(math.floor((cy - reach - ys[0]) / y_step)))
            r1 = min(ys.size, int(math.ceil((cy + reach - ys[0]) / y_step)) + 1)
            if c0 >= c1 or r0 >= r1:
                continue
            dx = (xs[c0:c1] - cx)[None, :]
            dy = (ys[r0:r1] - cy)[:, None]
            if solid.angle:
                cos, sin = math.cos(solid.angle), math.sin(solid.angle)
                u = (dx * cos + dy * sin) / a
                v = (dy * cos - dx * sin) / b
            else:
                u, v = dx / a, dy / b
            inside = u * u + v * v <= 1.0
            out[r0:r1, c0:c1][inside] = solid.tissue
        return out


class _Builder:
    def __init__(self) -> None:
        self.tissues: list[Tissue] = [Tissue("air", -1000.0, 0.0)]
        self.solids: list[Solid] = []
        self._index: dict[str, int] = {"air": 0}

    def tissue(self, name: str, hu: float, suv: float) -> None:
        self._index[name] = len(self.tissues)
        self.tissues.append(Tissue(name, hu, suv))

    def tissue_index(self, name: str) -> int:
        return self._index[name]

    def ellipsoid(self, tissue: str, center: tuple[float, float, float],
                  radii: tuple[float, float, float], angle: float = 0.0) -> Solid:
        self.solids.append(Solid(self._index[tissue], center, radii, angle))
        return self.solids[-1]

    def tube(self, tissue: str, start: tuple[float, float, float], end: tuple[float, float, float],
             radii: tuple[float, float]) -> Solid:
        self.solids.append(Solid(self._index[tissue], start, (radii[0], radii[1], 0.0), 0.0, end))
        return self.solids[-1]

    def bone(self, center: tuple[float, float, float], radii: tuple[float, float, float],
             angle: float = 0.0, cortex_mm: float = 4.0) -> Solid:
        """Cortical shell with marrow inside; the shell (the whole bone) is returned."""
        outer = self.ellipsoid("cortical_bone", center, radii, angle)
        inner = tuple(max(r - cortex_mm, r * 0.4) for r in radii)
        self.ellipsoid("marrow", center, inner, angle)  # type: ignore[arg-type]
        return outer

    def long_bone(self, start: tuple[float, float, float], end: tuple[float, float, float],
                  radius: float, cortex_mm: float = 5.0) -> None:
        self.tube("cortical_bone", start, end, (radius, radius))
        self.tube("marrow", start, end, (radius - cortex_mm, radius - cortex_mm))


def build_phantom(rng: np.random.Generator, *, prostatectomy: bool, recurrence: bool,
                  nodal_lesions: int, tracer_family: str, extra: np.random.Generator | None = None,
                  sites: np.random.Generator | None = None, variations: Variations | None = None) -> Phantom:
    """Draw one patient: positions and sizes jitter with the seed, uptake follows the tracer family.

    `extra` (its own stream) draws the reference-organ uptakes not drawn from `rng` before, the extra
    foci and the near-bladder focus; `sites` (another stream) the uptake of foci at named sites.
    """
    psma = tracer_family == "psma"
    extra = extra if extra is not None else np.random.default_rng(0)
    sites = sites if sites is not None else np.random.default_rng(1)
    varied = variations or Variations()
    b = _Builder()
    organs: dict[str, list[Solid]] = {}

    def jit(scale: float) -> float:
        return float(rng.uniform(-scale, scale))

    bladder_suv = float(rng.uniform(2.0, 6.0)) if psma else float(rng.uniform(20.0, 60.0))
    bladder_suv = varied.bladder_suv if varied.bladder_suv is not None else bladder_suv
    prostate_suv = float(rng.uniform(2.0, 3.0)) if psma else 1.6
    b.tissue("fat", -100.0, 0.3)
    b.tissue("muscle", 50.0, 0.5 if psma else 0.7)
    b.tissue("visceral_fat", -90.0, 0.4)
    b.tissue("cortical_bone", 1150.0, 0.6)
    b.tissue("marrow", 280.0, 1.0 if psma else 1.4)
    b.tissue("cartilage", 70.0, 0.5)
    b.tissue("bladder", 8.0, bladder_suv)
    b.tissue("prostate", 40.0, prostate_suv)
    b.tissue("prostate_bed", 25.0, 0.6)
    b.tissue("rectal_wall", 35.0, 1.2)
    b.tissue("rectal_gas", -900.0, 0.0)
    b.tissue("lung", -820.0, 0.2 if psma else 0.5)
    b.tissue("heart", 40.0, 1.5 if psma else 4.0)
    b.tissue("blood", 45.0, float(extra.uniform(*BLOOD_POOL_SUV)) if psma else 1.5)
    b.tissue("liver", 60.0, float(rng.uniform(*LIVER_SUV)) if psma else 2.5)
    spleen_suv = float(extra.uniform(*SPLEEN_SUV)) if psma else 2.0
    b.tissue("spleen", 50.0, varied.spleen_suv if varied.spleen_suv is not None else spleen_suv)
    b.tissue("kidney", 35.0, float(rng.uniform(20.0, 30.0)) if psma else 4.0)
    b.tissue("bowel", 25.0, 3.0 if psma else 2.0)
    b.tissue("brain", 35.0, 0.1 if psma else 9.0)
    salivary_suv = float(rng.uniform(*PAROTID_SUV)) if psma else 2.0
    b.tissue("salivary", 40.0, salivary_suv)
    b.tissue("parotid", 40.0, salivary_suv)
    b.tissue("soft_tissue_nodule", 40.0, 0.6)
    b.tissue("seminal_vesicle", 35.0, 1.0)
    b.tissue("couch", 250.0, 0.0)

    # Patient placement on the table: the whole body moves; organs jitter a little more on top.
    ox, oy, oz = jit(10.0), jit(10.0), jit(10.0)

    def at(x: float, y: float, z: float) -> tuple[float, float, float]:
        return (ox + x, oy + y, oz + z)

    # Scanner couch under the patient: seen by CT, invisible to PET.
    b.tube("couch", (0.0, 133.0, -1200.0), (0.0, 133.0, 1200.0), (210, 6))

    # Body outline (fat) and muscle compartments, head to feet.
    b.tube("fat", at(-95, 0, -1200), at(-95, 0, -60), (85, 90))
    b.tube("fat", at(95, 0, -1200), at(95, 0, -60), (85, 90))
    b.tube("fat", at(0, 0, -80), at(0, 0, 170), (180, 120))
    b.tube("fat", at(0, 0, 170), at(0, 0, 400), (165, 122))
    b.tube("fat", at(0, 0, 400), at(0, 0, 650), (172, 118))
    b.tube("fat", at(0, 10, 650), at(0, 10, 740), (62, 62))
    b.tube("muscle", at(-95, 0, -1200), at(-95, 0, -60), (68, 72))
    b.tube("muscle", at(95, 0, -1200), at(95, 0, -60), (68, 72))
    b.tube("muscle", at(0, 5, -80), at(0, 5, 170), (158, 100))
    b.tube("muscle", at(0, 5, 170), at(0, 5, 400), (145, 104))
    b.tube("muscle", at(0, 5, 400), at(0, 5, 650), (152, 100))
    b.tube("muscle", at(0, 12, 650), at(0, 12, 740), (50, 50))
    b.tube("visceral_fat", at(0, 10, -45), at(0, 10, 170), (88, 70))
    b.tube("visceral_fat", at(0, -5, 170), at(0, -5, 400), (125, 88))

    # Prostate (or its bed), bladder, rectum.
    prostate = at(jit(5), 30 + jit(5), jit(5))
    p_radii = (20.0 * float(rng.uniform(0.85, 1.2)), 15.0 * float(rng.uniform(0.85, 1.2)),
               17.5 * float(rng.uniform(0.85, 1.2)))
    bl_radii = (30.0 * float(rng.uniform(0.85, 1.2)), 25.0 * float(rng.uniform(0.85, 1.2)),
                25.0 * float(rng.uniform(0.85, 1.2)))
    bladder = (prostate[0] + jit(4), prostate[1] - 22 + jit(4), prostate[2] + p_radii[2] + bl_radii[2] - 4)
    rectum_y = prostate[1] + p_radii[1] + 14
    organs["urinary_bladder"] = [b.ellipsoid("bladder", bladder, bl_radii)]
    organs["colon"] = [b.tube("rectal_wall", (prostate[0], rectum_y, prostate[2] - 55),
                              (prostate[0], rectum_y + 8, oz + 90), (17, 15))]
    b.tube("rectal_gas", (prostate[0], rectum_y, prostate[2] - 45), (prostate[0], rectum_y + 8, oz + 80),
           (8, 7))
    side: float
    if prostatectomy:
        b.ellipsoid("prostate_bed", prostate, (p_radii[0] * 0.6, p_radii[1] * 0.6, p_radii[2] * 0.7))
    else:
        organs["prostate"] = [b.ellipsoid("prostate", prostate, p_radii)]
        for side in (-1, 1):
            b.ellipsoid("seminal_vesicle", (prostate[0] + side * 20, prostate[1] + p_radii[1] * 0.7,
                                            prostate[2] + p_radii[2] + 6), (18, 6, 8), angle=side * 0.5)

    # Pelvic bones: symphysis, pubic rami, ischia, acetabula, femora, iliac wings, sacrum.
    pubic = PUBIC_SHIFT_MM if "pubic_bone" in varied.site_foci else (0.0, 0.0, 0.0)
    for side in (-1, 1):
        hip = [b.bone(at(side * 14 + pubic[0], -28 + pubic[1], 12 + pubic[2]), (13, 10, 22)),
               b.bone(at(side * 50, -22, 30), (42, 10, 10), angle=side * -0.35),
               b.bone(at(side * 55, 45, 0), (13, 24, 30))]
        head = at(side * 88, 20, 42)
        hip.append(b.bone((head[0] - side * 6, head[1], head[2] + 6), (32, 32, 32), cortex_mm=6))
        b.ellipsoid("cartilage", head, (26, 26, 26))
        b.bone(head, (24, 24, 24), cortex_mm=3)
        b.long_bone(head, at(side * 118, 25, 20), 15)
        b.bone(at(side * 120, 25, 22), (20, 22, 24))
        b.long_bone(at(side * 118, 25, 22), at(side * 110, 30, -1200), 15)
        # Iliac wing: a thin plate from the sacroiliac joint (posterior-medial) to the anterior spine.
        hip.append(b.bone(at(side * 88, 25, 130), (62, 8, 75), angle=-side * 0.8, cortex_mm=3))
        organs["hip_left" if side > 0 else "hip_right"] = hip
    organs["sacrum"] = [b.bone(at(0, 85, 120), (45, 18, 55))]

    # Abdomen, chest, head: shown when the extent reaches them.
    spine = (at(0, 75, 170), at(0, 70, 760))
    b.long_bone(*spine, 21)
    organs.update(_vertebrae(*spine, tissue=b.tissue_index("cortical_bone")))
    organs["aorta"] = [b.tube("blood", at(15, 45, 150), at(10, 35, 450), (11, 11))]
    for k in range(4):
        b.ellipsoid("bowel", at(jit(60), -30 + jit(20), 190 + 25 * k + jit(8)), (28, 18, 15))
    for side in (-1, 1):
        b.ellipsoid("kidney", at(side * 75 + jit(5), 55 + jit(5), 270 + jit(10)), (30, 26, 55))
    organs["spleen"] = [b.ellipsoid("spleen", at(85 + jit(5), 45 + jit(5), 350 + jit(10)), (40, 35, 55))]
    for side in (-1, 1):
        b.ellipsoid("lung", at(side * 80, 10, 525), (65, 85, 130))
    b.ellipsoid("heart", at(25, -20, 455), (60, 50, 55))
    # Descending thoracic aorta beside the spine, through the mediastinum (drawn over lung and heart). It
    # starts 20 mm above the abdominal part, so studies of up to 600 mm (the default extent) stay unchanged.
    organs["aorta"].append(b.tube("blood", at(10, 36, 470), at(12, 42, 610), (11, 11)))
    organs["liver"] = [b.ellipsoid("liver", at(-75 + jit(5), -5 + jit(5), 330 + jit(10)), (85, 95, 75))]
    b.bone(at(0, 10, 820), (75, 95, 100), cortex_mm=7)
    b.ellipsoid("brain", at(0, 10, 822), (66, 86, 90))
    for side in (-1, 1):
        name = "parotid_gland_left" if side > 0 else "parotid_gland_right"
        organs[name] = [b.ellipsoid("parotid", at(side * 50, 15, 705), (15, 20, 25))]
        b.ellipsoid("salivary", at(side * 35, -30, 665), (12, 12, 12))

    lesions: list[Lesion] = []
    if recurrence:
        radius = float(rng.uniform(5.0, 12.0))
        if prostatectomy:
            center = (prostate[0] + jit(6), prostate[1] + jit(4), prostate[2] + jit(6))
            kind = "prostate_bed"
            b.ellipsoid("soft_tissue_nodule", center, (radius, radius, radius))
        else:
            side = float(rng.choice([-1.0, 1.0]))
            reach = [max(0.0, r - radius) for r in p_radii]
            center = (prostate[0] + side * 0.5 * reach[0], prostate[1] + 0.5 * reach[1],
                      prostate[2] + jit(0.4 * reach[2] + 0.1))
            kind = "prostate"
        lesions.append(Lesion(kind, center, radius, float(rng.uniform(4.0, 30.0))))
    local_lesions = list(lesions)
    for _ in range(varied.extra_foci):
        placed = _extra_focus(extra, prostate, p_radii, local_lesions, prostatectomy)
        if placed is not None:
            if prostatectomy:
                r = placed.radius
                b.ellipsoid("soft_tissue_nodule", placed.center, (r, r, r))
            local_lesions.append(placed)
    if varied.near_bladder_focus:
        placed = _near_bladder_focus(extra, prostate, bladder, bl_radii, local_lesions,
                                     varied.near_bladder_gap_mm)
        b.ellipsoid("soft_tissue_nodule", placed.center, (placed.radius, placed.radius, placed.radius))
        local_lesions.append(placed)
    for site in varied.site_foci:
        local_lesions.append(_site_focus(site, sites, prostate, p_radii, rectum_y, oz, at(*pubic)))
    lesions = local_lesions
    for _ in range(nodal_lesions):
        side = float(rng.choice([-1.0, 1.0]))
        center = at(side * float(rng.uniform(45, 65)), float(rng.uniform(-10, 25)),
                    float(rng.uniform(40, 105)))
        radius = float(rng.uniform(4.0, 8.0))
        b.ellipsoid("soft_tissue_nodule", center, (radius, radius, radius))
        lesions.append(Lesion("nodal", center, radius, float(rng.uniform(5.0, 20.0))))

    return Phantom(
        tissues=b.tissues,
        solids=b.solids,
        lesions=lesions,
        prostate_center=None if prostatectomy else prostate,
        prostate_bed_center=prostate if prostatectomy else None,
        bladder_center=bladder,
        notes={"prostate_radius_lr_mm": p_radii[0], "prostate_radius_ap_mm": p_radii[1],
               "prostate_radius_si_mm": p_radii[2]},
        organs=organs,
    )


def _point(values: np.ndarray) -> tuple[float, float, float]:
    return float(values[0]), float(values[1]), float(values[2])


def _apart(center: np.ndarray, radius: float, others: list[Lesion], margin: float) -> bool:
    return all(np.linalg.norm(center - np.array(o.center)) >= radius + o.radius + margin for o in others)


def _extra_focus(rng: np.random.Generator, prostate: tuple[float, float, float],
                 p_radii: tuple[float, float, float], others: list[Lesion], bed: bool) -> Lesion | None:
    """A focus of random size and intensity inside the prostate (or around the bed), clear of the others."""
    for attempt in range(300):
        radius = float(rng.uniform(4.0, 8.0))
        # within the gland (or bed) first; a small gland leaves room only at its edge, so the reach grows
        reach = (np.array([22.0, 14.0, 18.0]) if bed else np.array(p_radii)) * (1.0 + attempt / 600.0)
        offset = rng.uniform(-1.0, 1.0, 3) * reach
        if float(np.sum((offset / reach) ** 2)) > 1.0:
            continue
        center = np.array(prostate) + offset
        if _apart(center, radius, others, 10.0):
            kind = "prostate_bed" if bed else "prostate"
            return Lesion(kind, _point(center), radius, float(rng.uniform(6.0, 25.0)))
    return None


def _near_bladder_focus(rng: np.random.Generator, prostate: tuple[float, float, float],
                        bladder: tuple[float, float, float], bl_radii: tuple[float, float, float],
                        others: list[Lesion], gap_mm: float = NEAR_BLADDER_GAP_MM) -> Lesion:
    """A focus just outside the lower bladder wall (`gap_mm` from it; 0 touches it), in the analysed region."""
    radius = float(rng.uniform(5.0, 7.0))
    best: tuple[float, np.ndarray] | None = None
    for _ in range(200):
        direction = np.array([rng.uniform(-1, 1), rng.uniform(-0.3, 1.0), rng.uniform(-1.0, -0.2)])
        direction /= np.linalg.norm(direction)
        scale = 1.0 / math.sqrt(float(np.sum((direction / np.array(bl_radii)) ** 2)))
        surface = np.array(bladder) + direction * scale
        normal = (surface - np.array(bladder)) / np.array(bl_radii) ** 2
        normal /= np.linalg.norm(normal)
        center = surface + normal * (radius + gap_mm)
        reach = float(np.linalg.norm(center - np.array(prostate)))
        if reach <= 32.0 and _apart(center, radius, others, 10.0):
            return Lesion("near_bladder", _point(center), radius, float(rng.uniform(8.0, 15.0)))
        if best is None or reach < best[0]:
            best = (reach, center)
    assert best is not None
    return Lesion("near_bladder", _point(best[1]), radius, float(rng.uniform(8.0, 15.0)))


def _vertebrae(start: tuple[float, float, float], end: tuple[float, float, float],
               tissue: int) -> dict[str, list[Solid]]:
    """Ground-truth masks of T5-T10: slabs of the spine between their heights (not drawn again)."""
    offset = start[2] - 170.0  # the patient's placement, as the spine starts 170 mm above the origin
    levels: dict[str, list[Solid]] = {}
    for name, (low, high) in SPINE_LEVELS_MM.items():
        points = []
        for z in (low + offset, high + offset):
            t = (z - start[2]) / (end[2] - start[2])
            points.append((start[0] + t * (end[0] - start[0]), start[1] + t * (end[1] - start[1]), z))
        levels[name] = [Solid(tissue, points[0], (21.0, 21.0, 0.0), 0.0, points[1])]
    return levels


def _site_focus(site: str, rng: np.random.Generator, prostate: tuple[float, float, float],
                p_radii: tuple[float, float, float], rectum_y: float, oz: float,
                pubic_origin: tuple[float, float, float]) -> Lesion:
    """A focus at a named site near the prostate, inside the analysed region (PET uptake only; the CT shows
    the site's own tissue, as with a small lesion)."""
    px, py, pz = prostate
    if site == "pubic_bone":
        # In the marrow of the left half of the (shifted) symphysis, whose centre is 14 mm left, 28 mm
        # anterior and 12 mm above `pubic_origin`: 5 mm medial, 3 mm posterior, 6 mm cranial of it.
        centre = (pubic_origin[0] + 9.0, pubic_origin[1] - 25.0, pubic_origin[2] + 18.0)
        return Lesion("pubic_bone", centre, 4.5, float(rng.uniform(10.0, 14.0)))
    if site == "rectal_wall":
        # The anterior-left wall of the rectum, 8 mm below the prostate centre, between lumen and serosa.
        z = pz - 8.0
        t = (z - (pz - 55.0)) / ((oz + 90.0) - (pz - 55.0))
        axis_y = rectum_y + t * 8.0
        return Lesion("rectal_wall", (px + 8.1, axis_y - 8.1, z), 4.0, float(rng.uniform(6.0, 9.0)))
    if site == "seminal_vesicle":
        # In the left vesicle, 6 mm from its centre along its long axis (tilted 0.5 rad), 3 mm lower.
        centre = (px + 20.0 + 6.0 * math.cos(0.5), py + p_radii[1] * 0.7 + 6.0 * math.sin(0.5),
                  pz + p_radii[2] + 3.0)
        return Lesion("seminal_vesicle", centre, 4.5, float(rng.uniform(8.0, 12.0)))
    raise ValueError(f"unknown focus site {site!r}; choose from {', '.join(SITE_FOCI)}")
