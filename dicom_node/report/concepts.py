"""The coded concepts the result objects use beyond highdicom's defaults, and where each comes from.

Standard codes come from DICOM PS3.16 (as pydicom's generated code dictionary holds them): the SUVbw unit
(g/ml{SUVbw}, UCUM, CID 85), the volume method (126030, DCM), the sites of foci (SNOMED CT). Concepts
PS3.16 has no code for are private codes of the scheme 99LOCAL, which every object that uses them
identifies in its Coding Scheme Identification Sequence (PS3.3 C.12.1.1.1; docs/results.md lists them).

Why the SUVs are private concept names although (126401, DCM, "SUVbw") exists: OHIF 3.13 labels a
measurement with its concept name's meaning only, so three NUMs named "SUVbw" (max, peak, mean told apart
by their Derivation modifier) would read "SUVbw: 12.30 g/ml{SUVbw}" three times. The private names
"SUVbw max", "SUVbw peak" and "SUVbw mean" read distinctly, and each NUM still carries the standard unit
and the standard Derivation (Maximum, Peak Value Within ROI, Mean), so the meaning stays machine-readable.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from inference.result import Focus

LOCAL = "99LOCAL"
"""Private coding scheme for concepts DICOM has no code for (dciodvfy only warns about it)."""
LOCAL_SCHEME_NAME = "psma-node local concepts"
LOCAL_SCHEME_RESPONSIBLE = "psma-node project (research software)"

SUVBW_MAX = Code("SUVBW_MAX", LOCAL, "SUVbw max")
SUVBW_PEAK = Code("SUVBW_PEAK", LOCAL, "SUVbw peak")
SUVBW_MEAN = Code("SUVBW_MEAN", LOCAL, "SUVbw mean")
UNIT_SUVBW = Code("g/ml{SUVbw}", "UCUM", "Standardized Uptake Value body weight")
"""PS3.16 CID 85 "SUV Unit"."""
UNIT_PERCENT = Code("%", "UCUM", "percent")
"""The probability as a percentage: OHIF prints a NUM as "<value> <unit code>", so unit "1" read "0.83 1"."""
SUM_OF_SEGMENTED_VOXELS = codes.DCM.SumOfSegmentedVoxelMethodForVolume
"""(126030, DCM): the volume method of every isocontour (voxel count x voxel volume)."""
PEAK_VALUE_WITHIN_ROI = codes.DCM.PeakValueWithinROI

PROSTATE_BED = Code("PROSTATE_BED", LOCAL, "Prostate bed")
"""No SNOMED CT code for the prostate bed is in PS3.16."""
URINARY_BLADDER = Code("89837001", "SCT", "Urinary bladder")
SITE_CODES: dict[str, Code] = {
    "prostate": codes.SCT.Prostate,
    "prostate bed": PROSTATE_BED,
    "seminal vesicle": Code("64739004", "SCT", "Seminal vesicle"),
    "bladder wall": URINARY_BLADDER,
    "rectum/bowel": Code("14742008", "SCT", "Large intestine"),
    "bone": Code("272673000", "SCT", "Bone"),
    "lymph-node region": Code("54268001", "SCT", "Pelvic lymph node"),
    "other": Code("816092008", "SCT", "Pelvis"),
}
"""Finding Site of each focus site (SNOMED CT codes as PS3.16 lists them; the prostate bed is private)."""
RECTUM = Code("34402009", "SCT", "Rectum")
SACRUM = Code("54735007", "SCT", "Sacrum")


def site_code(focus: Focus) -> Code:
    """The focus's Finding Site: the more precise structure when one is named (rectum, sacrum)."""
    if focus.site == "rectum/bowel" and "rect" in focus.where:
        return RECTUM
    if focus.site == "bone" and "sacrum" in focus.where:
        return SACRUM
    return SITE_CODES[focus.site]


def identify_local_scheme(dataset: Dataset) -> None:
    """Name the 99LOCAL scheme in the object's Coding Scheme Identification Sequence (SOP Common module)."""
    item = Dataset()
    item.CodingSchemeDesignator = LOCAL
    item.CodingSchemeName = LOCAL_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = LOCAL_SCHEME_RESPONSIBLE
    existing = [i for i in dataset.get("CodingSchemeIdentificationSequence", [])
                if i.get("CodingSchemeDesignator") != LOCAL]
    dataset.CodingSchemeIdentificationSequence = [*existing, item]
