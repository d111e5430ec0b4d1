"""DICOM series to 3-D volumes with their patient geometry."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Volume:
    """A 3-D image on its own grid.

    `array` is laid out as dcm2niix + nibabel give it for axial DICOM, the layout the published model was
    trained on: axis 0 = DICOM column index (towards patient left), axis 1 = DICOM row index *flipped*
    (towards anterior), axis 2 = slices sorted along the slice normal, ascending (towards superior).
    `affine_lps` maps (i, j, k, 1) voxel indices of `array` to patient LPS millimetres.
    """

    array: np.ndarray
    affine_lps: np.ndarray
    series_uid: str = ""
    modality: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def affine_ras(self) -> np.ndarray:
        """The same mapping to RAS millimetres (what nibabel/dcm2niix write)."""
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        return flip @ self.affine_lps

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(np.linalg.norm(self.affine_lps[:3, a])) for a in range(3))  # type: ignore[return-value]

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=float)
        return (self.affine_lps[:3, :3] @ ijk.T).T + self.affine_lps[:3, 3]

    def lps_to_index(self, lps: np.ndarray) -> np.ndarray:
        inverse = np.linalg.inv(self.affine_lps)
        lps = np.asarray(lps, dtype=float)
        return (inverse[:3, :3] @ lps.T).T + inverse[:3, 3]
