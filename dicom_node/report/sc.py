"""The Secondary Capture series: the rendered pictures as single-frame 8-bit RGB SC images.

Built with highdicom's SCImage from the source PET header (so patient and study attributes are the
source's), then corrected where highdicom's defaults are wrong for a rendered result (the Image Comments
repeat the picture's lead lines as text, for PACS lists and text-only viewers): the pictures are a
workstation's output (ConversionType WSD), text is burned in (BurnedInAnnotation YES), and pixels stay
uncompressed in Explicit VR Little Endian: a lossy codec would blur the text.
"""

from __future__ import annotations

import numpy as np
from highdicom.sc import SCImage
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node.config import ResultSettings
from dicom_node.report.render import Rendered
from dicom_node.report.sr import MANUFACTURER, MODEL_NAME, mark_node_equipment, node_equipment

SERIES_DESCRIPTION = "AI PSMA recurrence - NOT FOR DIAGNOSTIC USE"
COMMENT_END = " - NOT FOR DIAGNOSTIC USE"

# (row direction, column direction) of each single-plane picture, as Patient Orientation (0020,0020).
_ORIENTATION = {"axial": ("L", "P"), "coronal": ("L", "F"), "sagittal": ("P", "F")}


def build_sc_series(pictures: list[Rendered], pet_header: Dataset, settings: ResultSettings,
                    series_uid: str, software_version: str, device_uid: str) -> list[Dataset]:
    """One SC instance per picture, all in one new series of the source study."""
    equipment = node_equipment(software_version, settings)
    datasets: list[Dataset] = []
    for number, picture in enumerate(pictures, start=1):
        pixels = np.ascontiguousarray(picture.pixels)
        plane = next(iter(picture.views), "") if len(picture.views) == 1 else ""
        orientation = _ORIENTATION.get(plane, ("L", "P"))
        sc = SCImage.from_ref_dataset(
            ref_dataset=pet_header,
            pixel_array=pixels,
            photometric_interpretation="RGB",
            bits_allocated=8,
            coordinate_system="PATIENT",
            series_instance_uid=series_uid,
            series_number=settings.sc_series_number,
            sop_instance_uid=generate_uid(),
            instance_number=number,
            manufacturer=MANUFACTURER,
            patient_orientation=orientation,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            contributing_equipment=[equipment],
            specific_character_set="ISO_IR 192",
        )
        if plane not in _ORIENTATION:
            # Several planes in one picture: no single orientation applies (stubs only allow a list).
            sc.PatientOrientation = ""  # type: ignore[assignment]
        sc.ConversionType = "WSD"
        sc.BurnedInAnnotation = "YES"
        sc.BodyPartExamined = settings.body_part_examined
        sc.SeriesDescription = SERIES_DESCRIPTION
        text = f"{picture.description}: {picture.lead}" if picture.lead else picture.description
        sc.ImageComments = f"{text[:10240 - len(COMMENT_END)]}{COMMENT_END}"
        sc.DerivationDescription = "Rendered by psma-node from the analysed PET/CT region"
        sc.ManufacturerModelName = MODEL_NAME
        sc.SoftwareVersions = software_version
        mark_node_equipment(sc, device_uid)
        if settings.institution_name:
            sc.InstitutionName = settings.institution_name
        sc.PlanarConfiguration = 0
        datasets.append(sc)
    return datasets
